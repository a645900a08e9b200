//! One tick of one group: from its record and its instances to what the scaler does (grow by so
//! many, remove these instances, or hold) and the status it shows. The store applies the action
//! conditionally on the group's generation; this module only decides.
//!
//! - Current: instances pending, creating, running, or `unknown` (in an IDC the platform cannot
//!   reach: still running, so counted, and never replaced or removed). Stopping ones are on their
//!   way out and failed ones are gone, which is how a failed instance gets replaced.
//! - Growing keeps away from IDCs where the group's instances keep failing ([`FAILURES_TO_AVOID`]
//!   within [`FAILURE_WINDOW_SECONDS`]) for a time that doubles with each avoidance in a row.
//! - Shrinking removes instances that never started first (newest first), then running ones from
//!   the IDCs most above an even share, newest first.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use eci_core::{IdcId, InstanceId, InstanceState};

use crate::decision::{Decision, GroupInput, LoadPolicy, decide};
use crate::group::{ActiveWindow, Avoidance, Condition, Group, MetricReading, Mode, Status};
use crate::load::{LoadHistory, LoadReason, Sample};
use crate::schedule::Schedule;

/// How many of a group's instances must fail in one IDC within [`FAILURE_WINDOW_SECONDS`] for the
/// group to keep away from it.
pub const FAILURES_TO_AVOID: usize = 3;

/// How far back failures count towards avoiding an IDC.
pub const FAILURE_WINDOW_SECONDS: i64 = 600;

/// How long the first avoidance lasts; each one in a row doubles it, up to [`MAX_AVOID_SECONDS`].
pub const FIRST_AVOID_SECONDS: i64 = 60;

/// The longest an IDC is avoided at once.
pub const MAX_AVOID_SECONDS: i64 = 1_800;

/// A sample older than this is no sample: the metrics pipeline has stopped for that instance.
pub const STALE_AFTER_SECONDS: i64 = 120;

/// One instance of the group as the tick sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its id.
    pub id: InstanceId,
    /// Where it is.
    pub idc: IdcId,
    /// Its state.
    pub state: InstanceState,
    /// When it was created (its order among the group's).
    pub created_at: DateTime<Utc>,
    /// When it started running, if it did.
    pub started_at: Option<DateTime<Utc>>,
    /// Its latest metric value and when it was measured.
    pub metric: Option<(f64, DateTime<Utc>)>,
}

impl Member {
    fn counts(&self) -> bool {
        matches!(
            self.state,
            InstanceState::Pending
                | InstanceState::Creating
                | InstanceState::Running
                | InstanceState::Unknown
        )
    }
}

/// A failure of one of the group's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where it failed.
    pub idc: IdcId,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the scaler does for the group this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: the group is at its count, or the scaler only previews.
    Hold,
    /// Place this many more, away from these IDCs.
    Grow {
        /// How many to add.
        count: u32,
        /// IDCs to leave out of the placement.
        avoid: BTreeSet<IdcId>,
    },
    /// Release these instances.
    Shrink {
        /// In the order chosen.
        instances: Vec<InstanceId>,
    },
}

/// One tick's outcome for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// The decision and why.
    pub decision: Decision,
    /// What to do about it.
    pub action: Action,
    /// What the group shows until the next tick (the store adds `capacity_limited` when growing
    /// placed less than asked).
    pub status: Status,
}

