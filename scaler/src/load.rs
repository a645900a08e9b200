//! The load recommendation: how many instances a group needs for the load its instances report,
//! computed as the Kubernetes HPA computes it (`replica_calculator.go` and the behaviour path of
//! `horizontal.go`), in three steps that [`recommend`] runs in the HPA's order.
//!
//! 1. [`replica_recommendation`]: the average metric of the ready instances against the target.
//!    Within the tolerance the count stays; otherwise instances without a metric are counted as
//!    using the target on a scale-down and nothing on a scale-up, fresh instances are left out and
//!    counted as using nothing on a scale-up only, and a recount that lands within the tolerance or
//!    reverses the direction keeps the count too.
//! 2. [`stabilised`]: the current count, brought up to the lowest recommendation of the scale-up
//!    window and down to the highest of the scale-down window, so that a short dip or spike does not
//!    move the group.
//! 3. [`rate_limited`]: at most as far as the rate policies allow over their periods, measured from
//!    the group's recent scale events, then within the group's minimum and maximum.
//!
//! The caller keeps a [`LoadHistory`] between decisions and records each decision and each change
//! of the count into it. Time windows are not this module's concern: the caller takes the larger of
//! a window's `desired` and the load recommendation, and a window is never stabilised or limited.
//!
//! # Where floating point is used
//!
//! Metric values, the target, the tolerance and the usage ratio are `f64`, as metrics are. Counts,
//! periods and rate limits are integers, and percent policies are computed exactly in integers (the
//! HPA multiplies by `1 + value / 100` in floating point, which makes 10 percent of 10 instances
//! 11.000000000000002 and so 12). A count comes from one division, `ceil(total / target)`, which
//! is the HPA's `ceil(ratio * instances)` without its extra rounding, and a quotient within one part
//! in 10^9 above a whole number is taken as that number: sums of decimal values (0.1 + 0.2) land a
//! hair above the whole number they stand for, and a bare `ceil` would add an instance for nothing.
//!
//! # Where this differs from the HPA
//!
//! An instance is judged by its start time alone: it is fresh (the HPA's unready) while it started
//! less than 5 minutes ago for CPU, its initialisation period, or 30 seconds ago for other metrics,
//! the HPA's initial readiness delay. The HPA also reads readiness conditions, which a sample does
//! not carry, and leaves readiness out for metrics other than CPU.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The longest period a rate policy may have, as the HPA allows: 30 minutes.
pub const MAX_PERIOD_SECONDS: u32 = 1_800;

/// The longest stabilisation window, as the HPA allows: an hour.
pub const MAX_STABILISATION_SECONDS: u32 = 3_600;

/// How far above a whole number `total / target` may be and still count as that number.
const WHOLE_NUMBER_SLACK: f64 = 1e-9;

/// Why a behaviour or a target cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// A policy measured over no time at all would allow nothing, or everything.
    #[error("the {direction} policy `{policy}` has a period of 0 seconds")]
    PeriodZero {
        /// The direction whose rules hold the policy.
        direction: Direction,
        /// The policy as given.
        policy: RatePolicy,
    },
    /// A policy's period is longer than [`MAX_PERIOD_SECONDS`].
    #[error("the {direction} policy `{policy}` has a period longer than {MAX_PERIOD_SECONDS} seconds")]
    PeriodTooLong {
        /// The direction whose rules hold the policy.
        direction: Direction,
        /// The policy as given.
        policy: RatePolicy,
    },
    /// A policy that allows no change: `Select::Disabled` says that plainly.
    #[error("the {direction} policy `{policy}` allows no change; disable {direction} instead")]
    ValueZero {
        /// The direction whose rules hold the policy.
        direction: Direction,
        /// The policy as given.
        policy: RatePolicy,
    },
    /// Rules with no policy: the HPA requires at least one.
    #[error("the {direction} rules have no policy")]
    NoPolicies {
        /// The direction whose rules have none.
        direction: Direction,
    },
    /// A stabilisation window longer than [`MAX_STABILISATION_SECONDS`].
    #[error(
        "the {direction} stabilisation window of {seconds} seconds is longer than {MAX_STABILISATION_SECONDS}"
    )]
    StabilisationTooLong {
        /// The direction whose window it is.
        direction: Direction,
        /// The window as given.
        seconds: u32,
    },
    /// A tolerance that is NaN or infinite.
    #[error("the tolerance {tolerance} is not a number")]
    ToleranceNotFinite {
        /// The tolerance as given.
        tolerance: f64,
    },
    /// A tolerance below 0 or at 1 and above, which would make every ratio (or none) close enough.
    #[error("the tolerance {tolerance} must be at least 0 and below 1")]
    ToleranceOutOfRange {
        /// The tolerance as given.
        tolerance: f64,
    },
    /// A target that is not a positive, finite value: no average can be compared with it.
    #[error("the target {target} must be a positive number")]
    TargetNotPositive {
        /// The target as given.
        target: f64,
    },
}

/// No instance reported a usable metric, so there is no recommendation: the caller shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no ready instance reported a usable metric")]
pub struct MetricsMissing;

/// Which way a group's count moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More instances.
    Up,
    /// Fewer instances.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "scale-up",
            Direction::Down => "scale-down",
        })
    }
}

/// What a rate policy's value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// A number of instances.
    Instances,
    /// A percentage of the count at the start of the period.
    Percent,
}

/// How far a group may move in one direction over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePolicy {
    /// Whether `value` is instances or percent.
    pub kind: PolicyKind,
    /// How many instances, or what percentage, the group may move by over the period.
    pub value: u32,
    /// How far back the group's scale events count against `value`.
    pub period_seconds: u32,
}

impl RatePolicy {
    /// At most `value` instances per `period_seconds`.
    pub const fn instances(value: u32, period_seconds: u32) -> Self {
        RatePolicy { kind: PolicyKind::Instances, value, period_seconds }
    }

    /// At most `value` percent of the count at the start of the period per `period_seconds`.
    pub const fn percent(value: u32, period_seconds: u32) -> Self {
        RatePolicy { kind: PolicyKind::Percent, value, period_seconds }
    }

    /// The furthest count this policy allows from `start`, the count at the start of its period.
    fn limit(&self, direction: Direction, start: i128) -> i128 {
        let value = i128::from(self.value);
        match (self.kind, direction) {
            (PolicyKind::Instances, Direction::Up) => start + value,
            (PolicyKind::Instances, Direction::Down) => start - value,
            // Rounded up, as the HPA does, so that a small group can always grow.
            (PolicyKind::Percent, Direction::Up) => -(-(start * (100 + value))).div_euclid(100),
            (PolicyKind::Percent, Direction::Down) => (start * (100 - value)).div_euclid(100),
        }
    }
}

impl fmt::Display for RatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match (self.kind, self.value) {
            (PolicyKind::Instances, 1) => "instance",
            (PolicyKind::Instances, _) => "instances",
            (PolicyKind::Percent, _) => "percent",
        };
        write!(f, "{} {unit} per {} s", self.value, self.period_seconds)
    }
}

/// Which policy applies when a direction has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The policy allowing the largest change.
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// How a group moves in one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// How far back recommendations are remembered: the group moves only as far as all of them
    /// agree, so that a short spike or dip does not move it.
    pub stabilisation_seconds: u32,
    /// How fast the group may move.
    pub policies: Vec<RatePolicy>,
    /// Which of the policies applies.
    pub select: Select,
}

