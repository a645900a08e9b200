//! Domain types and pure logic of the edge container instance platform.
//!
//! - [`units`]: integer resource units and Kubernetes quantity strings.
//! - [`ids`]: one newtype per kind of identifier.
//! - [`fleet`]: IDCs, areas, carriers, runtimes; fleet files. [`builtin`]: the embedded default fleet.
//! - [`ledger`]: total / reserved / allocated capacity per IDC.
//! - [`capacity`]: what an IDC can sell, from its cluster's nodes.
//! - [`placement`]: the planner that spreads or packs a request over the fleet.
//! - [`allocation`]: a batch's whole allocation (reservation, pool, quota) over one [`Snapshot`].
//! - [`lifecycle`]: instance, batch and reservation state machines.
//! - [`risk`]: what is protected from deletion, the bulk guard and the deletion windows' logs.
//! - [`words`]: the enums of product words (carriers, runtimes, states), each spelled once.
//! - [`clock`]: where "now" comes from, so tests can move it.
//!
//! Architecture invariant: this crate does no I/O, no async, and knows nothing of HTTP, SQL or
//! Kubernetes. Everything here is a plain function over plain data.

#![warn(missing_docs)]

pub mod alerts;
pub mod allocation;
pub mod availability;
pub mod builtin;
pub mod capacity;
pub mod clock;
pub mod fleet;
pub mod ids;
pub mod ledger;
pub mod lifecycle;
pub mod placement;
pub mod risk;
pub mod units;
pub mod words;

pub use allocation::{Allocation, AllocationError, Snapshot, allocate};
pub use clock::{Clock, ManualClock, SystemClock};
pub use fleet::{Area, Carrier, Fleet, Idc, IdcId, IdcStatus, Runtime};
pub use ids::{BatchId, GroupId, InstanceId, KeyId, ReservationId, TenantId};
pub use ledger::{Column, IdcLedger, Ledger, LedgerError};
pub use lifecycle::{BatchState, IllegalTransition, InstanceState, ReservationState};
pub use placement::{CarrierPerIdc, Placement, PlacementError, PlacementRequest, Plan, Strategy, plan};
pub use units::{MiB, MilliCpu, QuantityError, Resources};
pub mod records;
pub use records::{
    Batch, BatchRequest, Instance, PlacedArea, PlacementSpec, Quota, Reservation, ReservationRequest,
    ReservationSlot, SshEndpoint, Tenant, Workload,
};