/// Decides one tick for `group` over its members and recent failures.
pub fn tick(
    group: &Group,
    schedule: &Schedule,
    members: &[Member],
    failures: &[Failure],
    history: &LoadHistory,
    now: DateTime<Utc>,
) -> Tick {
    let live: Vec<&Member> = members.iter().filter(|m| m.counts()).collect();
    let current = u32::try_from(live.len()).unwrap_or(u32::MAX);
    let samples: Vec<Sample> = live.iter().map(|m| sample(m, now)).collect();
    let policy = &group.policy;
    let load = policy.load.as_ref().map(|l| LoadPolicy {
        metric: l.metric.kind(),
        target: l.target,
        behaviour: &l.behaviour,
        samples: &samples,
        history,
    });
    let input = GroupInput { current, min: policy.min, max: policy.max, schedule, load };
    let decision = decide(&input, now);

    let avoided = avoidances(&group.status.avoided, failures, now);
    let mut conditions = Vec::new();
    if decision.load.is_some_and(|l| l.reason == LoadReason::MetricsMissing) {
        conditions.push(Condition::MetricsMissing);
    }
    if live.iter().any(|m| m.state == InstanceState::Unknown) {
        conditions.push(Condition::DisconnectedIdcs);
    }
    if policy.mode == Mode::Preview {
        conditions.push(Condition::Preview);
    }
    if !avoided.is_empty() {
        conditions.push(Condition::AvoidingIdcs);
    }

    let action = match (policy.mode, decision.desired.cmp(&current)) {
        (Mode::Preview, _) | (_, std::cmp::Ordering::Equal) => Action::Hold,
        (Mode::Auto, std::cmp::Ordering::Greater) => {
            Action::Grow { count: decision.desired - current, avoid: avoided.keys().cloned().collect() }
        }
        (Mode::Auto, std::cmp::Ordering::Less) => {
            let instances = removals(&live, (current - decision.desired) as usize);
            if instances.is_empty() { Action::Hold } else { Action::Shrink { instances } }
        }
    };

    let metric = decision.load.and_then(|l| l.recommendation).map(|r| MetricReading {
        value: r.usage.average,
        reporting: r.usage.reporting,
        sampled_at: oldest_sample(&live, now).unwrap_or(now),
    });
    let status = Status {
        decided_at: Some(now),
        current,
        desired: decision.desired,
        reason: decision.reason.to_string(),
        active_window: decision.booking.map(|b| ActiveWindow {
            index: b.window,
            desired: b.desired,
            occurrence: b.occurrence,
        }),
        next_boundary: decision.next_boundary,
        metric,
        conditions,
        avoided,
    };
    Tick { decision, action, status }
}

/// What the group remembers of this tick: the load's recommendation, and the change the scaler
/// really made (`from` to `to`), so that rate policies hold over what happened, not what was asked.
pub fn remember(
    history: &mut LoadHistory,
    group: &Group,
    decision: &Decision,
    from: u32,
    to: u32,
    now: DateTime<Utc>,
) {
    if let Some(load) = &group.policy.load {
        decision.remember(history, &load.behaviour, from, to, now);
    }
}

/// A member's sample: an instance not yet running counts as fresh and idle (the HPA's unready
/// Pod: left out, or nothing on a scale-up); a stale or absent metric is missing.
fn sample(member: &Member, now: DateTime<Utc>) -> Sample {
    let Some(started_at) = member.started_at.filter(|_| member.state == InstanceState::Running) else {
        return Sample { instance_started_at: now, value: Some(0.0) };
    };
    let value = member
        .metric
        .filter(|(_, at)| now.signed_duration_since(*at) <= Duration::seconds(STALE_AFTER_SECONDS))
        .map(|(v, _)| v);
    Sample { instance_started_at: started_at, value }
}

fn oldest_sample(live: &[&Member], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let stale = now - Duration::seconds(STALE_AFTER_SECONDS);
    live.iter().filter_map(|m| m.metric.map(|(_, at)| at)).filter(|at| *at >= stale).min()
}

