//! `/v1/reservations`: capacity held for the tenant ahead of its batches.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use eci_core::{ReservationId, ReservationState};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Body, Path, Query};
use crate::openapi::{BadRequest, JsonBody, NotFound, TenantCall, Unavailable, Unprocessable};
use crate::wire::rules::{self, TextRule};
use crate::wire::{CreateReservationBody, PageView, ReservationView};
use crate::{AppState, page_limit};

routes! { router, ROUTES;
    "/v1/reservations" => get(list_reservations).post(create_reservation);
    "/v1/reservations/{id}" => get(get_reservation).delete(release_reservation);
}

/// Reserve capacity: it counts as used for every other tenant until it ends or is deleted.
#[utoipa::path(post, path = "/v1/reservations", request_body = CreateReservationBody,
    responses((status = 201, body = ReservationView), TenantCall, JsonBody,
        (status = 422, response = Unprocessable), (status = 503, response = Unavailable)))]
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant.id))]
pub async fn create_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<CreateReservationBody>,
) -> Result<(StatusCode, Json<ReservationView>)> {
    let areas = state.store.area_codes().await?;
    let now = state.clock.now();
    let request = body.validate(|a| areas.contains(a), now)?;
    let reservation = state.store.create_reservation(&caller.tenant.id, &request, now).await?;
    tracing::info!(reservation.id = %reservation.id, count = request.count, "reservation created");
    Ok((StatusCode::CREATED, Json(ReservationView::from(&reservation))))
}

/// Paging for listing reservations.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReservationListQuery {
    /// The `next_cursor` of the previous page; absent for the first page.
    #[param(value_type = Option<rules::Cursor>)]
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List the tenant's reservations, oldest first.
#[utoipa::path(get, path = "/v1/reservations", params(ReservationListQuery),
    responses((status = 200, body = PageView<ReservationView>), TenantCall,
        (status = 400, response = BadRequest)))]
pub async fn list_reservations(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ReservationListQuery>,
) -> Result<Json<PageView<ReservationView>>> {
    if let Some(cursor) = &q.cursor {
        rules::Cursor::require("cursor", cursor)?;
    }
    let page =
        state.store.list_reservations(&caller.tenant.id, q.cursor.as_deref(), page_limit(q.limit)?).await?;
    Ok(Json(PageView {
        items: page.items.iter().map(ReservationView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get one reservation, with the capacity it holds and uses in each city and carrier.
#[utoipa::path(get, path = "/v1/reservations/{id}",
    params(("id" = rules::ReservationIdText, Path, description = "The reservation's id (`r-...`).")),
    responses((status = 200, body = ReservationView), TenantCall, (status = 404, response = NotFound)))]
pub async fn get_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>> {
    let id = rules::known_id::<rules::ReservationIdText>("reservation", id)?;
    let reservation = state.store.get_reservation(&caller.tenant.id, &ReservationId(id)).await?;
    Ok(Json(ReservationView::from(&reservation)))
}

/// End a reservation; what it holds unused goes back to the pool at once.
#[utoipa::path(delete, path = "/v1/reservations/{id}",
    params(("id" = rules::ReservationIdText, Path, description = "The reservation's id (`r-...`).")),
    responses((status = 200, body = ReservationView), TenantCall, (status = 404, response = NotFound)))]
pub async fn release_reservation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>> {
    let id = rules::known_id::<rules::ReservationIdText>("reservation", id)?;
    let reservation = state
        .store
        .release_reservation(
            &caller.tenant.id,
            &ReservationId(id),
            ReservationState::Released,
            state.clock.now(),
        )
        .await?;
    Ok(Json(ReservationView::from(&reservation)))
}
