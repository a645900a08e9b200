//! `/v1/instances`: every instance of the tenant, wherever it runs.

use axum::Json;
use axum::extract::State;
use eci_core::{BatchId, Carrier, InstanceId, InstanceState};
use eci_store::instances::InstanceFilter;
use eci_store::risk::Deletion;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path, Query};
use crate::openapi::{BadRequest, DeletionRefused, JsonBody, NotFound, TenantCall, Unprocessable};
use crate::wire::rules::{self, TextRule};
use crate::wire::{ConfirmQuery, InstanceView, LabelsBody, PageView, check_labels, word_schema};
use crate::{AppState, page_limit};

routes! { router, ROUTES;
    "/v1/instances" => get(list_instances);
    "/v1/instances/{id}" => get(get_instance).patch(patch_instance).delete(release_instance);
}

/// Filters and paging for listing instances.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceListQuery {
    /// Only the instances of this batch.
    #[param(value_type = Option<rules::BatchIdText>)]
    pub batch_id: Option<String>,
    /// Only instances in this state.
    #[param(schema_with = word_schema::<InstanceState>)]
    pub state: Option<String>,
    /// Only instances in this region, province or city (one of the fleet's, see `GET /v1/areas`).
    #[param(value_type = Option<rules::AreaCode>)]
    pub area: Option<String>,
    /// Only instances reached through this carrier.
    #[param(schema_with = word_schema::<Carrier>)]
    pub carrier: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Filters and paging for one batch's instances.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstancePageQuery {
    /// Only instances in this state.
    #[param(schema_with = word_schema::<InstanceState>)]
    pub state: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

fn parse_state(state: Option<&str>) -> Result<Option<InstanceState>> {
    state
        .map(|s| s.parse::<InstanceState>().map_err(|e| ApiError::invalid("state", e.to_string())))
        .transpose()
}

pub(crate) async fn instance_page(
    state: &AppState,
    caller: &Caller,
    mut filter: InstanceFilter,
    q: InstancePageQuery,
) -> Result<Json<PageView<InstanceView>>> {
    filter.state = parse_state(q.state.as_deref())?;
    if let Some(cursor) = &q.cursor {
        rules::Cursor::require("cursor", cursor)?;
    }
    let page = state
        .store
        .list_instances(&caller.tenant.id, &filter, q.cursor.as_deref(), page_limit(q.limit)?)
        .await?;
    Ok(Json(PageView {
        items: page.items.iter().map(InstanceView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// List the tenant's instances, oldest first, optionally by batch, state, area and carrier.
#[utoipa::path(get, path = "/v1/instances", params(InstanceListQuery),
    responses((status = 200, body = PageView<InstanceView>), TenantCall,
        (status = 400, response = BadRequest), (status = 422, response = Unprocessable)))]
pub async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<InstanceListQuery>,
) -> Result<Json<PageView<InstanceView>>> {
    if let Some(batch) = &q.batch_id {
        rules::BatchIdText::require("batch_id", batch)?;
    }
    if let Some(area) = &q.area {
        rules::AreaCode::require("area", area)?;
    }
    let carrier = q
        .carrier
        .as_deref()
        .map(|c| c.parse::<Carrier>().map_err(|e| ApiError::invalid("carrier", e.to_string())))
        .transpose()?;
    let page = InstancePageQuery { state: q.state, cursor: q.cursor, limit: q.limit };
    let filter = InstanceFilter {
        batch_id: q.batch_id.map(BatchId),
        state: None,
        area: match q.area {
            Some(area) if !state.store.area_codes().await?.contains(&area) => {
                return Err(ApiError::unknown_area("area", &area));
            }
            area => area,
        },
        carrier,
    };
    instance_page(&state, &caller, filter, page).await
}

/// Get one instance: its state, where it runs, its address and its times.
#[utoipa::path(get, path = "/v1/instances/{id}",
    params(("id" = rules::InstanceIdText, Path, description = "The instance's id (`i-...`).")),
    responses((status = 200, body = InstanceView), TenantCall, (status = 404, response = NotFound)))]
pub async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>> {
    let id = rules::known_id::<rules::InstanceIdText>("instance", id)?;
    let instance = state.store.get_instance(&caller.tenant.id, &InstanceId(id)).await?;
    Ok(Json(InstanceView::from(&instance)))
}

/// Release one instance. One that has not started yet ends at once; one that has turns `stopping`
/// and ends (`terminated`, capacity given back) when its Pod or VMI is gone from the IDC. Risk
/// control holds every release: a protected instance answers 423, and a full deletion window 429.
#[utoipa::path(delete, path = "/v1/instances/{id}",
    params(("id" = rules::InstanceIdText, Path, description = "The instance's id (`i-...`)."), ConfirmQuery),
    responses((status = 200, body = InstanceView), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound), DeletionRefused))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id, instance.id = %id))]
pub async fn release_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Result<Json<InstanceView>> {
    let id = rules::known_id::<rules::InstanceIdText>("instance", id)?;
    let deletion = Deletion::by_tenant(&caller.key_id, q.count()?);
    let instance = state
        .store
        .release_instance(&caller.tenant.id, &InstanceId(id), &deletion, state.clock.now())
        .await?;
    Ok(Json(InstanceView::from(&instance)))
}

/// Set an instance's own labels, replacing them; `eci.io/delete-protection: always` protects it
/// from deletion until it is removed.
#[utoipa::path(patch, path = "/v1/instances/{id}", request_body = LabelsBody,
    params(("id" = rules::InstanceIdText, Path, description = "The instance's id (`i-...`).")),
    responses((status = 200, body = InstanceView), TenantCall, JsonBody, (status = 404, response = NotFound)))]
pub async fn patch_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<LabelsBody>,
) -> Result<Json<InstanceView>> {
    let id = rules::known_id::<rules::InstanceIdText>("instance", id)?;
    check_labels(&body.labels)?;
    let instance = state
        .store
        .set_instance_labels(&caller.tenant.id, &InstanceId(id), &body.labels, state.clock.now())
        .await?;
    Ok(Json(InstanceView::from(&instance)))
}
