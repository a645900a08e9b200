//! The control port: what a test or an operator does to the simulated IDC from outside its API, and
//! which no fault reaches, so a cut-off cluster can still be healed or have things happen in it.
//!
//! - `PUT /sim/fault` `{"fault": "none|unreachable|black_hole|slow|flapping", "millis": 500}`: the
//!   link's fault (see [`crate::fault`]); 204.
//! - `POST /sim/namespaces/{namespace}/{pods|virtualmachineinstances}/{name}/evict`, body optional
//!   `{"at": "<RFC 3339>"}` (default now): the node stops the workload, as
//!   [`crate::engine::evict`] describes; 200 with the object, a Kubernetes `Status` on error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::engine;
use crate::error::{Error, Result};
use crate::fault::{FaultBody, FaultSwitch};
use crate::resource::Resource;
use crate::store::Store;

#[derive(Clone)]
struct Control {
    switch: FaultSwitch,
    store: Arc<Store>,
}

/// The eviction body: when the node stopped the workload, by its clock.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvictBody {
    at: Option<DateTime<Utc>>,
}

/// The control port's routes.
pub fn router(switch: FaultSwitch, store: Arc<Store>) -> Router {
    Router::new()
        .route("/sim/fault", put(set_fault))
        .route("/sim/namespaces/{namespace}/{resource}/{name}/evict", post(evict))
        .with_state(Control { switch, store })
}

async fn set_fault(State(control): State<Control>, Json(body): Json<FaultBody>) -> Response {
    match body.to_fault() {
        Ok(fault) => {
            control.switch.set(fault);
            tracing::info!(?fault, "fault injected");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

async fn evict(
    State(control): State<Control>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    match evict_as_asked(&control.store, &namespace, &resource, &name, &body) {
        Ok(object) => Json(object).into_response(),
        Err(error) => error.into_response(),
    }
}

fn evict_as_asked(store: &Store, namespace: &str, resource: &str, name: &str, body: &[u8]) -> Result<Value> {
    let body: EvictBody = if body.is_empty() {
        EvictBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("eviction body: {e}")))?
    };
    let resource = Resource::from_plural("", resource)
        .or_else(|| Resource::from_plural("kubevirt.io", resource))
        .ok_or_else(|| Error::BadRequest(format!("unknown resource `{resource}`")))?;
    engine::evict(store, resource, namespace, name, body.at.unwrap_or_else(Utc::now))
}
