//! The one place where failures become HTTP answers:
//! `{"error": {"code": "...", "message": "...", "details": {...}}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eci_core::PlacementError;
use serde_json::{Value, json};

/// An API failure with its HTTP status, machine-readable code and human message.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// Machine-readable code, such as `invalid_request` or `not_found`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Facts about the failure (the field, the id, the counts), as a JSON object.
    pub details: Value,
    /// Seconds until a rate-limited caller may try again.
    pub retry_after: Option<u64>,
}

/// A result whose error is an [`ApiError`] unless another is named.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// A failure with this status, code and message, and no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: json!({}), retry_after: None }
    }

    /// The same failure with `details` in place of its current ones.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A 400 that names the offending field and why it was refused.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("{field}: {reason}"))
            .with_details(json!({ "field": field, "reason": reason }))
    }

    /// The same failure of a field inside `parent`: its `field` detail and message name
    /// `parent.field`.
    pub fn under(mut self, parent: &str) -> Self {
        if let Some(field) = self.details.get("field").and_then(|f| f.as_str()).map(str::to_string) {
            let nested = format!("{parent}.{field}");
            self.message = self.message.replacen(&field, &nested, 1);
            self.details["field"] = Value::String(nested);
        }
        self
    }

    /// A 422 for a well-formed `field` the request cannot have now: a time already past, a window
    /// the document cannot rule out on its own (`to` before `from`).
    pub fn unprocessable(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_request", format!("{field}: {reason}"))
            .with_details(json!({ "field": field, "reason": reason }))
    }

    /// A 422 for an area code of the right shape that the fleet does not have (see `GET /v1/areas`).
    pub fn unknown_area(field: &str, area: &str) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_area",
            format!("{field}: `{area}` is not a region, province or city of the fleet (see GET /v1/areas)"),
        )
        .with_details(json!({ "field": field, "area": area }))
    }

    /// A 429: more than `limit` requests a second of some kind; `message` says which. The caller
    /// may try again after `retry_after` (at least a second).
    pub fn rate_limited(message: String, limit: u64, retry_after: std::time::Duration) -> Self {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            .with_details(json!({ "limit_per_second": limit }));
        e.retry_after = Some(retry_after.as_secs().max(1));
        e
    }

    /// A 401: the request carries no valid API key.
    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A 403: the key is valid, but not for this endpoint.
    pub fn forbidden(message: &str) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A 404 for the `what` of this `id`, both repeated in the details.
    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} `{id}` not found"))
            .with_details(json!({ "resource": what, "id": id }))
    }

    fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the cause has been logged",
        )
    }
}

impl From<PlacementError> for ApiError {
    fn from(e: PlacementError) -> Self {
        let message = e.to_string();
        match e {
            PlacementError::NoMatchingIdc => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_matching_idc", message)
                    .with_details(json!({ "placeable": 0 }))
            }
            PlacementError::InsufficientCapacity { requested, placeable } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity", message)
                    .with_details(json!({ "requested": requested, "placeable": placeable }))
            }
            PlacementError::QuotaExceeded { requested, placeable } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded", message)
                    .with_details(json!({ "requested": requested, "placeable": placeable }))
            }
        }
    }
}

impl From<eci_store::Error> for ApiError {
    fn from(e: eci_store::Error) -> Self {
        use eci_store::Error as S;
        match e {
            S::NotFound { what, id } => ApiError::not_found(what, &id),
            S::Conflict { what, constraint } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} conflicts with an existing one"),
            )
            .with_details(json!({ "constraint": constraint })),
            S::IdempotencyMismatch(key) => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!("idempotency key `{key}` was already used with a different request"),
            )
            .with_details(json!({ "idempotency_key": key })),
            S::Placement(p) => p.into(),
            S::ReservationMismatch(why) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "reservation_mismatch", why)
            }
            S::IllegalTransition(t) => ApiError::new(StatusCode::CONFLICT, "illegal_state", t.to_string()),
            S::InvalidPrice(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_price", why),
            // Both come from values the document allowed, so they are 422s, not 400s.
            S::Window(e) => ApiError::unprocessable("window", e.to_string()),
            S::Period(e) => ApiError::unprocessable("period", e.to_string()),
            S::StaleGeneration(id) => ApiError::new(
                StatusCode::CONFLICT,
                "generation_conflict",
                format!("group `{id}` changed since it was read; read it again and retry"),
            )
            .with_details(json!({ "id": id })),
            S::DeleteProtected { what, id } => {
                ApiError::new(StatusCode::LOCKED, "delete_protected", e_message(what, &id)).with_details(
                    json!({ "resource": what, "id": id, "label": eci_core::risk::LABEL_DELETE_PROTECTION }),
                )
            }
            S::ConfirmationRequired { count, live } => ApiError::new(
                StatusCode::CONFLICT,
                "confirmation_required",
                format!(
                    "this would end {count} of your {live} live instances; repeat it with ?confirm={count}"
                ),
            )
            .with_details(json!({ "count": count, "live": live })),
            S::DeletionRateLimited(refusal) => {
                let message = format!(
                    "deletions are held: the `{}` breaker is open ({} deletions per {} s); an admin must reset it",
                    refusal.window, refusal.budget.deletions, refusal.budget.window_seconds
                );
                let retry_after = refusal.retry_after.as_secs().max(1);
                let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited", message)
                    .with_details(json!({
                        "rule": refusal.window.rule().as_str(),
                        "breaker": refusal.window.key(),
                        "limit": refusal.budget.deletions,
                        "window_seconds": refusal.budget.window_seconds,
                        "used": refusal.used,
                        "retry_after": retry_after,
                    }));
                e.retry_after = Some(retry_after);
                e
            }
            S::InvalidRules(why) => ApiError::invalid(why.field, why.message),
            S::HoldNotApprovable { id, why } => ApiError::new(
                StatusCode::CONFLICT,
                "hold_not_approvable",
                format!("hold `{id}` cannot be approved: {why}"),
            )
            .with_details(json!({ "id": id })),
            S::Contention => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contention",
                "capacity kept changing under concurrent requests; retry",
            ),
            other => {
                tracing::error!(error = ?other, "store failure");
                ApiError::internal()
            }
        }
    }
}

fn e_message(what: &str, id: &str) -> String {
    format!(
        "{what} `{id}` is protected from deletion by the label {}={}; remove the label (PATCH its labels) first",
        eci_core::risk::LABEL_DELETE_PROTECTION,
        eci_core::risk::PROTECTION_ALWAYS
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, status = self.status.as_u16(), "request failed");
        }
        let body =
            json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
