//! One reconciler per IDC. Level-triggered: each pass compares what the database wants (the IDC's
//! live instances) with what the cluster has (Pods and VMIs labelled as ours, kept by kube-runtime
//! reflectors) and closes the gap, so running a pass twice, or after a crash, does no harm.
//!
//! A pass: (1) creates the objects of pending instances, named after the instance so a retried or
//! repeated create meets `AlreadyExists` instead of making a second Pod; (2) writes back what the
//! cluster reports (`creating`, `running` with the IP and ssh endpoint, `failed` with the reason);
//! (3) deletes the objects of released (`stopping`) instances and ends them (`terminated`, capacity
//! given back) once the objects are gone; deletes objects no live instance owns (orphans); fails
//! live instances whose object vanished, and those whose object the cluster has not started by their
//! batch's create timeout (with the cluster's reason, the object deleted).
//!
//! Capacity: reflectors of the cluster's Nodes and of every Pod (the platform's own and the others)
//! feed each pass a [`ClusterReading`]; what it offers is recorded in the store when it changes (and every
//! `capacity_refresh`), which is what the IDC sells. An IDC left selling less than it promised is
//! logged as an alert once, until it no longer is.
//!
//! [`ClusterReading`]: eci_core::capacity::ClusterReading
//!
//! Load: beside the passes, the cluster's pod metrics are read every `metrics_interval` into each
//! instance's CPU sample in the store, which the autoscaler scales on. A cluster that cannot give
//! them (one without a metrics API) is logged once, and never fails the reconciler.
//!
//! Edge autonomy: a pass starts with a bounded probe of the cluster, which advances the [`link`]
//! state. An IDC that misses several in a row is marked `disconnected` and its instances `unknown`,
//! and the pass does nothing else: no instance is failed, re-created elsewhere or released for a
//! broken link. The first answer after that marks it active again, and the normal pass reconciles
//! what changed meanwhile. Only the pass loop probes; the creation loop goes by the link the last
//! probe left, so each probe counts once.
//!
//! [`link`]: crate::link

mod books;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::Utc;
use eci_core::{IdcId, InstanceId, InstanceState, SshEndpoint};
use eci_store::Store;
use eci_store::instances::{Desired, Live, Observed};
use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::books::Books;
use crate::calls::{CallError, ClusterCalls};
use crate::capacity::{cluster_reading, is_foreign, trim_foreign_pod, trim_node};
use crate::cluster::ClusterClient;
use crate::kubevirt::VirtualMachineInstance;
use crate::link::LinkChange;
use crate::manifest::{self, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_TENANT, MANAGED_BY};
use crate::metrics::{CpuReading, cpu_samples};
use crate::observation::{
    SshHost, Workload, node_address, pending_reason, ssh_node_port, trim_pod, trim_vmi,
};

use crate::config::ManagerConfig;
use crate::work::{IdcWork, WorkQueue};

/// Why a pass (or a step of it) failed, or a read of the cluster's metrics; the pass is tried again
/// after a growing delay, the read at the next interval.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store did not take a read or a write of the IDC's instances (or of the IDC's link, or of
    /// its instances' CPU samples).
    #[error("reading or writing instances failed")]
    Store(#[from] eci_store::Error),
    /// The cluster did not answer a read of its metrics.
    #[error("reading the cluster failed")]
    Cluster(#[from] CallError),
}

/// The result of a pass or of one of its steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Pending instances whose objects were created, now `creating`.
    pub created: usize,
    /// Instances whose state changed to what the cluster reports.
    pub updated: usize,
    /// Objects deleted because no live instance owns them.
    pub orphans_deleted: usize,
    /// Passes' orphan clean-ups that risk control held (a full deletion window): none of the rest
    /// of the pass's orphans was deleted.
    pub orphans_held: usize,
    /// Objects of released (`stopping`) instances deleted.
    pub stopped: usize,
    /// Released instances whose objects are gone, now `terminated` with their capacity given back.
    pub terminated: usize,
    /// Live instances whose objects vanished, now `failed`.
    pub vanished: usize,
    /// Instances the cluster refused for good (an invalid object), now `failed`.
    pub refused: usize,
    /// Instances the cluster did not start by their create timeout, now `failed` and their objects
    /// deleted.
    pub timed_out: usize,
    /// Requests that failed and will be tried again at a later pass.
    pub errors: usize,
    /// The cluster did not answer the probe; nothing else was done.
    pub unreachable: bool,
}

