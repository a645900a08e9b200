//! The JSON shapes of autoscaled groups (`/v1/groups`) and their validation into the scaler's
//! records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eci_scaler::group::{
    Condition, EventKind, Group, GroupState, LoadSpec, Metric, Mode, Policy, Template, WindowSpec,
};
use eci_scaler::load::{Behaviour, PolicyKind, RatePolicy, Rules, Select, Target};
use eci_store::groups::{GroupEvent, GroupSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rules::{self, TextRule};
use super::{
    CreateBatchBody, PlacementBody, SpecBody, labels_schema, optional_word_schema, whole, word_list_schema,
    word_schema,
};
use crate::error::{ApiError, Result};

/// The most samples one `POST /v1/groups/{id}/metrics` may carry.
pub const MAX_SAMPLES_PER_PUSH: usize = 1_000;

/// The largest metric value the platform keeps: far beyond any real metric, and exact in JSON.
pub const MAX_METRIC_VALUE: f64 = 1e15;

/// What every instance of a group is: a batch's fields without count, placement and reservation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// The size of each instance.
    pub spec: SpecBody,
    /// Image reference such as `nginx:1.27` (a rich container runs the platform's base image).
    #[schema(value_type = rules::Image)]
    pub image: String,
    /// Replaces the image's entrypoint when not empty (plain containers).
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments to the image's entrypoint, or to `command` (plain containers).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables by name: letters, digits and `_`, not starting with a digit.
    #[serde(default)]
    #[schema(schema_with = super::env_schema)]
    pub env: BTreeMap<String, String>,
    /// Ports the workload listens on, 1 to 65535.
    #[serde(default, deserialize_with = "whole::list")]
    #[schema(schema_with = super::ports_schema)]
    pub ports: Vec<u16>,
    /// `container` (default), `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = optional_word_schema::<eci_core::Runtime>)]
    pub runtime: Option<String>,
    /// OpenSSH public keys to log in with; at least one for `rich` and `vm`.
    #[serde(default)]
    #[schema(value_type = Vec<rules::SshPublicKey>)]
    pub ssh_keys: Vec<String>,
    /// At most 32 Kubernetes labels for every instance's Pod or VM, beside `eci.io/group`.
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// How long each instance may take to start in its cluster, 1 to 3600 seconds; 120 when absent.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 3600)]
    pub create_timeout_seconds: Option<u32>,
}

impl TemplateBody {
    /// The template, checked as a batch's fields are; errors name `template.<field>`.
    fn validate(self) -> Result<Template> {
        let as_batch = CreateBatchBody {
            count: 1,
            spec: self.spec,
            image: self.image,
            command: self.command,
            args: self.args,
            env: self.env,
            ports: self.ports,
            runtime: self.runtime,
            ssh_keys: self.ssh_keys,
            placement: PlacementBody::default(),
            reservation_id: None,
            ttl_seconds: None,
            create_timeout_seconds: self.create_timeout_seconds,
            labels: self.labels,
        };
        let request = as_batch.validate(|_| true).map_err(|e| e.under("template"))?;
        if let Some(key) = request.labels.keys().find(|k| k.as_str() == eci_scaler::group::LABEL_GROUP) {
            return Err(ApiError::invalid(&format!("template.labels.{key}"), "is set by the platform"));
        }
        Ok(Template {
            spec: request.spec,
            runtime: request.runtime,
            workload: request.workload,
            labels: request.labels,
            create_timeout_seconds: request.create_timeout_seconds,
        })
    }

    fn from_template(t: &Template) -> Self {
        TemplateBody {
            spec: SpecBody::from_resources(&t.spec),
            image: t.workload.image.clone(),
            command: t.workload.command.clone(),
            args: t.workload.args.clone(),
            env: t.workload.env.clone(),
            ports: t.workload.ports.clone(),
            runtime: Some(t.runtime.to_string()),
            ssh_keys: t.workload.ssh_keys.clone(),
            labels: t.labels.clone(),
            create_timeout_seconds: t.create_timeout_seconds,
        }
    }
}

