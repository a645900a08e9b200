//! The JSON shapes of the API and their conversion to and from domain records, in one place.
//! Validation of incoming bodies happens here too, so every field error names its JSON path.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use eci_core::records::MAX_CREATE_TIMEOUT_SECONDS;
use eci_core::words::Word;
use eci_core::{
    Batch, BatchRequest, Carrier, CarrierPerIdc, Instance, MiB, MilliCpu, PlacedArea, PlacementSpec, Quota,
    Reservation, ReservationId, Resources, Runtime, SshEndpoint, Strategy, Tenant, Workload,
};
use eci_core::{BatchState, InstanceState, ReservationState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, Array, ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type,
};

use crate::error::{ApiError, Result};

pub mod groups;
pub mod risk;
pub mod rules;
pub mod whole;

use rules::TextRule;

/// Most instances one batch may ask for.
pub const MAX_BATCH_COUNT: u64 = 10_000;
/// Longest TTL a batch may carry: a year.
pub const MAX_TTL_SECONDS: u64 = 366 * 24 * 3600;
/// Most GPUs one instance (or one IDC) may have: enough for any real IDC, and small enough that a
/// whole batch's GPUs count in the ledger's 32 bits.
pub const MAX_GPU: u32 = 10_000;
/// Most labels a batch may carry.
pub const MAX_LABELS: usize = 32;
/// The highest `max_instances` a quota may set: far beyond any fleet, and exact in every JSON reader.
pub const MAX_QUOTA_INSTANCES: u64 = 1_000_000_000;
/// The highest request rate a quota may set, per second.
pub const MAX_REQUESTS_PER_SECOND: u32 = 1_000_000;

/// Resources per instance, as Kubernetes quantity strings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    /// vCPU: "2", "0.5", "500m".
    #[schema(value_type = rules::Cpu, example = "2")]
    pub cpu: String,
    /// Memory: "4Gi", "512Mi".
    #[schema(value_type = rules::Memory, example = "4Gi")]
    pub memory: String,
    /// GPUs, 0 to 10000; default 0.
    #[serde(default, deserialize_with = "whole::required")]
    #[schema(minimum = 0, maximum = 10000)]
    pub gpu: u32,
}

/// Amounts of CPU, memory and GPUs, as Kubernetes quantity strings in their shortest form; unlike a
/// [`SpecBody`], any of them may be zero.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AmountView {
    /// vCPU: "0", "2", "500m".
    #[schema(pattern = "^(0|[1-9][0-9]*m?)$")]
    pub cpu: String,
    /// Memory: "0Mi", "512Mi", "4Gi".
    #[schema(pattern = "^(0|[1-9][0-9]*)(Mi|Gi)$")]
    pub memory: String,
    /// GPUs.
    pub gpu: u32,
}

impl From<&Resources> for AmountView {
    fn from(r: &Resources) -> Self {
        AmountView { cpu: r.cpu.to_string(), memory: r.memory.to_string(), gpu: r.gpu }
    }
}

