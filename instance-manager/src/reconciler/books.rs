//! What a reconciler remembers between passes, in one struct behind one lock: the two loops share
//! it, and every read or change of it is short and never waits on the cluster or the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use eci_core::InstanceId;
use eci_core::capacity::ClusterCapacity;
use eci_store::instances::Desired;
use tokio::time::Instant;

use crate::link::{LinkState, ProbeResult};

/// The reconciler's book-keeping.
#[derive(Default)]
pub(super) struct Books {
    /// Namespaces known to exist, so each is created once per process.
    namespaces: HashSet<String>,
    /// Objects created but not yet seen by the reflectors, and when.
    awaiting: HashMap<InstanceId, Instant>,
    /// Instances whose objects are being created, so the two loops never create one twice at once.
    in_flight: HashSet<InstanceId>,
    /// Instances whose creation failed, and when they may be tried again.
    parked: HashMap<InstanceId, Parked>,
    /// The link to the cluster, as the last probe left it.
    link: LinkState,
    /// When the cluster last answered a probe.
    answered_at: Option<Instant>,
    /// What the cluster was last recorded to offer, and when.
    capacity: Option<(ClusterCapacity, Instant)>,
    /// Whether the IDC was short of capacity when last recorded, so a shortage is alerted once.
    short: bool,
}

/// An instance waiting out a failed creation.
struct Parked {
    delays: ExponentialBackoff,
    until: Instant,
}

impl Books {
    pub(super) fn link(&self) -> LinkState {
        self.link
    }

    /// Whether the cluster answered within `interval`, which vouches for the link without a probe.
    pub(super) fn answered_within(&self, interval: Duration) -> bool {
        self.answered_at.is_some_and(|t| t.elapsed() < interval)
    }

    /// Takes what a probe found, once the store has heard of the change it made.
    pub(super) fn probed(&mut self, link: LinkState, probe: ProbeResult) {
        self.link = link;
        if probe == ProbeResult::Answered {
            self.answered_at = Some(Instant::now());
        }
    }

    /// Whether `reading` needs recording: it differs from the last one recorded, or that one is
    /// older than `refresh` (so the store's "last read" stays true).
    pub(super) fn capacity_due(&self, reading: &ClusterCapacity, refresh: Duration) -> bool {
        self.capacity.as_ref().is_none_or(|(last, at)| last != reading || at.elapsed() >= refresh)
    }

    /// `reading` was recorded, leaving the IDC short or not; true when that is news.
    pub(super) fn capacity_recorded(&mut self, reading: ClusterCapacity, short: bool) -> bool {
        self.capacity = Some((reading, Instant::now()));
        std::mem::replace(&mut self.short, short) != short
    }

    pub(super) fn knows_namespace(&self, name: &str) -> bool {
        self.namespaces.contains(name)
    }

    pub(super) fn namespace_exists(&mut self, name: String) {
        self.namespaces.insert(name);
    }

    /// Keeps of `desired` the instances no loop is creating yet, and marks them as being created.
    pub(super) fn claim(&mut self, mut desired: Vec<Desired>) -> Vec<Desired> {
        desired.retain(|d| self.in_flight.insert(d.instance.id.clone()));
        desired
    }

    /// The other loop may create these again (their creation is over, done or not).
    pub(super) fn release(&mut self, ids: &[InstanceId]) {
        for id in ids {
            self.in_flight.remove(id);
        }
    }

    /// The instance's objects were created now; the reflectors should see them within the grace.
    pub(super) fn created(&mut self, id: &InstanceId) {
        self.parked.remove(id);
        self.awaiting.insert(id.clone(), Instant::now());
    }

    /// The cluster refused the instance for good; it will not be tried again.
    pub(super) fn refused(&mut self, id: &InstanceId) {
        self.parked.remove(id);
    }

    /// The reflectors hold the instance's object.
    pub(super) fn seen(&mut self, id: &InstanceId) {
        self.awaiting.remove(id);
    }

    /// Whether the instance's objects were created less than `grace` ago and have not been seen
    /// yet: missing from the reflectors, they are late rather than gone.
    pub(super) fn just_created(&self, id: &InstanceId, grace: Duration) -> bool {
        self.awaiting.get(id).is_some_and(|t| t.elapsed() < grace)
    }