/// A booked window: `desired` instances from `start` to the first `end` after it, on the wall
/// clock of `timezone`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// When the window starts: a 5-field cron expression (`0 20 * * *` is 20:00 every day).
    #[schema(value_type = rules::CronExpression)]
    pub start: String,
    /// When it ends: a 5-field cron expression; the first end after each start closes it.
    #[schema(value_type = rules::CronExpression)]
    pub end: String,
    /// The IANA time zone both are read in, such as `Asia/Shanghai`.
    #[schema(value_type = rules::TimeZoneName)]
    pub timezone: String,
    /// How many instances it books, 0 to 10000; the highest of overlapping windows wins.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 10000)]
    pub desired: u32,
    /// Start growing this long before the start, 0 to 86400 seconds, so that the instances already
    /// run when the window opens; 0 when absent.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 86400)]
    pub lead_seconds: Option<u32>,
}

/// What a rate policy's value counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatePolicyType {
    /// A number of instances.
    Instances,
    /// A percentage of the count at the start of the period.
    Percent,
}

/// How far the group may move over a period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatePolicyBody {
    /// `instances` or `percent`.
    #[serde(rename = "type")]
    pub kind: RatePolicyType,
    /// How many instances, or what percentage, 1 to 10000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 10000)]
    pub value: u32,
    /// The period the value holds over, 1 to 1800 seconds.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 1800)]
    pub period_seconds: u32,
}

/// Which of a direction's policies applies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SelectBody {
    /// The one allowing the largest change.
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// How the group moves in one direction; each field left out takes the Kubernetes HPA's default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    /// How far back recommendations count, 0 to 3600 seconds: the group moves only as far as all of
    /// them agree. Defaults: 0 up, 300 down.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 3600)]
    pub stabilisation_seconds: Option<u32>,
    /// 1 to 10 rate policies. Defaults: up by max(4 instances, 100 percent) per 15 s; down by 100
    /// percent per 15 s.
    #[schema(min_items = 1, max_items = 10)]
    pub policies: Option<Vec<RatePolicyBody>>,
    /// `max` (default), `min` or `disabled`.
    pub select: Option<SelectBody>,
}

/// Following a metric: the count that brings the average per instance to `target`, as the
/// Kubernetes HPA computes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    /// `cpu` (from the clusters' PodMetrics) or `custom` (pushed to `POST /v1/groups/{id}/metrics`).
    #[schema(schema_with = word_schema::<Metric>)]
    pub metric: String,
    /// The average per instance to aim at, above 0 and at most 1e15: for `cpu`, a percentage of
    /// each instance's CPU request (60 = 60%).
    #[schema(exclusive_minimum = 0, maximum = 1e15)]
    pub target: f64,
    /// How far the average may stray from the target before the count changes, 0 to below 1; 0.1
    /// when absent.
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub tolerance: Option<f64>,
    /// How the group grows.
    #[serde(default)]
    pub scale_up: RulesBody,
    /// How the group shrinks.
    #[serde(default)]
    pub scale_down: RulesBody,
}

/// `POST /v1/groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupBody {
    /// The group's name, unique among the tenant's active groups.
    #[schema(value_type = rules::GroupName)]
    pub name: String,
    /// The group's own labels (its instances' come from the template), at most 32;
    /// `eci.io/delete-protection: always` protects it from deletion until removed.
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
    /// What every instance is.
    pub template: TemplateBody,
    /// Where instances may go; anywhere when left out. `all_or_nothing` does not apply: a group
    /// places what fits and tries again for the rest.
    #[serde(default)]
    pub placement: PlacementBody,
    /// The fewest instances, 0 to 10000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 10000)]
    pub min: u32,
    /// The most instances, 0 to 10000, at least `min`.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 10000)]
    pub max: u32,
    /// Booked windows, at most 32.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub schedules: Vec<WindowBody>,
    /// Following a metric, if the group does.
    pub load: Option<LoadBody>,
    /// `auto` (default) acts on its decisions; `preview` records them and acts on none.
    #[schema(schema_with = optional_word_schema::<Mode>)]
    pub mode: Option<String>,
}