impl Rules {
    fn validate(&self, direction: Direction) -> Result<(), LoadError> {
        if self.stabilisation_seconds > MAX_STABILISATION_SECONDS {
            return Err(LoadError::StabilisationTooLong { direction, seconds: self.stabilisation_seconds });
        }
        if self.policies.is_empty() {
            return Err(LoadError::NoPolicies { direction });
        }
        for &policy in &self.policies {
            if policy.period_seconds == 0 {
                return Err(LoadError::PeriodZero { direction, policy });
            }
            if policy.period_seconds > MAX_PERIOD_SECONDS {
                return Err(LoadError::PeriodTooLong { direction, policy });
            }
            if policy.value == 0 {
                return Err(LoadError::ValueZero { direction, policy });
            }
        }
        Ok(())
    }

    fn longest_period_seconds(&self) -> u32 {
        self.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0)
    }
}

/// How a group follows its load: the HPA's `behavior` and tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    /// How the group grows.
    pub scale_up: Rules,
    /// How the group shrinks.
    pub scale_down: Rules,
    /// How far the usage ratio may stray from 1 before the count changes: small variations of a
    /// metric are noise, and chasing them would restart instances for nothing.
    pub tolerance: f64,
}

impl Default for Behaviour {
    /// The HPA's defaults: grow at once by up to 4 instances or 100 percent per 15 s, whichever is
    /// more; shrink to the highest recommendation of the last 5 minutes, by up to 100 percent per
    /// 15 s; a tolerance of 10 percent.
    fn default() -> Self {
        Behaviour {
            scale_up: Rules {
                stabilisation_seconds: 0,
                policies: vec![RatePolicy::instances(4, 15), RatePolicy::percent(100, 15)],
                select: Select::Max,
            },
            scale_down: Rules {
                stabilisation_seconds: 300,
                policies: vec![RatePolicy::percent(100, 15)],
                select: Select::Max,
            },
            tolerance: 0.1,
        }
    }
}

impl Behaviour {
    /// Checks the values the HPA's validation would refuse, so that a group is refused when it is
    /// set up rather than misbehaving later.
    pub fn validate(&self) -> Result<(), LoadError> {
        let tolerance = self.tolerance;
        if !tolerance.is_finite() {
            return Err(LoadError::ToleranceNotFinite { tolerance });
        }
        if !(0.0..1.0).contains(&tolerance) {
            return Err(LoadError::ToleranceOutOfRange { tolerance });
        }
        self.scale_up.validate(Direction::Up)?;
        self.scale_down.validate(Direction::Down)
    }

    fn rules(&self, direction: Direction) -> &Rules {
        match direction {
            Direction::Up => &self.scale_up,
            Direction::Down => &self.scale_down,
        }
    }
}

/// The average metric value per instance a group aims at: positive and finite, or it is refused.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Target(f64);

impl Target {
    /// Refuses a target that no average could be compared with.
    pub fn new(target: f64) -> Result<Self, LoadError> {
        if target.is_finite() && target > 0.0 {
            Ok(Target(target))
        } else {
            Err(LoadError::TargetNotPositive { target })
        }
    }

    /// The target's value.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Target {
    type Error = LoadError;

    fn try_from(target: f64) -> Result<Self, LoadError> {
        Target::new(target)
    }
}

impl From<Target> for f64 {
    fn from(target: Target) -> f64 {
        target.0
    }
}

/// What the metric measures, which decides how long a new instance is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// CPU use, which runs high while an instance starts up.
    Cpu,
    /// Any other metric the instances report.
    Custom,
}

impl MetricKind {
    /// How long after it starts an instance's metric is not trusted: the HPA's
    /// `--horizontal-pod-autoscaler-cpu-initialization-period` (5 minutes) for CPU, its
    /// `--horizontal-pod-autoscaler-initial-readiness-delay` (30 seconds) for other metrics.
    pub const fn fresh_for_seconds(self) -> u32 {
        match self {
            MetricKind::Cpu => 300,
            MetricKind::Custom => 30,
        }
    }
}

/// One live instance's latest metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the instance started, which tells whether its metric can be trusted yet.
    pub instance_started_at: DateTime<Utc>,
    /// The instance's metric, or `None` when it reported none. A value that is negative, NaN or
    /// infinite is a broken report and counts as none.
    pub value: Option<f64>,
}

/// How the instances left out of the average were counted in the recount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountedAs {
    /// As using exactly the target, so that they hold a scale-down back.
    Target,
    /// As using nothing, so that they hold a scale-up back.
    Zero,
    /// Not at all.
    LeftOut,
}

/// The numbers behind a recommendation, for the event the caller writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// The average metric over the ready instances that reported one.
    pub average: f64,
    /// The target the average is compared with.
    pub target: Target,
    /// How many ready instances reported a metric.
    pub reporting: u32,
    /// How many instances reported no usable metric.
    pub missing: u32,
    /// How the instances without a metric were counted.
    pub missing_counted_as: CountedAs,
    /// How many instances started too recently for their metric to count.
    pub fresh: u32,
    /// How the fresh instances were counted.
    pub fresh_counted_as: CountedAs,
}

impl fmt::Display for Usage {
    /// `average 72.5 of target 60 over 40 instances, 3 without metrics counted as 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = |counted_as| match counted_as {
            CountedAs::Target => "counted as the target",
            CountedAs::Zero => "counted as 0",
            CountedAs::LeftOut => "left out",
        };
        write!(
            f,
            "average {} of target {} over {} {}",
            decimal(self.average),
            decimal(self.target.value()),
            self.reporting,
            if self.reporting == 1 { "instance" } else { "instances" }
        )?;
        if self.missing > 0 {
            write!(f, ", {} without metrics {}", self.missing, counted(self.missing_counted_as))?;
        }
        if self.fresh > 0 {
            write!(f, ", {} fresh {}", self.fresh, counted(self.fresh_counted_as))?;
        }
        Ok(())
    }
}

/// A value as an event shows it: three decimals at most, no trailing zeros.
fn decimal(value: f64) -> String {
    let fixed = format!("{value:.3}");
    if fixed.contains('.') { fixed.trim_end_matches('0').trim_end_matches('.').to_string() } else { fixed }
}

/// How the replica calculation reached its count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The average is within the tolerance of the target: the count stays.
    WithinTolerance,
    /// Counting the instances without metrics, or the fresh ones, brought the ratio within the
    /// tolerance: the count stays.
    RecountWithinTolerance {
        /// The usage ratio of the recount.
        ratio: f64,
    },
    /// Counting the instances without metrics, or the fresh ones, would move the group the other
    /// way: the count stays rather than act on a guess.
    RecountReversed {
        /// The usage ratio of the recount.
        ratio: f64,
    },
    /// The count follows the load: `ceil(ratio * counted)`.
    Proportional {
        /// The usage ratio the count follows.
        ratio: f64,
        /// How many instances the ratio was taken over.
        counted: u32,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::WithinTolerance => f.write_str("within tolerance of the target"),
            Verdict::RecountWithinTolerance { ratio } => write!(
                f,
                "within tolerance once instances without metrics or fresh are counted (ratio {})",
                decimal(*ratio)
            ),
            Verdict::RecountReversed { ratio } => write!(
                f,
                "counting instances without metrics or fresh would reverse the direction (ratio {})",
                decimal(*ratio)
            ),
            Verdict::Proportional { ratio, counted } => {
                write!(f, "ratio {} over {counted} instances", decimal(*ratio))
            }
        }
    }
}

