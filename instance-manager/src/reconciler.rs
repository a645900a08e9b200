//! One reconciler per IDC. Level-triggered: each pass compares what the database wants (the IDC's
//! live instances) with what the cluster has (Pods and VMIs labelled as ours, kept by kube-runtime
//! reflectors) and closes the gap, so running a pass twice, or after a crash, does no harm.
//!
//! A pass: (1) creates the objects of pending instances, named after the instance so a retried or
//! repeated create meets `AlreadyExists` instead of making a second Pod; (2) writes back what the
//! cluster reports (`creating`, `running` with the IP and ssh endpoint, `failed` with the reason);
//! (3) deletes the objects of released (`stopping`) instances and ends them (`terminated`, capacity
//! given back) once the objects are gone; deletes objects no live instance owns (orphans); and fails
//! live instances whose object vanished.
//!
//! Edge autonomy: a pass starts with a bounded probe of the cluster. An IDC that misses several in a
//! row is marked `disconnected` and its instances `unknown`, and the pass does nothing else: no
//! instance is failed, re-created elsewhere or released for a broken link. The first answer after
//! that marks it active again, and the normal pass reconciles what changed meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};
use chrono::Utc;
use eci_core::{Clock, IdcId, InstanceId, InstanceState, Runtime, SshEndpoint, SystemClock};
use eci_store::Store;
use eci_store::instances::{Desired, Observed};
use futures::{FutureExt, StreamExt, stream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, Namespace, Node, Pod, PodSpec, PodStatus, Secret, Service,
};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, watch};

use crate::kubevirt::VirtualMachineInstance;
use crate::manifest::{self, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, ManifestConfig};

/// Tunables of the instance manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub manifest: ManifestConfig,
    /// Pending instances taken per pass.
    pub batch_size: u32,
    /// Create requests in flight at once per IDC, so a big batch cannot flood a small cluster.
    pub concurrency: usize,
    /// A pass runs at least this often even when nothing changed.
    pub resync: Duration,
    /// How long a just-created object may stay unseen before its instance counts as vanished.
    pub vanish_grace: Duration,
    /// How long the cluster may take to answer the reachability probe; a black-holed link must not
    /// hang the pass.
    pub probe_timeout: Duration,
    /// A pass within this long of an answered probe does not probe again: a partition is noticed
    /// this much later, and a busy IDC is not asked `/version` on every pass.
    pub probe_interval: Duration,
    /// Failed probes in a row before the IDC counts as disconnected, so one lost packet does not
    /// turn a whole IDC's instances `unknown`.
    pub failures_before_disconnect: u32,
    /// Requests per second to one IDC's cluster (creates, deletes, lookups), and the burst allowed
    /// above that: an edge cluster's API server is small and serves its own kubelets too.
    pub requests_per_second: u32,
    pub request_burst: u32,
    /// How long one request may take before it counts as failed (and is tried again): a link that
    /// starts hanging mid-pass must not hold the pass.
    pub request_timeout: Duration,
    /// A request that fails for a passing reason (timeout, connection lost, 429, 5xx) is tried again
    /// this many times, after exponential, jittered delays starting at `retry_delay`.
    pub request_retries: usize,
    pub retry_delay: Duration,
    /// An instance whose objects could not be created waits before its next attempt, the wait
    /// doubling (with jitter) up to this, so a broken IDC is not hammered on every pass.
    pub max_create_backoff: Duration,
    /// Where the moments written to the store come from (an instance running, ending, an IDC lost):
    /// billing meters them, so tests move this clock to run a month in seconds. Pacing, timeouts
    /// and retries are about the link, and keep to real time.
    pub clock: Arc<dyn Clock>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            manifest: ManifestConfig::default(),
            batch_size: 500,
            concurrency: 32,
            resync: Duration::from_secs(2),
            vanish_grace: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            failures_before_disconnect: 3,
            requests_per_second: 200,
            request_burst: 400,
            request_timeout: Duration::from_secs(10),
            request_retries: 3,
            retry_delay: Duration::from_millis(50),
            max_create_backoff: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A client for an IDC's cluster as the reconciler wants it: without kube's built-in retries, which