/// Where instances may go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    /// Area codes at any level (`south-china`, `guangdong`, `shenzhen`); `*` or empty = anywhere.
    #[serde(default)]
    #[schema(value_type = Vec<rules::AreaSelector>)]
    pub areas: Vec<String>,
    /// Empty = any.
    #[serde(default)]
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// `spread` (default) or `pack`.
    #[schema(schema_with = optional_word_schema::<Strategy>)]
    pub strategy: Option<String>,
    /// `any` (default): an IDC may mix the requested carriers; `one`: each IDC serves through one.
    #[schema(schema_with = optional_word_schema::<CarrierPerIdc>)]
    pub carrier_per_idc: Option<String>,
    /// The most instances any one IDC may take, 1 to 10000; no limit when absent.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_per_idc: Option<u64>,
    /// Default true; false places what fits and says how many.
    pub all_or_nothing: Option<bool>,
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatchBody {
    /// 1 to 10000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 10000)]
    pub count: u64,
    /// The size of each instance.
    pub spec: SpecBody,
    /// Image reference such as `nginx:1.27`: what a container runs, or the container disk a VM boots
    /// from (a rich container runs the platform's base image).
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
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// Ports the workload listens on, 1 to 65535 (a rich container also gets 22).
    #[serde(default, deserialize_with = "whole::list")]
    #[schema(schema_with = ports_schema)]
    pub ports: Vec<u16>,
    /// `container` (default), `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = optional_word_schema::<Runtime>)]
    pub runtime: Option<String>,
    /// OpenSSH public keys to log in with; at least one for `rich` and `vm`.
    #[serde(default)]
    #[schema(value_type = Vec<rules::SshPublicKey>)]
    pub ssh_keys: Vec<String>,
    /// Where the instances may go; anywhere when left out.
    #[serde(default)]
    pub placement: PlacementBody,
    /// A reservation of the tenant's (id starting `r-`) to draw on before the open pool; it must hold
    /// the same spec and runtime.
    #[schema(value_type = Option<rules::ReservationIdText>)]
    pub reservation_id: Option<String>,
    /// The batch releases itself this long after creation: 1 to 31622400 (366 days).
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 31622400)]
    pub ttl_seconds: Option<u64>,
    /// How long each instance's Pod or VM may take to start once it is in its cluster (waiting for a
    /// node, pulling its image, booting) before the instance fails with the cluster's reason: 1 to
    /// 3600 seconds; 120 when absent.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 3600)]
    pub create_timeout_seconds: Option<u32>,
    /// At most 32 Kubernetes labels, put on every instance's Pod or VM; listings filter and usage groups
    /// by them.
    #[serde(default)]
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/reservations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservationBody {
    /// Instances' worth of capacity to hold, 1 to 10000.
    #[serde(deserialize_with = "whole::required")]
    #[schema(minimum = 1, maximum = 10000)]
    pub count: u64,
    /// The size of each instance it holds room for; batches drawing on it must ask for the same.
    pub spec: SpecBody,
    /// `container` (default), `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = optional_word_schema::<Runtime>)]
    pub runtime: Option<String>,
    /// Where the capacity may be held; anywhere when left out. Always all or nothing.
    #[serde(default)]
    pub placement: PlacementBody,
    /// When the reservation ends and its unused capacity goes back to the pool, RFC 3339, in the future.
    #[serde(deserialize_with = "rules::rfc3339")]
    #[schema(example = "2099-01-01T00:00:00Z")]
    pub ends_at: DateTime<Utc>,
}

/// `env`: values by variable name.
pub(crate) fn env_schema() -> Object {
    ObjectBuilder::new()
        .property_names(Some(rules::EnvName::object()))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// `ports`: TCP ports.
pub(crate) fn ports_schema() -> Array {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(65535)))
        .build()
}

/// Refuses more than [`MAX_LABELS`] labels, or one that is not a Kubernetes label.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in labels {
        rules::LabelKey::require(&format!("labels.{key}"), key)?;
        rules::LabelValue::require(&format!("labels.{key}"), value)?;
    }
    Ok(())
}

/// New labels for an instance or a batch (`PATCH`), replacing all of its own.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    /// At most 32 Kubernetes labels; `eci.io/delete-protection: always` protects it from deletion
    /// until removed. They are the platform's record: Pods and VMs keep the labels they were made with.
    #[schema(schema_with = labels_schema)]
    pub labels: BTreeMap<String, String>,
}

/// `?confirm=` of a `DELETE`: the number of instances it will end, which a request ending a large
/// share of the tenant's instances must repeat (see 409 `confirmation_required`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConfirmQuery {
    /// The number of instances the deletion will end, as a 409 `confirmation_required` named it.
    #[param(minimum = 0, maximum = 2147483647)]
    pub confirm: Option<u32>,
}

impl ConfirmQuery {
    /// The confirmed count, within the document's range.
    pub fn count(&self) -> Result<Option<u64>, ApiError> {
        match self.confirm {
            Some(n) if n > i32::MAX as u32 => Err(ApiError::invalid("confirm", "at most 2147483647")),
            other => Ok(other.map(u64::from)),
        }
    }
}

/// [`labels_schema`] that may be null: a `PATCH` leaving the labels as they are.
pub(crate) fn optional_labels_schema() -> Object {
    let mut schema = labels_schema();
    schema.schema_type = SchemaType::from_iter([Type::Object, Type::Null]);
    schema
}