/// `PATCH /v1/groups/{id}`: the fields given replace the group's; those left out stay. `load:
/// null` removes the load policy.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchGroupBody {
    /// The change applies only if the group is still at this generation (from `GET`); a group
    /// changed since answers 409 `generation_conflict`.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1)]
    pub generation: Option<u64>,
    /// A new name.
    #[schema(value_type = Option<rules::GroupName>)]
    pub name: Option<String>,
    /// New labels of the group's own, replacing them; removing `eci.io/delete-protection` lets it
    /// be deleted.
    #[schema(schema_with = crate::wire::optional_labels_schema)]
    pub labels: Option<BTreeMap<String, String>>,
    /// A new template, for instances created from now on.
    pub template: Option<TemplateBody>,
    /// New placement rules, for instances placed from now on.
    pub placement: Option<PlacementBody>,
    /// A new minimum.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 10000)]
    pub min: Option<u32>,
    /// A new maximum.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 10000)]
    pub max: Option<u32>,
    /// New windows, replacing all of them.
    #[schema(max_items = 32)]
    pub schedules: Option<Vec<WindowBody>>,
    /// A new load policy; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable)]
    pub load: Option<Option<LoadBody>>,
    /// `auto` or `preview`.
    #[schema(schema_with = optional_word_schema::<Mode>)]
    pub mode: Option<String>,
}

/// A field given as `null` is `Some(None)`; a field left out is `None` (with `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn rules_from(body: RulesBody, defaults: Rules, field: &str) -> Result<Rules> {
    let policies = match body.policies {
        None => defaults.policies,
        Some(list) => {
            if list.is_empty() || list.len() > 10 {
                return Err(ApiError::invalid(&format!("{field}.policies"), "must hold 1 to 10 policies"));
            }
            list.iter()
                .map(|p| RatePolicy {
                    kind: match p.kind {
                        RatePolicyType::Instances => PolicyKind::Instances,
                        RatePolicyType::Percent => PolicyKind::Percent,
                    },
                    value: p.value,
                    period_seconds: p.period_seconds,
                })
                .collect()
        }
    };
    for (i, p) in policies.iter().enumerate() {
        if p.value == 0 || p.value > 10_000 {
            return Err(ApiError::invalid(
                &format!("{field}.policies[{i}].value"),
                "must be between 1 and 10000",
            ));
        }
        if p.period_seconds == 0 || p.period_seconds > eci_scaler::load::MAX_PERIOD_SECONDS {
            return Err(ApiError::invalid(
                &format!("{field}.policies[{i}].period_seconds"),
                "must be between 1 and 1800",
            ));
        }
    }
    let stabilisation_seconds = body.stabilisation_seconds.unwrap_or(defaults.stabilisation_seconds);
    if stabilisation_seconds > eci_scaler::load::MAX_STABILISATION_SECONDS {
        return Err(ApiError::invalid(&format!("{field}.stabilisation_seconds"), "must be at most 3600"));
    }
    let select = match body.select {
        None => defaults.select,
        Some(SelectBody::Max) => Select::Max,
        Some(SelectBody::Min) => Select::Min,
        Some(SelectBody::Disabled) => Select::Disabled,
    };
    Ok(Rules { stabilisation_seconds, policies, select })
}

impl LoadBody {
    fn validate(self) -> Result<LoadSpec> {
        let metric: Metric = self
            .metric
            .parse()
            .map_err(|e: eci_core::words::UnknownWord| ApiError::invalid("load.metric", e.to_string()))?;
        if !(self.target.is_finite() && self.target > 0.0 && self.target <= MAX_METRIC_VALUE) {
            return Err(ApiError::invalid("load.target", "must be above 0 and at most 1e15"));
        }
        let defaults = Behaviour::default();
        let tolerance = self.tolerance.unwrap_or(defaults.tolerance);
        if !(tolerance.is_finite() && (0.0..1.0).contains(&tolerance)) {
            return Err(ApiError::invalid("load.tolerance", "must be at least 0 and below 1"));
        }
        let behaviour = Behaviour {
            scale_up: rules_from(self.scale_up, defaults.scale_up, "load.scale_up")?,
            scale_down: rules_from(self.scale_down, defaults.scale_down, "load.scale_down")?,
            tolerance,
        };
        let target = Target::new(self.target).map_err(|e| ApiError::invalid("load.target", e.to_string()))?;
        Ok(LoadSpec { metric, target, behaviour })
    }

