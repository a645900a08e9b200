//! `SimCluster`: one simulated cluster's store and API server on its own loopback port, and a control
//! port for fault injection.

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
use crate::control;
use crate::engine::{self, EngineConfig, StageEngine};
use crate::fault::{self, FaultSwitch, LinkListener};
use crate::node::NodeSpec;
use crate::resource::Resource;
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
    /// Where the control endpoint (`PUT /sim/fault`) listens, out of reach of the faults it sets.
    pub control_addr: SocketAddr,
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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: "edge-sim".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreConfig::default(),
            bookmark_interval: Duration::from_secs(15),
            namespaces: vec!["default".into(), "kube-system".into(), "kube-public".into()],
            nodes: Vec::new(),
            engine: Some(EngineConfig::default()),
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

    /// Serve the control endpoint on this address instead of a free loopback port.
    pub fn control_addr(mut self, addr: SocketAddr) -> Self {
        self.control_addr = addr;
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
}

/// One running simulated cluster. Dropping it signals shutdown; `shutdown()` also waits for the server.
#[derive(Debug)]
pub struct SimCluster {
    /// The cluster's name.
    name: String,
    /// Where its API server listens.
    addr: SocketAddr,
    /// Where its control endpoint listens.
    control_addr: SocketAddr,
    /// Its objects.
    store: Arc<Store>,
    /// Its request counters.
    stats: Arc<ApiStats>,
    /// Set to `true` to stop the server, watches and timers.
    shutdown: watch::Sender<bool>,
    /// The API server task.
    server: Option<JoinHandle<io::Result<()>>>,
    /// The control endpoint's task.
    control: Option<JoinHandle<io::Result<()>>>,
    /// The stage engine task, if one runs.
    engine: Option<JoinHandle<()>>,
    /// The fault injected into every request (none by default).
    fault: FaultSwitch,
}

impl SimCluster {
    /// Create the store, seed namespaces and nodes, bind and serve.
    pub async fn start(config: SimConfig) -> Result<SimCluster, ClusterError> {
        let name = config.name.clone();
        let store = Arc::new(Store::new(config.store.clone()));
        let seed = |error| ClusterError::SeedFailed { cluster: name.clone(), source: error };
        for namespace in &config.namespaces {
            store
                .create(Resource::Namespaces, None, json!({"metadata": {"name": namespace}}))
                .map_err(seed)?;
        }
        for node in &config.nodes {
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
        let (control_listener, control_addr) =
            bind(config.control_addr).await.map_err(bind_failed(config.control_addr))?;
        let (shutdown, signal) = watch::channel(false);
        let stats = Arc::new(ApiStats::default());
        let switch = FaultSwitch::default();
        let state = ApiState {
            store: store.clone(),
            bookmark_interval: config.bookmark_interval,
            stats: stats.clone(),
            shutdown: signal.clone(),
            link: switch.subscribe(),
        };
        let engine = config.engine.clone().map(|cfg| StageEngine::spawn(store.clone(), cfg, signal.clone()));
        let app =
            api::router(state).layer(axum::middleware::from_fn_with_state(switch.clone(), fault::inject));
        let listener = LinkListener::new(listener, switch.clone()).map_err(bind_failed(addr))?;
        let stopped = |mut signal: watch::Receiver<bool>| async move {
            // An error means the sender is gone: that is a shutdown too.
            let _ = signal.wait_for(|stopped| *stopped).await;
        };
        let server = tokio::spawn(
            axum::serve(listener, app).with_graceful_shutdown(stopped(signal.clone())).into_future(),
        );
        let control = tokio::spawn(
            axum::serve(control_listener, control::router(switch.clone(), store.clone()))
                .with_graceful_shutdown(stopped(signal))
                .into_future(),
        );
        debug!(cluster = %name, %addr, %control_addr, "simulated cluster started");
        Ok(SimCluster {
            name,
            addr,
            control_addr,
            store,
            stats,
            shutdown,
            server: Some(server),
            control: Some(control),
            engine,
            fault: switch,
        })
    }

    /// Injects a fault into every request from now on (`Fault::None` heals the link). Watches already
    /// streaming end when the link goes down or starts flapping, and stall (no events, no end) in a
    /// black hole until the fault changes; clients then re-watch through the fault.
    pub fn set_fault(&self, fault: fault::Fault) {
        self.fault.set(fault);
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

    /// The control endpoint's address (see [`control`]), which no fault reaches.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
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
        if let Some(control) = self.control.take() {
            match control.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Err(ClusterError::ServeFailed { cluster, source }),
                Err(source) => return Err(ClusterError::TaskFailed { cluster, source }),
            }
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
