//! `/v1/groups`: autoscaled groups. A tenant describes what every instance is, where instances may
//! go and what sets their count (windows, load, bounds); the scaler ([`crate::scaling`]) keeps the
//! group at that count. Changes wake the scaler at once.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use eci_core::GroupId;
use eci_scaler::group::{GroupState, Metric};
use eci_store::coordination::RateVerdict;
use eci_store::risk::Deletion;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::extract::{Body, Path, Query};
use crate::openapi::{BadRequest, Conflict, DeletionRefused, JsonBody, NotFound, TenantCall, Unprocessable};
use crate::wire::groups::{CreateGroupBody, GroupEventView, GroupView, PatchGroupBody, PushMetricsBody};
use crate::wire::rules::{self, TextRule};
use crate::wire::{ConfirmQuery, PageView, word_schema};
use crate::{AppState, page_limit};

routes! { router, ROUTES;
    "/v1/groups" => get(list_groups).post(create_group);
    "/v1/groups/{id}" => get(get_group).patch(patch_group).delete(delete_group);
    "/v1/groups/{id}/events" => get(list_group_events);
    "/v1/groups/{id}/metrics" => post(push_metrics);
}

/// How many pushes of a group's custom metric a second may bring: a tenant's exporter pushes every
/// few seconds, and the scaler reads them once a tick.
pub const METRIC_PUSHES_PER_SECOND: u64 = 10;

fn group_id(id: String) -> Result<GroupId> {
    rules::known_id::<rules::GroupIdText>("group", id).map(GroupId)
}

/// A name already in use is the tenant's mistake to fix, so the answer names the field and the name.
fn name_taken(name: &str) -> impl FnOnce(eci_store::Error) -> ApiError + '_ {
    move |e| match e {
        eci_store::Error::Conflict { what: "group", .. } => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("name: an active group is already named `{name}`"),
        )
        .with_details(serde_json::json!({ "field": "name", "name": name })),
        other => other.into(),
    }
}

/// Create an autoscaled group. Its instances come with the scaler's next tick, which the creation
/// brings forward: at once in `auto` mode, never in `preview`.
#[utoipa::path(post, path = "/v1/groups", request_body = CreateGroupBody,
    responses((status = 201, body = GroupView), TenantCall, JsonBody, (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id))]
pub async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<CreateGroupBody>,
) -> Result<impl IntoResponse> {
    let areas = state.store.area_codes().await?;
    let spec = body.validate(|a| areas.contains(a))?;
    let now = state.clock.now();
    let group =
        state.store.create_group(&caller.tenant.id, &spec, now).await.map_err(name_taken(&spec.name))?;
    tracing::info!(group.id = %group.id, name = %group.name, "group created");
    state.scaler_wake.notify_one();
    Ok((StatusCode::CREATED, Json(GroupView::of(&group, now))))
}

/// Paging of groups.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GroupListQuery {
    /// `active` (default) or `deleted`.
    #[param(schema_with = word_schema::<GroupState>)]
    pub state: Option<String>,
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List the tenant's groups, oldest first: the active ones, or the deleted ones.
#[utoipa::path(get, path = "/v1/groups", params(GroupListQuery),
    responses((status = 200, body = PageView<GroupView>), TenantCall, (status = 400, response = BadRequest)))]
pub async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<GroupListQuery>,
) -> Result<Json<PageView<GroupView>>> {
    let group_state = q
        .state
        .as_deref()
        .map(|s| s.parse::<GroupState>().map_err(|e| ApiError::invalid("state", e.to_string())))
        .transpose()?
        .unwrap_or(GroupState::Active);
    if let Some(cursor) = &q.cursor {
        rules::Cursor::require("cursor", cursor)?;
    }
    let page = state
        .store
        .list_groups(&caller.tenant.id, group_state, q.cursor.as_deref(), page_limit(q.limit)?)
        .await?;
    let now = state.clock.now();
    Ok(Json(PageView {
        items: page.items.iter().map(|g| GroupView::of(g, now)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get a group: its counts, the active window and the next boundary, its metric and its conditions.
#[utoipa::path(get, path = "/v1/groups/{id}",
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`).")),
    responses((status = 200, body = GroupView), TenantCall, (status = 404, response = NotFound)))]
pub async fn get_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GroupView>> {
    let group = state.store.get_group(&caller.tenant.id, &group_id(id)?).await?;
    Ok(Json(GroupView::of(&group, state.clock.now())))
}

/// Change a group: the fields given replace its own. Running instances keep their template; the
/// new one applies to instances created from now on.
#[utoipa::path(patch, path = "/v1/groups/{id}", request_body = PatchGroupBody,
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`).")),
    responses((status = 200, body = GroupView), TenantCall, JsonBody, (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 422, response = Unprocessable)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id, group.id = %id))]
pub async fn patch_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<PatchGroupBody>,
) -> Result<Json<GroupView>> {
    let id = group_id(id)?;
    let group = state.store.get_group(&caller.tenant.id, &id).await?;
    if group.state == GroupState::Deleted {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "illegal_state",
            format!("group `{id}` is deleted; a deleted group does not change"),
        ));
    }
    let generation = body.generation.unwrap_or(group.generation);
    let areas = state.store.area_codes().await?;
    let spec = body.apply(&group, |a| areas.contains(a))?;
    let now = state.clock.now();
    let group = state
        .store
        .update_group(&caller.tenant.id, &id, generation, &spec, now)
        .await
        .map_err(name_taken(&spec.name))?;
    state.scaler_wake.notify_one();
    Ok(Json(GroupView::of(&group, now)))
}

