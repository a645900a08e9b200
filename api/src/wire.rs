//! The JSON shapes of the API and their conversion to and from domain records, in one place.
//! Validation of incoming bodies happens here too, so every field error names its JSON path.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use eci_core::words::Word;
use eci_core::{
    Batch, BatchRequest, Carrier, Instance, MiB, MilliCpu, PlacedArea, PlacementSpec, Quota, Reservation,
    ReservationId, Resources, Runtime, SshEndpoint, Strategy, Tenant, Workload,
};
use eci_core::{BatchState, InstanceState, ReservationState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

use crate::error::{ApiError, Result};

/// Most instances one batch may ask for.
pub const MAX_BATCH_COUNT: u64 = 10_000;
/// Longest TTL a batch may carry: a year.
pub const MAX_TTL_SECONDS: u64 = 366 * 24 * 3600;

/// Resources per instance, as Kubernetes quantity strings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    /// vCPU: "2", "0.5", "500m".
    #[schema(example = "2")]
    pub cpu: String,
    /// Memory: "4Gi", "512Mi".
    #[schema(example = "4Gi")]
    pub memory: String,
    /// GPUs per instance; default 0.
    #[serde(default)]
    pub gpu: u32,
}

/// Where instances may go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    /// Area codes at any level (`south-china`, `guangdong`, `shenzhen`); `*` or empty = anywhere.
    #[serde(default)]
    pub areas: Vec<String>,
    /// Empty = any.
    #[serde(default)]
    #[schema(schema_with = word_list_schema::<Carrier>)]
    pub carriers: Vec<String>,
    /// `spread` (default) or `pack`.
    #[schema(schema_with = optional_word_schema::<Strategy>)]
    pub strategy: Option<String>,
    /// The most instances any one IDC may take, at least 1; no limit when absent.
    pub max_per_idc: Option<u64>,
    /// Default true; false places what fits and says how many.
    pub all_or_nothing: Option<bool>,
}

/// `POST /v1/batches`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatchBody {
    /// 1 to 10000.
    pub count: u64,
    /// The size of each instance.
    pub spec: SpecBody,
    /// Image reference such as `nginx:1.27`: what a container runs, or the container disk a VM boots
    /// from (a rich container runs the platform's base image).
    pub image: String,
    /// Replaces the image's entrypoint when not empty (plain containers).
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments to the image's entrypoint, or to `command` (plain containers).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables by name: letters, digits and `_`, not starting with a digit.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports the workload listens on, 1 to 65535 (a rich container also gets 22).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// `container` (default), `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = optional_word_schema::<Runtime>)]
    pub runtime: Option<String>,
    /// Required for `rich` and `vm`.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Where the instances may go; anywhere when left out.
    #[serde(default)]
    pub placement: PlacementBody,
    /// A reservation of the tenant's (id starting `r-`) to draw on before the open pool; it must hold
    /// the same spec and runtime.
    pub reservation_id: Option<String>,
    /// The batch releases itself this long after creation.
    pub ttl_seconds: Option<u64>,
    /// At most 32 Kubernetes labels, put on every instance's Pod or VM; listings filter and usage groups
    /// by them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/reservations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservationBody {
    /// Instances' worth of capacity to hold, 1 to 10000.
    pub count: u64,
    /// The size of each instance it holds room for; batches drawing on it must ask for the same.
    pub spec: SpecBody,
    /// `container` (default), `rich` (Kata) or `vm` (KubeVirt).
    #[schema(schema_with = optional_word_schema::<Runtime>)]
    pub runtime: Option<String>,
    /// Where the capacity may be held; anywhere when left out. Always all or nothing.
    #[serde(default)]
    pub placement: PlacementBody,
    /// When the reservation ends and its unused capacity goes back to the pool.
    pub ends_at: DateTime<Utc>,
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

fn parse_word<T: FromStr>(field: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ApiError::invalid(field, e.to_string()))
}

