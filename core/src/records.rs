//! The records the platform keeps: tenants, batches, instances, reservations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fleet::{Area, Carrier, IdcId, Runtime};
use crate::ids::{BatchId, InstanceId, ReservationId, TenantId};
use crate::lifecycle::{BatchState, InstanceState, ReservationState};
use crate::placement::{PlacementRequest, Strategy};
use crate::units::{MilliCpu, Resources};

/// Limits on what one tenant may hold at once. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    pub max_cpu: Option<MilliCpu>,
    pub max_instances: Option<u64>,
    /// API requests per second before the tenant is answered 429.
    pub requests_per_second: Option<u32>,
}

/// A customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub quota: Quota,
    /// CPU held by the tenant's live instances.
    pub used_cpu: MilliCpu,
    /// The tenant's live instances.
    pub used_instances: u64,
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
    pub areas: Vec<String>,
    pub carriers: Vec<Carrier>,
    pub strategy: Strategy,
    pub max_per_idc: Option<u64>,
    pub all_or_nothing: bool,
}

/// What runs in each instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Workload {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub ssh_keys: Vec<String>,
}

/// A validated request for a batch. Its canonical JSON is what idempotency keys are compared on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub count: u64,
    pub spec: Resources,
    pub runtime: Runtime,
    pub workload: Workload,
    pub placement: PlacementSpec,
    pub reservation_id: Option<ReservationId>,
    pub ttl_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

impl BatchRequest {
    /// The planner's view of this request.
    pub fn placement_request(&self, count: u64, quota_left: Option<u64>) -> PlacementRequest {
        PlacementRequest {
            count,
            spec: self.spec,
            areas: self.placement.areas.clone(),
            carriers: self.placement.carriers.clone(),
            runtime: self.runtime,
            strategy: self.placement.strategy,
            max_per_idc: self.placement.max_per_idc,
            all_or_nothing: self.placement.all_or_nothing,
            quota_left,
        }
    }
}

/// How many instances of a batch landed in one city on one carrier; customers see no node or IDC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlacedArea {
    pub region: String,
    pub province: String,
    pub city: String,
    pub carrier: Carrier,
    pub count: u64,
}

/// A batch as stored, with the live count of its instances by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub tenant_id: TenantId,
    pub state: BatchState,
    pub request: BatchRequest,
    /// How many instances were created; below `request.count` only for a partial placement.
    pub count: u64,
    pub placement: Vec<PlacedArea>,
    pub counts: BTreeMap<InstanceState, u64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// How to log into a rich container or VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
}

/// One instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    pub batch_id: BatchId,
    pub tenant_id: TenantId,
    pub state: InstanceState,
    pub spec: Resources,
    pub runtime: Runtime,
    pub idc: IdcId,
    pub area: Area,
    pub carrier: Carrier,
    /// The reservation it draws its capacity from, if any.
    pub reservation_id: Option<ReservationId>,
    pub ip: Option<String>,
    pub ssh: Option<SshEndpoint>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A validated request for a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRequest {
    pub count: u64,
    pub spec: Resources,
    pub runtime: Runtime,
    pub placement: PlacementSpec,
    pub ends_at: DateTime<Utc>,
}

/// Capacity a reservation holds in one IDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationSlot {
    pub idc: IdcId,
    pub area: Area,
    pub carrier: Carrier,
    pub count: u64,
    /// Drawn by the owner's live instances.
    pub used: u64,
}

/// Capacity held for one tenant until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub tenant_id: TenantId,
    pub state: ReservationState,
    pub request: ReservationRequest,
    pub slots: Vec<ReservationSlot>,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Reservation {
    pub fn used(&self) -> u64 {
        self.slots.iter().map(|s| s.used).sum()
    }
}