/// `labels`: at most [`MAX_LABELS`] Kubernetes labels.
pub(crate) fn labels_schema() -> Object {
    ObjectBuilder::new()
        .max_properties(Some(MAX_LABELS))
        .property_names(Some(rules::LabelKey::both_patterns()))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            rules::LabelValue::object(),
        )))))
        .build()
}

/// The schema of a product word: a string that is one of `W`'s words, listed from core so that
/// the document and the code can never disagree.
/// A field's own `///` does not reach a schema made this way, so the kind of word describes it.
pub(crate) fn word_schema<W: Word>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("The {}.", W::KIND)))
        .enum_values(Some(W::ALL.iter().map(Word::as_str)))
        .build()
}

/// [`word_schema`] for a field that may be left out or `null`.
pub(crate) fn optional_word_schema<W: Word>() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(format!("The {}; may be left out.", W::KIND)))
        .enum_values(Some(W::ALL.iter().map(Word::as_str).map(Some).chain([None])))
        .build()
}

/// A list of product words.
pub(crate) fn word_list_schema<W: Word>() -> Array {
    ArrayBuilder::new().items(word_schema::<W>()).build()
}

pub(crate) fn parse_word<T: FromStr>(field: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ApiError::invalid(field, e.to_string()))
}

impl SpecBody {
    /// Checks and parses the quantities; an error names `<field>.cpu`, `<field>.memory` or
    /// `<field>.gpu`.
    pub fn to_resources(&self, field: &str) -> Result<Resources> {
        let cpu_field = format!("{field}.cpu");
        rules::Cpu::require(&cpu_field, &self.cpu)?;
        let cpu = MilliCpu::parse(&self.cpu).map_err(|e| ApiError::invalid(&cpu_field, e.to_string()))?;
        let memory_field = format!("{field}.memory");
        rules::Memory::require(&memory_field, &self.memory)?;
        let memory = MiB::parse(&self.memory).map_err(|e| ApiError::invalid(&memory_field, e.to_string()))?;
        if self.gpu > MAX_GPU {
            return Err(ApiError::invalid(&format!("{field}.gpu"), format!("must be at most {MAX_GPU}")));
        }
        Ok(Resources::new(cpu, memory, self.gpu))
    }

    /// The quantities of `r`, in their shortest Kubernetes form.
    pub fn from_resources(r: &Resources) -> Self {
        SpecBody { cpu: r.cpu.to_string(), memory: r.memory.to_string(), gpu: r.gpu }
    }
}

impl PlacementBody {
    /// Checks the selectors; `known_area` says whether an area code exists in the fleet.
    pub fn to_spec(&self, known_area: impl Fn(&str) -> bool) -> Result<PlacementSpec> {
        for (i, area) in self.areas.iter().enumerate() {
            rules::AreaSelector::require(&format!("placement.areas[{i}]"), area)?;
        }
        for (i, area) in self.areas.iter().enumerate() {
            if area != "*" && !known_area(area) {
                return Err(ApiError::unknown_area(&format!("placement.areas[{i}]"), area));
            }
        }
        let carriers = self
            .carriers
            .iter()
            .enumerate()
            .map(|(i, c)| parse_word::<Carrier>(&format!("placement.carriers[{i}]"), c))
            .collect::<Result<Vec<_>>>()?;
        let strategy = match self.strategy.as_deref() {
            None | Some("spread") => Strategy::Spread,
            Some("pack") => Strategy::Pack,
            Some(other) => {
                return Err(ApiError::invalid(
                    "placement.strategy",
                    format!("`{other}` is not `spread` or `pack`"),
                ));
            }
        };
        if self.max_per_idc.is_some_and(|n| n == 0 || n > MAX_BATCH_COUNT) {
            return Err(ApiError::invalid(
                "placement.max_per_idc",
                format!("must be between 1 and {MAX_BATCH_COUNT}"),
            ));
        }
        let carrier_per_idc = self
            .carrier_per_idc
            .as_deref()
            .map(|c| parse_word::<CarrierPerIdc>("placement.carrier_per_idc", c))
            .transpose()?
            .unwrap_or_default();
        Ok(PlacementSpec {
            areas: self.areas.clone(),
            carriers,
            strategy,
            carrier_per_idc,
            max_per_idc: self.max_per_idc,
            all_or_nothing: self.all_or_nothing.unwrap_or(true),
        })
    }

