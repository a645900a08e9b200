//! The records the platform keeps: tenants, batches, instances, reservations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fleet::{Area, Carrier, IdcId, Runtime};
use crate::ids::{BatchId, InstanceId, ReservationId, TenantId};
use crate::lifecycle::{BatchState, InstanceState, ReservationState};
use crate::placement::{CarrierPerIdc, PlacementRequest, Strategy};
use crate::units::{MilliCpu, Resources};

/// Limits on what one tenant may hold at once. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// The most CPU the tenant's live instances may hold together, in milli-vCPU.
    pub max_cpu: Option<MilliCpu>,
    /// The most live instances the tenant may have at once.
    pub max_instances: Option<u64>,
    /// API requests per second before the tenant is answered 429.
    pub requests_per_second: Option<u32>,
}

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// What every record of the tenant is scoped by.
    pub id: TenantId,
    /// The account's human-readable name, for listings; never a key.
    pub name: String,
    /// The limits on what the tenant may hold.
    pub quota: Quota,
    /// CPU held by the tenant's live instances.
    pub used_cpu: MilliCpu,
    /// The tenant's live instances.
    pub used_instances: u64,
    /// When the account was created, in UTC.
    pub created_at: DateTime<Utc>,
}

impl Tenant {
    /// How many more instances of `spec` the quota allows, if it limits at all.
    pub fn instances_left(&self, spec: &Resources) -> Option<u64> {
        let by_count = self.quota.max_instances.map(|max| max.saturating_sub(self.used_instances));
        let by_cpu = match self.quota.max_cpu {
            Some(max) if spec.cpu.0 > 0 => Some(max.0.saturating_sub(self.used_cpu.0) / spec.cpu.0),
            _ => None,
        };
        match (by_count, by_cpu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Where instances may go, as the customer said it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlacementSpec {
    /// Area codes at any level; empty or containing `*` means anywhere.
    pub areas: Vec<String>,
    /// The carriers instances may be reached through; empty means any.
    pub carriers: Vec<Carrier>,
    /// Spread over the matching IDCs, or pack into the fewest.
    pub strategy: Strategy,
    /// Whether an IDC may mix the requested carriers or serves through one of them. Requests
    /// stored before it existed meant `any`, which is what they read as.
    #[serde(default)]
    pub carrier_per_idc: CarrierPerIdc,
    /// The most instances any one IDC may take; unlimited when `None`.
    pub max_per_idc: Option<u64>,
    /// When false, place what fits and report how many.
    pub all_or_nothing: bool,
}

impl PlacementSpec {
    /// The planner's view of `count` instances of `spec` on `runtime` placed by these rules.
    pub fn planner_request(
        &self,
        count: u64,
        spec: Resources,
        runtime: Runtime,
        quota_left: Option<u64>,
    ) -> PlacementRequest {
        PlacementRequest {
            count,
            spec,
            areas: self.areas.clone(),
            carriers: self.carriers.clone(),
            runtime,
            strategy: self.strategy,
            carrier_per_idc: self.carrier_per_idc,
            max_per_idc: self.max_per_idc,
            all_or_nothing: self.all_or_nothing,
            quota_left,
        }
    }
}

/// What runs in each instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Workload {
    /// The image a plain container runs, or the container disk a VM boots from; a rich container
    /// runs the platform's base image instead.
    pub image: String,
    /// Replaces a plain container's entrypoint when not empty.
    pub command: Vec<String>,
    /// Arguments to a plain container's entrypoint (or to `command`).
    pub args: Vec<String>,
    /// Environment variables, by name.
    pub env: BTreeMap<String, String>,
    /// Ports the workload listens on, declared on its container (a rich container also gets 22).
    pub ports: Vec<u16>,
    /// Public keys allowed to log into a rich container or VM; required for those runtimes.
    pub ssh_keys: Vec<String>,
}

/// A validated request for a batch. Its [`canonical_form`](BatchRequest::canonical_form) is what
/// idempotency keys are compared on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// How many instances are asked for.
    pub count: u64,
    /// The size of each instance.
    pub spec: Resources,
    /// How each instance runs.
    pub runtime: Runtime,
    /// What runs in each instance.
    pub workload: Workload,
    /// Where the instances may go.
    pub placement: PlacementSpec,
    /// The tenant's reservation to draw on before the open pool, if any.
    pub reservation_id: Option<ReservationId>,
    /// The batch releases itself this many seconds after creation; never when `None`.
    pub ttl_seconds: Option<u64>,
    /// The customer's labels, carried onto the cluster objects beside the platform's own.
    pub labels: BTreeMap<String, String>,
    /// How long an instance's object may wait in the cluster (unscheduled, pulling, starting) before
    /// the instance fails with the cluster's reason; [`DEFAULT_CREATE_TIMEOUT_SECONDS`] when `None`.
    #[serde(default)]
    pub create_timeout_seconds: Option<u32>,
}

/// How long an instance may take to start once its object exists, unless its batch says otherwise.
pub const DEFAULT_CREATE_TIMEOUT_SECONDS: u32 = 120;

/// The longest create timeout a batch may ask for.
pub const MAX_CREATE_TIMEOUT_SECONDS: u32 = 3600;

impl BatchRequest {
    /// The batch's create timeout, in seconds.
    pub fn create_timeout_seconds(&self) -> u32 {
        self.create_timeout_seconds.unwrap_or(DEFAULT_CREATE_TIMEOUT_SECONDS)
    }