/// would wait out a partition for minutes inside one request; the reconciler paces, times out and
/// retries requests itself, and treats a cluster that keeps failing as disconnected.
pub fn cluster_client(mut config: kube::Config) -> kube::Result<Client> {
    config.default_retry = false;
    Client::try_from(config)
}

impl ManagerConfig {
    /// This configuration with what the IDC sets for itself: its rich containers' RuntimeClass and
    /// its ssh ingress.
    pub fn for_idc(&self, idc: &eci_core::Idc) -> ManagerConfig {
        let mut config = self.clone();
        if let Some(class) = &idc.rich_runtime_class {
            config.manifest.rich_runtime_class = class.clone();
        }
        config.manifest.ssh_ingress_host = idc.ssh_ingress_host.clone();
        config
    }
}

/// Why a pass (or a step of it) failed; the pass is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing instances failed")]
    Store(#[from] eci_store::Error),
    #[error("the cluster refused to {action} `{name}`")]
    Cluster {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub created: usize,
    pub updated: usize,
    pub orphans_deleted: usize,
    /// Objects of released (`stopping`) instances deleted.
    pub stopped: usize,
    /// Released instances whose objects are gone, now `terminated` with their capacity given back.
    pub terminated: usize,
    /// Live instances whose objects vanished, now `failed`.
    pub vanished: usize,
    /// Instances the cluster refused for good (an invalid object), now `failed`.
    pub refused: usize,
    pub errors: usize,
    /// The cluster did not answer the probe; nothing else was done.
    pub unreachable: bool,
}

/// The reconciler of one IDC's cluster.
pub struct IdcReconciler {
    idc: IdcId,
    client: Client,
    store: Store,
    config: ManagerConfig,
    /// Namespaces known to exist, so each is created once per process.
    namespaces: Mutex<HashSet<String>>,
    /// Objects created but not yet seen by the reflectors, and when.
    awaiting: Mutex<HashMap<InstanceId, Instant>>,
    pods: Cache<Pod>,
    vmis: Cache<VirtualMachineInstance>,
    /// Raised by the reflectors when the cluster changes.
    changed: Arc<Notify>,
    /// Raised by the store when the IDC gets work: new pending instances (handed over with the
    /// signal), instances to stop.
    work: Arc<eci_store::signals::IdcWork>,
    /// Instances whose objects are being created, so the two loops never create one twice at once.
    in_flight: Mutex<HashSet<InstanceId>>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    /// Failed reachability probes in a row.
    failures: AtomicU32,
    /// When the cluster last answered a probe.
    answered_at: Mutex<Option<Instant>>,
    /// Whether this reconciler marked the IDC disconnected (or has not yet seen it answer).
    disconnected: AtomicBool,
    /// Paces every request this reconciler makes to the cluster.
    limiter: DefaultDirectRateLimiter,
    /// Instances whose creation failed, and when they may be tried again.
    parked: Mutex<HashMap<InstanceId, Parked>>,
}

/// A reconciler that goes away takes its reflectors with it: a control plane that stops (or a
/// test that restarts one) leaves no watch running against the cluster.
impl Drop for IdcReconciler {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

/// An instance waiting out a failed creation.
struct Parked {
    delays: ExponentialBackoff,
    until: Instant,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Failures that may pass if the same request is sent again shortly: the server was busy or
/// unavailable, or the connection broke. Anything the server refused on its merits is not.
fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// The cluster will never take this object as it is (it is invalid, or a field is not allowed):
/// trying again cannot help, so its instance fails with the cluster's message.
fn refusal(error: &Error) -> Option<String> {
    match error {
        Error::Cluster { source: kube::Error::Api(s), action, .. } if s.code == 400 || s.code == 422 => {
            Some(format!("the cluster refused to {action}: {}", s.message))
        }
        _ => None,
    }
}

/// Container states that will not get better by waiting.
const FATAL_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

/// What a Pod's status says about its instance; the ssh endpoint is filled in by the caller.
pub fn observe_pod(pod: &Pod) -> Observed {
    let Some(status) = &pod.status else { return Observed::Creating };
    match status.phase.as_deref() {
        Some("Running") if status.pod_ip.is_some() => {
            Observed::Running { ip: status.pod_ip.clone(), ssh: None }
        }
        Some("Failed") => Observed::Failed {
            reason: status
                .reason
                .clone()
                .or_else(|| status.message.clone())
                .unwrap_or_else(|| "the Pod failed".to_string()),
            ended_at: containers_finished_at(status),
        },
        Some("Succeeded") => Observed::Failed {
            reason: "its container exited".to_string(),
            ended_at: containers_finished_at(status),
        },
        _ => {
            let waiting = status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .find(|w| w.reason.as_deref().is_some_and(|r| FATAL_WAITING_REASONS.contains(&r)));
            match waiting {
                Some(w) => Observed::Failed {
                    reason: match (&w.reason, &w.message) {
                        (Some(r), Some(m)) => format!("{r}: {m}"),
                        (Some(r), None) => r.clone(),
                        _ => "the container cannot start".to_string(),
                    },
                    ended_at: None,
                },
                None => Observed::Creating,
            }
        }
    }
}

/// When the last of a stopped Pod's containers finished, as the kubelet recorded it.
fn containers_finished_at(status: &PodStatus) -> Option<chrono::DateTime<Utc>> {
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .filter_map(|t| chrono::DateTime::from_timestamp_millis(t.0.as_millisecond()))
        .max()
}

/// What a VMI's status says about its instance.
pub fn observe_vmi(vmi: &VirtualMachineInstance) -> Observed {
    let Some(status) = &vmi.status else { return Observed::Creating };
    match status.phase.as_deref() {
        Some("Running") => {
            let ip = status.interfaces.iter().find_map(|i| i.ip_address.clone());
            if ip.is_some() { Observed::Running { ip, ssh: None } } else { Observed::Creating }
        }
        Some(phase @ ("Failed" | "Succeeded")) => Observed::Failed {
            reason: status.reason.clone().unwrap_or_else(|| "the virtual machine stopped".to_string()),
            ended_at: status
                .phase_transition_timestamps
                .iter()
                .filter(|t| t.phase.as_deref() == Some(phase))
                .filter_map(|t| t.phase_transition_timestamp)
                .max(),
        },
        _ => Observed::Creating,
    }
}

impl IdcReconciler {
    /// Starts the reflectors that keep this IDC's Pods and VMIs in memory.
    pub fn start(idc: IdcId, client: Client, store: Store, config: ManagerConfig) -> Self {
        let changed = Arc::new(Notify::new());
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let (pods, pods_writer) = reflector::store::<Pod>();
        let (vmis, vmis_writer) = reflector::store::<VirtualMachineInstance>();
        let mut watchers = Vec::new();
        let pod_events = reflector::reflector(
            pods_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(&selector))
                .modify(trim_pod),
        )
        .default_backoff();
        watchers.push(tokio::spawn(drive(pod_events, changed.clone(), idc.clone(), "pods")));
        let vmi_events = reflector::reflector(
            vmis_writer,
            watcher(
                Api::<VirtualMachineInstance>::all(client.clone()),
                watcher::Config::default().labels(&selector),
            )
            .modify(trim_vmi),
        )
        .default_backoff();
        watchers.push(tokio::spawn(drive(vmi_events, changed.clone(), idc.clone(), "vmis")));
        let per_second = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.request_burst).unwrap_or(per_second);
        let work = store.idc_signal(&idc);
        IdcReconciler {
            idc,
            client,
            store,
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            parked: Mutex::default(),
            config,
            namespaces: Mutex::default(),
            awaiting: Mutex::default(),
            pods,
            vmis,
            changed,
            work,
            in_flight: Mutex::default(),
            watchers,
            failures: AtomicU32::new(0),
            answered_at: Mutex::default(),
            // Until the cluster first answers, the IDC's stored status may be a disconnection recorded
            // before a restart; the first good probe clears it.
            disconnected: AtomicBool::new(true),
        }
    }

    /// Creates new instances as soon as the store hands them over, and runs passes whenever the
    /// cluster changes and at least every `resync`, until `shutdown` turns true.
    #[tracing::instrument(skip_all, fields(idc.id = %self.idc))]
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        // New work must not wait behind a pass busy with what the cluster reported, so creating
        // runs in a loop of its own beside the passes.
        let mut stop_creating = shutdown.clone();
        let creating = async {
            loop {
                tokio::select! {
                    _ = stop_creating.changed() => break,
                    () = self.work.notified() => {}
                }
                let mut report = PassReport::default();
                let created = match self.probe().await {
                    Ok(true) => match self.work.take_new() {
                        // A wake-up without new instances (a release, say): look in the store.
                        new if new.is_empty() => self.create_pending(&mut report).await,
                        new => self.create(new, &mut report).await,
                    },
                    other => other.map(drop),
                };
                if let Err(error) = created {
                    tracing::warn!(error = ?error, "creating new instances failed; will retry");
                }
            }
        };
        // A change in the cluster needs only an observation; the store's pending instances (those
        // not handed over, parked ones due again) are looked for at every resync.
        let mut stop_passes = shutdown;
        let passes = async {
            let mut resync = tokio::time::interval(self.config.resync);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let full = tokio::select! {
                    _ = stop_passes.changed() => break,
                    _ = resync.tick() => true,
                    () = self.changed.notified() => false,
                };
                let result = if full { self.pass().await } else { self.observe_pass().await };
                match result {
                    Ok(report) if report != PassReport::default() => tracing::debug!(?report, "pass done"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = ?error, "pass failed; will retry"),
                }
            }
        };
        tokio::join!(creating, passes);
    }

    /// The moment to record, by the configured clock.
    fn now(&self) -> chrono::DateTime<Utc> {
        self.config.clock.now()
    }

    /// Waits until both reflectors hold a complete first list of the cluster.
    pub async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.vmis.wait_until_ready().await;
    }

    /// Whether the cluster answers; after `failures_before_disconnect` misses in a row the IDC turns
    /// `disconnected` and its instances `unknown`, and the first answer after that turns it back.
    async fn probe(&self) -> Result<bool> {
        // Passes come in quick succession while a batch starts; one answer vouches for the link a while.
        let recent = self
            .answered_at
            .lock()
            .expect("answered_at lock")
            .is_some_and(|t| t.elapsed() < self.config.probe_interval);
        if recent {
            return Ok(true);
        }
        let answered = matches!(
            tokio::time::timeout(self.config.probe_timeout, self.client.apiserver_version()).await,
            Ok(Ok(_))
        );
        if answered {
            *self.answered_at.lock().expect("answered_at lock") = Some(Instant::now());
            self.failures.store(0, Ordering::Relaxed);
            if self.disconnected.swap(false, Ordering::Relaxed) {
                self.store.mark_idc_reconnected(&self.idc, self.now()).await?;
                tracing::info!(idc.id = %self.idc, "cluster answers; reconciling");
            }
            return Ok(true);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.config.failures_before_disconnect.max(1) {
            let unknown = self.store.mark_idc_disconnected(&self.idc, self.now()).await?;
            if !self.disconnected.swap(true, Ordering::Relaxed) || unknown > 0 {
                tracing::warn!(idc.id = %self.idc, unknown, "cluster unreachable: IDC disconnected, its instances unknown; nothing is failed or re-created");
            }
        }
        Ok(false)
    }

    /// One level-triggered pass over the IDC: creates what the store holds pending, then observes.
    pub async fn pass(&self) -> Result<PassReport> {
        let mut report = PassReport::default();
        if !self.probe().await? {
            report.unreachable = true;
            return Ok(report);
        }
        self.create_pending(&mut report).await?;
        self.observe(&mut report).await?;
        Ok(report)
    }

    /// A pass that only writes back what the cluster reports.
    async fn observe_pass(&self) -> Result<PassReport> {
        let mut report = PassReport::default();
        if !self.probe().await? {
            report.unreachable = true;
            return Ok(report);
        }
        self.observe(&mut report).await?;
        Ok(report)
    }

    /// Creates the objects of the IDC's pending instances in the store (those not parked).
    async fn create_pending(&self, report: &mut PassReport) -> Result<()> {
        let mut pending = self.store.pending_in_idc(&self.idc, self.config.batch_size).await?;
        {
            let now = Instant::now();
            let parked = self.parked.lock().expect("parked lock");
            pending.retain(|d| parked.get(&d.instance.id).is_none_or(|p| p.until <= now));
        }
        self.create(pending, report).await
    }

    /// Creates the objects of these pending instances and records them `creating`, skipping those
    /// the other loop is creating right now.
    async fn create(&self, mut desired: Vec<Desired>, report: &mut PassReport) -> Result<()> {
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            desired.retain(|d| in_flight.insert(d.instance.id.clone()));
        }
        let ids: Vec<InstanceId> = desired.iter().map(|d| d.instance.id.clone()).collect();
        let created = self.create_and_record(desired, report).await;
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        for id in &ids {
            in_flight.remove(id);
        }
        created
    }

    async fn create_and_record(&self, desired: Vec<Desired>, report: &mut PassReport) -> Result<()> {
        let results: Vec<(InstanceId, Result<()>)> = stream::iter(desired)
            .map(|desired| async move { (desired.instance.id.clone(), self.create_objects(&desired).await) })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut created = Vec::new();
        for (id, result) in results {
            match result {
                Ok(()) => {
                    self.parked.lock().expect("parked lock").remove(&id);
                    self.awaiting.lock().expect("awaiting lock").insert(id.clone(), Instant::now());
                    created.push(id);
                }
                Err(error) => match refusal(&error) {
                    Some(reason) => {
                        self.parked.lock().expect("parked lock").remove(&id);
                        tracing::warn!(instance.id = %id, reason, "the cluster refused the instance's objects; failing it");
                        let failed = Observed::Failed { reason, ended_at: None };
                        if self.store.record_observation(&id, &failed, self.now()).await?.is_some() {
                            report.refused += 1;
                        }
                    }
                    None => {
                        report.errors += 1;
                        let wait = self.park(&id);
                        tracing::warn!(instance.id = %id, error = ?error, retry_in = ?wait, "creating the instance's objects failed; will retry");
                    }
                },
            }
        }
        report.created += self.store.record_created(&created, self.now()).await? as usize;
        Ok(())
    }

    /// Writes back what the cluster reports, stops released instances, deletes orphans and fails
    /// instances whose objects vanished.
    async fn observe(&self, report: &mut PassReport) -> Result<()> {
        // Observations need the reflectors' complete first list; until then a missing object proves nothing.
        let ready = self.pods.wait_until_ready().now_or_never().is_some()
            && self.vmis.wait_until_ready().now_or_never().is_some();
        if !ready {
            return Ok(());
        }
        // One snapshot of the reflectors per pass, keyed by instance, so nothing below scans them again.
        // It is taken before the store is read: an object exists only for an instance already stored,
        // so every object in the snapshot whose instance the store does not list live is an orphan.
        // Read the other way round, an instance stored and started in between would look orphaned.
        let mut seen: BTreeMap<InstanceId, Workload> = BTreeMap::new();
        for pod in self.pods.state() {
            if let Some(id) = pod.labels().get(LABEL_INSTANCE) {
                seen.insert(InstanceId(id.clone()), Workload::Pod(pod.clone()));
            }
        }
        for vmi in self.vmis.state() {
            if let Some(id) = vmi.labels().get(LABEL_INSTANCE) {
                seen.insert(InstanceId(id.clone()), Workload::Vmi(vmi.clone()));
            }
        }
        let live = self.store.live_in_idc(&self.idc).await?;
        let mut running = Vec::new();
        for (id, workload) in &seen {
            self.awaiting.lock().expect("awaiting lock").remove(id);
            let Some(&state) = live.get(id) else {
                match self.delete_objects(id, workload).await {
                    Ok(()) => report.orphans_deleted += 1,
                    Err(error) => {
                        report.errors += 1;
                        tracing::warn!(instance.id = %id, error = ?error, "deleting an orphan failed; will retry");
                    }
                }
                continue;
            };
            if state == InstanceState::Stopping {
                // Released: remove the object; the instance ends once the reflectors see it gone.
                if workload.terminating() {
                    continue;
                }
                match self.delete_objects(id, workload).await {
                    Ok(()) => report.stopped += 1,
                    Err(error) => {
                        report.errors += 1;
                        tracing::warn!(instance.id = %id, error = ?error, "deleting a released instance's objects failed; will retry");
                    }
                }
                continue;
            }
            let observed = match workload.observe() {
                Observed::Running { ip, .. } if state != InstanceState::Running => {
                    running.push((id.clone(), ip, self.ssh_endpoint(id, workload).await));
                    continue;
                }
                Observed::Running { .. } | Observed::Creating if state == InstanceState::Running => continue,
                Observed::Creating if state == InstanceState::Creating => continue,
                other => other,
            };
            if self.store.record_observation(id, &observed, self.now()).await?.is_some() {
                report.updated += 1;
            }
        }
        report.updated += self.store.record_running(&running, self.now()).await? as usize;
        for (id, state) in &live {
            // Only a pending instance has had nothing made for it yet.
            if seen.contains_key(id) || *state == InstanceState::Pending {
                continue;
            }
            let young = self
                .awaiting
                .lock()
                .expect("awaiting lock")
                .get(id)
                .is_some_and(|t| t.elapsed() < self.config.vanish_grace);
            if young {
                continue;
            }
            match self.store.record_observation(id, &Observed::Gone, self.now()).await? {
                Some(InstanceState::Terminated) => report.terminated += 1,
                Some(_) => report.vanished += 1,
                None => {}
            }
        }
        Ok(())
    }

    /// Holds back an instance whose creation failed, a little longer each time; returns the wait.
    fn park(&self, id: &InstanceId) -> Duration {
        let mut parked = self.parked.lock().expect("parked lock");
        let entry = parked.entry(id.clone()).or_insert_with(|| Parked {
            delays: ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(self.config.max_create_backoff)
                .with_jitter()
                .without_max_times()
                .build(),
            until: Instant::now(),
        });
        let wait = entry.delays.next().unwrap_or(self.config.max_create_backoff);
        entry.until = Instant::now() + wait;
        wait
    }

    /// Sends one request to the cluster at the IDC's pace, retrying passing failures with
    /// exponential, jittered backoff.
    async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let paced = || {
            let sent = request();
            async move {
                self.limiter.until_ready().await;
                match tokio::time::timeout(self.config.request_timeout, sent).await {
                    Ok(answer) => answer,
                    Err(elapsed) => Err(kube::Error::Service(Box::new(elapsed))),
                }
            }
        };
        paced
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(self.config.retry_delay)
                    .with_max_times(self.config.request_retries)
                    .with_jitter(),
            )
            .when(is_transient)
            .await
    }

    /// Creates an object, taking `AlreadyExists` as success: the object is what an earlier attempt made.
    async fn create_once<K>(&self, api: &Api<K>, object: &K, name: &str, action: &'static str) -> Result<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        let params = PostParams::default();
        match self.call(|| api.create(&params, object)).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(source) => Err(Error::Cluster { action, name: name.to_string(), source }),
        }
    }

    /// Deletes an object, taking `NotFound` as success.
    async fn delete_once<K>(&self, api: &Api<K>, name: &str) -> Result<()>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = DeleteParams::background();
        match self.call(|| api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(Error::Cluster { action: "delete", name: name.to_string(), source }),
        }
    }

    async fn ensure_namespace(&self, name: &str) -> Result<()> {
        if self.namespaces.lock().expect("namespaces lock").contains(name) {
            return Ok(());
        }
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        self.create_once(&Api::<Namespace>::all(self.client.clone()), &namespace, name, "create namespace")
            .await?;
        self.namespaces.lock().expect("namespaces lock").insert(name.to_string());
        Ok(())
    }

    /// Creates everything an instance needs: namespace, then ssh Secret and Service, then the Pod or VMI.
    #[tracing::instrument(skip_all, fields(instance.id = %desired.instance.id))]
    async fn create_objects(&self, desired: &Desired) -> Result<()> {
        let (instance, request, config) = (&desired.instance, &desired.request, &self.config.manifest);
        let ns = manifest::namespace(&instance.tenant_id);
        self.ensure_namespace(&ns).await?;
        let name = manifest::object_name(&instance.id);
        if instance.runtime.needs_ssh() {
            let secrets = Api::<Secret>::namespaced(self.client.clone(), &ns);
            self.create_once(&secrets, &manifest::ssh_secret(instance, request), &name, "create secret")
                .await?;
            let services = Api::<Service>::namespaced(self.client.clone(), &ns);
            self.create_once(&services, &manifest::ssh_service(instance, request), &name, "create service")
                .await?;
        }
        match instance.runtime {
            Runtime::Vm => {
                let api = Api::<VirtualMachineInstance>::namespaced(self.client.clone(), &ns);
                self.create_once(&api, &manifest::vmi(instance, request, config), &name, "create VMI").await
            }
            Runtime::Container | Runtime::Rich => {
                let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
                self.create_once(&api, &manifest::pod(instance, request, config), &name, "create pod").await
            }
        }
    }

    /// Where to ssh into a running rich container or VM: its node's address and the NodePort.
    async fn ssh_endpoint(&self, id: &InstanceId, workload: &Workload) -> Option<SshEndpoint> {
        let (ns, host) = match workload {
            Workload::Pod(p) if p.spec.as_ref()?.runtime_class_name.is_some() => {
                (p.namespace()?, p.status.as_ref()?.host_ip.clone()?)
            }
            Workload::Pod(_) => return None,
            Workload::Vmi(v) => {
                let node_name = v.status.as_ref()?.node_name.clone()?;
                let nodes = Api::<Node>::all(self.client.clone());
                let node = self.call(|| nodes.get(&node_name)).await.ok()?;
                let address = node
                    .status?
                    .addresses?
                    .into_iter()
                    .find(|a| a.type_ == "InternalIP")
                    .map(|a| a.address)?;
                (v.namespace()?, address)
            }
        };
        let services = Api::<Service>::namespaced(self.client.clone(), &ns);
        let service = self.call(|| services.get(&id.0)).await.ok()?;
        let port = service.spec?.ports?.into_iter().find(|p| p.port == 22)?.node_port?;
        Some(SshEndpoint {
            host: self.config.manifest.ssh_ingress_host.clone().unwrap_or(host),
            port: u16::try_from(port).ok()?,
            user: self.config.manifest.ssh_user.clone(),
        })
    }

    /// Deletes an ended instance's objects: its Pod or VMI, and the ssh Service and Secret beside it.
    async fn delete_objects(&self, id: &InstanceId, workload: &Workload) -> Result<()> {
        let name = manifest::object_name(id);
        let ns = workload.namespace();
        match workload {
            Workload::Pod(_) => {
                self.delete_once(&Api::<Pod>::namespaced(self.client.clone(), &ns), &name).await?
            }
            Workload::Vmi(_) => {
                self.delete_once(&Api::<VirtualMachineInstance>::namespaced(self.client.clone(), &ns), &name)
                    .await?
            }
        }
        self.delete_ssh_objects(&ns, id).await
    }

    async fn delete_ssh_objects(&self, ns: &str, id: &InstanceId) -> Result<()> {
        let name = manifest::object_name(id);
        self.delete_once(&Api::<Service>::namespaced(self.client.clone(), ns), &name).await?;
        self.delete_once(&Api::<Secret>::namespaced(self.client.clone(), ns), &manifest::ssh_secret_name(id))
            .await
    }
}