    /// The selectors of a stored placement, defaults spelt out.
    pub fn from_spec(spec: &PlacementSpec) -> Self {
        PlacementBody {
            areas: spec.areas.clone(),
            carriers: spec.carriers.iter().map(|c| c.to_string()).collect(),
            strategy: Some(spec.strategy.as_str().into()),
            carrier_per_idc: Some(spec.carrier_per_idc.as_str().into()),
            max_per_idc: spec.max_per_idc,
            all_or_nothing: Some(spec.all_or_nothing),
        }
    }
}

fn parse_runtime(value: Option<&str>) -> Result<Runtime> {
    value.map(|r| parse_word::<Runtime>("runtime", r)).transpose().map(Option::unwrap_or_default)
}

impl CreateBatchBody {
    /// Turns the body into a validated domain request, or names the first field that is wrong.
    pub fn validate(self, known_area: impl Fn(&str) -> bool) -> Result<BatchRequest> {
        if self.count == 0 || self.count > MAX_BATCH_COUNT {
            return Err(ApiError::invalid("count", format!("must be between 1 and {MAX_BATCH_COUNT}")));
        }
        let spec = self.spec.to_resources("spec")?;
        rules::Image::require("image", &self.image)?;
        let runtime = parse_runtime(self.runtime.as_deref())?;
        if runtime.needs_ssh() && self.ssh_keys.is_empty() {
            return Err(ApiError::invalid(
                "ssh_keys",
                format!("`{runtime}` instances need at least one ssh public key"),
            ));
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            rules::SshPublicKey::require(&format!("ssh_keys[{i}]"), key)?;
        }
        for name in self.env.keys() {
            rules::EnvName::require(&format!("env.{name}"), name)?;
        }
        if let Some(i) = self.ports.iter().position(|&p| p == 0) {
            return Err(ApiError::invalid(&format!("ports[{i}]"), "must be between 1 and 65535"));
        }
        check_labels(&self.labels)?;
        if let Some(ttl) = self.ttl_seconds
            && (ttl == 0 || ttl > MAX_TTL_SECONDS)
        {
            return Err(ApiError::invalid("ttl_seconds", format!("must be between 1 and {MAX_TTL_SECONDS}")));
        }
        if let Some(r) = &self.reservation_id {
            rules::ReservationIdText::require("reservation_id", r)?;
        }
        if self.create_timeout_seconds.is_some_and(|t| t == 0 || t > MAX_CREATE_TIMEOUT_SECONDS) {
            return Err(ApiError::invalid(
                "create_timeout_seconds",
                format!("must be between 1 and {MAX_CREATE_TIMEOUT_SECONDS}"),
            ));
        }
        Ok(BatchRequest {
            count: self.count,
            spec,
            runtime,
            workload: Workload {
                image: self.image,
                command: self.command,
                args: self.args,
                env: self.env,
                ports: self.ports,
                ssh_keys: self.ssh_keys,
            },
            placement: self.placement.to_spec(known_area)?,
            reservation_id: self.reservation_id.map(ReservationId),
            ttl_seconds: self.ttl_seconds,
            create_timeout_seconds: self.create_timeout_seconds,
            labels: self.labels,
        })
    }
}

/// A batch as customers see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchView {
    /// Batch id, starting `b-`.
    pub id: String,
    /// `active` while it holds instances; `released` by its owner, or `expired` when its TTL ran out.
    #[schema(schema_with = word_schema::<BatchState>)]
    pub state: BatchState,
    /// Instances created (below the requested count only for a partial placement).
    pub count: u64,
    /// Instances asked for.
    pub requested: u64,
    /// Instances by state.
    pub counts: BTreeMap<String, u64>,
    /// Why its failed instances failed, in the cluster's words: one entry per reason, the most
    /// common first (then by reason); empty while none failed.
    pub failures: Vec<FailureView>,
    /// The size of each instance.
    pub spec: SpecBody,
    /// How its instances run: `container`, `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: Runtime,
    /// The image given at creation.
    pub image: String,
    /// Where its instances landed, by city and carrier.
    pub placement: Vec<PlacedAreaView>,
    /// The placement asked for, defaults filled in.
    pub placement_request: PlacementBody,
    /// Its labels: those given at creation, or set since by `PATCH`.
    pub labels: BTreeMap<String, String>,
    /// The reservation it draws on (id starting `r-`), if any.
    pub reservation_id: Option<String>,
    /// How long each instance may take to start in its cluster before it fails, in seconds: as
    /// given at creation, or the platform's default.
    #[schema(minimum = 1, maximum = 3600)]
    pub create_timeout_seconds: u32,
    /// When it was created, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// When its TTL runs out and it releases itself, UTC RFC 3339; null without a TTL.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was released or expired, UTC RFC 3339; null while active.
    pub released_at: Option<DateTime<Utc>>,
}

