//! `SimCluster`: one simulated cluster's store and API server on its own loopback port, registered
//! with a control port for fault injection and load curves, its objects in memory or kept in a file.

use std::future::IntoFuture;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::api::{self, ApiState, ApiStats};
use crate::clock::SimClock;
use crate::control::ControlServer;
use crate::durable::{DurableError, ObjectFile};
use crate::engine::{self, EngineConfig, StageEngine};
use crate::fault::{self, FaultSwitch, LinkListener};
use crate::load::{LoadCurve, LoadCurves, LoadSetting};
use crate::node::NodeSpec;
use crate::resource::Resource;
use crate::selector::SelectorError;
use crate::store::{Store, StoreConfig};

/// Why a cluster could not start or stop cleanly.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The listening socket could not be bound.
    #[error("binding the api server of cluster {cluster} to {addr}")]
    BindFailed {
        /// The cluster's name.
        cluster: String,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The control port could not be bound.
    #[error("binding the control port of cluster {cluster}")]
    BindControlFailed {
        /// The cluster's name.
        cluster: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The objects the cluster kept could not be read back.
    #[error("loading the kept objects of cluster {cluster}")]
    LoadFailed {
        /// The cluster's name.
        cluster: String,
        /// What the objects file said.
        #[source]
        source: DurableError,
    },
    /// A namespace or node from the config could not be created.
    #[error("seeding cluster {cluster}")]
    SeedFailed {
        /// The cluster's name.
        cluster: String,
        /// What the store said.
        #[source]
        source: crate::Error,
    },
    /// The server stopped with an I/O error.
    #[error("serving the api of cluster {cluster}")]
    ServeFailed {
        /// The cluster's name.
        cluster: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The server task panicked or was cancelled.
    #[error("the api server task of cluster {cluster} did not finish")]
    TaskFailed {
        /// The cluster's name.
        cluster: String,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How to start a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// A name for logs (an IDC's id, say).
    pub name: String,
    /// Where the API server listens; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The control port (`PUT /sim/{name}/fault`) to register with, out of reach of the faults it
    /// sets; `None` starts one of the cluster's own on a free loopback port.
    pub control: Option<ControlServer>,
    /// Where the objects are kept beyond the process, under the cluster's name; `None` keeps them in
    /// memory only.
    pub objects: Option<Arc<ObjectFile>>,
    /// The store's tunables (history window, grace periods).
    pub store: StoreConfig,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Namespaces created at start (`default`, `kube-system`, `kube-public` unless changed).
    pub namespaces: Vec<String>,
    /// Nodes created at start.
    pub nodes: Vec<NodeSpec>,
    /// The stage engine (binding and booting pods); `None` leaves pods exactly as clients write them.
    pub engine: Option<EngineConfig>,
    /// Where the metrics and their load curves read the time (the system clock unless a test injects
    /// one); the store and the stage engine keep the system clock.
    pub clock: SimClock,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: "edge-sim".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: None,
            objects: None,
            store: StoreConfig::default(),
            bookmark_interval: Duration::from_secs(15),
            namespaces: vec!["default".into(), "kube-system".into(), "kube-public".into()],
            nodes: Vec::new(),
            engine: Some(EngineConfig::default()),
            clock: SimClock::system(),
        }
    }
}

impl SimConfig {
    /// Name the cluster.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Listen on this address instead of a free loopback port.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Register with this control port (shared by many clusters) instead of starting one.
    pub fn control(mut self, control: ControlServer) -> Self {
        self.control = Some(control);
        self
    }

    /// Keep the objects in this file (under the cluster's name), so that a cluster started again
    /// with the same name finds them as they were.
    pub fn objects(mut self, file: Arc<ObjectFile>) -> Self {
        self.objects = Some(file);
        self
    }

    /// Use these store tunables.
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// Send bookmarks this often.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Run the stage engine with these tunables.
    pub fn engine(mut self, engine: EngineConfig) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Run no stage engine: pods stay as clients write them (for tests that drive status themselves).
    pub fn without_engine(mut self) -> Self {
        self.engine = None;
        self
    }

    /// Create this node at start.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Read the metrics' time from `now` instead of the system clock, so that a test moves load curves
    /// on at will.
    pub fn clock(mut self, now: impl Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync + 'static) -> Self {
        self.clock = SimClock::from_fn(now);
        self
    }
}

/// Finishes the grace periods of the Pods a kept cluster had terminating when it stopped, at the
/// moments their `deletionTimestamp`s name (at once for those already past).
fn finish_kept_terminations(store: &Arc<Store>, shutdown: &watch::Receiver<bool>) {
    let pods = store.list(Resource::Pods, None, &Default::default()).map(|l| l.items).unwrap_or_default();
    for pod in pods {
        let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).map(str::to_string);
        let Some(at) = text("/metadata/deletionTimestamp") else { continue };
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(&at) else { continue };
        let delay = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default();
        let which = (
            Resource::Pods,
            text("/metadata/namespace"),
            text("/metadata/name").unwrap_or_default(),
            text("/metadata/uid").unwrap_or_default(),
        );
        api::finish_termination_after(store, shutdown, which, delay);
    }
}

