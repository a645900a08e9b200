//! A group as its tenant describes it: what each instance is (the [`Template`]), where instances
//! may go, and the [`Policy`] that sets their count; and what the scaler last saw of it
//! ([`Status`]). Plain data: the store keeps it as JSON, the API spells it on the wire.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eci_core::records::Workload;
use eci_core::{
    BatchRequest, GroupId, IdcId, MilliCpu, PlacementSpec, Resources, Runtime, TenantId, word_enum,
};
use serde::{Deserialize, Serialize};

use crate::load::{Behaviour, LoadError, MetricKind, Target};
use crate::schedule::{Occurrence, Schedule, ScheduleError, Window};

/// The label every instance of a group carries (on its record's batch and its Pod or VM), which is
/// also how billing finds a group's cost.
pub const LABEL_GROUP: &str = "eci.io/group";

/// The most instances a group may keep.
pub const MAX_GROUP_SIZE: u32 = 10_000;

/// The most windows a group's schedule may hold.
pub const MAX_WINDOWS: usize = 32;

word_enum!(
    /// Whether a group's scaler acts on its decisions.
    #[derive(Default)]
    Mode, "group mode", {
        /// Decides and acts.
        #[default]
        Auto => "auto",
        /// Decides and records every decision, acts on none: a policy on trial.
        Preview => "preview",
    }
);

word_enum!(
    /// What a group's load policy measures.
    Metric, "metric", {
        /// CPU use as a percentage of each instance's request, from the clusters' PodMetrics.
        Cpu => "cpu",
        /// A value per instance the tenant pushes.
        Custom => "custom",
    }
);

impl Metric {
    /// The load module's view of the metric.
    pub fn kind(self) -> MetricKind {
        match self {
            Metric::Cpu => MetricKind::Cpu,
            Metric::Custom => MetricKind::Custom,
        }
    }
}

/// CPU use as a percentage of the request, which is what a `cpu` target is written in (the HPA's
/// `averageUtilization`). An instance that requests nothing uses nothing of its request.
pub fn cpu_percent(used: MilliCpu, request: MilliCpu) -> f64 {
    if request.0 == 0 { 0.0 } else { used.0 as f64 * 100.0 / request.0 as f64 }
}

word_enum!(
    /// Where a group is in its life.
    GroupState, "group state", {
        /// Kept at its count.
        Active => "active",
        /// Released with all its instances.
        Deleted => "deleted",
    }
);

word_enum!(
    /// What a group's status warns about.
    Condition, "group condition", {
        /// The matching IDCs could not take every instance asked for; later ticks try again.
        CapacityLimited => "capacity_limited",
        /// The load policy has no usable metric: the load holds the count.
        MetricsMissing => "metrics_missing",
        /// Some instances are in IDCs the platform cannot reach: counted, never replaced or removed.
        DisconnectedIdcs => "disconnected_idcs",
        /// The group only records what it would do.
        Preview => "preview",
        /// The group keeps away from IDCs where its instances keep failing.
        AvoidingIdcs => "avoiding_idcs",
    }
);

word_enum!(
    /// What a group's event records.
    EventKind, "group event", {
        /// The group was created.
        Created => "created",
        /// Its template, placement or policy was changed.
        Updated => "updated",
        /// The scaler decided a new count, or the same count for a new reason.
        Decided => "decided",
        /// Instances were placed.
        ScaledOut => "scaled_out",
        /// Instances were released.
        ScaledIn => "scaled_in",
        /// The matching IDCs took fewer instances than asked.
        CapacityLimited => "capacity_limited",
        /// The group keeps away from an IDC where its instances keep failing.
        AvoidingIdc => "avoiding_idc",
        /// The group and its instances were released.
        Deleted => "deleted",
    }
);

/// What every instance of a group is: a batch's instance without the count and placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The size of each instance.
    pub spec: Resources,
    /// How each instance runs.
    pub runtime: Runtime,
    /// What runs in each instance.
    pub workload: Workload,
    /// The tenant's labels; [`LABEL_GROUP`] is added to them.
    pub labels: BTreeMap<String, String>,
    /// How long an instance may take to start in its cluster (see [`BatchRequest`]).
    pub create_timeout_seconds: Option<u32>,
}

impl Template {
    /// The batch that grows `group` by `count`: placed like any batch, but whatever fits is taken
    /// (a shortfall is retried on later ticks), and labelled with the group.
    pub fn batch_request(&self, group: &GroupId, count: u64, placement: &PlacementSpec) -> BatchRequest {
        let mut labels = self.labels.clone();
        labels.insert(LABEL_GROUP.to_string(), group.0.clone());
        BatchRequest {
            count,
            spec: self.spec,
            runtime: self.runtime,
            workload: self.workload.clone(),
            placement: PlacementSpec { all_or_nothing: false, ..placement.clone() },
            reservation_id: None,
            ttl_seconds: None,
            labels,
            create_timeout_seconds: self.create_timeout_seconds,
        }
    }
}

/// A window as the tenant wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// A 5-field cron expression: when the window starts, on the zone's wall clock.
    pub start: String,
    /// A 5-field cron expression: when it ends.
    pub end: String,
    /// An IANA time zone, such as `Asia/Shanghai`.
    pub timezone: String,
    /// How many instances it books.
    pub desired: u32,
    /// How long before the start the group grows, so that the instances run at the start.
    pub lead_seconds: u32,
}

/// A load policy as the tenant wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// What is measured.
    pub metric: Metric,
    /// The average per instance to aim at: a percentage of the CPU request for `cpu`.
    pub target: Target,
    /// Stabilisation, tolerance and rate policies.
    pub behaviour: Behaviour,
}

