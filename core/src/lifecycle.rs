//! Lifecycles of instances, batches and reservations, each with one pure transition function that
//! refuses illegal moves.

use chrono::{DateTime, Utc};

use crate::records::SshEndpoint;
use crate::words::word_enum;

/// An illegal state change was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} cannot go from `{from}` to `{to}`")]
pub struct IllegalTransition {
    /// What changes state (`instance`, `batch`, `reservation`).
    pub kind: &'static str,
    /// The state it is in.
    pub from: &'static str,
    /// The state it was asked to go to.
    pub to: &'static str,
}

/// The refusal of a move from `from` to `to` of a `kind`.
fn illegal<S: crate::words::Word>(kind: &'static str, from: S, to: S) -> IllegalTransition {
    IllegalTransition { kind, from: from.as_str(), to: to.as_str() }
}

word_enum!(
    /// Where one instance is in its life.
    InstanceState, "instance state", {
        /// Accepted and holding capacity; nothing exists in the cluster yet.
        Pending => "pending",
        /// The Pod or VMI was asked for and is starting.
        Creating => "creating",
        /// The cluster reports it running; billing meters it from here.
        Running => "running",
        /// Release asked for; waiting for the cluster to remove it.
        Stopping => "stopping",
        /// Released and gone from its cluster; holds no capacity.
        Terminated => "terminated",
        /// Ended without being released (the cluster failed it, or its object vanished); holds no capacity.
        Failed => "failed",
        /// Its IDC is unreachable: presumed still running, never failed or re-created for that.
        Unknown => "unknown",
    }
);

impl InstanceState {
    /// An ended instance holds no capacity and never changes again.
    pub fn is_ended(&self) -> bool {
        matches!(self, InstanceState::Terminated | InstanceState::Failed)
    }

    /// The one place that decides which moves an instance may make.
    pub fn transition(self, to: InstanceState) -> Result<InstanceState, IllegalTransition> {
        use InstanceState::*;
        let legal = match (self, to) {
            (a, b) if a == b => !a.is_ended(),
            // Straight to running when a manager that restarted finds the Pod up before it recorded
            // `creating`.
            (Pending, Creating | Running | Stopping | Terminated | Failed | Unknown) => true,
            (Creating, Running | Stopping | Failed | Unknown) => true,
            (Running, Stopping | Failed | Unknown) => true,
            (Unknown, Pending | Creating | Running | Stopping | Terminated | Failed) => true,
            (Stopping, Terminated | Failed | Unknown) => true,
            _ => false,
        };
        if legal { Ok(to) } else { Err(illegal("instance", self, to)) }
    }
}

/// What a cluster says about an instance's Pod or VMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The object exists and is starting.
    Creating,
    /// The object runs, reachable at these addresses.
    Running {
        /// The Pod's or VMI's IP inside its IDC.
        ip: Option<String>,
        /// Where to ssh into a rich container or VM.
        ssh: Option<SshEndpoint>,
    },
    /// The object failed for good (image pull error, crash loop, unschedulable for too long...).
    Failed {
        /// The cluster's reason, shown to the customer.
        reason: String,
        /// When the cluster says it stopped, if it says: an IDC that was cut off reports the true
        /// end of what died meanwhile, and billing stops there rather than when the news arrived.
        ended_at: Option<DateTime<Utc>>,
    },
    /// The object is gone. For a `stopping` instance that is the end it waited for (`terminated`);
    /// for any other live instance someone or something removed it (`failed`).
    Gone,
}

/// Why an instance whose object vanished failed.
pub const VANISHED: &str = "its Pod or VMI disappeared from the cluster";

/// What an observation changes about an instance, as [`InstanceState::observe`] decides it; the
/// store applies it on the condition that the instance is still in the state it was decided from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It turns `creating`.
    Creating,
    /// It turns `running` at these addresses; it started now unless it had started before.
    Running {
        /// The Pod's or VMI's IP inside its IDC.
        ip: Option<String>,
        /// Where to ssh into a rich container or VM.
        ssh: Option<SshEndpoint>,
    },
    /// A `stopping` instance's object is gone: it turns `terminated` now.
    Terminated,
    /// It turns `failed` for `reason`, having ended at `ended_at` (never before it started, never
    /// after now).
    Failed {
        /// The cluster's reason, shown to the customer.
        reason: String,
        /// When it ended, in UTC: billing stops there.
        ended_at: DateTime<Utc>,
    },
}

impl Change {
    /// The state the instance is in once the change is applied.
    pub fn to(&self) -> InstanceState {
        match self {
            Change::Creating => InstanceState::Creating,
            Change::Running { .. } => InstanceState::Running,
            Change::Terminated => InstanceState::Terminated,
            Change::Failed { .. } => InstanceState::Failed,
        }
    }
}