impl SpecBody {
    /// Parses the quantities; an error names `<field>.cpu` or `<field>.memory`.
    pub fn to_resources(&self, field: &str) -> Result<Resources> {
        let cpu = MilliCpu::parse(&self.cpu)
            .map_err(|e| ApiError::invalid(&format!("{field}.cpu"), e.to_string()))?;
        let memory = MiB::parse(&self.memory)
            .map_err(|e| ApiError::invalid(&format!("{field}.memory"), e.to_string()))?;
        if cpu.0 == 0 {
            return Err(ApiError::invalid(&format!("{field}.cpu"), "must be more than zero"));
        }
        if memory.0 == 0 {
            return Err(ApiError::invalid(&format!("{field}.memory"), "must be at least 1Mi"));
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
            if area != "*" && !known_area(area) {
                return Err(ApiError::invalid(
                    &format!("placement.areas[{i}]"),
                    format!("`{area}` is not a region, province or city of the fleet (see GET /v1/areas)"),
                ));
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
        if self.max_per_idc == Some(0) {
            return Err(ApiError::invalid("placement.max_per_idc", "must be at least 1"));
        }
        Ok(PlacementSpec {
            areas: self.areas.clone(),
            carriers,
            strategy,
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
            max_per_idc: spec.max_per_idc,
            all_or_nothing: Some(spec.all_or_nothing),
        }
    }
}

fn parse_runtime(value: Option<&str>) -> Result<Runtime> {
    value.map(|r| parse_word::<Runtime>("runtime", r)).transpose().map(Option::unwrap_or_default)
}

/// Label keys and values follow Kubernetes' rules, since they end up on Pods.
fn check_label(field: &str, key: &str, value: &str) -> Result<()> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !ok_name(name) || key.len() > 253 {
        return Err(ApiError::invalid(
            field,
            format!("label key `{key}` is not a valid Kubernetes label key"),
        ));
    }
    if !(value.is_empty() || ok_name(value)) {
        return Err(ApiError::invalid(
            field,
            format!("label value `{value}` is not a valid Kubernetes label value"),
        ));
    }
    Ok(())
}

impl CreateBatchBody {
    /// Turns the body into a validated domain request, or names the first field that is wrong.
    pub fn validate(self, known_area: impl Fn(&str) -> bool) -> Result<BatchRequest> {
        if self.count == 0 || self.count > MAX_BATCH_COUNT {
            return Err(ApiError::invalid("count", format!("must be between 1 and {MAX_BATCH_COUNT}")));
        }
        let spec = self.spec.to_resources("spec")?;
        let image = self.image.trim();
        if image.is_empty() || image.len() > 512 || image.contains(char::is_whitespace) {
            return Err(ApiError::invalid(
                "image",
                "must be a container image reference such as `nginx:1.27`",
            ));
        }
        let runtime = parse_runtime(self.runtime.as_deref())?;
        if runtime.needs_ssh() && self.ssh_keys.is_empty() {
            return Err(ApiError::invalid(
                "ssh_keys",
                format!("`{runtime}` instances need at least one ssh public key"),
            ));
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            let kind = key.split_whitespace().next().unwrap_or("");
            if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
                || key.split_whitespace().count() < 2
            {
                return Err(ApiError::invalid(&format!("ssh_keys[{i}]"), "is not an OpenSSH public key"));
            }
        }
        for name in self.env.keys() {
            let ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ApiError::invalid(
                    &format!("env.{name}"),
                    "is not a valid environment variable name",
                ));
            }
        }
        if let Some(i) = self.ports.iter().position(|&p| p == 0) {
            return Err(ApiError::invalid(&format!("ports[{i}]"), "must be between 1 and 65535"));
        }
        if self.labels.len() > 32 {
            return Err(ApiError::invalid("labels", "at most 32 labels"));
        }
        for (key, value) in &self.labels {
            check_label(&format!("labels.{key}"), key, value)?;
        }
        if let Some(ttl) = self.ttl_seconds
            && (ttl == 0 || ttl > MAX_TTL_SECONDS)
        {
            return Err(ApiError::invalid("ttl_seconds", format!("must be between 1 and {MAX_TTL_SECONDS}")));
        }
        if let Some(r) = &self.reservation_id
            && !r.starts_with(ReservationId::PREFIX)
        {
            return Err(ApiError::invalid("reservation_id", "is not a reservation id"));
        }
        Ok(BatchRequest {
            count: self.count,
            spec,
            runtime,
            workload: Workload {
                image: image.to_string(),
                command: self.command,
                args: self.args,
                env: self.env,
                ports: self.ports,
                ssh_keys: self.ssh_keys,
            },
            placement: self.placement.to_spec(known_area)?,
            reservation_id: self.reservation_id.map(ReservationId),
            ttl_seconds: self.ttl_seconds,
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
    /// The labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// The reservation it draws on (id starting `r-`), if any.
    pub reservation_id: Option<String>,
    /// When it was created, UTC RFC 3339.
    pub created_at: DateTime<Utc>,
    /// When its TTL runs out and it releases itself, UTC RFC 3339; null without a TTL.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was released or expired, UTC RFC 3339; null while active.
    pub released_at: Option<DateTime<Utc>>,
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
        BatchView {
            id: b.id.0.clone(),
            state: b.state,
            count: b.count,
            requested: b.request.count,
            counts,
            spec: SpecBody::from_resources(&b.request.spec),
            runtime: b.request.runtime,
            image: b.request.workload.image.clone(),
            placement: b.placement.iter().map(Into::into).collect(),
            placement_request: PlacementBody::from_spec(&b.request.placement),
            labels: b.request.labels.clone(),
            reservation_id: b.request.reservation_id.as_ref().map(|r| r.0.clone()),
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
            return Err(ApiError::invalid("ends_at", "must be in the future"));
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
    pub max_cpu: Option<String>,
    /// Live instances at once.
    pub max_instances: Option<u64>,
    /// API requests per second before answers turn 429, at least 1; the platform's default when absent.
    pub requests_per_second: Option<u32>,
}

impl QuotaBody {
    /// Checks the limits; an error names `quota.<field>`.
    pub fn to_quota(&self) -> Result<Quota> {
        let max_cpu = self
            .max_cpu
            .as_deref()
            .map(|c| MilliCpu::parse(c).map_err(|e| ApiError::invalid("quota.max_cpu", e.to_string())))
            .transpose()?;
        if self.requests_per_second == Some(0) {
            return Err(ApiError::invalid("quota.requests_per_second", "must be at least 1"));
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
    /// Machine-readable: `invalid_request`, `unauthorized`, `not_found`, `idempotency_conflict`,
    /// `insufficient_capacity`, `quota_exceeded`, `rate_limited`, ...
    pub code: String,
    /// What went wrong, for people; match on `code`, not on this.
    pub message: String,
    /// Facts for programs, by code: `field` and `reason` (`invalid_request`), `requested` and
    /// `placeable` (`insufficient_capacity`, `quota_exceeded`), `resource` and `id` (`not_found`).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}