/// What sets a group's count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The fewest instances the group keeps.
    pub min: u32,
    /// The most it may have.
    pub max: u32,
    /// Booked windows; the highest active one wins.
    pub schedules: Vec<WindowSpec>,
    /// Following a metric, if the group does.
    pub load: Option<LoadSpec>,
    /// Whether the scaler acts.
    pub mode: Mode,
}

/// Why a policy cannot be used; each names the part that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// `min` above `max`, or `max` above what a group may hold.
    #[error("min ({min}) must be at most max ({max}), and max at most {MAX_GROUP_SIZE}")]
    Bounds {
        /// The minimum asked for.
        min: u32,
        /// The maximum asked for.
        max: u32,
    },
    /// More windows than a schedule may hold.
    #[error("at most {MAX_WINDOWS} windows, not {0}")]
    TooManyWindows(usize),
    /// A window that cannot be read.
    #[error("window {index}: {error}")]
    Window {
        /// Its place in `schedules`.
        index: usize,
        /// What is wrong with it.
        error: ScheduleError,
    },
    /// A window booking more than a group may hold.
    #[error("window {index} books {desired}, more than the {MAX_GROUP_SIZE} a group may hold")]
    WindowTooLarge {
        /// Its place in `schedules`.
        index: usize,
        /// What it books.
        desired: u32,
    },
    /// A load behaviour the HPA would refuse.
    #[error("load: {0}")]
    Load(LoadError),
}

impl PolicyError {
    /// The field of the policy that is wrong, as the API names it.
    pub fn field(&self) -> String {
        match self {
            PolicyError::Bounds { .. } => "max".into(),
            PolicyError::TooManyWindows(_) => "schedules".into(),
            PolicyError::Window { index, .. } | PolicyError::WindowTooLarge { index, .. } => {
                format!("schedules[{index}]")
            }
            PolicyError::Load(_) => "load".into(),
        }
    }
}

impl Policy {
    /// The schedule the windows describe, once every part of the policy is checked.
    pub fn schedule(&self) -> Result<Schedule, PolicyError> {
        if self.min > self.max || self.max > MAX_GROUP_SIZE {
            return Err(PolicyError::Bounds { min: self.min, max: self.max });
        }
        if self.schedules.len() > MAX_WINDOWS {
            return Err(PolicyError::TooManyWindows(self.schedules.len()));
        }
        if let Some(load) = &self.load {
            load.behaviour.validate().map_err(PolicyError::Load)?;
        }
        let windows = self
            .schedules
            .iter()
            .enumerate()
            .map(|(index, w)| {
                if w.desired > MAX_GROUP_SIZE {
                    return Err(PolicyError::WindowTooLarge { index, desired: w.desired });
                }
                Window::new(&w.start, &w.end, &w.timezone, w.desired, w.lead_seconds)
                    .map_err(|error| PolicyError::Window { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule { windows })
    }
}

/// A group's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its id (`g-...`).
    pub id: GroupId,
    /// Whose it is.
    pub tenant_id: TenantId,
    /// The tenant's name for it, unique among the tenant's active groups.
    pub name: String,
    /// Its own labels (never its instances', which the template gives); the protection label among
    /// them protects it from deletion.
    pub labels: BTreeMap<String, String>,
    /// Active, or deleted.
    pub state: GroupState,
    /// What every instance is.
    pub template: Template,
    /// Where instances may go.
    pub placement: PlacementSpec,
    /// What sets the count.
    pub policy: Policy,
    /// Goes up with every change its tenant makes to it (a `PATCH`), which a change may be made
    /// conditional on.
    pub generation: u64,
    /// Goes up with every write to the group, the scaler's included: every scaling write is
    /// conditional on the revision its decision was made at, so two scalers never both act on one.
    pub revision: u64,
    /// What the scaler last saw and decided.
    pub status: Status,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The last value of a group's metric: the average over its reporting instances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricReading {
    /// The average per reporting instance.
    pub value: f64,
    /// How many instances reported.
    pub reporting: u32,
    /// When the oldest sample in it was taken.
    pub sampled_at: DateTime<Utc>,
}

/// An IDC a group keeps away from, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avoidance {
    /// The group places nothing there before this moment.
    pub until: DateTime<Utc>,
    /// How many times in a row the IDC was avoided: each doubles the time.
    pub strikes: u32,
    /// The newest failure counted: later avoidances count only failures after it.
    pub last_failure_at: DateTime<Utc>,
}

/// The window that books the most at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveWindow {
    /// Its place in the schedule at the time.
    pub index: usize,
    /// What it books.
    pub desired: u32,
    /// The occurrence that is open.
    pub occurrence: Occurrence,
}

/// What the scaler saw and decided at its last tick.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status {
    /// When, if the group was ever looked at.
    pub decided_at: Option<DateTime<Utc>>,
    /// Its live instances, counting those in unreachable IDCs.
    pub current: u32,
    /// What the policy asks for.
    pub desired: u32,
    /// Why, for people.
    pub reason: String,
    /// The window booking the most, if one is active.
    pub active_window: Option<ActiveWindow>,
    /// When the next window opens or closes.
    pub next_boundary: Option<DateTime<Utc>>,
    /// The load policy's metric, when there was one.
    pub metric: Option<MetricReading>,
    /// What the status warns about.
    pub conditions: Vec<Condition>,
    /// The IDCs the group keeps away from.
    pub avoided: BTreeMap<IdcId, Avoidance>,
}