/// The reconciler of one IDC's cluster.
pub struct IdcReconciler {
    idc: IdcId,
    cluster: ClusterCalls,
    store: Store,
    config: ManagerConfig,
    pods: Cache<Pod>,
    vmis: Cache<VirtualMachineInstance>,
    nodes: Cache<Node>,
    /// Raised by the reflectors when the cluster changes.
    changed: Arc<Notify>,
    /// Raised through the work queue when a write gives the IDC work: new pending instances
    /// (handed over with the signal), instances to stop.
    work: Arc<IdcWork>,
    watchers: Vec<JoinHandle<()>>,
    books: Mutex<Books>,
}

/// kube's default watch backoff (800 ms doubling, with jitter, reset after two quiet minutes) with
/// its wait capped at the config's `watch_retry_max`.
fn watch_backoff(config: &ManagerConfig) -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let exponential = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(config.watch_retry_max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(120))
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

/// The waits between failed passes: exponential with jitter up to the configured cap, and from the
/// shortest again once a pass succeeds.
struct PassRetries {
    delays: ExponentialBuilder,
    current: Option<ExponentialBackoff>,
    max: Duration,
}

impl PassRetries {
    fn new(config: &ManagerConfig) -> PassRetries {
        PassRetries {
            delays: ExponentialBuilder::new()
                .with_min_delay(config.pass_retry_delay)
                .with_max_delay(config.max_pass_backoff)
                .with_jitter()
                .without_max_times(),
            current: None,
            max: config.max_pass_backoff,
        }
    }

    /// A pass failed: how long to wait before the next.
    fn failed(&mut self) -> Duration {
        self.current.get_or_insert_with(|| self.delays.build()).next().unwrap_or(self.max)
    }

    fn succeeded(&mut self) {
        self.current = None;
    }
}

impl IdcReconciler {
    /// Starts the reflectors that keep this IDC's Pods and VMIs in memory.
    pub fn start(
        idc: IdcId,
        client: ClusterClient,
        store: Store,
        queue: &WorkQueue,
        config: ManagerConfig,
    ) -> Self {
        let changed = Arc::new(Notify::new());
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let (pods, pods_writer) = reflector::store::<Pod>();
        let (vmis, vmis_writer) = reflector::store::<VirtualMachineInstance>();
        let mut watchers = Vec::new();
        // Every Pod, not only the platform's: what the others request is not for sale. One watch
        // for both keeps a connection per IDC, and a Pod is trimmed to what its kind needs.
        let pod_events = reflector::reflector(
            pods_writer,
            watcher(Api::<Pod>::all(client.kube().clone()), watcher::Config::default())
                .modify(|pod| if is_foreign(pod) { trim_foreign_pod(pod) } else { trim_pod(pod) }),
        )
        .backoff(watch_backoff(&config));
        watchers.push(tokio::spawn(drive(pod_events, changed.clone(), idc.clone(), "pods")));
        let vmi_events = reflector::reflector(
            vmis_writer,
            watcher(
                Api::<VirtualMachineInstance>::all(client.kube().clone()),
                watcher::Config::default().labels(&selector),
            )
            .modify(trim_vmi),
        )
        .backoff(watch_backoff(&config));
        watchers.push(tokio::spawn(drive(vmi_events, changed.clone(), idc.clone(), "vmis")));
        let (nodes, nodes_writer) = reflector::store::<Node>();
        let node_events = reflector::reflector(
            nodes_writer,
            watcher(Api::<Node>::all(client.kube().clone()), watcher::Config::default()).modify(trim_node),
        )
        .backoff(watch_backoff(&config));
        watchers.push(tokio::spawn(drive(node_events, changed.clone(), idc.clone(), "nodes")));
        let work = queue.of(&idc);
        IdcReconciler {
            idc,
            cluster: ClusterCalls::new(&client, &config),
            store,
            config,
            pods,
            vmis,
            nodes,
            changed,
            work,
            watchers,
            books: Mutex::default(),
        }
    }

