//! The clusters of the fleet and the instance manager's reconcilers over them: in the embedded
//! default, one in-process edge-sim cluster per IDC; in production, the kubeconfig context each IDC
//! names. Either way the reconcilers reach them through the instance manager's `ClusterClient`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use eci_core::{Fleet, Idc, IdcId};
use eci_edge_sim::store::Part;
use eci_edge_sim::{ControlServer, EngineConfig, NodeSpec, ObjectFile, Resource, SimCluster, SimConfig};
use eci_instance_manager::cluster::ClientError;
use eci_instance_manager::{ClusterClient, IdcReconciler, ManagerConfig, WorkQueue};
use eci_store::Store;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Each simulated server: 32 vCPU and 128 GiB, like the built-in fleet's.
const SIM_NODE_CPU_MILLIS: u64 = 32_000;
const SIM_NODE_MEMORY_MIB: u64 = 128 * 1024;

/// The running reconcilers (and, embedded, the clusters they drive and their control port).
pub struct FleetClusters {
    reconcilers: Vec<JoinHandle<()>>,
    simulated: Vec<SimCluster>,
    control: Option<ControlServer>,
}

/// How the embedded default's clusters are simulated.
pub struct Simulated<'a> {
    /// How long a Pod takes from scheduled to running.
    pub boot_delay: Duration,
    /// The SQLite file every cluster keeps its objects in.
    pub objects: &'a Path,
    /// The deletion guard's base URL and certificate authority, installed into every cluster.
    pub guard: Option<(&'a str, &'a str)>,
}

/// A simulated cluster shaped like the IDC: as many 32-vCPU nodes as its capacity holds, its GPUs
/// spread over them.
fn sim_config(index: usize, idc: &Idc, boot_delay: Duration) -> SimConfig {
    let nodes = idc.capacity.cpu.0.div_ceil(SIM_NODE_CPU_MILLIS).max(1);
    let mut config =
        SimConfig::default().name(idc.id.0.clone()).engine(EngineConfig::default().boot_delay(boot_delay));
    let gpus_per_node = u64::from(idc.capacity.gpu).div_ceil(nodes);
    for n in 0..nodes {
        let gpus = u64::from(idc.capacity.gpu).saturating_sub(n * gpus_per_node).min(gpus_per_node);
        config = config.node(
            NodeSpec::new(format!("{}-node-{n}", idc.id))
                .cpu_millis(SIM_NODE_CPU_MILLIS)
                .memory_mib(SIM_NODE_MEMORY_MIB)
                .gpus(u32::try_from(gpus).unwrap_or(u32::MAX))
                .pods(250)
                .internal_ip(format!("100.{}.{}.{}", 64 + index / 256, index % 256, n + 1)),
        );
    }
    config
}

/// How long a start waits for the first capacity readings of clusters never read before.
const FIRST_READINGS_WAIT: Duration = Duration::from_secs(30);