    /// Holds back an instance whose creation failed, a little longer each time (the wait doubling
    /// from a second, with jitter, up to `max_backoff`); returns the wait.
    pub(super) fn park(&mut self, id: &InstanceId, max_backoff: Duration) -> Duration {
        let entry = self.parked.entry(id.clone()).or_insert_with(|| Parked {
            delays: ExponentialBuilder::new()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(max_backoff)
                .with_jitter()
                .without_max_times()
                .build(),
            until: Instant::now(),
        });
        let wait = entry.delays.next().unwrap_or(max_backoff);
        entry.until = Instant::now() + wait;
        wait
    }

    /// Whether the instance is still waiting out a failed creation.
    pub(super) fn is_parked(&self, id: &InstanceId) -> bool {
        let now = Instant::now();
        self.parked.get(id).is_some_and(|p| p.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn id(text: &str) -> InstanceId {
        InstanceId(text.into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_created_object_may_stay_unseen_for_the_vanish_grace_and_no_longer() {
        let mut books = Books::default();
        books.created(&id("i-1"));
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        assert!(books.just_created(&id("i-1"), GRACE), "late, not gone");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!books.just_created(&id("i-1"), GRACE), "gone once the grace is over");
        assert!(
            !books.just_created(&id("i-2"), GRACE),
            "an instance this reconciler did not create has no grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_seen_once_has_no_grace_left() {
        let mut books = Books::default();
        books.created(&id("i-1"));
        books.seen(&id("i-1"));
        assert!(!books.just_created(&id("i-1"), GRACE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_instance_waits_longer_after_each_failure_and_not_at_all_once_created() {
        let max = Duration::from_secs(8);
        let mut books = Books::default();
        let first = books.park(&id("i-1"), max);
        assert!((Duration::from_secs(1)..Duration::from_secs(2)).contains(&first), "{first:?}");
        assert!(books.is_parked(&id("i-1")));
        assert!(!books.is_parked(&id("i-2")));
        tokio::time::advance(first - Duration::from_millis(1)).await;
        assert!(books.is_parked(&id("i-1")));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!books.is_parked(&id("i-1")), "due again once the wait is over");

        let second = books.park(&id("i-1"), max);
        assert!(second > first, "{second:?} after {first:?}");
        let waits: Vec<Duration> = (0..6).map(|_| books.park(&id("i-1"), max)).collect();
        assert!(waits.iter().all(|w| *w < max * 2), "the wait stops growing at its cap: {waits:?}");
        assert!(*waits.last().unwrap() >= max);

        books.created(&id("i-1"));
        assert!(!books.is_parked(&id("i-1")));
        let again = books.park(&id("i-1"), max);
        assert!(again < Duration::from_secs(2), "a new failure starts from the shortest wait: {again:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_is_recorded_when_it_changes_or_grows_old_and_a_shortage_is_news_once() {
        let refresh = Duration::from_secs(30);
        let mut books = Books::default();
        let reading = ClusterCapacity { nodes: 2, schedulable_nodes: 2, ..ClusterCapacity::default() };
        assert!(books.capacity_due(&reading, refresh), "never recorded");
        assert!(!books.capacity_recorded(reading.clone(), false), "not short, as before");
        assert!(!books.capacity_due(&reading, refresh));
        let cordoned = ClusterCapacity { schedulable_nodes: 1, ..reading.clone() };
        assert!(books.capacity_due(&cordoned, refresh), "changed");
        assert!(books.capacity_recorded(cordoned.clone(), true), "short is news");
        tokio::time::advance(refresh).await;
        assert!(books.capacity_due(&cordoned, refresh), "old");
        assert!(!books.capacity_recorded(cordoned, true), "still short is not news");
        assert!(books.capacity_recorded(reading, false), "the end of a shortage is news");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_vouches_for_the_link_for_the_probe_interval() {
        let interval = Duration::from_secs(1);
        let mut books = Books::default();
        assert!(!books.answered_within(interval));
        books.probed(LinkState::Up, ProbeResult::Answered);
        tokio::time::advance(interval - Duration::from_millis(1)).await;
        assert!(books.answered_within(interval));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!books.answered_within(interval));
        books.probed(LinkState::Missing(1), ProbeResult::Missed);
        assert!(!books.answered_within(interval));
        assert_eq!(books.link(), LinkState::Missing(1));
    }
}