    /// The version of [`canonical_form`](Self::canonical_form), written before it: a change to the
    /// form is a new version, and fingerprints of the old one are upgraded where they are kept.
    pub const CANONICAL_VERSION: &'static str = "v1";

    /// The request spelled out field by field under names fixed here, independent of how the
    /// structs are named or serialised, so that renaming a field can never change the fingerprint
    /// an idempotency key was stored with. Version `v1`, one `name=value` line per field in this
    /// order: `count`, `cpu` (milli-vCPU), `memory` (MiB), `gpu`, `runtime`, `image`, `command`,
    /// `args`, `env`, `ports`, `ssh_keys`, `areas`, `carriers`, `strategy`, `max_per_idc`,
    /// `all_or_nothing`, `reservation`, `ttl_seconds`, `labels`, and then `carrier_per_idc` only
    /// when it is not the default `any` and `create_timeout_seconds` only when given: the fields came
    /// after the version, and leaving them out when they say what every earlier request meant keeps
    /// their stored fingerprints matching. Strings
    /// are double-quoted with `\`, `"` and control characters escaped (`\uXXXX`); lists are `[a,b]`;
    /// maps `{"k":"v"}` in key order; absent values `-`.
    pub fn canonical_form(&self) -> String {
        let list =
            |items: &mut dyn Iterator<Item = String>| format!("[{}]", items.collect::<Vec<_>>().join(","));
        let map = |m: &BTreeMap<String, String>| {
            let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{}:{}", quoted(k), quoted(v))).collect();
            format!("{{{}}}", pairs.join(","))
        };
        let optional = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let (w, p) = (&self.workload, &self.placement);
        let lines = [
            ("count", self.count.to_string()),
            ("cpu", self.spec.cpu.0.to_string()),
            ("memory", self.spec.memory.0.to_string()),
            ("gpu", self.spec.gpu.to_string()),
            ("runtime", self.runtime.as_str().to_string()),
            ("image", quoted(&w.image)),
            ("command", list(&mut w.command.iter().map(|c| quoted(c)))),
            ("args", list(&mut w.args.iter().map(|a| quoted(a)))),
            ("env", map(&w.env)),
            ("ports", list(&mut w.ports.iter().map(u16::to_string))),
            ("ssh_keys", list(&mut w.ssh_keys.iter().map(|k| quoted(k)))),
            ("areas", list(&mut p.areas.iter().map(|a| quoted(a)))),
            ("carriers", list(&mut p.carriers.iter().map(|c| c.as_str().to_string()))),
            ("strategy", p.strategy.as_str().to_string()),
            ("max_per_idc", optional(p.max_per_idc.map(|m| m.to_string()))),
            ("all_or_nothing", p.all_or_nothing.to_string()),
            ("reservation", optional(self.reservation_id.as_ref().map(|r| quoted(&r.0)))),
            ("ttl_seconds", optional(self.ttl_seconds.map(|t| t.to_string()))),
            ("labels", map(&self.labels)),
        ];
        let late = [
            (p.carrier_per_idc != CarrierPerIdc::Any)
                .then(|| ("carrier_per_idc", p.carrier_per_idc.as_str().to_string())),
            self.create_timeout_seconds.map(|t| ("create_timeout_seconds", t.to_string())),
        ];
        let mut form = format!("{}\n", Self::CANONICAL_VERSION);
        for (name, value) in lines.into_iter().chain(late.into_iter().flatten()) {
            form.push_str(name);
            form.push('=');
            form.push_str(&value);
            form.push('\n');
        }
        form
    }