/// What the replica calculation recommends, before stabilisation and rate limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// The recommended count.
    pub count: u32,
    /// How the count was reached.
    pub verdict: Verdict,
    /// The numbers it was reached from.
    pub usage: Usage,
}

/// The replica calculation of the HPA for an average-value target (`GetMetricReplicas`): the count
/// `samples` (one per live instance) call for, or `current` when the change would be too small or
/// rests on a guess.
pub fn replica_recommendation(
    current: u32,
    samples: &[Sample],
    target: Target,
    metric: MetricKind,
    tolerance: f64,
    now: DateTime<Utc>,
) -> Result<Recommendation, MetricsMissing> {
    let fresh_since = before(now, metric.fresh_for_seconds());
    let (mut total, mut reporting, mut missing, mut fresh) = (0.0, 0_u32, 0_u32, 0_u32);
    for sample in samples {
        // As the HPA groups pods: no metric first, then too fresh to trust, then ready.
        match sample.value.filter(|v| v.is_finite() && *v >= 0.0) {
            None => missing += 1,
            Some(_) if sample.instance_started_at > fresh_since => fresh += 1,
            Some(value) => {
                total += value;
                reporting += 1;
            }
        }
    }
    if reporting == 0 {
        return Err(MetricsMissing);
    }
    let target_value = target.value();
    let average = total / f64::from(reporting);
    let ratio = average / target_value;
    let within = |ratio: f64| (1.0 - tolerance) <= ratio && ratio <= 1.0 + tolerance;
    let scale_up_with_fresh = fresh > 0 && ratio > 1.0;
    let mut usage = Usage {
        average,
        target,
        reporting,
        missing,
        missing_counted_as: CountedAs::LeftOut,
        fresh,
        fresh_counted_as: CountedAs::LeftOut,
    };
    let decided = |count, verdict, usage| Ok(Recommendation { count, verdict, usage });

    if !scale_up_with_fresh && missing == 0 {
        if within(ratio) {
            return decided(current, Verdict::WithinTolerance, usage);
        }
        let verdict = Verdict::Proportional { ratio, counted: reporting };
        return decided(instances_for(total, target_value), verdict, usage);
    }

    let (mut recount_total, mut counted) = (total, reporting);
    if missing > 0 {
        if ratio < 1.0 {
            recount_total += f64::from(missing) * target_value;
            counted += missing;
            usage.missing_counted_as = CountedAs::Target;
        } else if ratio > 1.0 {
            counted += missing;
            usage.missing_counted_as = CountedAs::Zero;
        }
    }
    if scale_up_with_fresh {
        counted += fresh;
        usage.fresh_counted_as = CountedAs::Zero;
    }
    let recount = recount_total / (f64::from(counted) * target_value);
    if within(recount) {
        return decided(current, Verdict::RecountWithinTolerance { ratio: recount }, usage);
    }
    let reversed = |count: u32| {
        (ratio < 1.0 && recount > 1.0)
            || (ratio > 1.0 && recount < 1.0)
            || (recount < 1.0 && count > current)
            || (recount > 1.0 && count < current)
    };
    let count = instances_for(recount_total, target_value);
    if reversed(count) {
        return decided(current, Verdict::RecountReversed { ratio: recount }, usage);
    }
    decided(count, Verdict::Proportional { ratio: recount, counted }, usage)
}

/// `ceil(total / target)`, saturating, with a whole number's representation error forgiven.
fn instances_for(total: f64, target: f64) -> u32 {
    let exact = total / target;
    // A float-to-integer `as` saturates (and makes NaN 0), which is what a count wants.
    (exact - exact.abs() * WHOLE_NUMBER_SLACK).ceil() as u32
}

/// The moment `seconds` before `now`, or the dawn of time when that is before it.
fn before(now: DateTime<Utc>, seconds: u32) -> DateTime<Utc> {
    now.checked_sub_signed(TimeDelta::seconds(seconds.into())).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A recommendation the group received, remembered for stabilisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastRecommendation {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The count recommended, before stabilisation and rate limits.
    pub count: u32,
}

/// A change of the group's count, remembered for the rate policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    /// When the count changed.
    pub at: DateTime<Utc>,
    /// By how many instances: positive when the group grew.
    pub change: i64,
}

impl ScaleEvent {
    /// The event of a group going from `from` to `to` instances at `at`, if it moved at all.
    pub fn between(at: DateTime<Utc>, from: u32, to: u32) -> Option<Self> {
        let change = i64::from(to) - i64::from(from);
        (change != 0).then_some(ScaleEvent { at, change })
    }
}

/// What a group remembers between load decisions: plain data the caller stores.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadHistory {
    /// Recent recommendations, for the stabilisation windows.
    pub recommendations: Vec<PastRecommendation>,
    /// Recent changes of the count, for the rate policies.
    pub scale_events: Vec<ScaleEvent>,
    /// What the load last asked for with metrics in hand: what it holds while they are missing.
    #[serde(default)]
    pub last_count: Option<u32>,
}

impl LoadHistory {
    /// Remembers what a decision asked for, when it had metrics to go by.
    pub fn decided(&mut self, load: &LoadDecision) {
        if load.record.is_some() {
            self.last_count = Some(load.count);
        }
    }

    /// Remembers a decision's recommendation and the change the caller made to the count (record
    /// every change, whatever made it, so that rates hold over what really happened), and forgets
    /// what no window or period of `behaviour` can see any more.
    pub fn record(
        &mut self,
        recommendation: Option<PastRecommendation>,
        scale: Option<ScaleEvent>,
        behaviour: &Behaviour,
        now: DateTime<Utc>,
    ) {
        let window = behaviour.scale_up.stabilisation_seconds.max(behaviour.scale_down.stabilisation_seconds);
        let seen_since = before(now, window);
        self.recommendations.retain(|r| r.at > seen_since);
        self.recommendations.extend(recommendation);
        let period =
            behaviour.scale_up.longest_period_seconds().max(behaviour.scale_down.longest_period_seconds());
        let counted_since = before(now, period);
        self.scale_events.retain(|e| e.at > counted_since);
        self.scale_events.extend(scale);
    }
}

/// Why a load decision came out as it did: the last step that changed the count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadReason {
    /// No instance reported a usable metric: the load holds what it last asked for with metrics
    /// (the minimum if it never had any).
    MetricsMissing,
    /// The group is above its maximum: it goes to the maximum, whatever the load.
    CurrentAboveMax {
        /// The group's maximum.
        max: u32,
    },
    /// The group is below its minimum: it goes to the minimum, whatever the load.
    CurrentBelowMin {
        /// The group's minimum.
        min: u32,
    },
    /// The count is the replica calculation's, untouched by the behaviour.
    Recommended(Verdict),
    /// A stabilisation window held the count back.
    Stabilised {
        /// Which window.
        direction: Direction,
        /// How long it is.
        window_seconds: u32,
        /// The lowest recommendation in a scale-up window, the highest in a scale-down one.
        bound: u32,
    },
    /// A rate policy held the count back.
    RateLimited {
        /// Which direction's policy.
        direction: Direction,
        /// The policy that was selected.
        policy: RatePolicy,
    },
    /// The direction is disabled (`Select::Disabled`).
    Disabled {
        /// Which direction.
        direction: Direction,
    },
    /// The direction has no policy, which allows no change.
    NoPolicy {
        /// Which direction.
        direction: Direction,
    },
    /// The count was brought down to the group's maximum.
    ClampedToMax {
        /// The group's maximum.
        max: u32,
    },
    /// The count was brought up to the group's minimum.
    ClampedToMin {
        /// The group's minimum.
        min: u32,
    },
}