/// What releasing an instance does to it, by its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Nothing of it exists in a cluster yet: it ends (`terminated`) at once.
    EndNow,
    /// Its Pod or VMI must be removed first: it turns `stopping` and keeps its capacity.
    Stop,
    /// Already stopping or ended: nothing changes.
    Nothing,
}

impl InstanceState {
    /// The states from which the cluster's report that an object runs turns an instance `running`
    /// (a manager that restarted may see a Pod running before it recorded `creating`).
    pub const RUNS_FROM: &'static [InstanceState] =
        &[InstanceState::Pending, InstanceState::Creating, InstanceState::Unknown];

    /// The states from which an instance whose object now exists turns `creating`.
    pub const CREATES_FROM: &'static [InstanceState] = &[InstanceState::Pending, InstanceState::Unknown];

    /// The states an instance leaves for `unknown` when its IDC's link is lost; a `stopping` one
    /// stays so, since its release still has to reach the cluster.
    pub const UNKNOWN_FROM: &'static [InstanceState] = &[InstanceState::Creating, InstanceState::Running];

    /// The live states, which hold capacity.
    pub const LIVE: &'static [InstanceState] = &[
        InstanceState::Pending,
        InstanceState::Creating,
        InstanceState::Running,
        InstanceState::Stopping,
        InstanceState::Unknown,
    ];

    /// What releasing an instance in this state does.
    pub fn on_release(self) -> Release {
        match self {
            InstanceState::Pending => Release::EndNow,
            InstanceState::Creating | InstanceState::Running | InstanceState::Unknown => Release::Stop,
            InstanceState::Stopping | InstanceState::Terminated | InstanceState::Failed => Release::Nothing,
        }
    }

    /// The states that releasing turns into `release`.
    pub fn released_as(release: Release) -> Vec<InstanceState> {
        InstanceState::ALL.iter().copied().filter(|s| s.on_release() == release).collect()
    }

    /// What the cluster's report `observed` changes about an instance in this state that started
    /// at `started_at` (if it did), at `now`. `None` when it changes nothing: the instance ended
    /// already, the report is stale, or only the object's removal matters (a `stopping` instance).
    pub fn observe(
        self,
        started_at: Option<DateTime<Utc>>,
        observed: &Observed,
        now: DateTime<Utc>,
    ) -> Option<Change> {
        if self.is_ended() {
            return None;
        }
        if self == InstanceState::Stopping {
            return (*observed == Observed::Gone).then_some(Change::Terminated);
        }
        let change = match observed {
            Observed::Creating => InstanceState::CREATES_FROM.contains(&self).then_some(Change::Creating)?,
            Observed::Running { ip, ssh } => InstanceState::RUNS_FROM
                .contains(&self)
                .then(|| Change::Running { ip: ip.clone(), ssh: ssh.clone() })?,
            Observed::Failed { reason, ended_at } => {
                let ended_at = ended_at.map_or(now, |e| e.max(started_at.unwrap_or(e)).min(now));
                Change::Failed { reason: reason.clone(), ended_at }
            }
            Observed::Gone => Change::Failed { reason: VANISHED.to_string(), ended_at: now },
        };
        debug_assert!(self.transition(change.to()).is_ok(), "{self} -> {}", change.to());
        Some(change)
    }
}

word_enum!(
    /// Where a batch is in its life.
    BatchState, "batch state", {
        /// Holds live instances.
        Active => "active",
        /// Released by its owner, or ended by itself once its last instance ended after some ran.
        Released => "released",
        /// Released by itself when its TTL ran out.
        Expired => "expired",
        /// Every instance ended and none ever ran (image pull errors, unschedulable, refused).
        Failed => "failed",
    }
);

impl BatchState {
    /// The one place that decides which moves a batch may make: an active batch ends once, released,
    /// expired or failed.
    pub fn transition(self, to: BatchState) -> Result<BatchState, IllegalTransition> {
        match (self, to) {
            (BatchState::Active, BatchState::Released | BatchState::Expired | BatchState::Failed) => Ok(to),
            _ => Err(illegal("batch", self, to)),
        }
    }

    /// Whether a batch in this state ends by itself when its last instance ends: only an active
    /// one does, so the store need not look at the instances of a batch that ended already.
    pub fn ends_with_its_instances(self) -> bool {
        self == BatchState::Active
    }

    /// What a batch in this state turns into once its instances have ended as described: an
    /// active batch with no live instance left (its last released one by one, or failed) ends too,
    /// so that a customer never sees an `active` batch of nothing. It is `failed` when every
    /// instance failed without ever running, `released` otherwise (`ever_ran`: any of them ran;
    /// `any_released`: any was released by its owner). `None` when it does not change.
    pub fn after_instances_end(
        self,
        any_live: bool,
        ever_ran: bool,
        any_released: bool,
    ) -> Option<BatchState> {
        let failed = !ever_ran && !any_released;
        (self.ends_with_its_instances() && !any_live).then_some(if failed {
            BatchState::Failed
        } else {
            BatchState::Released
        })
    }
}