    fn from_spec(spec: &LoadSpec) -> Self {
        let rules = |r: &Rules| RulesBody {
            stabilisation_seconds: Some(r.stabilisation_seconds),
            policies: Some(
                r.policies
                    .iter()
                    .map(|p| RatePolicyBody {
                        kind: match p.kind {
                            PolicyKind::Instances => RatePolicyType::Instances,
                            PolicyKind::Percent => RatePolicyType::Percent,
                        },
                        value: p.value,
                        period_seconds: p.period_seconds,
                    })
                    .collect(),
            ),
            select: Some(match r.select {
                Select::Max => SelectBody::Max,
                Select::Min => SelectBody::Min,
                Select::Disabled => SelectBody::Disabled,
            }),
        };
        LoadBody {
            metric: spec.metric.to_string(),
            target: spec.target.value(),
            tolerance: Some(spec.behaviour.tolerance),
            scale_up: rules(&spec.behaviour.scale_up),
            scale_down: rules(&spec.behaviour.scale_down),
        }
    }
}

fn windows_from(list: Vec<WindowBody>) -> Result<Vec<WindowSpec>> {
    if list.len() > eci_scaler::group::MAX_WINDOWS {
        return Err(ApiError::invalid("schedules", "at most 32 windows"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, w)| {
            rules::CronExpression::require(&format!("schedules[{i}].start"), &w.start)?;
            rules::CronExpression::require(&format!("schedules[{i}].end"), &w.end)?;
            rules::TimeZoneName::require(&format!("schedules[{i}].timezone"), &w.timezone)?;
            if w.desired > eci_scaler::group::MAX_GROUP_SIZE {
                return Err(ApiError::invalid(&format!("schedules[{i}].desired"), "must be at most 10000"));
            }
            let lead_seconds = w.lead_seconds.unwrap_or(0);
            if lead_seconds > eci_scaler::schedule::MAX_LEAD_SECONDS {
                return Err(ApiError::invalid(
                    &format!("schedules[{i}].lead_seconds"),
                    "must be at most 86400",
                ));
            }
            Ok(WindowSpec {
                start: w.start,
                end: w.end,
                timezone: w.timezone,
                desired: w.desired,
                lead_seconds,
            })
        })
        .collect()
}

fn mode_from(mode: Option<&str>) -> Result<Option<Mode>> {
    mode.map(|m| {
        m.parse().map_err(|e: eci_core::words::UnknownWord| ApiError::invalid("mode", e.to_string()))
    })
    .transpose()
}

fn bounds(min: u32, max: u32) -> Result<()> {
    for (field, n) in [("min", min), ("max", max)] {
        if n > eci_scaler::group::MAX_GROUP_SIZE {
            return Err(ApiError::invalid(field, "must be at most 10000"));
        }
    }
    Ok(())
}

/// Checks the whole policy as the scaler will read it: the cron expressions and time zones, and
/// `min` against `max`, which the document cannot rule out (422).
fn checked(spec: GroupSpec) -> Result<GroupSpec> {
    spec.policy.schedule().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            format!("{}: {e}", e.field()),
        )
        .with_details(serde_json::json!({ "field": e.field(), "reason": e.to_string() }))
    })?;
    Ok(spec)
}

impl CreateGroupBody {
    /// The group as the store keeps it, or the first field that is wrong.
    pub fn validate(self, known_area: impl Fn(&str) -> bool) -> Result<GroupSpec> {
        rules::GroupName::require("name", &self.name)?;
        let template = self.template.validate()?;
        let placement = self.placement.to_spec(known_area)?;
        bounds(self.min, self.max)?;
        let policy = Policy {
            min: self.min,
            max: self.max,
            schedules: windows_from(self.schedules)?,
            load: self.load.map(LoadBody::validate).transpose()?,
            mode: mode_from(self.mode.as_deref())?.unwrap_or_default(),
        };
        crate::wire::check_labels(&self.labels)?;
        checked(GroupSpec { name: self.name, labels: self.labels, template, placement, policy })
    }
}

