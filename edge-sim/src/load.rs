//! Load curves: the CPU a cluster's Pods use over time, so that autoscaling can be tested against load
//! that rises, falls and steps at known moments instead of the flat half of a request.
//!
//! A [`LoadCurve`] is a [`Shape`] over the seconds since it was set, in a [`LoadUnit`]; its JSON form is
//! flat, the unit defaulting to millicores:
//!
//! ```json
//! {"kind": "constant", "value": 250}
//! {"kind": "steps", "unit": "percent_of_request", "steps": [[0, 30], [600, 80]]}
//! {"kind": "ramp", "from": 100, "to": 900, "over_seconds": 300}
//! {"kind": "sine", "mean": 500, "amplitude": 200, "period_seconds": 60}
//! ```
//!
//! [`LoadCurves`] holds one cluster's curves, each with a label selector and the moment it was set;
//! a Pod uses the curve of the most recently set selector that matches it.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::clock::SimClock;
use crate::selector::{LabelSelector, SelectorError};

/// The most steps a curve may have: enough for any test, few enough that a body cannot make the
/// metrics handlers slow.
pub const MAX_STEPS: usize = 1_000;

/// What a curve's values count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadUnit {
    /// Thousandths of a core, for the whole Pod.
    #[default]
    Millicores,
    /// Percent of the Pod's cpu request (the sum of its containers'), as an HPA's utilization target
    /// reads it; above 100 is a Pod bursting past its request.
    PercentOfRequest,
}

/// How a value moves over the seconds since the curve was set.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The same value throughout.
    Constant {
        /// The value.
        value: f64,
    },
    /// `(offset_seconds, value)` pairs, offsets ascending: the value of the last step at or before the
    /// moment, and before the first step, the first value.
    Steps {
        /// The steps, at most [`MAX_STEPS`].
        steps: Vec<(f64, f64)>,
    },
    /// From `from` to `to` in a straight line over `over_seconds`, then `to`.
    Ramp {
        /// The value when the curve is set.
        from: f64,
        /// The value from `over_seconds` on.
        to: f64,
        /// How long the ramp takes (0: `to` at once).
        over_seconds: f64,
    },
    /// `mean + amplitude * sin(2π t / period_seconds)`, rising from the mean at first; a trough below
    /// zero reads as zero.
    Sine {
        /// The value the wave swings around.
        mean: f64,
        /// How far it swings either way.
        amplitude: f64,
        /// The length of one wave (above 0).
        period_seconds: f64,
    },
}

/// Why a curve was refused; each message names the JSON field at fault.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LoadCurveError {
    /// A number is NaN or infinite.
    #[error("`{field}` must be a finite number, not {value}")]
    NotFinite {
        /// The field, as in the curve's JSON.
        field: String,
        /// What it held.
        value: f64,
    },
    /// A value, offset or duration is below zero.
    #[error("`{field}` must not be negative, not {value}")]
    Negative {
        /// The field, as in the curve's JSON.
        field: String,
        /// What it held.
        value: f64,
    },
    /// A sine's period is zero, so it has no wave.
    #[error("`period_seconds` must be greater than 0")]
    PeriodNotPositive,
    /// A steps curve has no step to take a value from.
    #[error("`steps` needs at least one step")]
    NoSteps,
    /// A steps curve has more than [`MAX_STEPS`] steps.
    #[error("`steps` has {0} steps, more than the {MAX_STEPS} allowed")]
    TooManySteps(usize),
    /// A step's offset is not after the one before it.
    #[error("`steps` offsets must ascend: step {index} at {offset}s is not after {previous}s")]
    NotAscending {
        /// The position of the step, from 0.
        index: usize,
        /// Its offset in seconds.
        offset: f64,
        /// The offset of the step before.
        previous: f64,
    },
}

/// A validated load curve: a [`Shape`] in a [`LoadUnit`]. Its JSON form is in the [module
/// docs](self); deserializing checks it as [`LoadCurve::new`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CurveJson", into = "CurveJson")]
pub struct LoadCurve {
    shape: Shape,
    unit: LoadUnit,
}

fn finite_and_not_negative(field: impl Fn() -> String, value: f64) -> Result<(), LoadCurveError> {
    if !value.is_finite() {
        Err(LoadCurveError::NotFinite { field: field(), value })
    } else if value < 0.0 {
        Err(LoadCurveError::Negative { field: field(), value })
    } else {
        Ok(())
    }
}

