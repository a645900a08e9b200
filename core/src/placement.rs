//! The placement planner: which IDCs get how many instances of a request.
//!
//! Planning is a pure function of the fleet, the ledger and the request, deterministic for the same
//! input, so that the API can re-plan after a lost race and tests can state exact expectations.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use crate::fleet::{Carrier, Fleet, Idc, IdcId, IdcStatus, Runtime};
use crate::ledger::Ledger;
use crate::units::Resources;

/// How instances are distributed over the IDCs that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every IDC takes its share in proportion to its free capacity (water-filling): no IDC ends
    /// up fuller than the others by more than one instance's rounding.
    #[default]
    Spread,
    /// Fill the biggest IDCs first, touching as few IDCs as possible.
    Pack,
}

/// What the customer asked for, in the planner's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    pub count: u64,
    pub spec: Resources,
    /// Area codes at any level; empty or containing `*` means anywhere.
    pub areas: Vec<String>,
    /// Empty means any carrier.
    pub carriers: Vec<Carrier>,
    pub runtime: Runtime,
    pub strategy: Strategy,
    pub max_per_idc: Option<u64>,
    /// When false, place what fits and report how many.
    pub all_or_nothing: bool,
    /// How many more instances the tenant's quota allows, if it is the tighter bound.
    pub quota_left: Option<u64>,
}

impl PlacementRequest {
    /// A request for `count` instances of `spec` anywhere, spread, all or nothing.
    pub fn new(count: u64, spec: Resources) -> Self {
        PlacementRequest {
            count,
            spec,
            areas: Vec::new(),
            carriers: Vec::new(),
            runtime: Runtime::Container,
            strategy: Strategy::Spread,
            max_per_idc: None,
            all_or_nothing: true,
            quota_left: None,
        }
    }

    fn anywhere(&self) -> bool {
        self.areas.is_empty() || self.areas.iter().any(|a| a == "*")
    }

    /// True when `idc` passes every filter of the request (capacity aside).
    pub fn matches(&self, idc: &Idc) -> bool {
        idc.status == IdcStatus::Active
            && idc.supports(self.runtime)
            && (self.anywhere() || self.areas.iter().any(|a| idc.area.is_within(a)))
            && self.carrier_in(idc).is_some()
    }

    /// The carrier instances in `idc` are reached through: the first requested one the IDC has.
    pub fn carrier_in(&self, idc: &Idc) -> Option<Carrier> {
        if self.carriers.is_empty() {
            return idc.carriers.first().copied();
        }
        self.carriers.iter().find(|c| idc.carriers.contains(c)).copied()
    }
}

/// Instances assigned to one IDC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub idc: IdcId,
    pub carrier: Carrier,
    pub count: u64,
}

/// The planner's answer: where the instances go. `placed()` may be below the request only when the
/// request allowed a partial placement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub placements: Vec<Placement>,
}

impl Plan {
    pub fn placed(&self) -> u64 {
        self.placements.iter().map(|p| p.count).sum()
    }
}

/// Why nothing (or not enough) could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no active IDC matches the requested areas, carriers and runtime")]
    NoMatchingIdc,
    #[error("only {placeable} of {requested} instances fit in the matching IDCs right now")]
    InsufficientCapacity { requested: u64, placeable: u64 },
    #[error("the tenant's quota allows {placeable} more of {requested} instances")]
    QuotaExceeded { requested: u64, placeable: u64 },
}

/// A place the planner may put instances, with room for `slots` more of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub idc: IdcId,
    pub carrier: Carrier,
    pub slots: u64,
}

/// Plans `request` over the fleet's free capacity as the ledger sees it.
pub fn plan(fleet: &Fleet, ledger: &Ledger, request: &PlacementRequest) -> Result<Plan, PlacementError> {
    let mut any_match = false;
    let mut slots = Vec::new();
    for idc in fleet.idcs.iter().filter(|i| request.matches(i)) {
        any_match = true;
        let Some(carrier) = request.carrier_in(idc) else { continue };
        let mut n = ledger.free(&idc.id).how_many(&request.spec);
        if let Some(max) = request.max_per_idc {
            n = n.min(max);
        }
        if n > 0 {
            slots.push(Slot { idc: idc.id.clone(), carrier, slots: n });
        }
    }
    if !any_match {
        return Err(PlacementError::NoMatchingIdc);
    }
    plan_slots(slots, request)
}

/// Distributes the request over `slots` (in any order) by its strategy, capped by its quota.
pub fn plan_slots(mut slots: Vec<Slot>, request: &PlacementRequest) -> Result<Plan, PlacementError> {
    let capacity: u64 = slots.iter().map(|s| s.slots).sum();
    let quota = request.quota_left.unwrap_or(u64::MAX);
    let target = request.count.min(capacity).min(quota);
    if target < request.count && (request.all_or_nothing || target == 0) {
        return Err(if quota < request.count.min(capacity) {
            PlacementError::QuotaExceeded { requested: request.count, placeable: quota }
        } else {
            PlacementError::InsufficientCapacity { requested: request.count, placeable: capacity.min(quota) }
        });
    }
    slots.sort_by(|a, b| a.idc.cmp(&b.idc));
    let counts = match request.strategy {
        Strategy::Spread => spread(&slots, target, capacity),
        Strategy::Pack => pack(&slots, target),
    };
    let placements = slots
        .into_iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(s, count)| Placement { idc: s.idc, carrier: s.carrier, count })
        .collect();
    Ok(Plan { placements })
}

/// Proportional to room (largest remainder): slot i takes floor or ceil of `target * room_i / capacity`.
fn spread(slots: &[Slot], target: u64, capacity: u64) -> Vec<u64> {
    if capacity == 0 {
        return vec![0; slots.len()];
    }
    let (target, capacity) = (u128::from(target), u128::from(capacity));
    let mut counts: Vec<u64> = Vec::with_capacity(slots.len());
    let mut remainders: Vec<(Reverse<u128>, Reverse<u64>, usize)> = Vec::with_capacity(slots.len());
    let mut given = 0u128;
    for (i, s) in slots.iter().enumerate() {
        let share = target * u128::from(s.slots);
        counts.push((share / capacity) as u64);
        given += share / capacity;
        remainders.push((Reverse(share % capacity), Reverse(s.slots), i));
    }
    // Ties go to the roomier IDC, then to the lower id, so the result is deterministic.
    remainders.sort_unstable();
    for &(_, _, i) in remainders.iter().take((target - given) as usize) {
        counts[i] += 1;
    }
    counts
}

/// Biggest room first, so the fewest IDCs are touched.
fn pack(slots: &[Slot], target: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| (Reverse(slots[i].slots), i));
    let mut counts = vec![0; slots.len()];
    let mut left = target;
    for i in order {
        if left == 0 {
            break;
        }
        counts[i] = slots[i].slots.min(left);
        left -= counts[i];
    }
    counts
}