/// The IDCs to keep away from after this tick: avoidances still running, plus every IDC with
/// [`FAILURES_TO_AVOID`] failures since its last counted failure, within the failure window.
pub fn avoidances(
    previous: &BTreeMap<IdcId, Avoidance>,
    failures: &[Failure],
    now: DateTime<Utc>,
) -> BTreeMap<IdcId, Avoidance> {
    let window_start = now - Duration::seconds(FAILURE_WINDOW_SECONDS);
    let mut by_idc: BTreeMap<&IdcId, Vec<DateTime<Utc>>> = BTreeMap::new();
    for failure in failures {
        by_idc.entry(&failure.idc).or_default().push(failure.at);
    }
    let mut out = BTreeMap::new();
    let idcs: BTreeSet<&IdcId> = previous.keys().chain(by_idc.keys().copied()).collect();
    for idc in idcs {
        let before = previous.get(idc);
        let counted_after = before.map_or(window_start, |a| a.last_failure_at.max(window_start));
        let new: Vec<DateTime<Utc>> = by_idc
            .get(idc)
            .map(|ats| ats.iter().copied().filter(|at| *at > counted_after && *at <= now).collect())
            .unwrap_or_default();
        match before {
            Some(a) if a.until > now => {
                out.insert(idc.clone(), *a);
            }
            _ if new.len() >= FAILURES_TO_AVOID => {
                // In a row: the last avoidance ended less than a failure window ago.
                let strikes = before
                    .filter(|a| {
                        now.signed_duration_since(a.until) < Duration::seconds(FAILURE_WINDOW_SECONDS)
                    })
                    .map_or(1, |a| a.strikes.saturating_add(1));
                let seconds =
                    FIRST_AVOID_SECONDS.saturating_mul(1_i64 << (strikes - 1).min(20)).min(MAX_AVOID_SECONDS);
                let last_failure_at = *new.iter().max().expect("at least FAILURES_TO_AVOID failures");
                out.insert(
                    idc.clone(),
                    Avoidance { until: now + Duration::seconds(seconds), strikes, last_failure_at },
                );
            }
            // Kept after it ends for a failure window, so that a relapse counts as in a row.
            Some(a) if now.signed_duration_since(a.until) < Duration::seconds(FAILURE_WINDOW_SECONDS) => {
                out.insert(idc.clone(), *a);
            }
            _ => {}
        }
    }
    out
}