impl LoadCurve {
    /// A curve after checking its numbers: finite and not negative, a sine's period above 0, between 1
    /// and [`MAX_STEPS`] steps with ascending offsets.
    pub fn new(shape: Shape, unit: LoadUnit) -> Result<LoadCurve, LoadCurveError> {
        let check = |field: &'static str, value| finite_and_not_negative(|| field.to_string(), value);
        match &shape {
            Shape::Constant { value } => check("value", *value)?,
            Shape::Steps { steps } => {
                if steps.is_empty() {
                    return Err(LoadCurveError::NoSteps);
                }
                if steps.len() > MAX_STEPS {
                    return Err(LoadCurveError::TooManySteps(steps.len()));
                }
                for (index, (offset, value)) in steps.iter().enumerate() {
                    finite_and_not_negative(|| format!("steps[{index}] offset"), *offset)?;
                    finite_and_not_negative(|| format!("steps[{index}] value"), *value)?;
                }
                if let Some(index) = steps.windows(2).position(|pair| pair[1].0 <= pair[0].0) {
                    let (previous, offset) = (steps[index].0, steps[index + 1].0);
                    return Err(LoadCurveError::NotAscending { index: index + 1, offset, previous });
                }
            }
            Shape::Ramp { from, to, over_seconds } => {
                check("from", *from)?;
                check("to", *to)?;
                check("over_seconds", *over_seconds)?;
            }
            Shape::Sine { mean, amplitude, period_seconds } => {
                check("mean", *mean)?;
                check("amplitude", *amplitude)?;
                check("period_seconds", *period_seconds)?;
                if *period_seconds == 0.0 {
                    return Err(LoadCurveError::PeriodNotPositive);
                }
            }
        }
        Ok(LoadCurve { shape, unit })
    }

    /// A curve in millicores.
    pub fn millicores(shape: Shape) -> Result<LoadCurve, LoadCurveError> {
        LoadCurve::new(shape, LoadUnit::Millicores)
    }

    /// A curve in percent of the Pod's cpu request.
    pub fn percent_of_request(shape: Shape) -> Result<LoadCurve, LoadCurveError> {
        LoadCurve::new(shape, LoadUnit::PercentOfRequest)
    }

    /// How the curve moves.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// What its values count.
    pub fn unit(&self) -> LoadUnit {
        self.unit
    }

    /// The millicores a Pod requesting `request_millis` uses `elapsed` after the curve was set, to the
    /// nearest millicore. Pure, so a test can predict every reading.
    pub fn usage_at(&self, elapsed: Duration, request_millis: u64) -> u64 {
        let t = elapsed.as_secs_f64();
        let value = match &self.shape {
            Shape::Constant { value } => *value,
            Shape::Steps { steps } => {
                steps[steps.partition_point(|(offset, _)| *offset <= t).saturating_sub(1)].1
            }
            Shape::Ramp { to, over_seconds, .. } if t >= *over_seconds => *to,
            Shape::Ramp { from, to, over_seconds } => from + (to - from) * t / over_seconds,
            Shape::Sine { mean, amplitude, period_seconds } => {
                mean + amplitude * (std::f64::consts::TAU * t / period_seconds).sin()
            }
        };
        let millicores = match self.unit {
            LoadUnit::Millicores => value,
            // Multiplying first keeps whole percents of whole requests exact.
            LoadUnit::PercentOfRequest => value * request_millis as f64 / 100.0,
        };
        // A float-to-int `as` saturates: a sine's trough below zero reads 0.
        millicores.round() as u64
    }
}

/// The JSON form of a curve: flat, `kind` naming the shape, `unit` beside its numbers.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CurveJson {
    Constant {
        #[serde(default)]
        unit: LoadUnit,
        value: f64,
    },
    Steps {
        #[serde(default)]
        unit: LoadUnit,
        steps: Vec<(f64, f64)>,
    },
    Ramp {
        #[serde(default)]
        unit: LoadUnit,
        from: f64,
        to: f64,
        over_seconds: f64,
    },
    Sine {
        #[serde(default)]
        unit: LoadUnit,
        mean: f64,
        amplitude: f64,
        period_seconds: f64,
    },
}

impl TryFrom<CurveJson> for LoadCurve {
    type Error = LoadCurveError;

    fn try_from(json: CurveJson) -> Result<Self, Self::Error> {
        let (shape, unit) = match json {
            CurveJson::Constant { unit, value } => (Shape::Constant { value }, unit),
            CurveJson::Steps { unit, steps } => (Shape::Steps { steps }, unit),
            CurveJson::Ramp { unit, from, to, over_seconds } => {
                (Shape::Ramp { from, to, over_seconds }, unit)
            }
            CurveJson::Sine { unit, mean, amplitude, period_seconds } => {
                (Shape::Sine { mean, amplitude, period_seconds }, unit)
            }
        };
        LoadCurve::new(shape, unit)
    }
}

impl From<LoadCurve> for CurveJson {
    fn from(LoadCurve { shape, unit }: LoadCurve) -> Self {
        match shape {
            Shape::Constant { value } => CurveJson::Constant { unit, value },
            Shape::Steps { steps } => CurveJson::Steps { unit, steps },
            Shape::Ramp { from, to, over_seconds } => CurveJson::Ramp { unit, from, to, over_seconds },
            Shape::Sine { mean, amplitude, period_seconds } => {
                CurveJson::Sine { unit, mean, amplitude, period_seconds }
            }
        }
    }
}