    /// Creates new instances as soon as the store hands them over, runs passes whenever the
    /// cluster changes and at least every `resync`, and reads the cluster's pod metrics every
    /// `metrics_interval`, until `shutdown` turns true.
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
                // The pass loop alone probes; while its last probe went unanswered, the new work
                // stays handed over (and pending in the store) for the pass that finds the link back.
                if !self.books().link().is_up() {
                    continue;
                }
                let mut report = PassReport::default();
                let created = match self.work.take_new() {
                    // A wake-up without new instances (a release, say): look in the store.
                    new if new.is_empty() => self.create_pending(&mut report).await,
                    new => self.create(new, &mut report).await,
                };
                if let Err(error) = created {
                    tracing::warn!(error = ?error, "creating new instances failed; will retry");
                }
            }
        };
        // A change in the cluster needs only an observation; the store's pending instances (those
        // not handed over, parked ones due again) are looked for at every resync.
        let mut stop_passes = shutdown.clone();
        let passes = async {
            let mut resync = tokio::time::interval(self.config.resync);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retries = PassRetries::new(&self.config);
            let mut retry_in = None;
            loop {
                let full = match retry_in {
                    // After a failure only the retry is due: a change would meet the same failure.
                    Some(wait) => tokio::select! {
                        _ = stop_passes.changed() => break,
                        () = tokio::time::sleep(wait) => {
                            resync.reset();
                            true
                        }
                    },
                    None => tokio::select! {
                        _ = stop_passes.changed() => break,
                        _ = resync.tick() => true,
                        () = self.changed.notified() => false,
                    },
                };
                let result = if full { self.pass().await } else { self.observe_pass().await };
                retry_in = match result {
                    Ok(report) => {
                        if report != PassReport::default() {
                            tracing::debug!(?report, "pass done");
                        }
                        retries.succeeded();
                        None
                    }
                    Err(error) => {
                        let wait = retries.failed();
                        tracing::warn!(error = ?error, retry_in = ?wait, "pass failed; will retry");
                        Some(wait)
                    }
                };
            }
        };
        // Samples keep their own pace: a slow metrics API must not hold a pass, nor a busy pass
        // age the autoscaler's samples.
        let mut stop_sampling = shutdown;
        let sampling = async {
            let mut every = tokio::time::interval(self.config.metrics_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop_sampling.changed() => break,
                    _ = every.tick() => {}
                }
                // While the last probe went unanswered, a read would only wait out its timeout; the
                // pass loop's probes say when the link is back.
                if !self.books().link().is_up() {
                    continue;
                }
                failing = self.sample_cpu(failing).await;
            }
        };
        tokio::join!(creating, passes, sampling);
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().expect("book-keeping lock")
    }

    /// The moment to record, by the configured clock.
    fn now(&self) -> chrono::DateTime<Utc> {
        self.config.clock.now()
    }

    /// Waits until every reflector holds a complete first list of the cluster.
    pub async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.vmis.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// Records what the cluster offers when that changed or the record grew old; an IDC that now
    /// sells less than it promised is an alert (once, until it no longer is). Nothing running is
    /// touched: the ledger stops new placements there by itself.
    async fn read_capacity(&self) -> Result<()> {
        let listed = self.nodes.wait_until_ready().now_or_never().is_some()
            && self.pods.wait_until_ready().now_or_never().is_some();
        if !listed {
            return Ok(());
        }
        let nodes = self.nodes.state();
        let pods = self.pods.state();
        let foreign = pods.iter().map(|p| &**p).filter(|p| is_foreign(p));
        let capacity = cluster_reading(nodes.iter().map(|n| &**n), foreign).capacity();
        if !self.books().capacity_due(&capacity, self.config.capacity_refresh) {
            return Ok(());
        }
        let report = self.store.record_cluster_capacity(&self.idc, &capacity, self.now()).await?;
        let short = report.line.short();
        if self.books().capacity_recorded(capacity, short.is_some()) {
            match short {
                Some(short) => tracing::error!(
                    idc.id = %self.idc, alert = "capacity_short", sellable = %short.sellable,
                    promised = %short.promised, short_by = %short.short_by,
                    "the IDC's cluster no longer backs what it promised: new placements there stop; nothing running is touched"
                ),
                None => {
                    tracing::info!(idc.id = %self.idc, sellable = %report.line.total, "the IDC's cluster backs what it promised again")
                }
            }
        }
        Ok(())
    }

    /// Reads the cluster's pod metrics into the instances' CPU samples. A read that falls short
    /// (no answer, the store refusing, a usage that is no quantity) is logged once, when it starts
    /// to (`failing` says whether the last one did), and once when reading works again; returns
    /// whether this one fell short.
    async fn sample_cpu(&self, failing: bool) -> bool {
        let short = match self.read_cpu().await {
            Ok(reading) => match reading.unreadable.first() {
                None => false,
                Some((instance, error)) => {
                    if !failing {
                        tracing::warn!(
                            idc.id = %self.idc, instance.id = %instance, error = %error,
                            unreadable = reading.unreadable.len(),
                            "pods report a cpu usage that is no quantity; their instances get no CPU sample"
                        );
                    }
                    true
                }
            },
            Err(error) => {
                if failing {
                    tracing::debug!(idc.id = %self.idc, error = ?error, "reading the cluster's pod metrics failed again");
                } else {
                    tracing::warn!(
                        idc.id = %self.idc, error = ?error, interval = ?self.config.metrics_interval,
                        "reading the cluster's pod metrics failed; its instances' CPU samples grow old until it works"
                    );
                }
                true
            }
        };
        if failing && !short {
            tracing::info!(idc.id = %self.idc, "the cluster's pod metrics are read again");
        }
        short
    }

    /// One read of the cluster's pod metrics, recorded in the store; the metrics loop calls it
    /// every `metrics_interval`, and tests on a moved clock call it as they call [`Self::pass`].
    pub async fn read_cpu(&self) -> Result<CpuReading> {
        let metrics = self.cluster.read_pod_metrics().await?;
        let reading = cpu_samples(&metrics, self.now());
        self.store.record_cpu_samples(&reading.samples).await?;
        Ok(reading)
    }

    /// Whether the cluster answers; after `failures_before_disconnect` misses in a row the IDC turns
    /// `disconnected` and its instances `unknown`, and the first answer after that turns it back.
    async fn probe(&self) -> Result<bool> {
        // Passes come in quick succession while a batch starts; one answer vouches for the link a while.
        if self.books().answered_within(self.config.probe_interval) {
            return Ok(true);
        }
        let probe = self.cluster.probe(self.config.probe_timeout).await;
        let (link, change) = self.books().link().step(probe, self.config.failures_before_disconnect);
        match change {
            Some(LinkChange::Reconnected { was_down }) => {
                self.store.mark_idc_reconnected(&self.idc, self.now()).await?;
                if was_down {
                    tracing::info!(idc.id = %self.idc, "cluster answers; reconciling");
                } else {
                    tracing::debug!(idc.id = %self.idc, "cluster answers");
                }
            }
            Some(LinkChange::Disconnected { was_up }) => {
                let unknown = self.store.mark_idc_disconnected(&self.idc, self.now()).await?;
                if was_up || unknown > 0 {
                    tracing::warn!(idc.id = %self.idc, unknown, "cluster unreachable: IDC disconnected, its instances unknown; nothing is failed or re-created");
                }
            }
            None => {}
        }
        self.books().probed(link, probe);
        Ok(link.is_up())
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
            let books = self.books();
            pending.retain(|d| !books.is_parked(&d.instance.id));
        }
        self.create(pending, report).await
    }

    /// Creates the objects of these pending instances and records them `creating`, skipping those
    /// the other loop is creating right now.
    async fn create(&self, desired: Vec<Desired>, report: &mut PassReport) -> Result<()> {
        let desired = self.books().claim(desired);
        let ids: Vec<InstanceId> = desired.iter().map(|d| d.instance.id.clone()).collect();
        let created = self.create_and_record(desired, report).await;
        self.books().release(&ids);
        created
    }

    async fn create_and_record(&self, desired: Vec<Desired>, report: &mut PassReport) -> Result<()> {
        let results: Vec<(InstanceId, Result<(), CallError>)> = stream::iter(desired)
            .map(|desired| async move { (desired.instance.id.clone(), self.create_objects(&desired).await) })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut created = Vec::new();
        for (id, result) in results {
            match result {
                Ok(()) => {
                    self.books().created(&id);
                    created.push(id);
                }
                Err(error) => match error.refusal() {
                    Some(reason) => {
                        self.books().refused(&id);
                        tracing::warn!(instance.id = %id, reason, "the cluster refused the instance's objects; failing it");
                        let failed = Observed::Failed { reason, ended_at: None };
                        if self.store.record_observation(&id, &failed, self.now()).await?.is_some() {
                            report.refused += 1;
                        }
                    }
                    None => {
                        report.errors += 1;
                        let wait = self.books().park(&id, self.config.max_create_backoff);
                        tracing::warn!(instance.id = %id, error = ?error, retry_in = ?wait, "creating the instance's objects failed; will retry");
                    }
                },
            }
        }
        report.created += self.store.record_created(&created, self.now()).await? as usize;
        Ok(())
    }

    /// Creates everything an instance needs: its tenant's namespace (once per process), then the
    /// instance's own objects.
    #[tracing::instrument(skip_all, fields(instance.id = %desired.instance.id))]
    async fn create_objects(&self, desired: &Desired) -> Result<(), CallError> {
        let ns = desired.instance.tenant_id.namespace();
        if !self.books().knows_namespace(&ns) {
            self.cluster.create_namespace_with_retries(&ns).await?;
            self.books().namespace_exists(ns.clone());
        }
        self.cluster.create_instance_with_retries(desired, &ns, &self.config.manifest).await
    }

    /// Writes back what the cluster reports, stops released instances, deletes orphans and fails
    /// instances whose objects vanished.
    async fn observe(&self, report: &mut PassReport) -> Result<()> {
        self.read_capacity().await?;
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
        for pod in self.pods.state().into_iter().filter(|p| !is_foreign(p)) {
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
        // Orphans are deleted only as far as risk control lets them: a control plane that reads an
        // empty or stale database sees its whole fleet as orphans, and must trip the IDC's breaker
        // rather than delete it. Once refused, the pass deletes no more orphans.
        let mut orphans_held = false;
        for (id, workload) in &seen {
            self.books().seen(id);
            let Some(&Live { state, create_deadline }) = live.get(id) else {
                if orphans_held || workload.terminating() {
                    continue;
                }
                let tenant = eci_core::TenantId(workload.label(LABEL_TENANT).unwrap_or_default());
                match self.store.admit_orphan_deletion(&self.idc, &tenant, &id.0, self.now()).await {
                    Ok(()) => {}
                    Err(held @ eci_store::Error::DeletionRateLimited(_)) => {
                        orphans_held = true;
                        report.orphans_held += 1;
                        tracing::error!(idc.id = %self.idc, instance.id = %id, reason = %held,
                            "orphan clean-up held by risk control");
                        continue;
                    }
                    Err(other) => return Err(other.into()),
                }
                match self.cluster.delete_instance_with_retries(id, workload).await {
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
                match self.cluster.delete_instance_with_retries(id, workload).await {
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
                Observed::Creating if state == InstanceState::Creating => {
                    if create_deadline.is_some_and(|deadline| deadline <= self.now()) {
                        self.time_out(id, workload, report).await?;
                    }
                    continue;
                }
                other => other,
            };
            if self.store.record_observation(id, &observed, self.now()).await?.is_some() {
                report.updated += 1;
            }
        }
        report.updated += self.store.record_running(&running, self.now()).await? as usize;
        for (id, Live { state, .. }) in &live {
            // Only a pending instance has had nothing made for it yet.
            if seen.contains_key(id) || *state == InstanceState::Pending {
                continue;
            }
            if self.books().just_created(id, self.config.vanish_grace) {
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

    /// Fails an instance the cluster did not start by its create timeout, with the cluster's reason,
    /// and deletes its object. Failing gives its capacity back in the same transaction, and it never
    /// ran, so nothing was billed. Should the delete fail, the object is an orphan the next pass
    /// deletes.
    async fn time_out(&self, id: &InstanceId, workload: &Workload, report: &mut PassReport) -> Result<()> {
        let reason = pending_reason(workload)
            .unwrap_or_else(|| "the cluster did not start it within its create timeout".to_string());
        let failed = Observed::Failed { reason: reason.clone(), ended_at: None };
        if self.store.record_observation(id, &failed, self.now()).await?.is_none() {
            return Ok(());
        }
        report.timed_out += 1;
        tracing::warn!(instance.id = %id, reason, "not started by its create timeout; failed, its capacity given back");
        if let Err(error) = self.cluster.delete_instance_with_retries(id, workload).await {
            report.errors += 1;
            tracing::warn!(instance.id = %id, error = ?error, "deleting a timed-out instance's objects failed; will retry");
        }
        Ok(())
    }

    /// Where to ssh into a running rich container or VM: its node's address and the NodePort.
    async fn ssh_endpoint(&self, id: &InstanceId, workload: &Workload) -> Option<SshEndpoint> {
        let (ns, host) = workload.ssh_host()?;
        let host = match host {
            SshHost::Address(address) => address,
            SshHost::Node(node) => node_address(self.cluster.get_node_with_retries(&node).await.ok()?)?,
        };
        let service = self.cluster.get_service_with_retries(&ns, &manifest::object_name(id)).await.ok()?;
        Some(SshEndpoint {
            host: self.config.manifest.ssh_ingress_host.clone().unwrap_or(host),
            port: ssh_node_port(service)?,
            user: self.config.manifest.ssh_user.clone(),
        })
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

    #[test]
    fn failed_passes_wait_longer_each_time_up_to_the_cap_and_start_again_after_a_success() {
        let (first, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        let config =
            ManagerConfig { pass_retry_delay: first, max_pass_backoff: cap, ..ManagerConfig::default() };
        let mut retries = PassRetries::new(&config);
        let waits: Vec<Duration> = (0..8).map(|_| retries.failed()).collect();
        assert!((first..first * 2).contains(&waits[0]), "{waits:?}");
        assert!(waits[1] >= first * 2 && waits[2] >= first * 4, "{waits:?}");
        assert!(waits.iter().all(|w| *w < cap * 2), "jitter on top of the cap at most: {waits:?}");
        assert!(waits[7] >= cap, "{waits:?}");
        retries.succeeded();
        assert!((first..first * 2).contains(&retries.failed()), "a success starts the waits again");
    }
}