impl PatchGroupBody {
    /// `group` with the fields given replaced, or the first field that is wrong.
    pub fn apply(self, group: &Group, known_area: impl Fn(&str) -> bool) -> Result<GroupSpec> {
        let mut spec = GroupSpec {
            name: group.name.clone(),
            labels: group.labels.clone(),
            template: group.template.clone(),
            placement: group.placement.clone(),
            policy: group.policy.clone(),
        };
        if let Some(name) = self.name {
            rules::GroupName::require("name", &name)?;
            spec.name = name;
        }
        if let Some(labels) = self.labels {
            crate::wire::check_labels(&labels)?;
            spec.labels = labels;
        }
        if let Some(template) = self.template {
            spec.template = template.validate()?;
        }
        if let Some(placement) = self.placement {
            spec.placement = placement.to_spec(known_area)?;
        }
        spec.policy.min = self.min.unwrap_or(spec.policy.min);
        spec.policy.max = self.max.unwrap_or(spec.policy.max);
        bounds(spec.policy.min, spec.policy.max)?;
        if let Some(schedules) = self.schedules {
            spec.policy.schedules = windows_from(schedules)?;
        }
        if let Some(load) = self.load {
            spec.policy.load = load.map(LoadBody::validate).transpose()?;
        }
        if let Some(mode) = mode_from(self.mode.as_deref())? {
            spec.policy.mode = mode;
        }
        checked(spec)
    }
}

/// The window booking the most now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ActiveWindowView {
    /// Its place in `schedules`.
    pub index: usize,
    /// What it books.
    pub desired: u32,
    /// When the group began growing for it: its start less its lead, UTC RFC 3339.
    pub opens_at: DateTime<Utc>,
    /// Its start, UTC RFC 3339.
    pub starts_at: DateTime<Utc>,
    /// Its end, UTC RFC 3339.
    pub ends_at: DateTime<Utc>,
}

/// The group's metric at the last tick.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricView {
    /// The average per reporting instance (for `cpu`, percent of the request).
    pub value: f64,
    /// How many instances reported it.
    pub reporting: u32,
    /// When its oldest sample was taken, UTC RFC 3339.
    pub sampled_at: DateTime<Utc>,
    /// How old that sample is now, in seconds.
    pub age_seconds: i64,
}

/// An IDC the group keeps away from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AvoidedIdcView {
    /// The IDC's id.
    pub idc_id: String,
    /// Nothing is placed there before this moment, UTC RFC 3339.
    pub until: DateTime<Utc>,
    /// How many avoidances in a row; each doubles the time.
    pub strikes: u32,
}

/// A group as its tenant sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// Group id, starting `g-`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its own labels.
    pub labels: BTreeMap<String, String>,
    /// `active`, or `deleted`.
    #[schema(schema_with = word_schema::<GroupState>)]
    pub state: GroupState,
    /// Goes up with every change its tenant makes (the scaler's own writes leave it); `PATCH` may
    /// name it to change only what it read.
    pub generation: u64,
    /// `auto` or `preview`.
    #[schema(schema_with = word_schema::<Mode>)]
    pub mode: Mode,
    /// Its live instances at the last tick (those in unreachable IDCs included).
    pub current: u32,
    /// What its policy asks for.
    pub desired: u32,
    /// Why, in words.
    pub reason: String,
    /// When the scaler last looked at it, UTC RFC 3339; null before its first tick.
    pub decided_at: Option<DateTime<Utc>>,
    /// The window booking the most now, if any.
    pub active_window: Option<ActiveWindowView>,
    /// When the next window opens (less its lead) or closes, UTC RFC 3339.
    pub next_boundary: Option<DateTime<Utc>>,
    /// The load policy's metric at the last tick.
    pub metric: Option<MetricView>,
    /// What its status warns about.
    #[schema(schema_with = word_list_schema::<Condition>)]
    pub conditions: Vec<Condition>,
    /// IDCs it keeps away from, because its instances kept failing there.
    pub avoided_idcs: Vec<AvoidedIdcView>,
    /// What every instance is.
    pub template: TemplateBody,
    /// Where instances may go.
    pub placement: PlacementBody,
    /// The fewest instances.
    pub min: u32,
    /// The most instances.
    pub max: u32,
    /// Its windows.
    pub schedules: Vec<WindowBody>,
    /// Its load policy, defaults filled in.
    pub load: Option<LoadBody>,
    /// When it was created, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// When it was deleted, UTC RFC 3339; null while active.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl GroupView {
    /// The view of `g` at `now` (which ages its metric).
    pub fn of(g: &Group, now: DateTime<Utc>) -> Self {
        let status = &g.status;
        GroupView {
            id: g.id.0.clone(),
            name: g.name.clone(),
            labels: g.labels.clone(),
            state: g.state,
            generation: g.generation,
            mode: g.policy.mode,
            current: status.current,
            desired: status.desired,
            reason: status.reason.clone(),
            decided_at: status.decided_at,
            active_window: status.active_window.map(|w| ActiveWindowView {
                index: w.index,
                desired: w.desired,
                opens_at: w.occurrence.opens_at,
                starts_at: w.occurrence.starts_at,
                ends_at: w.occurrence.ends_at,
            }),
            next_boundary: status.next_boundary,
            metric: status.metric.map(|m| MetricView {
                value: m.value,
                reporting: m.reporting,
                sampled_at: m.sampled_at,
                age_seconds: now.signed_duration_since(m.sampled_at).num_seconds().max(0),
            }),
            conditions: status.conditions.clone(),
            avoided_idcs: status
                .avoided
                .iter()
                .filter(|(_, a)| a.until > now)
                .map(|(idc, a)| AvoidedIdcView { idc_id: idc.0.clone(), until: a.until, strikes: a.strikes })
                .collect(),
            template: TemplateBody::from_template(&g.template),
            placement: PlacementBody::from_spec(&g.placement),
            min: g.policy.min,
            max: g.policy.max,
            schedules: g
                .policy
                .schedules
                .iter()
                .map(|w| WindowBody {
                    start: w.start.clone(),
                    end: w.end.clone(),
                    timezone: w.timezone.clone(),
                    desired: w.desired,
                    lead_seconds: Some(w.lead_seconds),
                })
                .collect(),
            load: g.policy.load.as_ref().map(LoadBody::from_spec),
            created_at: g.created_at,
            deleted_at: g.deleted_at,
        }
    }
}