/// A curve as set on a cluster: which Pods follow it, and from when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSetting {
    /// The label selector as given (blank: every Pod).
    pub selector: String,
    /// The curve.
    pub curve: LoadCurve,
    /// When it was set, by the cluster's clock: the curve's second 0.
    pub since: DateTime<Utc>,
}

/// One cluster's load curves, oldest first, and the clock they run on. Kept in memory only: a cluster
/// started again from its objects file starts without curves.
#[derive(Debug, Default)]
pub struct LoadCurves {
    clock: SimClock,
    curves: RwLock<Vec<(LabelSelector, LoadSetting)>>,
}

impl LoadCurves {
    /// No curves yet, on `clock`.
    pub fn new(clock: SimClock) -> LoadCurves {
        LoadCurves { clock, curves: RwLock::default() }
    }

    /// Now, by the curves' clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Makes the Pods `selector` matches follow `curve` from now on, over any curve set before; setting
    /// the same selector again replaces its curve (and starts it over).
    pub fn set(&self, selector: &str, curve: LoadCurve) -> Result<LoadSetting, SelectorError> {
        let parsed = LabelSelector::parse(selector)?;
        let setting = LoadSetting { selector: selector.trim().to_string(), curve, since: self.now() };
        let mut curves = self.curves.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        curves.retain(|(other, _)| *other != parsed);
        curves.push((parsed, setting.clone()));
        Ok(setting)
    }