/// Waits until each of `idcs` has had its cluster read at least once, so that the first request
/// after a start meets IDCs that sell what their clusters offer rather than nothing. Readings are
/// kept, so only a new IDC is waited for; after [`FIRST_READINGS_WAIT`] the API serves anyway and the
/// log names what is still unread.
async fn wait_for_first_readings(store: &Store, idcs: &[IdcId]) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    loop {
        let reports = store.idc_reports().await?;
        let unread: Vec<&str> = reports
            .iter()
            .filter(|r| r.cluster.is_none() && idcs.contains(&r.idc.id))
            .map(|r| r.idc.id.0.as_str())
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= FIRST_READINGS_WAIT {
            tracing::warn!(
                unread = unread.len(),
                first = unread[0],
                "some clusters are not read yet; they sell nothing until they are"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stores the deletion guard's `ValidatingWebhookConfiguration` in `sim`, as `kubectl apply` would
/// into a real cluster: the cluster keeps its objects across restarts, and the authority is new at
/// every start, so the one already there is replaced.
fn install_guard(sim: &SimCluster, url: &str, ca_pem: &str) -> anyhow::Result<()> {
    let configuration = eci_instance_manager::manifest::webhook_configuration(url, ca_pem);
    let name = eci_instance_manager::manifest::WEBHOOK_CONFIGURATION;
    let body = serde_json::to_value(&configuration)?;
    let store = sim.store();
    match store.create(Resource::ValidatingWebhookConfigurations, None, body.clone()) {
        Err(eci_edge_sim::Error::AlreadyExists { .. }) => {
            store.update(Resource::ValidatingWebhookConfigurations, None, name, body, Part::Main)?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

impl FleetClusters {
    /// Starts one simulated cluster per IDC, each finding what it kept in `simulated.objects`, one
    /// control port for all of them, and a reconciler for each.
    pub async fn simulated(
        fleet: &Fleet,
        simulated: Simulated<'_>,
        store: &Store,
        queue: &WorkQueue,
        manager: &ManagerConfig,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<FleetClusters> {
        let objects = ObjectFile::open(simulated.objects)?;
        let control = ControlServer::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("cannot start the simulated clusters' control port")?;
        let mut clusters =
            FleetClusters { reconcilers: Vec::new(), simulated: Vec::new(), control: Some(control.clone()) };
        for (index, idc) in fleet.idcs.iter().enumerate() {
            let config = sim_config(index, idc, simulated.boot_delay)
                .objects(objects.clone())
                .control(control.clone());
            let sim = SimCluster::start(config)
                .await
                .with_context(|| format!("cannot start the simulated cluster of {}", idc.id))?;
            if let Some((url, ca_pem)) = simulated.guard {
                install_guard(&sim, &crate::webhook::idc_url(url, &idc.id), ca_pem).with_context(|| {
                    format!("cannot install the deletion guard into the cluster of {}", idc.id)
                })?;
            }
            let client = ClusterClient::for_url(&sim.url())?;
            clusters.spawn(idc, client, store, queue, manager, shutdown);
            clusters.simulated.push(sim);
        }
        let idcs: Vec<IdcId> = fleet.idcs.iter().map(|i| i.id.clone()).collect();
        wait_for_first_readings(store, &idcs).await?;
        Ok(clusters)
    }

    /// Starts a reconciler for every IDC whose kubeconfig context works; the others are left alone
    /// (and say so loudly), since the platform cannot reach them. Returns once each cluster reached
    /// was read at least once (or after a bounded wait).
    pub async fn from_kubeconfig(
        fleet: &Fleet,
        store: &Store,
        queue: &WorkQueue,
        manager: &ManagerConfig,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<FleetClusters> {
        let mut clusters = FleetClusters { reconcilers: Vec::new(), simulated: Vec::new(), control: None };
        let mut reached = Vec::new();
        for idc in &fleet.idcs {
            let Some(context) = &idc.kube_context else {
                tracing::warn!(idc.id = %idc.id, "IDC names no kubeconfig context; its instances stay pending");
                continue;
            };
            // One IDC that cannot be reached must not keep the control plane from serving the rest.
            let client = match ClusterClient::from_kubeconfig_context(context).await {
                Ok(client) => client,
                Err(error @ ClientError::LoadKubeconfigFailed(_)) => {
                    tracing::error!(idc.id = %idc.id, context, error = %error, "kubeconfig context unusable; its instances stay pending");
                    continue;
                }
                Err(error) => {
                    tracing::error!(idc.id = %idc.id, context, error = %error, "cannot build a client; its instances stay pending");
                    continue;
                }
            };
            clusters.spawn(idc, client, store, queue, manager, shutdown);
            reached.push(idc.id.clone());
        }
        wait_for_first_readings(store, &reached).await?;
        Ok(clusters)
    }

    fn spawn(
        &mut self,
        idc: &Idc,
        client: ClusterClient,
        store: &Store,
        queue: &WorkQueue,
        manager: &ManagerConfig,
        shutdown: &watch::Receiver<bool>,
    ) {
        let reconciler =
            IdcReconciler::start(idc.id.clone(), client, store.clone(), queue, manager.for_idc(idc));
        self.reconcilers.push(tokio::spawn(reconciler.run(shutdown.clone())));
    }

    /// Writes a kubeconfig with one context per simulated cluster, named after its IDC, so that the
    /// real kubectl looks inside an IDC the way an operator looks inside a real one. The clusters
    /// take new ports at every start, so the file is written anew each time.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let named = |name: &str, key: &str, value: serde_json::Value| json!({ "name": name, key: value });
        let clusters: Vec<_> =
            self.simulated.iter().map(|s| named(s.name(), "cluster", json!({ "server": s.url() }))).collect();
        let contexts: Vec<_> = self
            .simulated
            .iter()
            .map(|s| named(s.name(), "context", json!({ "cluster": s.name(), "user": "eci" })))
            .collect();
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "contexts": contexts,
            "users": [{ "name": "eci", "user": {} }],
            "current-context": self.simulated.first().map(SimCluster::name),
        });
        let text = serde_yaml::to_string(&config).context("cannot write the kubeconfig")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Waits for the reconcilers to stop (after the shutdown signal), then stops the simulated clusters.
    pub async fn drain(self) {
        for r in self.reconcilers {
            let _ = r.await;
        }
        for sim in self.simulated {
            if let Err(error) = sim.shutdown().await {
                tracing::warn!(error = ?error, "a simulated cluster did not stop cleanly");
            }
        }
        if let Some(control) = self.control
            && let Err(error) = control.shutdown().await
        {
            tracing::warn!(error = ?error, "the simulated clusters' control port did not stop cleanly");
        }
    }
}