impl fmt::Display for LoadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadReason::MetricsMissing => write!(f, "{MetricsMissing}"),
            LoadReason::CurrentAboveMax { max } => write!(f, "the group is above its maximum of {max}"),
            LoadReason::CurrentBelowMin { min } => write!(f, "the group is below its minimum of {min}"),
            LoadReason::Recommended(verdict) => write!(f, "{verdict}"),
            LoadReason::Stabilised { direction, window_seconds, bound } => {
                let which = match direction {
                    Direction::Up => "lowest",
                    Direction::Down => "highest",
                };
                write!(
                    f,
                    "stabilised by the {direction} window: the {which} recommendation in the last \
                     {window_seconds} s was {bound}"
                )
            }
            LoadReason::RateLimited { direction, policy } => {
                write!(f, "limited by the {direction} policy {policy}")
            }
            LoadReason::Disabled { direction } => write!(f, "{direction} is disabled"),
            LoadReason::NoPolicy { direction } => write!(f, "no {direction} policy allows a change"),
            LoadReason::ClampedToMax { max } => write!(f, "clamped to the maximum of {max}"),
            LoadReason::ClampedToMin { min } => write!(f, "clamped to the minimum of {min}"),
        }
    }
}

/// The count after one step of the behaviour, and why, when the step changed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The count after the step.
    pub count: u32,
    /// Why the step changed the count, if it did.
    pub reason: Option<LoadReason>,
}

/// The HPA's stabilisation (`stabilizeRecommendationWithBehaviors`): `current` brought up to the
/// lowest recommendation of the scale-up window and down to the highest of the scale-down window,
/// `recommendation` included. `history` holds the earlier recommendations; a recommendation
/// exactly a window's length old is out of it.
pub fn stabilised(
    current: u32,
    recommendation: u32,
    history: &[PastRecommendation],
    behaviour: &Behaviour,
    now: DateTime<Utc>,
) -> Step {
    let within = |window: u32| {
        let since = before(now, window);
        history.iter().filter(move |r| r.at > since).map(|r| r.count)
    };
    let (up_window, down_window) =
        (behaviour.scale_up.stabilisation_seconds, behaviour.scale_down.stabilisation_seconds);
    let lowest = within(up_window).fold(recommendation, u32::min);
    let highest = within(down_window).fold(recommendation, u32::max);
    let count = current.max(lowest).min(highest);
    let reason = if count == recommendation {
        None
    } else if recommendation > current {
        Some(LoadReason::Stabilised { direction: Direction::Up, window_seconds: up_window, bound: lowest })
    } else {
        Some(LoadReason::Stabilised {
            direction: Direction::Down,
            window_seconds: down_window,
            bound: highest,
        })
    };
    Step { count, reason }
}

/// How far one direction's rules let the group go, from its scale events.
enum Allowance {
    /// Not at all.
    Blocked(LoadReason),
    /// Up to (or down to) `count`, by `policy`.
    Limit { count: i128, policy: RatePolicy },
}

/// The HPA's `calculateScaleUpLimitWithScalingRules` and `calculateScaleDownLimitWithBehaviors`.
fn allowance(
    direction: Direction,
    current: u32,
    events: &[ScaleEvent],
    rules: &Rules,
    now: DateTime<Utc>,
) -> Allowance {
    if rules.select == Select::Disabled {
        return Allowance::Blocked(LoadReason::Disabled { direction });
    }
    // The largest change is the highest limit up and the lowest down.
    let largest_change = rules.select == Select::Max;
    let better = |candidate: i128, best: i128| match (direction, largest_change) {
        (Direction::Up, true) | (Direction::Down, false) => candidate > best,
        (Direction::Up, false) | (Direction::Down, true) => candidate < best,
    };
    let limits = rules.policies.iter().map(|&policy| {
        // Moves in both directions count: a group that shrank and grew back within the period
        // starts from where it was before it shrank (the HPA's getReplicasChangePerPeriod).
        let since = before(now, policy.period_seconds);
        let moved: i128 = events.iter().filter(|e| e.at > since).map(|e| i128::from(e.change)).sum();
        let start = i128::from(current) - moved;
        (policy.limit(direction, start), policy)
    });
    let selected =
        limits.reduce(|best, candidate| if better(candidate.0, best.0) { candidate } else { best });
    match selected {
        Some((count, policy)) => Allowance::Limit { count, policy },
        None => Allowance::Blocked(LoadReason::NoPolicy { direction }),
    }
}

/// A limit as a count: none below 0, none beyond `u32::MAX`.
fn as_count(limit: i128) -> u32 {
    u32::try_from(limit.max(0)).unwrap_or(u32::MAX)
}

/// The HPA's rate limits (`convertDesiredReplicasWithBehaviorRate`): `stabilised` limited to what
/// the selected policy of its direction allows over its period, given the group's recent scale
/// `events` (one exactly a period old no longer counts), then brought within `min` and `max`; the
/// maximum wins if they cross.
pub fn rate_limited(
    current: u32,
    stabilised: u32,
    events: &[ScaleEvent],
    behaviour: &Behaviour,
    now: DateTime<Utc>,
    min: u32,
    max: u32,
) -> Step {
    let mut step = Step { count: stabilised, reason: None };
    let direction = match stabilised.cmp(&current) {
        std::cmp::Ordering::Greater => Some(Direction::Up),
        std::cmp::Ordering::Less => Some(Direction::Down),
        std::cmp::Ordering::Equal => None,
    };
    if let Some(direction) = direction {
        // A limit past `current` the wrong way (the events already used the period up) keeps the
        // group where it is until they age out.
        let (limit, reason) = match allowance(direction, current, events, behaviour.rules(direction), now) {
            Allowance::Blocked(reason) => (current, reason),
            Allowance::Limit { count, policy } => {
                let limit = match direction {
                    Direction::Up => as_count(count).max(current),
                    Direction::Down => as_count(count).min(current),
                };
                (limit, LoadReason::RateLimited { direction, policy })
            }
        };
        let (allowed, reason) = match direction {
            Direction::Up if max <= limit => (max, LoadReason::ClampedToMax { max }),
            Direction::Down if min >= limit => (min, LoadReason::ClampedToMin { min }),
            _ => (limit, reason),
        };
        let beyond = match direction {
            Direction::Up => stabilised > allowed,
            Direction::Down => stabilised < allowed,
        };
        if beyond {
            step = Step { count: allowed, reason: Some(reason) };
        }
    }
    if step.count < min {
        step = Step { count: min, reason: Some(LoadReason::ClampedToMin { min }) };
    }
    if step.count > max {
        step = Step { count: max, reason: Some(LoadReason::ClampedToMax { max }) };
    }
    step
}