    /// Removes every curve: Pods use half their request again.
    pub fn clear(&self) {
        self.curves.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The curves in force, oldest first.
    pub fn settings(&self) -> Vec<LoadSetting> {
        let curves = self.curves.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        curves.iter().map(|(_, setting)| setting.clone()).collect()
    }

    /// The millicores `pod` (requesting `request_millis` in all) uses at `now` under the most recently
    /// set curve that selects it; `None` when none does.
    pub fn pod_cpu(&self, pod: &Value, request_millis: u64, now: DateTime<Utc>) -> Option<u64> {
        let curves = self.curves.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (_, setting) = curves.iter().rev().find(|(selector, _)| selector.matches(pod))?;
        // A clock moved back before the curve was set reads its second 0.
        let elapsed = (now - setting.since).to_std().unwrap_or_default();
        Some(setting.curve.usage_at(elapsed, request_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(curve: &LoadCurve, seconds: f64) -> u64 {
        curve.usage_at(Duration::from_secs_f64(seconds), 1_000)
    }

    #[test]
    fn a_constant_curve_is_its_value_at_every_moment() {
        let curve = LoadCurve::millicores(Shape::Constant { value: 250.0 }).unwrap();
        assert_eq!([at(&curve, 0.0), at(&curve, 1e6)], [250, 250]);
    }

    #[test]
    fn steps_take_the_last_step_at_or_before_the_moment_and_the_first_before_it() {
        let steps = vec![(10.0, 300.0), (60.0, 800.0), (120.0, 100.0)];
        let curve = LoadCurve::millicores(Shape::Steps { steps }).unwrap();
        let readings: Vec<u64> =
            [0.0, 9.9, 10.0, 59.0, 60.0, 119.9, 120.0, 1e6].map(|t| at(&curve, t)).into();
        assert_eq!(readings, [300, 300, 300, 300, 800, 800, 100, 100]);
    }

    #[test]
    fn a_ramp_climbs_in_a_straight_line_then_stays_at_its_end() {
        let curve =
            LoadCurve::millicores(Shape::Ramp { from: 100.0, to: 900.0, over_seconds: 100.0 }).unwrap();
        assert_eq!([0.0, 25.0, 50.0, 100.0, 500.0].map(|t| at(&curve, t)), [100, 300, 500, 900, 900]);
        let down = LoadCurve::millicores(Shape::Ramp { from: 900.0, to: 100.0, over_seconds: 80.0 }).unwrap();
        assert_eq!([0.0, 20.0, 80.0].map(|t| at(&down, t)), [900, 700, 100]);
        let sudden = LoadCurve::millicores(Shape::Ramp { from: 0.0, to: 400.0, over_seconds: 0.0 }).unwrap();
        assert_eq!(at(&sudden, 0.0), 400);
    }

    #[test]
    fn a_sine_rises_from_its_mean_and_swings_by_its_amplitude() {
        let shape = Shape::Sine { mean: 500.0, amplitude: 200.0, period_seconds: 60.0 };
        let curve = LoadCurve::millicores(shape).unwrap();
        assert_eq!(
            [0.0, 15.0, 30.0, 45.0, 60.0, 75.0].map(|t| at(&curve, t)),
            [500, 700, 500, 300, 500, 700]
        );
    }

    #[test]
    fn a_sine_swinging_below_zero_reads_zero_in_its_trough() {
        let shape = Shape::Sine { mean: 100.0, amplitude: 300.0, period_seconds: 60.0 };
        let curve = LoadCurve::millicores(shape).unwrap();
        assert_eq!([15.0, 35.0, 45.0, 55.0].map(|t| at(&curve, t)), [400, 0, 0, 0]);
    }

    #[test]
    fn percent_of_request_scales_with_what_the_pod_requests() {
        let steps = vec![(0.0, 30.0), (600.0, 150.0)];
        let curve = LoadCurve::percent_of_request(Shape::Steps { steps }).unwrap();
        assert_eq!(curve.usage_at(Duration::ZERO, 1_000), 300);
        assert_eq!(curve.usage_at(Duration::ZERO, 250), 75);
        assert_eq!(curve.usage_at(Duration::from_secs(600), 2_000), 3_000);
        assert_eq!(curve.usage_at(Duration::from_secs(600), 0), 0, "nothing requested, nothing used");
    }

    #[test]
    fn curves_read_and_write_their_flat_json_form() {
        let curve: LoadCurve = serde_json::from_value(
            json!({"kind": "steps", "unit": "percent_of_request", "steps": [[0, 30], [600, 80]]}),
        )
        .unwrap();
        assert_eq!(curve.unit(), LoadUnit::PercentOfRequest);
        assert_eq!(curve.shape(), &Shape::Steps { steps: vec![(0.0, 30.0), (600.0, 80.0)] });
        assert_eq!(
            serde_json::to_value(&curve).unwrap(),
            json!({"kind": "steps", "unit": "percent_of_request", "steps": [[0.0, 30.0], [600.0, 80.0]]})
        );
        let constant: LoadCurve = serde_json::from_value(json!({"kind": "constant", "value": 250})).unwrap();
        assert_eq!(constant.unit(), LoadUnit::Millicores, "millicores unless told");
    }

    #[test]
    fn malformed_curves_are_refused_naming_the_field_at_fault() {
        let refusal = |curve: Value| serde_json::from_value::<LoadCurve>(curve).unwrap_err().to_string();
        let cases = [
            (
                json!({"kind": "sine", "mean": 5, "amplitude": 1, "period_seconds": 0}),
                "`period_seconds` must be",
            ),
            (json!({"kind": "steps", "steps": [[0, 1], [60, 2], [60, 3]]}), "step 2 at 60s is not after 60s"),
            (json!({"kind": "steps", "steps": []}), "at least one step"),
            (json!({"kind": "ramp", "from": -1, "to": 5, "over_seconds": 10}), "`from` must not be negative"),
            (json!({"kind": "constant", "value": 1, "millis": 2}), "unknown field `millis`"),
            (json!({"kind": "square", "value": 1}), "unknown variant `square`"),
            (json!({"kind": "constant", "value": 1, "unit": "cores"}), "unknown variant `cores`"),
        ];
        for (curve, expected) in cases {
            let why = refusal(curve.clone());
            assert!(why.contains(expected), "{curve}: {why}");
        }
        let many: Vec<(f64, f64)> = (0..=MAX_STEPS).map(|i| (i as f64, 1.0)).collect();
        assert_eq!(
            LoadCurve::millicores(Shape::Steps { steps: many }),
            Err(LoadCurveError::TooManySteps(1_001))
        );
        assert!(matches!(
            LoadCurve::millicores(Shape::Constant { value: f64::NAN }),
            Err(LoadCurveError::NotFinite { .. })
        ));
    }

    #[test]
    fn a_pod_follows_the_most_recently_set_curve_that_selects_it() {
        let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().to_utc();
        let load = LoadCurves::new(SimClock::from_fn(move || start));
        let constant = |value| LoadCurve::millicores(Shape::Constant { value }).unwrap();
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        assert_eq!(load.pod_cpu(&pod, 1_000, start), None);
        load.set("app=web", constant(100.0)).unwrap();
        load.set("tier=front", constant(200.0)).unwrap();
        load.set("app=db", constant(300.0)).unwrap();
        assert_eq!(load.pod_cpu(&pod, 1_000, start), Some(200));
        let again = load.set("app==web", constant(400.0)).unwrap();
        assert_eq!((again.selector.as_str(), again.since), ("app==web", start));
        assert_eq!(load.pod_cpu(&pod, 1_000, start), Some(400), "setting a selector again makes it newest");
        assert_eq!(load.settings().len(), 3);
        assert!(load.set("app in web", constant(1.0)).is_err());
        load.clear();
        assert_eq!(load.pod_cpu(&pod, 1_000, start), None);
    }
}