/// Keeps of a watched Pod only what a pass reads (labels, deletion, runtime class, phase, addresses,
/// reasons and waiting containers): the reflectors hold every Pod of the IDC, and a full Pod is
/// several kilobytes.
pub fn trim_pod(pod: &mut Pod) {
    trim_metadata(&mut pod.metadata);
    let runtime_class_name = pod.spec.as_mut().and_then(|s| s.runtime_class_name.take());
    pod.spec = Some(PodSpec { runtime_class_name, ..Default::default() });
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            host_ip: status.host_ip.take(),
            reason: status.reason.take(),
            message: status.message.take(),
            container_statuses: status.container_statuses.take().map(|cs| {
                cs.into_iter()
                    .map(|c| ContainerStatus {
                        name: c.name,
                        state: c.state.map(|s| ContainerState {
                            waiting: s.waiting,
                            terminated: s.terminated,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
    }
}

/// Keeps of a watched VMI only what a pass reads (see [`trim_pod`]).
pub fn trim_vmi(vmi: &mut VirtualMachineInstance) {
    trim_metadata(&mut vmi.metadata);
    vmi.spec = Default::default();
}

/// Name, namespace, labels and deletion are all a pass reads of an object's metadata.
fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

/// An instance's object as the reflectors hold it.
enum Workload {
    Pod(Arc<Pod>),
    Vmi(Arc<VirtualMachineInstance>),
}

impl Workload {
    fn observe(&self) -> Observed {
        match self {
            Workload::Pod(pod) => observe_pod(pod),
            Workload::Vmi(vmi) => observe_vmi(vmi),
        }
    }

    /// Deleted already and waiting out its grace period.
    fn terminating(&self) -> bool {
        match self {
            Workload::Pod(pod) => pod.metadata.deletion_timestamp.is_some(),
            Workload::Vmi(vmi) => vmi.metadata.deletion_timestamp.is_some(),
        }
    }

    fn namespace(&self) -> String {
        let ns = match self {
            Workload::Pod(pod) => pod.namespace(),
            Workload::Vmi(vmi) => vmi.namespace(),
        };
        ns.unwrap_or_else(|| "default".into())
    }
}

/// Drives a reflector's event stream and wakes the pass loop on every change.
async fn drive<S, T>(events: S, changed: Arc<Notify>, idc: IdcId, what: &'static str)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(error) => {
                tracing::warn!(idc.id = %idc, what, error = %error, "watch failed; retrying with backoff")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": "Whatever", "message": format!("the server says {code}")
        }))
        .expect("a Status");
        kube::Error::Api(status.into())
    }

    #[test]
    fn busy_or_unavailable_clusters_are_retried_and_invalid_objects_are_not() {
        for code in [429, 500, 503, 504] {
            assert!(is_transient(&api_error(code)), "{code}");
        }
        for code in [400, 403, 404, 409, 422] {
            assert!(!is_transient(&api_error(code)), "{code}");
        }
        let refused =
            |code| Error::Cluster { action: "create pod", name: "i-1".into(), source: api_error(code) };
        assert_eq!(
            refusal(&refused(422)).as_deref(),
            Some("the cluster refused to create pod: the server says 422")
        );
        // Forbidden (a namespace quota, say) and server errors may pass: the instance waits instead.
        assert_eq!(refusal(&refused(403)), None);
        assert_eq!(refusal(&refused(503)), None);
    }

    #[test]
    fn a_trimmed_pod_says_the_same_about_its_instance() {
        let pods = [
            serde_json::json!({"metadata": {"name": "a", "annotations": {"x": "y"}, "labels": {"eci.io/instance": "a"}},
                "spec": {"runtimeClassName": "kata", "containers": [{"name": "main", "image": "nginx"}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.0.2.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
            serde_json::json!({"metadata": {"name": "b"}, "spec": {"containers": []},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "main", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}}),
            serde_json::json!({"metadata": {"name": "c"}, "spec": {"containers": []},
                "status": {"phase": "Failed", "reason": "Evicted", "message": "node ran out of disk"}}),
        ];
        for pod in pods {
            let pod: Pod = serde_json::from_value(pod).expect("a pod");
            let mut trimmed = pod.clone();
            trim_pod(&mut trimmed);
            assert_eq!(observe_pod(&trimmed), observe_pod(&pod));
            assert_eq!(trimmed.labels(), pod.labels());
            assert_eq!(
                trimmed.spec.as_ref().and_then(|s| s.runtime_class_name.clone()),
                pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone())
            );
            assert!(trimmed.metadata.annotations.is_none());
            assert!(trimmed.status.as_ref().is_none_or(|s| s.conditions.is_none()));
        }
    }
}