/// One running simulated cluster. Dropping it signals shutdown; `shutdown()` also waits for the server.
#[derive(Debug)]
pub struct SimCluster {
    /// The cluster's name.
    name: String,
    /// Where its API server listens.
    addr: SocketAddr,
    /// The control port it is registered with.
    control: ControlServer,
    /// Whether the control port is the cluster's own, to stop with it.
    owns_control: bool,
    /// Its objects.
    store: Arc<Store>,
    /// Its request counters.
    stats: Arc<ApiStats>,
    /// Set to `true` to stop the server, watches and timers.
    shutdown: watch::Sender<bool>,
    /// The API server task.
    server: Option<JoinHandle<io::Result<()>>>,
    /// The stage engine task, if one runs.
    engine: Option<JoinHandle<()>>,
    /// The fault injected into every request (none by default).
    fault: FaultSwitch,
    /// The CPU its Pods use over time.
    load: Arc<LoadCurves>,
}

impl SimCluster {
    /// Create the store (or load what it kept), seed the namespaces and nodes it lacks, bind and serve.
    pub async fn start(config: SimConfig) -> Result<SimCluster, ClusterError> {
        let name = config.name.clone();
        let store = match &config.objects {
            Some(file) => Store::open(config.store.clone(), file.clone(), &name)
                .map_err(|source| ClusterError::LoadFailed { cluster: name.clone(), source })?,
            None => Store::new(config.store.clone()),
        };
        let store = Arc::new(store);
        let seed = |error| ClusterError::SeedFailed { cluster: name.clone(), source: error };
        // What a kept cluster already has stays as it is: its nodes carry what runs on them.
        let lacks = |resource, object_name: &str| store.get(resource, None, object_name).is_err();
        for namespace in config.namespaces.iter().filter(|ns| lacks(Resource::Namespaces, ns)) {
            store
                .create(Resource::Namespaces, None, json!({"metadata": {"name": namespace}}))
                .map_err(seed)?;
        }
        for node in config.nodes.iter().filter(|node| lacks(Resource::Nodes, &node.name)) {
            store.create(Resource::Nodes, None, node.to_object()).map_err(seed)?;
        }
        let bind = |addr: SocketAddr| async move {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            Ok::<_, io::Error>((listener, local))
        };
        let bind_failed = |addr| {
            let cluster = name.clone();
            move |source| ClusterError::BindFailed { cluster, addr, source }
        };
        let (listener, addr) = bind(config.addr).await.map_err(bind_failed(config.addr))?;
        let (control, owns_control) = match config.control.clone() {
            Some(control) => (control, false),
            None => {
                let control = ControlServer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .map_err(|source| ClusterError::BindControlFailed { cluster: name.clone(), source })?;
                (control, true)
            }
        };
        let (shutdown, signal) = watch::channel(false);
        let stats = Arc::new(ApiStats::default());
        let switch = FaultSwitch::default();
        let load = Arc::new(LoadCurves::new(config.clock.clone()));
        control.register(&name, switch.clone(), store.clone(), load.clone());
        let state = ApiState {
            store: store.clone(),
            bookmark_interval: config.bookmark_interval,
            stats: stats.clone(),
            shutdown: signal.clone(),
            link: switch.subscribe(),
            load: load.clone(),
            admission: Arc::default(),
        };
        finish_kept_terminations(&store, &signal);
        let engine = config.engine.clone().map(|cfg| StageEngine::spawn(store.clone(), cfg, signal.clone()));
        let app =
            api::router(state).layer(axum::middleware::from_fn_with_state(switch.clone(), fault::inject));
        let listener = LinkListener::new(listener, switch.clone()).map_err(bind_failed(addr))?;
        let stopped = |mut signal: watch::Receiver<bool>| async move {
            // An error means the sender is gone: that is a shutdown too.
            let _ = signal.wait_for(|stopped| *stopped).await;
        };
        let server =
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(signal)).into_future());
        debug!(cluster = %name, %addr, control = %control.url(&name), "simulated cluster started");
        Ok(SimCluster {
            name,
            addr,
            control,
            owns_control,
            store,
            stats,
            shutdown,
            server: Some(server),
            engine,
            fault: switch,
            load,
        })
    }

    /// Injects a fault into every request from now on (`Fault::None` heals the link). Watches already
    /// streaming end when the link goes down or starts flapping, and stall (no events, no end) in a
    /// black hole until the fault changes; clients then re-watch through the fault.
    pub fn set_fault(&self, fault: fault::Fault) {
        self.fault.set(fault);
    }

    /// Makes the Pods `selector` matches use `curve`'s cpu from now on by the cluster's clock, over any
    /// curve set before (see [`LoadCurves::set`]); what is stored comes back.
    pub fn set_load(&self, selector: &str, curve: LoadCurve) -> Result<LoadSetting, SelectorError> {
        self.load.set(selector, curve)
    }

    /// Removes every load curve: Pods use half their cpu request again.
    pub fn clear_load(&self) {
        self.load.clear();
    }

    /// The load curves in force, oldest first.
    pub fn load(&self) -> Vec<LoadSetting> {
        self.load.settings()
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The API server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control port's address (see [`crate::control`]), which no fault reaches.
    pub fn control_addr(&self) -> SocketAddr {
        self.control.addr()
    }

    /// The base URL of this cluster's control endpoints (`http://127.0.0.1:PORT/sim/{name}`).
    pub fn control_url(&self) -> String {
        self.control.url(&self.name)
    }

    /// The cluster's objects, for tests and the stage engine.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Request counters of the API server.
    pub fn stats(&self) -> &ApiStats {
        &self.stats
    }

    /// Stops a Pod or VMI as its node would under pressure, finished at `at` by the node's clock
    /// (see [`engine::evict`]); it works whatever fault the link has, as the node is on the far side.
    pub fn evict(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> crate::Result<Value> {
        engine::evict(&self.store, resource, namespace, name, at)
    }

    /// Add a node to the running cluster.
    pub fn add_node(&self, node: &NodeSpec) -> crate::Result<Value> {
        self.store.create(Resource::Nodes, None, node.to_object())
    }

    /// A kubeconfig (YAML) that points kubectl at this cluster, without auth.
    pub fn kubeconfig(&self) -> String {
        let name = &self.name;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {url}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: default\ncurrent-context: {name}\nusers:\n- name: {name}\n  user: {{}}\n",
            url = self.url()
        )
    }

    /// Stop serving: end watches, timers and the stage engine, let in-flight requests finish, wait for
    /// the server and the engine.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        self.shutdown.send_replace(true);
        let Some(server) = self.server.take() else { return Ok(()) };
        let cluster = self.name.clone();
        if let Some(engine) = self.engine.take() {
            engine.await.map_err(|source| ClusterError::TaskFailed { cluster: cluster.clone(), source })?;
        }
        self.control.unregister(&cluster);
        if self.owns_control {
            self.control
                .shutdown()
                .await
                .map_err(|source| ClusterError::ServeFailed { cluster: cluster.clone(), source })?;
        }
        match server.await {
            Ok(Ok(())) => {
                debug!(%cluster, "simulated cluster stopped");
                Ok(())
            }
            Ok(Err(source)) => Err(ClusterError::ServeFailed { cluster, source }),
            Err(source) => Err(ClusterError::TaskFailed { cluster, source }),
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        if self.server.is_some() {
            warn!(cluster = %self.name, "simulated cluster dropped without shutdown(); signalling it to stop");
            self.shutdown.send_replace(true);
        }
    }
}