/// `count` instances to remove, in order: those that never started (newest first), then running
/// ones from the IDC holding the most of the group's instances (newest first), one at a time so
/// that the IDCs even out. Instances in unreachable IDCs are never chosen, though they count
/// towards their IDC's share.
pub fn removals(live: &[&Member], count: usize) -> Vec<InstanceId> {
    let mut out = Vec::with_capacity(count);
    let mut unstarted: Vec<&&Member> =
        live.iter().filter(|m| matches!(m.state, InstanceState::Pending | InstanceState::Creating)).collect();
    unstarted.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    out.extend(unstarted.iter().take(count).map(|m| m.id.clone()));

    let mut held: BTreeMap<&IdcId, usize> = BTreeMap::new();
    let mut running: BTreeMap<&IdcId, Vec<&Member>> = BTreeMap::new();
    for m in live {
        if m.state == InstanceState::Running || m.state == InstanceState::Unknown {
            *held.entry(&m.idc).or_default() += 1;
        }
        if m.state == InstanceState::Running {
            running.entry(&m.idc).or_default().push(m);
        }
    }
    for members in running.values_mut() {
        members.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    }
    while out.len() < count {
        // The IDC most above an even share is the one holding the most; ties go to the IDC whose
        // newest instance is newest.
        let Some(idc) = running
            .iter()
            .filter(|(_, ms)| !ms.is_empty())
            .max_by_key(|(idc, ms)| (held[*idc], ms.last().map(|m| (m.created_at, m.id.clone()))))
            .map(|(idc, _)| *idc)
        else {
            break;
        };
        let member = running.get_mut(idc).and_then(Vec::pop).expect("a non-empty IDC was chosen");
        *held.get_mut(idc).expect("held counts every running member") -= 1;
        out.push(member.id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn member(n: u32, idc: &str, state: InstanceState) -> Member {
        let created_at = utc("2030-01-01T00:00:00Z") + Duration::seconds(i64::from(n));
        Member {
            id: InstanceId(format!("i-{n:04}")),
            idc: IdcId(idc.into()),
            state,
            created_at,
            started_at: (state == InstanceState::Running).then_some(created_at),
            metric: None,
        }
    }

    fn ids(list: &[InstanceId]) -> Vec<&str> {
        list.iter().map(|i| i.0.as_str()).collect()
    }

    #[test]
    fn unstarted_instances_go_first_newest_first_then_the_fullest_idc_evens_out_newest_first() {
        let members = [
            member(1, "a", InstanceState::Running),
            member(2, "a", InstanceState::Running),
            member(3, "a", InstanceState::Running),
            member(4, "b", InstanceState::Running),
            member(5, "a", InstanceState::Pending),
            member(6, "b", InstanceState::Creating),
            member(7, "b", InstanceState::Unknown),
            member(8, "c", InstanceState::Running),
        ];
        let live: Vec<&Member> = members.iter().collect();
        assert_eq!(ids(&removals(&live, 1)), ["i-0006"]);
        assert_eq!(ids(&removals(&live, 2)), ["i-0006", "i-0005"]);
        // a holds 3 running, b 2 (one of them unknown, which is never removed), c 1: a's newest
        // goes; then a and b hold 2 each and b's newest (4) is newer than a's (2).
        assert_eq!(ids(&removals(&live, 4)), ["i-0006", "i-0005", "i-0003", "i-0004"]);
        assert_eq!(ids(&removals(&live, 5)), ["i-0006", "i-0005", "i-0003", "i-0004", "i-0002"]);
        assert_eq!(removals(&live, 100).len(), 7, "everything but the unknown one");
    }

    fn failures(idc: &str, at: &[&str]) -> Vec<Failure> {
        at.iter().map(|t| Failure { idc: IdcId(idc.into()), at: utc(t) }).collect()
    }

    #[test]
    fn an_idc_is_avoided_after_three_failures_for_a_time_that_doubles_in_a_row() {
        let now = utc("2030-01-01T01:00:00Z");
        let two = failures("a", &["2030-01-01T00:58:00Z", "2030-01-01T00:59:00Z"]);
        assert!(avoidances(&BTreeMap::new(), &two, now).is_empty(), "two failures are not a pattern");
        let old = failures("a", &["2030-01-01T00:40:00Z", "2030-01-01T00:41:00Z", "2030-01-01T00:59:00Z"]);
        assert!(avoidances(&BTreeMap::new(), &old, now).is_empty(), "failures older than 10 minutes");

        let three = failures("a", &["2030-01-01T00:57:00Z", "2030-01-01T00:58:00Z", "2030-01-01T00:59:00Z"]);
        let first = avoidances(&BTreeMap::new(), &three, now);
        let a = first[&IdcId("a".into())];
        assert_eq!((a.until, a.strikes), (now + Duration::seconds(60), 1));

        // The same failures do not count again once the avoidance ends.
        let later = now + Duration::seconds(61);
        let kept = avoidances(&first, &three, later);
        assert_eq!(kept[&IdcId("a".into())], a, "remembered for a relapse, but not renewed");

        // Three new failures right after: avoided again, twice as long.
        let relapse =
            failures("a", &["2030-01-01T01:01:10Z", "2030-01-01T01:01:20Z", "2030-01-01T01:01:30Z"]);
        let at = utc("2030-01-01T01:01:40Z");
        let second = avoidances(&kept, &[three.clone(), relapse].concat(), at)[&IdcId("a".into())];
        assert_eq!((second.until, second.strikes), (at + Duration::seconds(120), 2));

        // Long after, it is forgotten.
        assert!(avoidances(&kept, &three, now + Duration::hours(1)).is_empty());
    }

    proptest! {
        #[test]
        fn removals_never_touch_unknown_instances_nor_repeat_and_take_what_is_asked(
            states in proptest::collection::vec((0..4_u8, 0..4_u8), 0..60),
            count in 0_usize..80,
        ) {
            let members: Vec<Member> = states
                .iter()
                .enumerate()
                .map(|(n, (state, idc))| {
                    let state = [InstanceState::Pending, InstanceState::Creating, InstanceState::Running,
                        InstanceState::Unknown][usize::from(*state)];
                    member(n as u32, &format!("idc-{idc}"), state)
                })
                .collect();
            let live: Vec<&Member> = members.iter().collect();
            let removable = members.iter().filter(|m| m.state != InstanceState::Unknown).count();
            let chosen = removals(&live, count);
            prop_assert_eq!(chosen.len(), count.min(removable));
            let unique: BTreeSet<&InstanceId> = chosen.iter().collect();
            prop_assert_eq!(unique.len(), chosen.len());
            for id in &chosen {
                let m = members.iter().find(|m| &m.id == id).unwrap();
                prop_assert!(m.state != InstanceState::Unknown);
            }
            // Every unstarted instance goes before any running one.
            let unstarted = members.iter().filter(|m| matches!(m.state, InstanceState::Pending | InstanceState::Creating)).count();
            for (i, id) in chosen.iter().enumerate() {
                let m = members.iter().find(|m| &m.id == id).unwrap();
                prop_assert_eq!(m.state == InstanceState::Running, i >= unstarted);
            }
        }
    }
}