word_enum!(
    /// Where a reservation is in its life.
    ReservationState, "reservation state", {
        /// Holds its capacity for its owner's batches until its end time.
        Active => "active",
        /// Deleted by its owner; what was unused went back to the pool.
        Released => "released",
        /// Its end time passed; what was unused went back to the pool.
        Expired => "expired",
    }
);

impl ReservationState {
    /// The one place that decides which moves a reservation may make: an active one ends once,
    /// released or expired.
    pub fn transition(self, to: ReservationState) -> Result<ReservationState, IllegalTransition> {
        match (self, to) {
            (ReservationState::Active, ReservationState::Released | ReservationState::Expired) => Ok(to),
            _ => Err(illegal("reservation", self, to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_instances_never_change_again() {
        for end in [InstanceState::Terminated, InstanceState::Failed] {
            for to in InstanceState::ALL {
                assert!(end.transition(to).is_err(), "{end} -> {to}");
            }
        }
    }

    #[test]
    fn an_unreachable_instance_is_never_failed_by_the_transition_rules_alone() {
        assert!(InstanceState::Running.transition(InstanceState::Unknown).is_ok());
        assert!(InstanceState::Unknown.transition(InstanceState::Running).is_ok());
        assert!(InstanceState::Running.transition(InstanceState::Pending).is_err());
        assert!(InstanceState::Running.transition(InstanceState::Terminated).is_err());
    }

    fn an_observation() -> impl proptest::strategy::Strategy<Value = Observed> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Observed::Creating),
            Just(Observed::Running { ip: Some("10.0.0.1".into()), ssh: None }),
            (-100i64..100).prop_map(|s| Observed::Failed { reason: "Evicted".into(), ended_at: Some(at(s)) }),
            Just(Observed::Failed { reason: "ErrImagePull".into(), ended_at: None }),
            Just(Observed::Gone),
        ]
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
    }

    proptest::proptest! {
        /// Whatever a cluster reports, the change decided is a legal move; ended instances never
        /// change, a stopping one changes only when its object is gone, and a failure is never
        /// billed to before the instance started or after now.
        #[test]
        fn observations_only_make_legal_moves(
            state in proptest::sample::select(InstanceState::ALL.to_vec()),
            started in proptest::option::of(-50i64..=0),
            observed in an_observation(),
        ) {
            let now = at(0);
            let started_at = started.map(at);
            let change = state.observe(started_at, &observed, now);
            if let Some(change) = &change {
                proptest::prop_assert!(state.transition(change.to()).is_ok(), "{state} -> {}", change.to());
                proptest::prop_assert_ne!(change.to(), state);
                if let Change::Failed { ended_at, .. } = change {
                    proptest::prop_assert!(*ended_at <= now);
                    if let Some(started_at) = started_at {
                        proptest::prop_assert!(*ended_at >= started_at);
                    }
                }
            }
            if state.is_ended() {
                proptest::prop_assert_eq!(change, None);
            } else if state == InstanceState::Stopping {
                proptest::prop_assert_eq!(change.is_some(), observed == Observed::Gone);
            }
        }
    }

    #[test]
    fn a_batch_ends_with_its_last_instance_and_fails_only_if_all_failed_without_running() {
        assert_eq!(BatchState::Active.after_instances_end(true, true, false), None);
        assert_eq!(BatchState::Active.after_instances_end(false, true, false), Some(BatchState::Released));
        assert_eq!(BatchState::Active.after_instances_end(false, false, true), Some(BatchState::Released));
        assert_eq!(BatchState::Active.after_instances_end(false, false, false), Some(BatchState::Failed));
        for ended in [BatchState::Released, BatchState::Expired, BatchState::Failed] {
            assert_eq!(ended.after_instances_end(false, false, false), None, "{ended} stays");
        }
        for to in [BatchState::Released, BatchState::Failed] {
            assert!(BatchState::Active.transition(to).is_ok());
        }
    }

    #[test]
    fn releasing_ends_what_has_no_object_and_stops_what_has_one() {
        assert_eq!(InstanceState::released_as(Release::EndNow), vec![InstanceState::Pending]);
        assert_eq!(
            InstanceState::released_as(Release::Stop),
            vec![InstanceState::Creating, InstanceState::Running, InstanceState::Unknown]
        );
        for s in InstanceState::released_as(Release::Stop) {
            assert!(s.transition(InstanceState::Stopping).is_ok());
        }
        assert!(InstanceState::Pending.transition(InstanceState::Terminated).is_ok());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>(), Ok(s));
        }
        assert!("gone".parse::<BatchState>().is_err());
        assert!(BatchState::Released.transition(BatchState::Active).is_err());
        assert!(ReservationState::Active.transition(ReservationState::Expired).is_ok());
    }
}