    /// The planner's view of `count` instances of this request, within `quota_left` more.
    pub fn placement_request(&self, count: u64, quota_left: Option<u64>) -> PlacementRequest {
        self.placement.planner_request(count, self.spec, self.runtime, quota_left)
    }
}

/// `s` in double quotes, with `\\`, `"` and control characters escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How many instances of a batch landed in one city on one carrier; customers see no node or IDC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlacedArea {
    /// The region code of the city.
    pub region: String,
    /// The province code of the city.
    pub province: String,
    /// The city code.
    pub city: String,
    /// The carrier these instances are reached through.
    pub carrier: Carrier,
    /// How many of the batch's instances are there.
    pub count: u64,
}

/// A batch as stored, with the live count of its instances by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its identifier, starting `b-`.
    pub id: BatchId,
    /// The tenant that owns it.
    pub tenant_id: TenantId,
    /// Where it is in its life.
    pub state: BatchState,
    /// The validated request it was made from.
    pub request: BatchRequest,
    /// How many instances were created; below `request.count` only for a partial placement.
    pub count: u64,
    /// Where its instances landed, by city and carrier.
    pub placement: Vec<PlacedArea>,
    /// How many of its instances are in each state; a state with none may be absent.
    pub counts: BTreeMap<InstanceState, u64>,
    /// How many of its failed instances failed for each reason, in the cluster's words.
    pub failures: BTreeMap<String, u64>,
    /// When it was created, in UTC.
    pub created_at: DateTime<Utc>,
    /// When its TTL runs out and it releases itself, in UTC; never when `None`.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was released or expired, in UTC; `None` while active.
    pub ended_at: Option<DateTime<Utc>>,
}

/// How to log into a rich container or VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshEndpoint {
    /// The host to connect to: the IDC's ssh ingress, or else the node's address.
    pub host: String,
    /// The port on that host: the NodePort of the instance's ssh Service.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
}

/// One instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its identifier, starting `i-`; also the name of its objects in the cluster.
    pub id: InstanceId,
    /// The batch it belongs to.
    pub batch_id: BatchId,
    /// The tenant that owns it.
    pub tenant_id: TenantId,
    /// Where it is in its life.
    pub state: InstanceState,
    /// Its size: the capacity it holds in its IDC's ledger line while live.
    pub spec: Resources,
    /// How it runs.
    pub runtime: Runtime,
    /// The IDC it was placed in.
    pub idc: IdcId,
    /// Where its IDC stands.
    pub area: Area,
    /// The carrier it is reached through.
    pub carrier: Carrier,
    /// The reservation it draws its capacity from, if any.
    pub reservation_id: Option<ReservationId>,
    /// Its own labels, set by its tenant after it was made (its batch's apply to it beside them);
    /// the platform's records only, never copied onto its Pod or VMI.
    pub labels: BTreeMap<String, String>,
    /// The Pod's or VMI's IP inside its IDC, once it runs.
    pub ip: Option<String>,
    /// Where to ssh into it, for a running rich container or VM.
    pub ssh: Option<SshEndpoint>,
    /// Why it failed, in the cluster's words, shown to the customer; set only once `failed`.
    pub failure_reason: Option<String>,
    /// When it was allocated, in UTC.
    pub created_at: DateTime<Utc>,
    /// When its record last changed, in UTC.
    pub updated_at: DateTime<Utc>,
    /// When it first ran, in UTC; billing meters from here.
    pub started_at: Option<DateTime<Utc>>,
    /// When it terminated or failed, in UTC; billing stops here.
    pub ended_at: Option<DateTime<Utc>>,
}

/// A validated request for a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRequest {
    /// How many instances' worth of capacity to hold.
    pub count: u64,
    /// The size of each instance it holds room for; batches drawing on it must ask for the same.
    pub spec: Resources,
    /// The runtime it holds room for; batches drawing on it must ask for the same.
    pub runtime: Runtime,
    /// Where the capacity may be held.
    pub placement: PlacementSpec,
    /// When it ends and its unused capacity goes back to the pool, in UTC.
    pub ends_at: DateTime<Utc>,
}

impl ReservationRequest {
    /// The planner's view of this request: all or nothing, unbounded by the quota, and one carrier
    /// per IDC whatever the request says, since a reservation holds one slot per IDC and a slot is
    /// reached through one carrier (its several carriers are still balanced over the IDCs).
    pub fn placement_request(&self) -> PlacementRequest {
        let request = self.placement.planner_request(self.count, self.spec, self.runtime, None);
        PlacementRequest { all_or_nothing: true, carrier_per_idc: CarrierPerIdc::One, ..request }
    }
}

