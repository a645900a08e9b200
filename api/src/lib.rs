//! The public HTTP API of the platform (axum).
//!
//! - [`router`] merges one router per resource: [`batches`], [`instances`], [`reservations`],
//!   [`groups`], [`fleet`] (areas and capacity), [`admin`], [`billing`] (usage, costs, invoices, prices); plus `/v1/openapi.json`, `/healthz` and `/metrics`
//!   ([`metrics`], Prometheus).
//! - [`auth`]: API keys to tenants or admins, and per-tenant request rates.
//! - [`wire`]: the JSON shapes and their validation; [`error`]: the one mapping of failures to HTTP.
//! - [`admission`]: the validating admission webhook the IDCs' API servers call before deleting a
//!   live instance's objects, served on its own TLS listener (not part of the public document).
//! - [`alerts`]: the alerts the store raises, counted, logged and posted to Alertmanager-style
//!   receivers without blocking the path that raised them.
//! - [`risk`]: risk control's rules, audit log, breakers and held operations (every deletion passes
//!   the store's risk gate; a refusal maps to 423, 409 or 429 in [`error`]).
//! - [`groups`]: autoscaled groups; [`scaling`]: the scaler's loop that keeps them at their count.
//! - [`expiry`]: the background pass that releases expired batches and reservations.
//! - `testing` (feature `testing`): the harness of the API's tests and of the end-to-end tests.
//!
//! Architecture invariant: only this crate knows HTTP and JSON wire shapes; it holds no state of
//! its own beyond [`AppState`], so any number of replicas can serve the same database.

#![warn(missing_docs)]

/// Declares routes once, as the axum router that serves them (`$router`) and as the table of
/// `(method, path)` pairs it serves (`$table`), so that [`routes`] lists exactly what is routed.
macro_rules! routes {
    ($router:ident, $table:ident;
        $($path:literal => $method:ident($handler:expr) $(. $more:ident($more_handler:expr))*;)+) => {
        /// The routes of this module.
        pub fn $router() -> axum::Router<crate::AppState> {
            axum::Router::new()$(.route($path, axum::routing::$method($handler)$(.$more($more_handler))*))+
        }

        /// Every `(method, path)` that the router of this module serves.
        pub const $table: &[(&str, &str)] =
            &[$((stringify!($method), $path) $(, (stringify!($more), $path))*),+];
    };
}

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod auth;
pub mod batches;
pub mod billing;
pub mod error;
pub mod expiry;
pub mod extract;
pub mod fleet;
pub mod groups;
pub mod instances;
pub mod metrics;
pub mod openapi;
pub mod reservations;
pub mod risk;
pub mod scaling;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use eci_store::Store;
use eci_store::coordination::RateWindows;
use eci_store::tenants::Principal;
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, Result};
use eci_core::Clock;

/// Tunables of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests per second a tenant without its own limit may make.
    pub default_requests_per_second: u32,
    /// How long a checked API key is trusted without asking the database again: the longest a key
    /// revoked through another replica keeps working.
    pub key_cache_ttl: Duration,
    /// Metering (the minimum charge) and when invoices become final.
    pub billing: eci_store::billing::BillingPolicy,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            default_requests_per_second: 100,
            key_cache_ttl: Duration::from_secs(2),
            billing: eci_store::billing::BillingPolicy::default(),
        }
    }
}

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database every replica shares.
    pub store: Store,
    /// Per-tenant request counts, shared by every replica.
    pub rate: RateWindows,
    /// The time every handler goes by.
    pub clock: Arc<dyn Clock>,
    /// The tunables the API was started with.
    pub config: Arc<ApiConfig>,
    /// Recently checked keys by the hash of their secret, so that a read costs one query, not three.
    pub principals: moka::sync::Cache<String, Principal>,
    /// What `/metrics` serves.
    pub metrics: Arc<metrics::Metrics>,
    /// Wakes this replica's scaler before its next tick: a group was created or changed.
    pub scaler_wake: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// The state of a replica, with an empty key cache and zeroed metrics.
    pub fn new(store: Store, rate: RateWindows, clock: Arc<dyn Clock>, config: ApiConfig) -> Self {
        let principals =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(config.key_cache_ttl).build();
        AppState {
            store,
            rate,
            clock,
            config: Arc::new(config),
            principals,
            metrics: Default::default(),
            scaler_wake: Default::default(),
        }
    }

    /// The same state, its store raising alerts to an [`alerts::Alerter`] that counts them in this
    /// state's metrics and delivers them as `config` says.
    pub fn raising_alerts(mut self, config: alerts::AlertConfig) -> Self {
        let alerter = alerts::Alerter::start(config, self.metrics.clone());
        self.store = self.store.raising_alerts_to(alerter);
        self
    }
}

/// Page sizes: 100 by default, at most 1000.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", "must be between 1 and 1000")),
    }
}

routes! { service_router, SERVICE_ROUTES;
    "/v1/openapi.json" => get(openapi::serve);
    "/healthz" => get(openapi::healthz);
    "/metrics" => get(metrics::serve);
}

/// Every `(method, path)` the API routes (methods lowercase, paths as the document writes them), for
/// the test that holds the router and the OpenAPI document to each other.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    [
        batches::ROUTES,
        groups::ROUTES,
        instances::ROUTES,
        reservations::ROUTES,
        fleet::ROUTES,
        admin::ROUTES,
        billing::ROUTES,
        risk::ROUTES,
        SERVICE_ROUTES,
    ]
    .concat()
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(batches::router())
        .merge(groups::router())
        .merge(instances::router())
        .merge(reservations::router())
        .merge(fleet::router())
        .merge(admin::router())
        .merge(billing::router())
        .merge(risk::router())
        .merge(service_router())
        // Without this, a known path with the wrong method is a 405 with an empty body.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see the Allow header",
            )
        })
        .fallback(|| async {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .route_layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