/// Everything a load decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct LoadInput<'a> {
    /// How many instances the group has now.
    pub current: u32,
    /// The fewest instances the group may have.
    pub min: u32,
    /// The most instances the group may have.
    pub max: u32,
    /// What the metric measures.
    pub metric: MetricKind,
    /// The average metric value per instance the group aims at.
    pub target: Target,
    /// One sample per live instance.
    pub samples: &'a [Sample],
    /// How the group follows its load.
    pub behaviour: &'a Behaviour,
    /// What the group remembers from earlier decisions.
    pub history: &'a LoadHistory,
}

/// What the load says the group should number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadDecision {
    /// The count the load calls for.
    pub count: u32,
    /// The last step that decided the count.
    pub reason: LoadReason,
    /// The replica calculation, when there was one: its usage is what an event shows.
    pub recommendation: Option<Recommendation>,
    /// What to record in the group's [`LoadHistory`] (see [`LoadHistory::record`]).
    pub record: Option<PastRecommendation>,
}

/// The load decision, as the HPA's `reconcileAutoscaler` makes it: a group outside its bounds goes
/// straight to them; otherwise the replica calculation, stabilised, then rate limited. With no
/// usable metric the count stays and nothing is recorded.
pub fn recommend(input: &LoadInput<'_>, now: DateTime<Utc>) -> LoadDecision {
    let LoadInput { current, min, max, .. } = *input;
    let without_recommendation =
        |count, reason| LoadDecision { count, reason, recommendation: None, record: None };
    if current > max {
        return without_recommendation(max, LoadReason::CurrentAboveMax { max });
    }
    if current < min {
        return without_recommendation(min, LoadReason::CurrentBelowMin { min });
    }
    let tolerance = input.behaviour.tolerance;
    let Ok(recommendation) =
        replica_recommendation(current, input.samples, input.target, input.metric, tolerance, now)
    else {
        // As the HPA, a broken metrics pipeline never moves the group; but the load holds its own
        // last count, not the current one, which a window may have raised and must be able to end.
        let held = input.history.last_count.unwrap_or(min).clamp(min, max);
        return without_recommendation(held, LoadReason::MetricsMissing);
    };
    let history = input.history;
    let stable = stabilised(current, recommendation.count, &history.recommendations, input.behaviour, now);
    let limited = rate_limited(current, stable.count, &history.scale_events, input.behaviour, now, min, max);
    LoadDecision {
        count: limited.count,
        reason: limited.reason.or(stable.reason).unwrap_or(LoadReason::Recommended(recommendation.verdict)),
        record: Some(PastRecommendation { at: now, count: recommendation.count }),
        recommendation: Some(recommendation),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + seconds, 0).unwrap()
    }

    fn target(value: f64) -> Target {
        Target::new(value).unwrap()
    }

    /// Instances started an hour before `at(0)`, long past any initialisation.
    fn settled(values: &[f64]) -> Vec<Sample> {
        values.iter().map(|&v| Sample { instance_started_at: at(-3_600), value: Some(v) }).collect()
    }

    fn without_metrics(instances: usize) -> Vec<Sample> {
        vec![Sample { instance_started_at: at(-3_600), value: None }; instances]
    }

    fn started(seconds_ago: i64, value: f64) -> Sample {
        Sample { instance_started_at: at(-seconds_ago), value: Some(value) }
    }

    fn calculate(current: u32, samples: &[Sample], target_value: f64) -> Recommendation {
        replica_recommendation(current, samples, target(target_value), MetricKind::Custom, 0.1, at(0))
            .unwrap()
    }

    fn with<T: Clone>(parts: &[&[T]]) -> Vec<T> {
        parts.concat()
    }

    /// A group whose decisions are applied and recorded as the caller would, at a target of 50.
    struct Group {
        current: u32,
        min: u32,
        max: u32,
        behaviour: Behaviour,
        history: LoadHistory,
    }

    impl Group {
        /// A group its load has kept at `current`.
        fn new(current: u32, min: u32, max: u32, behaviour: Behaviour) -> Self {
            let history = LoadHistory { last_count: Some(current), ..LoadHistory::default() };
            Group { current, min, max, behaviour, history }
        }

        /// A decision at `seconds` with `load` shared evenly by the group's instances.
        fn under_load(&mut self, seconds: i64, load: f64) -> LoadDecision {
            let per_instance = load / f64::from(self.current.max(1));
            let samples = settled(&vec![per_instance; self.current as usize]);
            self.decide(seconds, &samples)
        }

        fn decide(&mut self, seconds: i64, samples: &[Sample]) -> LoadDecision {
            let now = at(seconds);
            let input = LoadInput {
                current: self.current,
                min: self.min,
                max: self.max,
                metric: MetricKind::Custom,
                target: target(50.0),
                samples,
                behaviour: &self.behaviour,
                history: &self.history,
            };
            let decision = recommend(&input, now);
            let scale = ScaleEvent::between(now, self.current, decision.count);
            self.history.decided(&decision);
            self.history.record(decision.record, scale, &self.behaviour, now);
            self.current = decision.count;
            decision
        }
    }

    fn limited(direction: Direction, policy: RatePolicy) -> Option<LoadReason> {
        Some(LoadReason::RateLimited { direction, policy })
    }

    #[test]
    fn twice_the_target_doubles_the_group_and_half_of_it_halves_the_group() {
        let doubled = calculate(2, &settled(&[100.0, 100.0]), 50.0);
        assert_eq!(doubled.count, 4);
        assert_eq!(doubled.verdict, Verdict::Proportional { ratio: 2.0, counted: 2 });
        assert_eq!(calculate(4, &settled(&[25.0; 4]), 50.0).count, 2);
    }

    #[test]
    fn a_ratio_within_the_tolerance_keeps_the_count_its_edges_included() {
        for average in [52.5, 55.0, 45.0, 47.0] {
            let kept = calculate(4, &settled(&[average; 4]), 50.0);
            assert_eq!((kept.count, kept.verdict), (4, Verdict::WithinTolerance), "average {average}");
        }
        assert_eq!(calculate(4, &settled(&[56.0; 4]), 50.0).count, 5);
        assert_eq!(calculate(4, &settled(&[44.0; 4]), 50.0).count, 4);
        assert_eq!(calculate(10, &settled(&[44.0; 10]), 50.0).count, 9);
    }

    #[test]
    fn instances_without_metrics_hold_a_scale_down_back_as_if_at_the_target() {
        let samples = with(&[&settled(&[20.0; 3]), &without_metrics(1)]);
        let held = calculate(4, &samples, 50.0);
        assert_eq!(held.count, 3);
        assert_eq!(held.usage.missing_counted_as, CountedAs::Target);
        assert_eq!(calculate(4, &settled(&[20.0; 3]), 50.0).count, 2);
    }

    #[test]
    fn instances_without_metrics_hold_a_scale_up_back_as_if_idle() {
        let samples = with(&[&settled(&[80.0; 2]), &without_metrics(1)]);
        let held = calculate(3, &samples, 50.0);
        assert_eq!(held.count, 3);
        assert!(matches!(held.verdict, Verdict::RecountWithinTolerance { .. }));
        assert_eq!(held.usage.missing_counted_as, CountedAs::Zero);
        assert_eq!(calculate(3, &settled(&[80.0; 2]), 50.0).count, 4);
    }

    #[test]
    fn fresh_instances_are_left_out_and_count_as_idle_on_a_scale_up() {
        let samples = with(&[&settled(&[150.0]), &[started(10, 500.0)]]);
        let grown = calculate(2, &samples, 50.0);
        assert_eq!(grown.count, 3);
        assert_eq!(grown.verdict, Verdict::Proportional { ratio: 1.5, counted: 2 });
        assert_eq!((grown.usage.fresh, grown.usage.fresh_counted_as), (1, CountedAs::Zero));

        let samples = with(&[&settled(&[80.0; 2]), &[started(10, 500.0)]]);
        assert_eq!(calculate(3, &samples, 50.0).count, 3);
    }

    #[test]
    fn fresh_instances_are_left_out_of_a_scale_down() {
        let samples = with(&[&settled(&[20.0; 3]), &[started(10, 200.0)]]);
        let shrunk = calculate(4, &samples, 50.0);
        assert_eq!(shrunk.count, 2);
        assert_eq!(shrunk.usage.fresh_counted_as, CountedAs::LeftOut);
    }

    #[test]
    fn cpu_instances_stay_fresh_for_five_minutes_other_metrics_for_thirty_seconds() {
        let samples = with(&[&settled(&[100.0]), &[started(120, 100.0)]]);
        let recommend =
            |metric| replica_recommendation(2, &samples, target(50.0), metric, 0.1, at(0)).unwrap();
        assert_eq!(recommend(MetricKind::Custom).count, 4);
        assert_eq!(recommend(MetricKind::Cpu).count, 2);

        let just_settled = [started(30, 100.0), started(300, 100.0)];
        let recommend = |metric| replica_recommendation(2, &just_settled, target(50.0), metric, 0.1, at(0));
        assert_eq!(recommend(MetricKind::Custom).unwrap().usage.fresh, 0);
        assert_eq!(recommend(MetricKind::Cpu).unwrap().usage.fresh, 1);
    }

    #[test]
    fn a_recount_that_reverses_the_direction_keeps_the_count() {
        let samples = with(&[&settled(&[100.0; 2]), &without_metrics(8)]);
        let kept = calculate(10, &samples, 50.0);
        assert_eq!(kept.count, 10);
        assert_eq!(kept.verdict, Verdict::RecountReversed { ratio: 0.4 });
    }

    #[test]
    fn no_usable_metric_means_no_recommendation_and_nothing_recorded() {
        let unusable =
            [vec![], without_metrics(3), vec![started(5, 100.0)], settled(&[f64::NAN, f64::INFINITY, -1.0])];
        for samples in &unusable {
            let result = replica_recommendation(3, samples, target(50.0), MetricKind::Custom, 0.1, at(0));
            assert_eq!(result, Err(MetricsMissing), "{samples:?}");
        }
        let decision = Group::new(3, 1, 10, Behaviour::default()).decide(0, &without_metrics(3));
        assert_eq!((decision.count, decision.reason, decision.record), (3, LoadReason::MetricsMissing, None));
        let mut never = Group::new(3, 1, 10, Behaviour::default());
        never.history.last_count = None;
        assert_eq!(
            never.decide(0, &without_metrics(3)).count,
            1,
            "a load that never had metrics asks for the minimum"
        );
    }

    #[test]
    fn decimal_metric_values_do_not_add_a_phantom_instance() {
        let sum: f64 = [0.1, 0.2].iter().sum();
        assert!(sum / 0.1 > 3.0, "the float sum lands above 3");
        assert_eq!(calculate(1, &settled(&[0.1, 0.2]), 0.1).count, 3);
    }

    #[test]
    fn usage_reads_as_an_event() {
        let samples = with(&[&settled(&[72.5; 40]), &without_metrics(3)]);
        let grown = calculate(40, &samples, 60.0);
        assert_eq!(grown.count, 49);
        assert_eq!(
            grown.usage.to_string(),
            "average 72.5 of target 60 over 40 instances, 3 without metrics counted as 0"
        );
        let samples = with(&[&settled(&[20.0]), &[started(1, 1.0)]]);
        assert_eq!(
            calculate(2, &samples, 50.0).usage.to_string(),
            "average 20 of target 50 over 1 instance, 1 fresh left out"
        );
    }

    #[test]
    fn reasons_read_as_events() {
        let reasons = [
            (
                limited(Direction::Up, RatePolicy::instances(4, 15)),
                "limited by the scale-up policy 4 instances per 15 s",
            ),
            (
                limited(Direction::Down, RatePolicy::percent(100, 15)),
                "limited by the scale-down policy 100 percent per 15 s",
            ),
            (
                Some(LoadReason::Stabilised { direction: Direction::Down, window_seconds: 300, bound: 8 }),
                "stabilised by the scale-down window: the highest recommendation in the last 300 s was 8",
            ),
            (Some(LoadReason::ClampedToMax { max: 12 }), "clamped to the maximum of 12"),
            (Some(LoadReason::Recommended(Verdict::WithinTolerance)), "within tolerance of the target"),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.unwrap().to_string(), text);
        }
    }

    #[test]
    fn scale_up_from_one_goes_to_five_then_ten_then_twenty_each_fifteen_seconds() {
        let mut group = Group::new(1, 1, 1_000, Behaviour::default());
        let steps = [
            (0, 5, limited(Direction::Up, RatePolicy::instances(4, 15))),
            (15, 10, limited(Direction::Up, RatePolicy::percent(100, 15))),
            (30, 20, limited(Direction::Up, RatePolicy::percent(100, 15))),
            (40, 20, limited(Direction::Up, RatePolicy::percent(100, 15))),
            (45, 40, limited(Direction::Up, RatePolicy::percent(100, 15))),
        ];
        for (seconds, count, reason) in steps {
            let decision = group.under_load(seconds, 100_000.0);
            assert_eq!((decision.count, Some(decision.reason)), (count, reason), "at {seconds} s");
        }
    }

    #[test]
    fn a_shrink_and_regrowth_within_a_period_starts_from_before_the_shrink() {
        let shrank = [ScaleEvent { at: at(0), change: -9 }];
        let grown = rate_limited(1, 100, &shrank, &Behaviour::default(), at(5), 1, 1_000);
        assert_eq!(grown.count, 20);
    }

    #[test]
    fn a_dip_shorter_than_the_scale_down_window_does_not_scale_down() {
        let mut group = Group::new(10, 1, 100, Behaviour::default());
        assert_eq!(group.under_load(0, 500.0).count, 10);
        for seconds in (15..=285).step_by(15) {
            let load = if seconds == 60 { 300.0 } else { 100.0 };
            let decision = group.under_load(seconds, load);
            assert_eq!(decision.count, 10, "at {seconds} s");
            let held = LoadReason::Stabilised { direction: Direction::Down, window_seconds: 300, bound: 10 };
            assert_eq!(decision.reason, held);
        }
        let after_the_window = group.under_load(300, 100.0);
        assert_eq!(after_the_window.count, 6);
        let highest_left =
            LoadReason::Stabilised { direction: Direction::Down, window_seconds: 300, bound: 6 };
        assert_eq!(after_the_window.reason, highest_left);
        assert_eq!(group.under_load(360, 100.0).count, 2);
    }

    #[test]
    fn scale_down_moves_at_most_as_far_as_its_policy_allows() {
        let mut behaviour = Behaviour::default();
        behaviour.scale_down = Rules {
            stabilisation_seconds: 0,
            policies: vec![RatePolicy::percent(50, 60)],
            ..behaviour.scale_down
        };
        let mut group = Group::new(10, 1, 100, behaviour);
        let half = limited(Direction::Down, RatePolicy::percent(50, 60));
        for (seconds, count) in [(0, 5), (30, 5), (60, 2), (120, 1)] {
            let decision = group.under_load(seconds, 10.0);
            assert_eq!(decision.count, count, "at {seconds} s");
            if count > 1 {
                assert_eq!(Some(decision.reason), half);
            }
        }
    }

    #[test]
    fn the_default_scale_down_may_drop_every_extra_instance_at_once() {
        let mut behaviour = Behaviour::default();
        behaviour.scale_down.stabilisation_seconds = 0;
        let decision = Group::new(10, 2, 100, behaviour).under_load(0, 0.0);
        assert_eq!((decision.count, decision.reason), (2, LoadReason::ClampedToMin { min: 2 }));
    }

    #[test]
    fn select_min_takes_the_policy_allowing_the_smaller_change() {
        let mut behaviour = Behaviour::default();
        behaviour.scale_up.select = Select::Min;
        let up = |current| rate_limited(current, 100, &[], &behaviour, at(0), 1, 1_000);
        assert_eq!(up(10), Step { count: 14, reason: limited(Direction::Up, RatePolicy::instances(4, 15)) });
        assert_eq!(up(1), Step { count: 2, reason: limited(Direction::Up, RatePolicy::percent(100, 15)) });

        behaviour.scale_down.policies = vec![RatePolicy::instances(1, 60), RatePolicy::percent(50, 60)];
        let down = |behaviour: &Behaviour| rate_limited(10, 1, &[], behaviour, at(0), 1, 1_000).count;
        assert_eq!(down(&behaviour), 5);
        behaviour.scale_down.select = Select::Min;
        assert_eq!(down(&behaviour), 9);
    }

    #[test]
    fn a_disabled_direction_never_moves_but_the_bounds_still_hold() {
        let mut behaviour = Behaviour::default();
        behaviour.scale_up.select = Select::Disabled;
        behaviour.scale_down.select = Select::Disabled;
        let limit = |stabilised, max| rate_limited(10, stabilised, &[], &behaviour, at(0), 1, max);
        assert_eq!(
            limit(20, 100),
            Step { count: 10, reason: Some(LoadReason::Disabled { direction: Direction::Up }) }
        );
        assert_eq!(
            limit(2, 100),
            Step { count: 10, reason: Some(LoadReason::Disabled { direction: Direction::Down }) }
        );
        assert_eq!(limit(20, 8), Step { count: 8, reason: Some(LoadReason::ClampedToMax { max: 8 }) });
    }

    #[test]
    fn the_group_bounds_clamp_the_count() {
        let behaviour = Behaviour::default();
        let limit = |stabilised, min, max| rate_limited(10, stabilised, &[], &behaviour, at(0), min, max);
        assert_eq!(limit(50, 1, 12), Step { count: 12, reason: Some(LoadReason::ClampedToMax { max: 12 }) });
        assert_eq!(limit(0, 2, 100), Step { count: 2, reason: Some(LoadReason::ClampedToMin { min: 2 }) });
        assert_eq!(limit(10, 12, 8).count, 8, "the maximum wins when the bounds cross");

        let above = Group::new(30, 1, 20, Behaviour::default()).under_load(0, 10_000.0);
        assert_eq!(
            (above.count, above.reason, above.record),
            (20, LoadReason::CurrentAboveMax { max: 20 }, None)
        );
        let below = Group::new(1, 3, 20, Behaviour::default()).under_load(0, 0.0);
        assert_eq!((below.count, below.reason), (3, LoadReason::CurrentBelowMin { min: 3 }));
    }

    #[test]
    fn percent_limits_are_exact_in_integers() {
        let mut behaviour = Behaviour::default();
        behaviour.scale_up.policies = vec![RatePolicy::percent(10, 60)];
        behaviour.scale_down.policies = vec![RatePolicy::percent(10, 60)];
        let limit =
            |current, stabilised| rate_limited(current, stabilised, &[], &behaviour, at(0), 0, 1_000).count;
        assert_eq!(limit(10, 100), 11);
        assert_eq!(limit(10, 0), 9);
        assert_eq!(limit(3, 100), 4, "rounded up so that a small group can grow");
        assert_eq!(limit(3, 0), 2);
    }

    #[test]
    fn the_history_forgets_what_no_window_or_period_can_see() {
        let behaviour = Behaviour::default();
        let mut history = LoadHistory::default();
        history.record(
            Some(PastRecommendation { at: at(0), count: 4 }),
            ScaleEvent::between(at(0), 2, 4),
            &behaviour,
            at(0),
        );
        history.record(Some(PastRecommendation { at: at(15), count: 5 }), None, &behaviour, at(15));
        assert_eq!(history.recommendations.len(), 2);
        assert!(history.scale_events.is_empty(), "a scale event 15 s old is out of every 15 s period");
        history.record(None, ScaleEvent::between(at(300), 5, 5), &behaviour, at(300));
        assert_eq!(history.recommendations, [PastRecommendation { at: at(15), count: 5 }]);
    }

    #[test]
    fn the_defaults_are_the_hpa_defaults_and_valid() {
        let behaviour = Behaviour::default();
        assert_eq!(behaviour.validate(), Ok(()));
        assert_eq!(behaviour.tolerance, 0.1);
        assert_eq!(behaviour.scale_up.stabilisation_seconds, 0);
        assert_eq!(behaviour.scale_down.stabilisation_seconds, 300);
        assert_eq!(behaviour.scale_up.policies, [RatePolicy::instances(4, 15), RatePolicy::percent(100, 15)]);
        assert_eq!(behaviour.scale_down.policies, [RatePolicy::percent(100, 15)]);
    }

    #[test]
    fn bad_values_are_refused_by_what_is_wrong() {
        let refused = |change: fn(&mut Behaviour)| {
            let mut behaviour = Behaviour::default();
            change(&mut behaviour);
            behaviour.validate().unwrap_err()
        };
        let (up, down) = (Direction::Up, Direction::Down);
        assert_eq!(
            refused(|b| b.scale_up.policies[0].period_seconds = 0),
            LoadError::PeriodZero { direction: up, policy: RatePolicy::instances(4, 0) }
        );
        assert_eq!(
            refused(|b| b.scale_down.policies[0].period_seconds = 1_801),
            LoadError::PeriodTooLong { direction: down, policy: RatePolicy::percent(100, 1_801) }
        );
        assert_eq!(
            refused(|b| b.scale_up.policies[1].value = 0),
            LoadError::ValueZero { direction: up, policy: RatePolicy::percent(0, 15) }
        );
        assert_eq!(refused(|b| b.scale_down.policies.clear()), LoadError::NoPolicies { direction: down });
        assert_eq!(
            refused(|b| b.scale_down.stabilisation_seconds = 3_601),
            LoadError::StabilisationTooLong { direction: down, seconds: 3_601 }
        );
        assert!(matches!(refused(|b| b.tolerance = f64::NAN), LoadError::ToleranceNotFinite { .. }));
        assert_eq!(refused(|b| b.tolerance = 1.0), LoadError::ToleranceOutOfRange { tolerance: 1.0 });
        assert_eq!(refused(|b| b.tolerance = -0.1), LoadError::ToleranceOutOfRange { tolerance: -0.1 });
        let mut edges = Behaviour::default();
        edges.scale_up.policies[0].period_seconds = 1_800;
        edges.scale_down.stabilisation_seconds = 3_600;
        edges.tolerance = 0.0;
        assert_eq!(edges.validate(), Ok(()));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(Target::new(bad), Err(LoadError::TargetNotPositive { .. })), "{bad}");
        }
    }

    fn a_policy() -> impl Strategy<Value = RatePolicy> {
        (prop_oneof![Just(PolicyKind::Instances), Just(PolicyKind::Percent)], 1..=150_u32, 1..=120_u32)
            .prop_map(|(kind, value, period_seconds)| RatePolicy { kind, value, period_seconds })
    }

    fn some_rules() -> impl Strategy<Value = Rules> {
        let select = prop_oneof![Just(Select::Max), Just(Select::Min), Just(Select::Disabled)];
        (0..=600_u32, prop::collection::vec(a_policy(), 1..=3), select).prop_map(
            |(stabilisation_seconds, policies, select)| Rules { stabilisation_seconds, policies, select },
        )
    }

    fn a_behaviour() -> impl Strategy<Value = Behaviour> {
        (some_rules(), some_rules(), 0.0..0.5_f64).prop_map(|(scale_up, scale_down, tolerance)| Behaviour {
            scale_up,
            scale_down,
            tolerance,
        })
    }

    fn some_samples() -> impl Strategy<Value = Vec<Sample>> {
        let sample = (0..600_i64, prop::option::weighted(0.8, 0.0..300.0_f64))
            .prop_map(|(seconds_ago, value)| Sample { instance_started_at: at(-seconds_ago), value });
        prop::collection::vec(sample, 0..30)
    }

    fn a_history() -> impl Strategy<Value = LoadHistory> {
        let recommendation =
            (0..900_i64, 0..80_u32).prop_map(|(ago, count)| PastRecommendation { at: at(-ago), count });
        let event = (0..200_i64, -40..40_i64).prop_map(|(ago, change)| ScaleEvent { at: at(-ago), change });
        (prop::collection::vec(recommendation, 0..20), prop::collection::vec(event, 0..10)).prop_map(
            |(recommendations, scale_events)| LoadHistory { recommendations, scale_events, last_count: None },
        )
    }

    /// `(min, max)`, with `min <= max`.
    fn bounds() -> impl Strategy<Value = (u32, u32)> {
        (0..10_u32, 0..60_u32).prop_map(|(min, extra)| (min, min + extra))
    }

    fn a_metric() -> impl Strategy<Value = MetricKind> {
        prop_oneof![Just(MetricKind::Cpu), Just(MetricKind::Custom)]
    }

    /// Whether `policy` lets a group that numbered `start` at the start of its period number `count`.
    fn allows(policy: RatePolicy, direction: Direction, start: u32, count: u32) -> bool {
        let (start, count, value) = (i64::from(start), i64::from(count), i64::from(policy.value));
        match (policy.kind, direction) {
            (PolicyKind::Instances, Direction::Up) => count <= start + value,
            (PolicyKind::Instances, Direction::Down) => count >= start - value,
            (PolicyKind::Percent, Direction::Up) => 100 * count <= start * (100 + value) + 99,
            (PolicyKind::Percent, Direction::Down) => 100 * count + 99 >= start * (100 - value),
        }
    }

    proptest! {
        #[test]
        fn the_count_is_always_within_the_bounds(
            behaviour in a_behaviour(),
            (min, max) in bounds(),
            current in 0..80_u32,
            samples in some_samples(),
            history in a_history(),
            metric in a_metric(),
            target_value in 1.0..200.0_f64,
        ) {
            let input = LoadInput {
                current, min, max, metric, target: target(target_value), samples: &samples,
                behaviour: &behaviour, history: &history,
            };
            let decision = recommend(&input, at(0));
            prop_assert!((min..=max).contains(&decision.count), "{decision:?}");
        }

        #[test]
        fn the_count_never_moves_against_the_recommendation_nor_a_disabled_way(
            behaviour in a_behaviour(),
            (min, max) in bounds(),
            within in 0.0..=1.0_f64,
            samples in some_samples(),
            history in a_history(),
            metric in a_metric(),
            target_value in 1.0..200.0_f64,
        ) {
            let current = min + ((f64::from(max - min) * within) as u32);
            // A group its load has kept at its count.
            let history = LoadHistory { last_count: Some(current), ..history };
            let input = LoadInput {
                current, min, max, metric, target: target(target_value), samples: &samples,
                behaviour: &behaviour, history: &history,
            };
            let decision = recommend(&input, at(0));
            let recommended = decision.recommendation.map_or(current, |r| r.count);
            let moved = decision.count.cmp(&current);
            let along = moved == std::cmp::Ordering::Equal || moved == recommended.cmp(&current);
            prop_assert!(along, "{decision:?}");
            if behaviour.scale_up.select == Select::Disabled {
                prop_assert!(decision.count <= current);
            }
            if behaviour.scale_down.select == Select::Disabled {
                prop_assert!(decision.count >= current);
            }
        }

        #[test]
        fn rate_limits_hold_over_every_period_and_a_disabled_way_is_never_taken(
            behaviour in a_behaviour(),
            (min, max) in bounds(),
            within in 0.0..=1.0_f64,
            steps in prop::collection::vec((0..40_i64, prop::option::weighted(0.9, 0.0..400.0_f64)), 1..40),
        ) {
            let initial = min + ((f64::from(max - min) * within) as u32);
            let mut group = Group::new(initial, min, max, behaviour.clone());
            let mut trace = vec![(at(-100_000), initial)];
            let mut seconds = 0;
            for (elapsed, value) in steps {
                seconds += elapsed;
                let samples = match value {
                    Some(value) => settled(&vec![value; group.current as usize]),
                    None => without_metrics(group.current as usize),
                };
                let count = group.decide(seconds, &samples).count;
                trace.push((at(seconds), count));
            }
            let count_at = |moment: DateTime<Utc>| {
                trace.iter().rev().find(|(t, _)| *t <= moment).map_or(initial, |&(_, c)| c)
            };
            for pair in trace.windows(2) {
                let [(_, before_step), (now, count)] = [pair[0], pair[1]];
                prop_assert!((min..=max).contains(&count));
                let direction = match count.cmp(&before_step) {
                    std::cmp::Ordering::Greater => Direction::Up,
                    std::cmp::Ordering::Less => Direction::Down,
                    std::cmp::Ordering::Equal => continue,
                };
                let rules = behaviour.rules(direction);
                let mut allowed = rules.policies.iter().map(|&policy| {
                    let start = count_at(before(now, policy.period_seconds));
                    allows(policy, direction, start, count)
                });
                let held = match rules.select {
                    Select::Max => allowed.any(|a| a),
                    Select::Min => allowed.all(|a| a),
                    Select::Disabled => false,
                };
                prop_assert!(held, "{direction} to {count} at {now} under {rules:?}: {trace:?}");
            }
        }
    }
}