/// Delete a group: it ends at once, and every live instance of it is released as `DELETE` of an
/// instance would release it, held to risk control the same way (423 for a protected group, batch
/// or instance, `?confirm=` for most of the tenant's instances, 429 for a full deletion window).
/// Deleting a deleted group returns it unchanged.
#[utoipa::path(delete, path = "/v1/groups/{id}",
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`)."), ConfirmQuery),
    responses((status = 200, body = GroupView), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound), DeletionRefused))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id, group.id = %id))]
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Result<Json<GroupView>> {
    let now = state.clock.now();
    let deletion = Deletion::by_tenant(&caller.key_id, q.count()?);
    let group = state.store.delete_group(&caller.tenant.id, &group_id(id)?, &deletion, now).await?;
    tracing::info!(group.id = %group.id, "group deleted");
    Ok(Json(GroupView::of(&group, now)))
}

/// Paging of a group's events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventPageQuery {
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List a group's events, oldest first: every decision with its reason (the window, the metric,
/// the rule that applied) and what was placed or released where.
#[utoipa::path(get, path = "/v1/groups/{id}/events",
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`)."), EventPageQuery),
    responses((status = 200, body = PageView<GroupEventView>), TenantCall, (status = 400, response = BadRequest),
        (status = 404, response = NotFound)))]
pub async fn list_group_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<EventPageQuery>,
) -> Result<Json<PageView<GroupEventView>>> {
    let id = group_id(id)?;
    if let Some(cursor) = &q.cursor {
        rules::Cursor::require("cursor", cursor)?;
    }
    let page =
        state.store.group_events(&caller.tenant.id, &id, q.cursor.as_deref(), page_limit(q.limit)?).await?;
    Ok(Json(PageView { items: page.items.iter().map(Into::into).collect(), next_cursor: page.next_cursor }))
}

/// Push values of a group's custom metric, for the whole group or per instance; each is stamped
/// with the moment it arrives and ages like a cluster's metric. At most 10 pushes per second per
/// group.
#[utoipa::path(post, path = "/v1/groups/{id}/metrics", request_body = PushMetricsBody,
    params(("id" = rules::GroupIdText, Path, description = "The group's id (`g-...`).")),
    responses((status = 204, description = "Recorded."), TenantCall, JsonBody,
        (status = 404, response = NotFound), (status = 422, response = Unprocessable)))]
pub async fn push_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<PushMetricsBody>,
) -> Result<StatusCode> {
    let id = group_id(id)?;
    let samples = body.validate()?;
    let group = state.store.get_group(&caller.tenant.id, &id).await?;
    if group.policy.load.as_ref().map(|l| l.metric) != Some(Metric::Custom) {
        return Err(ApiError::unprocessable(
            "samples",
            "the group's load policy does not follow a custom metric",
        ));
    }
    let now = state.clock.now();
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let key = format!("group-metrics:{}", id.0);
    if let Ok(RateVerdict::Limited { retry_after }) =
        state.rate.hit(&key, METRIC_PUSHES_PER_SECOND, Duration::from_secs(1), now_ms).await
    {
        let message =
            format!("more than {METRIC_PUSHES_PER_SECOND} metric pushes per second to this group; slow down");
        return Err(ApiError::rate_limited(message, METRIC_PUSHES_PER_SECOND, retry_after));
    }
    state.store.record_custom_samples(&caller.tenant.id, &id, &samples, now).await?;
    Ok(StatusCode::NO_CONTENT)
}