/// One of a group's events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupEventView {
    /// Event id; events are listed in id order, which is the order they happened in.
    pub id: String,
    /// When, UTC RFC 3339.
    pub at: DateTime<Utc>,
    /// What it records.
    #[schema(schema_with = word_schema::<EventKind>)]
    pub kind: EventKind,
    /// The group's live instances then.
    pub current: u32,
    /// What its policy asked for then.
    pub desired: u32,
    /// Why, in words.
    pub message: String,
    /// The facts: the window, the metric and target, the rule that applied, what was placed or
    /// released in which IDC.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<&GroupEvent> for GroupEventView {
    fn from(e: &GroupEvent) -> Self {
        GroupEventView {
            id: e.id.clone(),
            at: e.at,
            kind: e.kind,
            current: e.current,
            desired: e.desired,
            message: e.message.clone(),
            details: e.details.clone(),
        }
    }
}

/// One value of a group's custom metric.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricSampleBody {
    /// The instance (of the group) that reports it; the whole group when absent: every instance
    /// without a value of its own reports it.
    #[schema(value_type = Option<rules::InstanceIdText>)]
    pub instance_id: Option<String>,
    /// The value, 0 to 1e15.
    #[schema(minimum = 0, maximum = 1e15)]
    pub value: f64,
}

/// `POST /v1/groups/{id}/metrics`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushMetricsBody {
    /// 1 to 1000 values, stamped with the time they arrive.
    #[schema(min_items = 1, max_items = 1000)]
    pub samples: Vec<MetricSampleBody>,
}

impl PushMetricsBody {
    /// The samples, each checked: a finite value in range, an instance id of the right shape.
    pub fn validate(self) -> Result<Vec<(Option<eci_core::InstanceId>, f64)>> {
        if self.samples.is_empty() || self.samples.len() > MAX_SAMPLES_PER_PUSH {
            return Err(ApiError::invalid("samples", "must hold 1 to 1000 samples"));
        }
        self.samples
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if !(s.value.is_finite() && (0.0..=MAX_METRIC_VALUE).contains(&s.value)) {
                    return Err(ApiError::invalid(
                        &format!("samples[{i}].value"),
                        "must be between 0 and 1e15",
                    ));
                }
                let instance = s
                    .instance_id
                    .map(|id| {
                        rules::InstanceIdText::require(&format!("samples[{i}].instance_id"), &id)
                            .map(|()| eci_core::InstanceId(id))
                    })
                    .transpose()?;
                Ok((instance, s.value))
            })
            .collect()
    }
}
