//! A group's desired count at one tick: `clamp(max(the active window's desired, the load's count),
//! min, max)`.
//!
//! A window is a booking, so it is reached at once when it opens and is never stabilised or rate
//! limited: a customer who books 1,000 for 20:00 has 1,000 at 20:00. Those rules shape the load's
//! count only, which is why a window that ends while the load has asked for 200 for the last five
//! minutes leaves the group at 200 on the first tick after its end. Without a load policy a group
//! is at its window's count, or at its minimum outside windows. With a load policy whose metrics are
//! missing, the load holds what it last asked for with metrics (as the HPA does, a broken metrics
//! pipeline never shrinks a loaded group; but a count a window raised still ends with the window),
//! and the caller shows `metrics_missing`.

use chrono::{DateTime, Utc};

use crate::load::{
    self, Behaviour, LoadDecision, LoadHistory, LoadInput, LoadReason, MetricKind, Sample, Target,
};
use crate::schedule::{Booking, Schedule};

/// A group's load policy with what it measured this tick.
#[derive(Debug, Clone, Copy)]
pub struct LoadPolicy<'a> {
    /// What the metric measures.
    pub metric: MetricKind,
    /// The average per instance the group aims at.
    pub target: Target,
    /// How the group follows its load.
    pub behaviour: &'a Behaviour,
    /// One sample per live instance.
    pub samples: &'a [Sample],
    /// What the group remembers of earlier load decisions.
    pub history: &'a LoadHistory,
}

/// What a tick knows of a group.
#[derive(Debug, Clone, Copy)]
pub struct GroupInput<'a> {
    /// Its live instances now.
    pub current: u32,
    /// The fewest it may have.
    pub min: u32,
    /// The most it may have.
    pub max: u32,
    /// Its windows.
    pub schedule: &'a Schedule,
    /// Its load policy, if it has one.
    pub load: Option<LoadPolicy<'a>>,
}

/// What decided the desired count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// An active window's booking, at least as high as the load asked.
    Window {
        /// The window's index in the group's schedule.
        window: usize,
        /// What it books.
        desired: u32,
    },
    /// The load's count, and the step that decided it.
    Load(LoadReason),
    /// Nothing asks for more than the group's minimum.
    Minimum,
    /// What windows and load ask for is above the group's maximum.
    Maximum,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Window { window, desired } => write!(f, "window {window} books {desired}"),
            Reason::Load(reason) => write!(f, "load: {reason}"),
            Reason::Minimum => f.write_str("nothing asks for more than the minimum"),
            Reason::Maximum => f.write_str("what is asked for is above the maximum"),
        }
    }
}

/// A tick's decision for one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// How many instances the group should have.
    pub desired: u32,
    /// Why.
    pub reason: Reason,
    /// The window booking the most now, if any.
    pub booking: Option<Booking>,
    /// The load's decision, if the group has a load policy.
    pub load: Option<LoadDecision>,
    /// The next moment a window opens or closes: the scaler looks again then, whatever its tick.
    pub next_boundary: Option<DateTime<Utc>>,
}

impl Decision {
    /// What the group remembers after acting on this decision: what the load asked for, and the
    /// change really made to the count (`from` to `to`, which a shortage of capacity may leave
    /// short of the decision), whatever made it, so that rate policies hold over what happened.
    pub fn remember(
        &self,
        history: &mut LoadHistory,
        behaviour: &Behaviour,
        from: u32,
        to: u32,
        now: DateTime<Utc>,
    ) {
        let record = self.load.and_then(|l| l.record);
        if let Some(load) = &self.load {
            history.decided(load);
        }
        history.record(record, load::ScaleEvent::between(now, from, to), behaviour, now);
    }
}

