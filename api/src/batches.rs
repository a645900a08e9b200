//! `/v1/batches`: ask for many instances by area and carrier, look at them, release them.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use eci_core::{BatchId, BatchState};
use eci_store::batches::BatchFilter;
use eci_store::instances::InstanceFilter;
use eci_store::risk::Deletion;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path, Query};
use crate::instances::{InstancePageQuery, instance_page};
use crate::openapi::{
    BadRequest, Conflict, DeletionRefused, JsonBody, NotFound, TenantCall, Unavailable, Unprocessable,
};
use crate::wire::rules::{self, TextRule};
use crate::wire::{
    BatchView, ConfirmQuery, CreateBatchBody, LabelsBody, PageView, check_labels, word_schema,
};
use crate::{AppState, page_limit};

routes! { router, ROUTES;
    "/v1/batches" => get(list_batches).post(create_batch);
    "/v1/batches/{id}" => get(get_batch).patch(patch_batch).delete(release_batch);
    "/v1/batches/{id}/instances" => get(list_batch_instances);
}

/// Create a batch of instances. They are placed and their capacity allocated before the answer;
/// the same `Idempotency-Key` with the same body returns the same batch.
#[utoipa::path(post, path = "/v1/batches", request_body = CreateBatchBody,
    params(("Idempotency-Key" = Option<rules::IdempotencyKey>, Header, description = "Makes retries safe")),
    responses((status = 202, body = BatchView), TenantCall, JsonBody, (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id))]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<CreateBatchBody>,
) -> Result<impl IntoResponse> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().unwrap_or_default();
            rules::IdempotencyKey::require("Idempotency-Key", key)?;
            Some(key)
        }
    };
    let areas = state.store.area_codes().await?;
    let request = body.validate(|a| areas.contains(a))?;
    let created = state.store.create_batch(&caller.tenant.id, &request, key, state.clock.now()).await?;
    tracing::info!(batch.id = %created.batch.id, count = created.batch.count, replayed = created.replayed, "batch created");
    if !created.replayed {
        state.metrics.batches_created.inc();
        state.metrics.instances_created.inc_by(created.batch.count);
    }
    let mut headers = HeaderMap::new();
    if created.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok((StatusCode::ACCEPTED, headers, Json(BatchView::from(&created.batch))))
}

/// Filters and paging for listing batches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BatchListQuery {
    /// Only batches in this state.
    #[param(schema_with = word_schema::<BatchState>)]
    pub state: Option<String>,
    /// Only batches with this label, `key=value`.
    #[param(value_type = Option<rules::LabelFilter>)]
    pub label: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List the tenant's batches, oldest first, optionally only those in one state or with one label.
#[utoipa::path(get, path = "/v1/batches", params(BatchListQuery),
    responses((status = 200, body = PageView<BatchView>), TenantCall, (status = 400, response = BadRequest)))]
pub async fn list_batches(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<BatchListQuery>,
) -> Result<Json<PageView<BatchView>>> {
    let filter = BatchFilter {
        state: q
            .state
            .as_deref()
            .map(|s| s.parse::<BatchState>().map_err(|e| ApiError::invalid("state", e.to_string())))
            .transpose()?,
        label: q
            .label
            .as_deref()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| ApiError::invalid("label", "must be `key=value`"))
            })
            .transpose()?,
    };
    if let Some(cursor) = &q.cursor {
        rules::Cursor::require("cursor", cursor)?;
    }
    let page = state
        .store
        .list_batches(&caller.tenant.id, &filter, q.cursor.as_deref(), page_limit(q.limit)?)
        .await?;
    Ok(Json(PageView {
        items: page.items.iter().map(BatchView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get one batch, with its instances counted by state and where they were placed.
#[utoipa::path(get, path = "/v1/batches/{id}",
    params(("id" = rules::BatchIdText, Path, description = "The batch's id (`b-...`).")),
    responses((status = 200, body = BatchView), TenantCall, (status = 404, response = NotFound)))]
pub async fn get_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<BatchView>> {
    let id = rules::known_id::<rules::BatchIdText>("batch", id)?;
    let batch = state.store.get_batch(&caller.tenant.id, &BatchId(id)).await?;
    Ok(Json(BatchView::from(&batch)))
}

/// Release a batch: the batch ends at once and every live instance in it is released (instances
/// already started turn `stopping` until their Pod or VMI is gone). Risk control holds it: a
/// protected batch (or instance in it) answers 423, a batch ending most of the tenant's instances
/// needs `?confirm=`, and a full deletion window answers 429.
#[utoipa::path(delete, path = "/v1/batches/{id}",
    params(("id" = rules::BatchIdText, Path, description = "The batch's id (`b-...`)."), ConfirmQuery),
    responses((status = 200, body = BatchView), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound), DeletionRefused))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id, batch.id = %id))]
pub async fn release_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Result<Json<BatchView>> {
    let id = rules::known_id::<rules::BatchIdText>("batch", id)?;
    let deletion = Deletion::by_tenant(&caller.key_id, q.count()?);
    let batch = state
        .store
        .release_batch(&caller.tenant.id, &BatchId(id), BatchState::Released, &deletion, state.clock.now())
        .await?;
    Ok(Json(BatchView::from(&batch)))
}

/// Set a batch's labels, replacing them; `eci.io/delete-protection: always` protects the batch and
/// its instances from deletion until it is removed. Its Pods and VMs keep the labels they were made with.
#[utoipa::path(patch, path = "/v1/batches/{id}", request_body = LabelsBody,
    params(("id" = rules::BatchIdText, Path, description = "The batch's id (`b-...`).")),
    responses((status = 200, body = BatchView), TenantCall, JsonBody, (status = 404, response = NotFound)))]
pub async fn patch_batch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<LabelsBody>,
) -> Result<Json<BatchView>> {
    let id = rules::known_id::<rules::BatchIdText>("batch", id)?;
    check_labels(&body.labels)?;
    let batch = state.store.set_batch_labels(&caller.tenant.id, &BatchId(id), &body.labels).await?;
    Ok(Json(BatchView::from(&batch)))
}

/// List the instances of one batch, oldest first, optionally only those in one state.
#[utoipa::path(get, path = "/v1/batches/{id}/instances",
    params(("id" = rules::BatchIdText, Path, description = "The batch's id (`b-...`)."), InstancePageQuery),
    responses((status = 200, body = PageView<crate::wire::InstanceView>), TenantCall,
        (status = 400, response = BadRequest), (status = 404, response = NotFound)))]
pub async fn list_batch_instances(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<InstancePageQuery>,
) -> Result<Json<PageView<crate::wire::InstanceView>>> {
    let id = BatchId(rules::known_id::<rules::BatchIdText>("batch", id)?);
    state.store.get_batch(&caller.tenant.id, &id).await?;
    let filter = InstanceFilter { batch_id: Some(id), ..Default::default() };
    instance_page(&state, &caller, filter, q).await
}
