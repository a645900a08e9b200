//! The OpenAPI 3 document, generated from the handlers and wire types.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::{admin, batches, billing, fleet, instances, reservations, wire};

/// The OpenAPI 3 document of the whole API, served at `GET /v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Edge container instance API", version = "1"),
    paths(
        batches::create_batch, batches::list_batches, batches::get_batch, batches::release_batch,
        batches::list_batch_instances,
        instances::list_instances, instances::get_instance, instances::release_instance,
        billing::usage, billing::batch_cost, billing::list_invoices, billing::get_invoice,
        billing::list_prices, billing::add_price, billing::withdraw_price,
        reservations::create_reservation, reservations::list_reservations, reservations::get_reservation,
        reservations::release_reservation,
        fleet::areas, fleet::capacity,
        admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::set_quota, admin::create_key,
        admin::list_keys, admin::revoke_key, admin::list_idcs, admin::get_idc, admin::put_idc, admin::drain_idc,
    ),
    components(schemas(wire::ErrorBody)),
    modifiers(&BearerAuth),
    security(("api_key" = []))
)]
pub struct ApiDoc;

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
