//! `/v1/instances`: every instance of the tenant, wherever it runs.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eci_core::{BatchId, Carrier, InstanceId, InstanceState};
use eci_store::instances::InstanceFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::{Path, Query};
use crate::wire::{InstanceView, PageView};
use crate::{AppState, page_limit};

/// The routes of `/v1/instances`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", get(list_instances))
        .route("/v1/instances/{id}", get(get_instance).delete(release_instance))
}

/// Filters and paging for listing instances.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InstanceListQuery {
    /// Only the instances of this batch (an id starting `b-`).
    pub batch_id: Option<String>,
    /// Only instances in this state: `pending`, `creating`, `running`, `stopping`, `terminated`,
    /// `failed` or `unknown`.
    pub state: Option<String>,
    /// A region, province or city code.
    pub area: Option<String>,
    /// Only instances reached through this carrier: `telecom`, `unicom`, `mobile` or `bgp`.
    pub carrier: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// Filters and paging for one batch's instances.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InstancePageQuery {
    /// Only instances in this state: `pending`, `creating`, `running`, `stopping`, `terminated`,
    /// `failed` or `unknown`.
    pub state: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
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
#[utoipa::path(get, path = "/v1/instances", params(InstanceListQuery), responses((status = 200, body = PageView<InstanceView>)))]
pub async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<InstanceListQuery>,
) -> Result<Json<PageView<InstanceView>>> {
    let filter = InstanceFilter {
        batch_id: q.batch_id.map(BatchId),
        state: None,
        area: match q.area {
            Some(area) if !state.store.area_codes().await?.contains(&area) => {
                return Err(ApiError::invalid(
                    "area",
                    format!("`{area}` is not a region, province or city of the fleet"),
                ));
            }
            area => area,
        },
        carrier: q
            .carrier
            .as_deref()
            .map(|c| c.parse::<Carrier>().map_err(|e| ApiError::invalid("carrier", e.to_string())))
            .transpose()?,
    };
    let page = InstancePageQuery { state: q.state, cursor: q.cursor, limit: q.limit };
    instance_page(&state, &caller, filter, page).await
}

/// Get one instance: its state, where it runs, its address and its times.
#[utoipa::path(get, path = "/v1/instances/{id}",
    params(("id" = String, Path, description = "The instance's id (`i-...`).")),
    responses((status = 200, body = InstanceView), (status = 404)))]
pub async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>> {
    let instance = state.store.get_instance(&caller.tenant.id, &InstanceId(id)).await?;
    Ok(Json(InstanceView::from(&instance)))
}

/// Release one instance. One that has not started yet ends at once; one that has turns `stopping`
/// and ends (`terminated`, capacity given back) when its Pod or VMI is gone from the IDC.
#[utoipa::path(delete, path = "/v1/instances/{id}",
    params(("id" = String, Path, description = "The instance's id (`i-...`).")),
    responses((status = 200, body = InstanceView), (status = 404)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id, instance.id = %id))]
pub async fn release_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InstanceView>> {
    let instance =
        state.store.release_instance(&caller.tenant.id, &InstanceId(id), state.clock.now()).await?;
    Ok(Json(InstanceView::from(&instance)))
}