/// Capacity a reservation holds in one IDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationSlot {
    /// The IDC where the capacity is held.
    pub idc: IdcId,
    /// Where that IDC stands.
    pub area: Area,
    /// The carrier instances drawn from this slot are reached through.
    pub carrier: Carrier,
    /// How many instances' worth it holds there.
    pub count: u64,
    /// Drawn by the owner's live instances.
    pub used: u64,
}

/// Capacity held for one tenant until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its identifier, starting `r-`.
    pub id: ReservationId,
    /// The tenant it holds capacity for; only that tenant's batches may draw on it.
    pub tenant_id: TenantId,
    /// Where it is in its life.
    pub state: ReservationState,
    /// What was asked for, including its end time.
    pub request: ReservationRequest,
    /// The capacity held, per IDC.
    pub slots: Vec<ReservationSlot>,
    /// When it was created, in UTC.
    pub created_at: DateTime<Utc>,
    /// When it was released or expired, in UTC; `None` while active.
    pub ended_at: Option<DateTime<Utc>>,
}

impl Reservation {
    /// How many instances' worth the owner's live instances draw from it, over all slots.
    pub fn used(&self) -> u64 {
        self.slots.iter().map(|s| s.used).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MiB;

    fn request() -> BatchRequest {
        BatchRequest {
            count: 3,
            spec: Resources::new(MilliCpu(2000), MiB(4096), 0),
            runtime: crate::fleet::Runtime::Rich,
            workload: Workload {
                image: "nginx:1.27".into(),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo \"hi\"\n".into()],
                env: BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]),
                ports: vec![80, 443],
                ssh_keys: vec!["ssh-ed25519 AAAA x@y".into()],
            },
            placement: PlacementSpec {
                areas: vec!["guangdong".into()],
                carriers: vec![Carrier::Telecom, Carrier::Bgp],
                strategy: Strategy::Pack,
                carrier_per_idc: CarrierPerIdc::Any,
                max_per_idc: Some(10),
                all_or_nothing: true,
            },
            reservation_id: None,
            ttl_seconds: Some(3600),
            create_timeout_seconds: None,
            labels: BTreeMap::from([("run".into(), "probe-1".into())]),
        }
    }

    /// The form is a stored contract: fingerprints kept with idempotency keys depend on every
    /// byte of it. Changing it means a new version, not an edit of this text.
    #[test]
    fn the_canonical_form_of_a_batch_request_is_fixed_by_its_version() {
        assert_eq!(
            request().canonical_form(),
            "v1\ncount=3\ncpu=2000\nmemory=4096\ngpu=0\nruntime=rich\nimage=\"nginx:1.27\"\n\
             command=[\"sh\",\"-c\"]\nargs=[\"echo \\\"hi\\\"\\u000a\"]\nenv={\"A\":\"1\",\"B\":\"2\"}\n\
             ports=[80,443]\nssh_keys=[\"ssh-ed25519 AAAA x@y\"]\nareas=[\"guangdong\"]\n\
             carriers=[telecom,bgp]\nstrategy=pack\nmax_per_idc=10\nall_or_nothing=true\nreservation=-\n\
             ttl_seconds=3600\nlabels={\"run\":\"probe-1\"}\n"
        );
    }

    /// `carrier_per_idc` came after `v1`: left at its default it is left out, so every request
    /// stored before it keeps its fingerprint, and `one` is appended as the last line.
    #[test]
    fn one_carrier_per_idc_is_appended_to_the_canonical_form_and_the_default_is_left_out() {
        let any = request();
        assert!(!any.canonical_form().contains("carrier_per_idc"));
        let mut one = request();
        one.placement.carrier_per_idc = CarrierPerIdc::One;
        assert_eq!(one.canonical_form(), format!("{}carrier_per_idc=one\n", any.canonical_form()));
    }

    #[test]
    fn requests_that_differ_anywhere_have_different_canonical_forms() {
        let base = request();
        let mut changed = Vec::new();
        let mut r = base.clone();
        r.workload.args = vec!["echo".into(), "\"hi\"\n".into()];
        changed.push(r);
        let mut r = base.clone();
        r.workload.env.insert("A".into(), "1,\"B\":\"2".into());
        changed.push(r);
        let mut r = base.clone();
        r.reservation_id = Some(ReservationId("-".into()));
        changed.push(r);
        let mut r = base.clone();
        r.placement.max_per_idc = None;
        changed.push(r);
        let mut r = base.clone();
        r.labels.clear();
        changed.push(r);
        let mut r = base.clone();
        r.placement.carrier_per_idc = CarrierPerIdc::One;
        changed.push(r);
        for r in changed {
            assert_ne!(r.canonical_form(), base.canonical_form(), "{r:?}");
        }
    }
}