/// Decides how many instances the group should have at `now`.
pub fn decide(input: &GroupInput<'_>, now: DateTime<Utc>) -> Decision {
    let booking = input.schedule.booking_at(now);
    let load = input.load.map(|policy| {
        load::recommend(
            &LoadInput {
                current: input.current,
                min: input.min,
                max: input.max,
                metric: policy.metric,
                target: policy.target,
                samples: policy.samples,
                behaviour: policy.behaviour,
                history: policy.history,
            },
            now,
        )
    });
    let booked = booking.map(|b| b.desired);
    let asked = booked.max(load.map(|l| l.count));
    let (desired, reason) = match (asked, booking, load) {
        (Some(n), _, _) if n > input.max => (input.max, Reason::Maximum),
        (Some(n), _, _) if n < input.min => (input.min, Reason::Minimum),
        (Some(n), Some(b), load) if load.is_none_or(|l| b.desired >= l.count) => {
            (n, Reason::Window { window: b.window, desired: b.desired })
        }
        (Some(n), _, Some(l)) => (n, Reason::Load(l.reason)),
        _ => (input.min, Reason::Minimum),
    };
    Decision { desired, reason, booking, load, next_boundary: input.schedule.next_boundary_after(now) }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;
    use crate::schedule::Window;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    fn evening() -> Schedule {
        Schedule {
            windows: vec![Window::new("0 20 * * *", "0 23 * * *", "Asia/Shanghai", 1000, 600).unwrap()],
        }
    }

    fn samples(n: u32, value: f64, started: DateTime<Utc>) -> Vec<Sample> {
        (0..n).map(|_| Sample { instance_started_at: started, value: Some(value) }).collect()
    }

    /// Runs the group tick by tick from `from` to `to`, acting on every decision at once, under a
    /// demand of `demand(at)` percent of one instance's CPU shared by all its instances; returns the
    /// count after each tick.
    fn run(
        schedule: &Schedule,
        (min, max): (u32, u32),
        mut current: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        demand: impl Fn(DateTime<Utc>) -> f64,
    ) -> Vec<(DateTime<Utc>, u32)> {
        let behaviour = Behaviour::default();
        let mut history = LoadHistory::default();
        let target = Target::new(60.0).unwrap();
        let started = from - Duration::hours(1);
        let mut at = from;
        let mut counts = Vec::new();
        while at <= to {
            let samples = samples(current, demand(at) / f64::from(current.max(1)), started);
            let policy = LoadPolicy {
                metric: MetricKind::Cpu,
                target,
                behaviour: &behaviour,
                samples: &samples,
                history: &history,
            };
            let decision = decide(&GroupInput { current, min, max, schedule, load: Some(policy) }, at);
            decision.remember(&mut history, &behaviour, current, decision.desired, at);
            current = decision.desired;
            counts.push((at, current));
            at += Duration::seconds(15);
        }
        counts
    }

    fn count_at(counts: &[(DateTime<Utc>, u32)], at: &str) -> u32 {
        let at = utc(at);
        counts.iter().rev().find(|(t, _)| *t <= at).map(|(_, n)| *n).expect("a tick before")
    }

    #[test]
    fn a_window_is_reached_at_once_at_its_lead_and_left_one_tick_after_its_end() {
        // Demand for 200 instances at 60% all evening; the window books 1,000 from 20:00 (12:00 UTC)
        // with a ten-minute lead, so during it each instance runs at 12%.
        let counts = run(
            &evening(),
            (100, 2000),
            200,
            utc("2030-01-01T11:00:00Z"),
            utc("2030-01-01T15:10:00Z"),
            |_| 12_000.0,
        );
        assert_eq!(count_at(&counts, "2030-01-01T11:49:45Z"), 200);
        assert_eq!(count_at(&counts, "2030-01-01T11:50:00Z"), 1000, "the whole booking at once, at the lead");
        assert_eq!(count_at(&counts, "2030-01-01T14:59:45Z"), 1000);
        assert_eq!(
            count_at(&counts, "2030-01-01T15:00:00Z"),
            200,
            "the load's 200, stabilised for five minutes already"
        );
    }

    #[test]
    fn load_above_the_booking_wins_and_is_rate_limited() {
        // 90% on 1,000 asks for 1,500; from the window's 1,000 the scale-up policy allows it at once.
        let counts = run(
            &evening(),
            (0, 1200),
            1000,
            utc("2030-01-01T12:00:00Z"),
            utc("2030-01-01T12:01:00Z"),
            |_| 90_000.0,
        );
        assert_eq!(count_at(&counts, "2030-01-01T12:00:00Z"), 1200, "clamped to the maximum");
        // Outside any window, a load step from 10 instances grows by at most 100% per 15 s.
        let none = Schedule::default();
        let counts =
            run(&none, (1, 1000), 10, utc("2030-01-01T00:00:00Z"), utc("2030-01-01T00:01:00Z"), |_| 6_000.0);
        let steps: Vec<u32> = counts.iter().map(|(_, n)| *n).collect();
        assert_eq!(steps[..4], [20, 40, 80, 100]);
    }

    #[test]
    fn without_a_load_policy_a_group_is_at_its_window_or_its_minimum() {
        let schedule = evening();
        let input = |current| GroupInput { current, min: 5, max: 2000, schedule: &schedule, load: None };
        let at = |t: &str| decide(&input(300), utc(t));
        assert_eq!(
            (at("2030-01-01T13:00:00Z").desired, at("2030-01-01T13:00:00Z").reason),
            (1000, Reason::Window { window: 0, desired: 1000 })
        );
        assert_eq!(
            (at("2030-01-01T16:00:00Z").desired, at("2030-01-01T16:00:00Z").reason),
            (5, Reason::Minimum)
        );
        assert_eq!(at("2030-01-01T16:00:00Z").next_boundary, Some(utc("2030-01-02T11:50:00Z")));
    }

    #[test]
    fn missing_metrics_hold_the_count() {
        let behaviour = Behaviour::default();
        let history = LoadHistory { last_count: Some(40), ..LoadHistory::default() };
        let none = Schedule::default();
        let blind = vec![Sample { instance_started_at: utc("2030-01-01T00:00:00Z"), value: None }; 40];
        let policy = LoadPolicy {
            metric: MetricKind::Custom,
            target: Target::new(10.0).unwrap(),
            behaviour: &behaviour,
            samples: &blind,
            history: &history,
        };
        let decision = decide(
            &GroupInput { current: 40, min: 1, max: 100, schedule: &none, load: Some(policy) },
            utc("2030-01-01T01:00:00Z"),
        );
        assert_eq!((decision.desired, decision.reason), (40, Reason::Load(LoadReason::MetricsMissing)));

        // A window raised the group to 40 over a load that last asked for 12: when the window ends
        // with the metrics missing, the group goes back to the load's 12, not the window's 40.
        let history = LoadHistory { last_count: Some(12), ..LoadHistory::default() };
        let policy = LoadPolicy { history: &history, ..policy };
        let decision = decide(
            &GroupInput { current: 40, min: 1, max: 100, schedule: &none, load: Some(policy) },
            utc("2030-01-01T01:00:00Z"),
        );
        assert_eq!((decision.desired, decision.reason), (12, Reason::Load(LoadReason::MetricsMissing)));
    }

    proptest! {
        #[test]
        fn the_desired_count_is_the_highest_ask_within_the_bounds(
            current in 0u32..3000, min in 0u32..500, spread in 0u32..3000, value in 0.0f64..400.0,
            hour in 0i64..48, booked in 0u32..3000,
        ) {
            let max = min + spread;
            let schedule = Schedule { windows: vec![Window::new("0 20 * * *", "0 23 * * *", "Asia/Shanghai", booked, 0).unwrap()] };
            let behaviour = Behaviour::default();
            let history = LoadHistory::default();
            let at = utc("2030-01-01T00:00:00Z") + Duration::hours(hour);
            let samples = samples(current, value, at - Duration::hours(1));
            let policy = LoadPolicy { metric: MetricKind::Cpu, target: Target::new(60.0).unwrap(), behaviour: &behaviour, samples: &samples, history: &history };
            let decision = decide(&GroupInput { current, min, max, schedule: &schedule, load: Some(policy) }, at);
            prop_assert!(decision.desired >= min && decision.desired <= max);
            if let Some(booking) = decision.booking {
                prop_assert!(decision.desired >= booking.desired.min(max), "a booking is never cut but by the maximum");
            }
            let load = decision.load.expect("a load policy decides");
            let asked = decision.booking.map(|b| b.desired).unwrap_or(0).max(load.count);
            prop_assert_eq!(decision.desired, asked.clamp(min, max));
        }
    }
}