/// How many of a batch's instances failed for one reason.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailureView {
    /// Why they failed, as their cluster said it (`Unschedulable: 0/2 nodes are available: 2
    /// Insufficient cpu`, `ErrImagePull: ...`).
    pub reason: String,
    /// How many failed for it; at least 1.
    #[schema(minimum = 1)]
    pub count: u64,
}

/// How many instances of a batch are in one city on one carrier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlacedAreaView {
    /// Region code of the city.
    pub region: String,
    /// Province code of the city.
    pub province: String,
    /// City code, such as `shenzhen`.
    pub city: String,
    /// The carrier (ISP) these instances are reached through.
    #[schema(schema_with = word_schema::<Carrier>)]
    pub carrier: Carrier,
    /// How many of the batch's instances are there.
    pub count: u64,
}

impl From<&PlacedArea> for PlacedAreaView {
    fn from(p: &PlacedArea) -> Self {
        PlacedAreaView {
            region: p.region.clone(),
            province: p.province.clone(),
            city: p.city.clone(),
            carrier: p.carrier,
            count: p.count,
        }
    }
}

impl From<&Batch> for BatchView {
    fn from(b: &Batch) -> Self {
        let mut counts: BTreeMap<String, u64> =
            eci_core::InstanceState::ALL.iter().map(|s| (s.to_string(), 0)).collect();
        for (state, n) in &b.counts {
            counts.insert(state.to_string(), *n);
        }
        let mut failures: Vec<FailureView> =
            b.failures.iter().map(|(reason, &count)| FailureView { reason: reason.clone(), count }).collect();
        failures.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.reason.cmp(&y.reason)));
        BatchView {
            id: b.id.0.clone(),
            state: b.state,
            count: b.count,
            requested: b.request.count,
            counts,
            failures,
            spec: SpecBody::from_resources(&b.request.spec),
            runtime: b.request.runtime,
            image: b.request.workload.image.clone(),
            placement: b.placement.iter().map(Into::into).collect(),
            placement_request: PlacementBody::from_spec(&b.request.placement),
            labels: b.request.labels.clone(),
            reservation_id: b.request.reservation_id.as_ref().map(|r| r.0.clone()),
            create_timeout_seconds: b.request.create_timeout_seconds(),
            created_at: b.created_at,
            expires_at: b.expires_at,
            released_at: b.ended_at,
        }
    }
}

/// How to ssh into a rich container or VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshView {
    /// Host to connect to: the IDC's ssh ingress, or else the node's address.
    pub host: String,
    /// Port on that host.
    pub port: u16,
    /// User to log in as.
    pub user: String,
}

impl From<&SshEndpoint> for SshView {
    fn from(s: &SshEndpoint) -> Self {
        SshView { host: s.host.clone(), port: s.port, user: s.user.clone() }
    }
}

