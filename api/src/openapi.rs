//! The OpenAPI 3 document, generated from the handlers and wire types, and the error answers every
//! operation lists: reusable responses (`components/responses`), grouped by who may call
//! ([`TenantCall`], [`AdminCall`]) and what the request carries ([`JsonBody`]), so that each
//! handler's `#[utoipa::path]` names its groups and the statuses of its own.
//!
//! Status codes mean one thing throughout: `400` is a request the document itself refuses (a type,
//! range, pattern, enum, required or unknown field), so a request the document allows never gets
//! one; `422` is a well-formed request that cannot be done against the fleet, the ledger, the
//! tenant's quota or the clock as they are.

use axum::Json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, OpenApi, ToResponse};

use crate::wire::{ErrorBody, rules};
use crate::{admin, batches, billing, fleet, groups, instances, metrics, reservations, risk, wire};

/// The OpenAPI 3 document of the whole API, served at `GET /v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Edge container instance API", version = "1"),
    paths(
        batches::create_batch, batches::list_batches, batches::get_batch, batches::release_batch,
        batches::list_batch_instances,
        groups::create_group, groups::list_groups, groups::get_group, groups::patch_group, groups::delete_group,
        groups::list_group_events, groups::push_metrics, billing::group_cost,
        instances::list_instances, instances::get_instance, instances::release_instance, instances::patch_instance,
        batches::patch_batch,
        billing::usage, billing::batch_cost, billing::list_invoices, billing::get_invoice,
        billing::list_prices, billing::add_price, billing::withdraw_price,
        reservations::create_reservation, reservations::list_reservations, reservations::get_reservation,
        reservations::release_reservation,
        fleet::areas, fleet::capacity,
        admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::set_quota, admin::create_key,
        admin::list_keys, admin::revoke_key, admin::list_idcs, admin::get_idc, admin::put_idc,
        admin::drain_idc,
        risk::get_rules, risk::audit_log, risk::breaker_events, risk::open_breakers, risk::list_holds,
        risk::set_platform_rules, risk::get_tenant_rules, risk::set_tenant_rules, risk::reset_breaker,
        risk::approve_hold,
        serve, healthz, metrics::serve,
    ),
    components(
        // The rules that only parameters use; those of body fields are collected from the fields.
        schemas(
            wire::ErrorBody, rules::BatchIdText, rules::InstanceIdText, rules::ReservationIdText,
            rules::TenantIdText, rules::GroupIdText, rules::KeyIdText, rules::IdcIdText, rules::PriceIdText, rules::PeriodText,
            rules::IdempotencyKey, rules::Cursor, rules::LabelFilter, rules::GroupByText, rules::AreaCode,
            rules::AreaSelector, rules::Cpu, rules::Memory,
        ),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType,
            Unprocessable, RateLimited, Internal, Unavailable, ConfirmationRequired, DeleteProtected,
        ),
    ),
    modifiers(&BearerAuth, &SshKeysForRichRuntimes),
    security(("api_key" = []))
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /healthz`: `ok` while the process serves requests; it asks nothing of the database.
#[utoipa::path(get, path = "/healthz", security(()),
    responses((status = 200, description = "The process is up.", body = String,
        content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// 400: the request breaks this document: a body that is not JSON or not the shape described, or a
/// field, parameter or header outside its type, range, pattern or enum. `details` names the `field`
/// and the `reason`.
#[derive(ToResponse)]
#[response(description = "The request breaks this document (`invalid_request`, naming the field).")]
pub struct BadRequest(pub ErrorBody);

/// 401: no `Authorization: Bearer <api key>`, or a key that is unknown or revoked.
#[derive(ToResponse)]
#[response(description = "No valid API key (`unauthorized`).")]
pub struct Unauthorized(pub ErrorBody);

/// 403: a valid key of the wrong kind: a tenant's key on an admin endpoint, or an admin's on a
/// tenant's.
#[derive(ToResponse)]
#[response(description = "The key is valid but not for this endpoint (`forbidden`).")]
pub struct Forbidden(pub ErrorBody);

/// 404: nothing of the tenant's (or, for admins, at all) has that id; an id of the wrong shape
/// names nothing either.
#[derive(ToResponse)]
#[response(description = "No such resource (`not_found`, with `resource` and `id`).")]
pub struct NotFound(pub ErrorBody);

/// 409: the request clashes with what exists: a name or id already taken, an idempotency key used
/// with another body, an area code the fleet uses at another level, an admin key revoking itself.
#[derive(ToResponse)]
#[response(description = "The request conflicts with existing state \
    (`conflict`, `idempotency_conflict`, `area_conflict`, `self_revocation`).")]
pub struct Conflict(pub ErrorBody);

/// 413: a body over the API's limit (2 MiB), refused before it is read.
#[derive(ToResponse)]
#[response(description = "The body is larger than 2 MiB (`payload_too_large`).")]
pub struct PayloadTooLarge(pub ErrorBody);

/// 415: a body without `Content-Type: application/json`.
#[derive(ToResponse)]
#[response(description = "The body is not declared as JSON (`unsupported_media_type`).")]
pub struct UnsupportedMediaType(pub ErrorBody);

/// 422: a well-formed request that cannot be done as things are: not enough room in the fleet or
/// the quota, an area the fleet does not have, a time already past, a reservation that does not
/// fit the batch, a price that would change the past.
#[derive(ToResponse)]
#[response(description = "Well-formed, but not possible against the current fleet, ledger, quota or clock \
    (`insufficient_capacity`, `quota_exceeded`, `no_matching_idc`, `unknown_area`, `unprocessable_request`, \
    `reservation_mismatch`, `invalid_price`).")]
pub struct Unprocessable(pub ErrorBody);

/// 429: the tenant is over its requests per second, or (on a deletion) a deletion window of risk
/// control is full and its breaker open.
#[derive(ToResponse)]
#[response(
    description = "Over the tenant's request rate (`rate_limited`, with `limit_per_second`), or, on a \
        deletion, held by an open deletion breaker (`deletion_rate_limited`, with `rule`, `breaker`, `limit`, \
        `window_seconds`, `used` and `retry_after`).",
    headers(("Retry-After" = u64, description = "Seconds until the tenant may try again; at least 1."))
)]
pub struct RateLimited(pub ErrorBody);

/// 409 of a deletion: it would end a large share of the tenant's instances (or very many) and
/// must be repeated with `?confirm=<count>`.
#[derive(ToResponse)]
#[response(
    description = "The deletion needs a confirmation (`confirmation_required`, with `count` to pass as \
    `?confirm=` and the tenant's `live` instances)."
)]
pub struct ConfirmationRequired(pub ErrorBody);

/// 423: what the deletion would end is labelled `eci.io/delete-protection=always`.
#[derive(ToResponse)]
#[response(description = "Protected from deletion until its label is removed (`delete_protected`, with \
    `resource` and `id`).")]
pub struct DeleteProtected(pub ErrorBody);

/// What a deletion may answer besides its own statuses: risk control's refusals (the open breaker
/// answers the 429 every tenant call lists).
#[derive(IntoResponses)]
pub enum DeletionRefused {
    /// It needs a confirmation.
    #[response(status = 409)]
    ConfirmationRequired(#[ref_response] ConfirmationRequired),
    /// It is protected.
    #[response(status = 423)]
    DeleteProtected(#[ref_response] DeleteProtected),
}

/// 500: the platform failed; the cause is logged, never returned.
#[derive(ToResponse)]
#[response(description = "The platform failed; the cause has been logged (`internal`).")]
pub struct Internal(pub ErrorBody);

/// 503: concurrent requests kept taking the capacity a placement was planned on; retrying is safe.
#[derive(ToResponse)]
#[response(description = "Capacity kept changing under concurrent requests; retry (`contention`).")]
pub struct Unavailable(pub ErrorBody);

/// What any call with a tenant's key may answer besides its own statuses: the key, the rate, a failure.
#[derive(IntoResponses)]
pub enum TenantCall {
    /// No valid key.
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// An admin's key.
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    /// Over the tenant's rate.
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
    /// A failure of the platform.
    #[response(status = 500)]
    Internal(#[ref_response] Internal),
}

/// What any call with an admin's key may answer besides its own statuses; admins are not rate limited.
#[derive(IntoResponses)]
pub enum AdminCall {
    /// No valid key.
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// A tenant's key.
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    /// A failure of the platform.
    #[response(status = 500)]
    Internal(#[ref_response] Internal),
}

/// What any call with a JSON body may answer about the body itself.
#[derive(IntoResponses)]
pub enum JsonBody {
    /// Not JSON, or not the shape and values described.
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    /// Over 2 MiB.
    #[response(status = 413)]
    PayloadTooLarge(#[ref_response] PayloadTooLarge),
    /// Not declared as JSON.
    #[response(status = 415)]
    UnsupportedMediaType(#[ref_response] UnsupportedMediaType),
}

/// Every endpoint takes `Authorization: Bearer <api key>`.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `rich` or `vm` instances need an ssh key to be reached at all: the one rule between two fields
/// of a body that the document states as a schema rather than in words. The batch body and a
/// group's template become "their own schema, and either a plain-container runtime or at least one
/// key".
struct SshKeysForRichRuntimes;

impl utoipa::Modify for SshKeysForRichRuntimes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else { return };
        for name in ["CreateBatchBody", "TemplateBody"] {
            if let Some(body) = schemas.remove(name) {
                schemas.insert(name.to_string(), RefOr::T(Schema::AllOf(with_ssh_rule(body))));
            }
        }
    }
}

/// `body`, and either a plain-container runtime or at least one ssh key.
fn with_ssh_rule(body: RefOr<Schema>) -> utoipa::openapi::schema::AllOf {
    {
        let plain: Vec<Option<&str>> = eci_core::Runtime::ALL
            .iter()
            .filter(|r| !r.needs_ssh())
            .map(|r| Some(r.as_str()))
            .chain([None])
            .collect();
        let plain_runtime = ObjectBuilder::new()
            .property(
                "runtime",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .enum_values(Some(plain)),
            )
            .description(Some("A plain container (`runtime` left out, null or `container`)."));
        let with_keys = ObjectBuilder::new()
            .property("ssh_keys", ArrayBuilder::new().min_items(Some(1)))
            .required("ssh_keys")
            .description(Some("At least one ssh key, as `rich` and `vm` instances need."));
        let rule = AnyOfBuilder::new().item(plain_runtime).item(with_keys);
        let description = match &body {
            RefOr::T(Schema::Object(o)) => o.description.clone(),
            _ => None,
        };
        AllOfBuilder::new().description(description).item(body).item(rule).build()
    }
}
