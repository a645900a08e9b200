//! The instance manager's tunables: one struct with a `Default`, made once for the fleet and narrowed
//! per IDC with what the IDC sets for itself.

use std::sync::Arc;
use std::time::Duration;

use eci_core::{Clock, SystemClock};

use crate::manifest::ManifestConfig;

/// Tunables of the instance manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// How instances become objects (images, RuntimeClass, ssh user and ingress, grace period).
    pub manifest: ManifestConfig,
    /// Pending instances taken per pass.
    pub batch_size: u32,
    /// Create requests in flight at once per IDC, so a big batch cannot flood a small cluster; more
    /// than the client's own bound ([`crate::cluster::REQUESTS_IN_FLIGHT`]) would only queue there.
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
    /// A watch of the cluster that broke (a partition) is tried again at most this long apart, so
    /// that the objects a pass reads are fresh within seconds of the link's return; kube's default
    /// waits up to 30 s, during which passes would reconcile against what the cluster said before.
    pub watch_retry_max: Duration,
    /// Failed probes in a row before the IDC counts as disconnected, so one lost packet does not
    /// turn a whole IDC's instances `unknown`.
    pub failures_before_disconnect: u32,
    /// Requests per second to one IDC's cluster (creates, deletes, lookups): an edge cluster's API
    /// server is small and serves its own kubelets too.
    pub requests_per_second: u32,
    /// Requests allowed at once above `requests_per_second`, so a new batch starts without waiting
    /// for the pace.
    pub request_burst: u32,
    /// How long one request may take before it counts as failed (and is tried again): a link that
    /// starts hanging mid-pass must not hold the pass.
    pub request_timeout: Duration,
    /// A request that fails for a passing reason (timeout, connection lost, 429, 5xx) is tried again
    /// this many times, after exponential, jittered delays starting at `retry_delay`.
    pub request_retries: usize,
    /// The first of the delays between tries of one request (see `request_retries`).
    pub retry_delay: Duration,
    /// An instance whose objects could not be created waits before its next attempt, the wait
    /// doubling (with jitter) up to this, so a broken IDC is not hammered on every pass.
    pub max_create_backoff: Duration,
    /// A pass that failed (the store did not answer, say) is tried again after this, the wait
    /// doubling (with jitter) with each failure in a row, instead of at the next resync: a short
    /// blip costs a short wait, and a long outage is not hammered.
    pub pass_retry_delay: Duration,
    /// The longest wait between failed passes (see `pass_retry_delay`).
    pub max_pass_backoff: Duration,
    /// How old the store's record of what a cluster offers may grow while nothing changes in it;
    /// a change (a node added, cordoned, NotReady, a foreign Pod) is recorded at once.
    pub capacity_refresh: Duration,
    /// How often the cluster's pod metrics are read into the instances' CPU samples, which the
    /// autoscaler scales on (above zero). metrics-server measures every 15 s by default: reading
    /// more often only reads the same measurement again.
    pub metrics_interval: Duration,
    /// Where the moments written to the store come from (an instance running, ending, an IDC lost):
    /// billing meters them, so tests move this clock to run a month in seconds. Pacing, timeouts
    /// and retries are about the link, and keep to the runtime's time.
    pub clock: Arc<dyn Clock>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            manifest: ManifestConfig::default(),
            batch_size: 500,
            concurrency: crate::cluster::REQUESTS_IN_FLIGHT,
            resync: Duration::from_secs(2),
            vanish_grace: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            watch_retry_max: Duration::from_secs(5),
            failures_before_disconnect: 3,
            requests_per_second: 200,
            request_burst: 400,
            request_timeout: Duration::from_secs(10),
            request_retries: 3,
            retry_delay: Duration::from_millis(50),
            max_create_backoff: Duration::from_secs(60),
            pass_retry_delay: Duration::from_millis(200),
            max_pass_backoff: Duration::from_secs(30),
            capacity_refresh: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(15),
            clock: Arc::new(SystemClock),
        }
    }
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