/// An instance as customers see it: where it is by area and carrier, never by node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    /// Instance id, starting `i-`.
    pub id: String,
    /// The batch it belongs to, starting `b-`.
    pub batch_id: String,
    /// Where it is in its life; `unknown` while its IDC is unreachable (presumed still running).
    #[schema(schema_with = word_schema::<InstanceState>)]
    pub state: InstanceState,
    /// Its size.
    pub spec: SpecBody,
    /// How it runs: `container`, `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: Runtime,
    /// Region code of its city.
    pub region: String,
    /// Province code of its city.
    pub province: String,
    /// City code, such as `shenzhen`.
    pub city: String,
    /// The carrier (ISP) it is reached through.
    #[schema(schema_with = word_schema::<Carrier>)]
    pub carrier: Carrier,
    /// Opaque IDC id.
    pub idc: String,
    /// Its Pod's or VM's IP inside its IDC, once it runs.
    pub ip: Option<String>,
    /// Where to ssh into it, once a rich container or VM runs.
    pub ssh: Option<SshView>,
    /// The reservation its capacity comes from (id starting `r-`), if any.
    pub reservation_id: Option<String>,
    /// When it was allocated, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// When its record last changed, UTC RFC 3339.
    pub updated_at: DateTime<Utc>,
    /// When it first ran, UTC RFC 3339; billing starts here.
    pub started_at: Option<DateTime<Utc>>,
    /// When it terminated or failed, UTC RFC 3339; billing stops here.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed, in the cluster's words; set only once `failed`.
    pub failure_reason: Option<String>,
    /// Its own labels, set by `PATCH` (its batch's apply to it beside them).
    pub labels: BTreeMap<String, String>,
}

impl From<&Instance> for InstanceView {
    fn from(i: &Instance) -> Self {
        InstanceView {
            id: i.id.0.clone(),
            batch_id: i.batch_id.0.clone(),
            state: i.state,
            spec: SpecBody::from_resources(&i.spec),
            runtime: i.runtime,
            region: i.area.region.clone(),
            province: i.area.province.clone(),
            city: i.area.city.clone(),
            carrier: i.carrier,
            idc: i.idc.0.clone(),
            ip: i.ip.clone(),
            ssh: i.ssh.as_ref().map(Into::into),
            reservation_id: i.reservation_id.as_ref().map(|r| r.0.clone()),
            created_at: i.created_at,
            updated_at: i.updated_at,
            started_at: i.started_at,
            ended_at: i.ended_at,
            failure_reason: i.failure_reason.clone(),
            labels: i.labels.clone(),
        }
    }
}

/// A page of a listing; pass `next_cursor` as `cursor` to get the next one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PageView<T> {
    /// This page's items, in id order (oldest first).
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Capacity a reservation holds in one city and carrier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationSlotView {
    /// Region code of the city.
    pub region: String,
    /// Province code of the city.
    pub province: String,
    /// City code, such as `shenzhen`.
    pub city: String,
    /// The carrier (ISP) instances drawn from here are reached through.
    #[schema(schema_with = word_schema::<Carrier>)]
    pub carrier: Carrier,
    /// Instances' worth of capacity held here.
    pub count: u64,
    /// How much of it the owner's live instances draw.
    pub used: u64,
}

/// A reservation as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    /// Reservation id, starting `r-`.
    pub id: String,
    /// `active` until its end time, then `expired`; `released` if its owner ended it first.
    #[schema(schema_with = word_schema::<ReservationState>)]
    pub state: ReservationState,
    /// Instances' worth of capacity held, in total.
    pub count: u64,
    /// How much of it the owner's live instances draw.
    pub used: u64,
    /// The size of instance it holds room for; batches drawing on it must ask for the same.
    pub spec: SpecBody,
    /// The runtime it holds room for; batches drawing on it must ask for the same.
    #[schema(schema_with = word_schema::<Runtime>)]
    pub runtime: Runtime,
    /// Where the capacity is held, by city and carrier.
    pub placement: Vec<ReservationSlotView>,
    /// When it was created, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// When it ends and its unused capacity goes back to the pool, UTC RFC 3339.
    pub ends_at: DateTime<Utc>,
    /// When it was released or expired, UTC RFC 3339; null while active.
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<&Reservation> for ReservationView {
    fn from(r: &Reservation) -> Self {
        ReservationView {
            id: r.id.0.clone(),
            state: r.state,
            count: r.request.count,
            used: r.used(),
            spec: SpecBody::from_resources(&r.request.spec),
            runtime: r.request.runtime,
            placement: r
                .slots
                .iter()
                .map(|s| ReservationSlotView {
                    region: s.area.region.clone(),
                    province: s.area.province.clone(),
                    city: s.area.city.clone(),
                    carrier: s.carrier,
                    count: s.count,
                    used: s.used,
                })
                .collect(),
            created_at: r.created_at,
            ends_at: r.request.ends_at,
            ended_at: r.ended_at,
        }
    }
}

