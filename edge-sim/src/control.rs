//! The control port: what a test or an operator does to a simulated IDC from outside its API, and
//! which no fault reaches, so a cut-off cluster can still be healed or have things happen in it. One
//! [`ControlServer`] serves every cluster of a process (a listener each would cost a descriptor per
//! cluster), each under its name:
//!
//! - `PUT /sim/{cluster}/fault` `{"fault": "none|unreachable|black_hole|slow|flapping", "millis": 500}`:
//!   the link's fault (see [`crate::fault`]); 204.
//! - `PUT /sim/{cluster}/load` `{"selector": "eci.io/group=g-1", "curve": {"kind": "steps", …}}`: the
//!   Pods the label selector matches use the curve's cpu from now on (see [`crate::load`]); 200 with
//!   what was stored, `{"selector", "curve", "since"}`. `GET` lists them (`{"items": […]}`, oldest
//!   first), `DELETE` removes them all (204). A bad body, selector or curve is a 400 `Status`.
//! - `POST /sim/{cluster}/namespaces/{namespace}/{pods|virtualmachineinstances}/{name}/evict`, body
//!   optional `{"at": "<RFC 3339>"}` (default now): the node stops the workload, as
//!   [`crate::engine::evict`] describes; 200 with the object, a Kubernetes `Status` on error.
//!
//! An unknown cluster is a 404 `Status`.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine;
use crate::error::{Error, Result};
use crate::fault::{FaultBody, FaultSwitch};
use crate::load::{LoadCurve, LoadCurves, LoadSetting};
use crate::resource::Resource;
use crate::status::failure_response;
use crate::store::Store;

/// What the control port reaches in one cluster.
#[derive(Clone)]
struct Controlled {
    switch: FaultSwitch,
    store: Arc<Store>,
    load: Arc<LoadCurves>,
}

type Registry = Arc<RwLock<HashMap<String, Controlled>>>;

/// The one control listener of a process's simulated clusters. Cheap to clone; clusters register
/// under their name when they start and leave when they stop.
#[derive(Clone)]
pub struct ControlServer {
    addr: SocketAddr,
    clusters: Registry,
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<JoinHandle<io::Result<()>>>>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Binds `addr` (port 0: a free one) and serves until [`shutdown`](Self::shutdown).
    pub async fn start(addr: SocketAddr) -> io::Result<ControlServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let clusters = Registry::default();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(
            axum::serve(listener, router(clusters.clone()))
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stopped| *stopped).await;
                })
                .into_future(),
        );
        Ok(ControlServer { addr, clusters, stop, task: Arc::new(Mutex::new(Some(task))) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of `cluster`'s control endpoints (`http://127.0.0.1:PORT/sim/{cluster}`).
    pub fn url(&self, cluster: &str) -> String {
        format!("http://{}/sim/{cluster}", self.addr)
    }

    pub(crate) fn register(
        &self,
        cluster: &str,
        switch: FaultSwitch,
        store: Arc<Store>,
        load: Arc<LoadCurves>,
    ) {
        self.registry_mut().insert(cluster.to_string(), Controlled { switch, store, load });
    }

    pub(crate) fn unregister(&self, cluster: &str) {
        self.registry_mut().remove(cluster);
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Controlled>> {
        self.clusters.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops listening and waits for requests in flight.
    pub async fn shutdown(&self) -> io::Result<()> {
        self.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        match task {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

/// The eviction body: when the node stopped the workload, by its clock.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvictBody {
    at: Option<DateTime<Utc>>,
}

/// The body of `PUT /sim/{cluster}/load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBody {
    selector: String,
    curve: LoadCurve,
}

fn router(clusters: Registry) -> Router {
    Router::new()
        .route("/sim/{cluster}/fault", put(set_fault))
        .route("/sim/{cluster}/load", put(set_load).get(list_load).delete(clear_load))
        .route("/sim/{cluster}/namespaces/{namespace}/{resource}/{name}/evict", post(evict))
        .with_state(clusters)
}

fn find(clusters: &Registry, cluster: &str) -> Option<Controlled> {
    clusters.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(cluster).cloned()
}

fn no_such_cluster(cluster: &str) -> Response {
    failure_response(StatusCode::NOT_FOUND, "NotFound", &format!("no simulated cluster named {cluster:?}"))
}

async fn set_fault(
    State(clusters): State<Registry>,
    Path(cluster): Path<String>,
    Json(body): Json<FaultBody>,
) -> Response {
    let Some(controlled) = find(&clusters, &cluster) else { return no_such_cluster(&cluster) };
    match body.to_fault() {
        Ok(fault) => {
            controlled.switch.set(fault);
            tracing::info!(%cluster, ?fault, "fault injected");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

async fn set_load(State(clusters): State<Registry>, Path(cluster): Path<String>, body: Bytes) -> Response {
    let Some(controlled) = find(&clusters, &cluster) else { return no_such_cluster(&cluster) };
    match load_as_asked(&controlled.load, &body) {
        Ok(setting) => {
            tracing::info!(%cluster, selector = %setting.selector, "load curve set");
            Json(setting).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn load_as_asked(load: &LoadCurves, body: &[u8]) -> Result<LoadSetting> {
    let body: LoadBody =
        serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("load body: {e}")))?;
    Ok(load.set(&body.selector, body.curve)?)
}

async fn list_load(State(clusters): State<Registry>, Path(cluster): Path<String>) -> Response {
    let Some(controlled) = find(&clusters, &cluster) else { return no_such_cluster(&cluster) };
    Json(json!({"items": controlled.load.settings()})).into_response()
}

async fn clear_load(State(clusters): State<Registry>, Path(cluster): Path<String>) -> Response {
    let Some(controlled) = find(&clusters, &cluster) else { return no_such_cluster(&cluster) };
    controlled.load.clear();
    tracing::info!(%cluster, "load curves cleared");
    StatusCode::NO_CONTENT.into_response()
}

async fn evict(
    State(clusters): State<Registry>,
    Path((cluster, namespace, resource, name)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(controlled) = find(&clusters, &cluster) else { return no_such_cluster(&cluster) };
    match evict_as_asked(&controlled.store, &namespace, &resource, &name, &body) {
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