impl CreateReservationBody {
    /// Turns the body into a validated request as of `now`, or names the first field that is wrong.
    pub fn validate(
        self,
        known_area: impl Fn(&str) -> bool,
        now: DateTime<Utc>,
    ) -> Result<eci_core::ReservationRequest> {
        if self.count == 0 || self.count > MAX_BATCH_COUNT {
            return Err(ApiError::invalid("count", format!("must be between 1 and {MAX_BATCH_COUNT}")));
        }
        if self.ends_at <= now {
            return Err(ApiError::unprocessable("ends_at", "must be in the future"));
        }
        Ok(eci_core::ReservationRequest {
            count: self.count,
            spec: self.spec.to_resources("spec")?,
            runtime: parse_runtime(self.runtime.as_deref())?,
            placement: self.placement.to_spec(known_area)?,
            ends_at: self.ends_at,
        })
    }
}

/// A tenant's limits; an absent `max_cpu` or `max_instances` is unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    /// Total vCPU of live instances, as a quantity ("2000").
    #[schema(value_type = Option<rules::CpuLimit>)]
    pub max_cpu: Option<String>,
    /// Live instances at once, 0 to 1000000000.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub max_instances: Option<u64>,
    /// API requests per second before answers turn 429, 1 to 1000000; the platform's default when
    /// absent.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub requests_per_second: Option<u32>,
}

impl QuotaBody {
    /// Checks the limits; an error names `quota.<field>`.
    pub fn to_quota(&self) -> Result<Quota> {
        if let Some(c) = &self.max_cpu {
            rules::CpuLimit::require("quota.max_cpu", c)?;
        }
        let max_cpu = self
            .max_cpu
            .as_deref()
            .map(|c| MilliCpu::parse(c).map_err(|e| ApiError::invalid("quota.max_cpu", e.to_string())))
            .transpose()?;
        if self.max_instances.is_some_and(|n| n > MAX_QUOTA_INSTANCES) {
            return Err(ApiError::invalid(
                "quota.max_instances",
                format!("must be at most {MAX_QUOTA_INSTANCES}"),
            ));
        }
        if self.requests_per_second.is_some_and(|n| n == 0 || n > MAX_REQUESTS_PER_SECOND) {
            return Err(ApiError::invalid(
                "quota.requests_per_second",
                format!("must be between 1 and {MAX_REQUESTS_PER_SECOND}"),
            ));
        }
        Ok(Quota {
            max_cpu,
            max_instances: self.max_instances,
            requests_per_second: self.requests_per_second,
        })
    }

    /// The limits of `q`, CPU in its shortest quantity form.
    pub fn from_quota(q: &Quota) -> Self {
        QuotaBody {
            max_cpu: q.max_cpu.map(|c| c.to_string()),
            max_instances: q.max_instances,
            requests_per_second: q.requests_per_second,
        }
    }
}

/// A tenant as admins see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// Tenant id, starting `t-`.
    pub id: String,
    /// Unique account name.
    pub name: String,
    /// Its limits.
    pub quota: QuotaBody,
    /// vCPU its live instances hold, as a quantity ("2", "500m").
    pub used_cpu: String,
    /// How many live instances it has.
    pub used_instances: u64,
    /// When it was created, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.0.clone(),
            name: t.name.clone(),
            quota: QuotaBody::from_quota(&t.quota),
            used_cpu: t.used_cpu.to_string(),
            used_instances: t.used_instances,
            created_at: t.created_at,
        }
    }
}

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code, message and details of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request` (the request breaks the document), `unsupported_media_type`,
    /// `payload_too_large`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `idempotency_conflict`,
    /// `unknown_area`, `unprocessable_request`, `insufficient_capacity`, `quota_exceeded`,
    /// `rate_limited`, ...
    pub code: String,
    /// What went wrong, for people; match on `code`, not on this.
    pub message: String,
    /// Facts for programs, by code: `field` and `reason` (`invalid_request`, `unprocessable_request`),
    /// `field` and `area` (`unknown_area`), `requested` and `placeable` (`insufficient_capacity`,
    /// `quota_exceeded`), `resource` and `id` (`not_found`).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}
