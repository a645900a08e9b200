//! The placement planner: which IDCs get how many instances of a request, through which carriers.
//!
//! Planning is a pure function of the fleet, the ledger and the request, deterministic for the same
//! input, so that the API can re-plan after a lost race and tests can state exact expectations.
//! First each IDC's count is decided by the strategy; a request naming several carriers then has
//! the count shared among them too (the [`carriers`] submodule).

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use crate::fleet::{Carrier, Fleet, Idc, IdcId, IdcStatus, Runtime};
use crate::ledger::Ledger;
use crate::units::Resources;
use crate::words::word_enum;

mod carriers;

word_enum!(
    /// How instances are distributed over the IDCs that match.
    #[derive(Default)]
    Strategy, "placement strategy", {
        /// Every IDC takes its share in proportion to its free capacity (water-filling): no IDC
        /// ends up fuller than the others by more than one instance's rounding.
        #[default]
        Spread => "spread",
        /// Fill the biggest IDCs first, touching as few IDCs as possible.
        Pack => "pack",
    }
);

word_enum!(
    /// Whether an IDC may serve one batch through several of the carriers the batch asks for.
    #[derive(Default)]
    CarrierPerIdc, "carrier per IDC", {
        /// An IDC's instances are mixed over the requested carriers it has, as the share of each
        /// carrier needs.
        #[default]
        Any => "any",
        /// Each IDC serves the batch through a single carrier; the carriers are balanced over the
        /// IDCs instead.
        One => "one",
    }
);

/// What the customer asked for, in the planner's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    /// How many instances to place.
    pub count: u64,
    /// The size of each instance.
    pub spec: Resources,
    /// Area codes at any level; empty or containing `*` means anywhere.
    pub areas: Vec<String>,
    /// Empty means any carrier (each IDC's first). Several are each given a share of the count in
    /// proportion to their room.
    pub carriers: Vec<Carrier>,
    /// How the instances run; only IDCs that support it match.
    pub runtime: Runtime,
    /// Whether to spread over the matching IDCs or pack into the fewest.
    pub strategy: Strategy,
    /// Whether an IDC may mix the requested carriers or serves through one of them.
    pub carrier_per_idc: CarrierPerIdc,
    /// The most instances any one IDC may take, over all its carriers; unlimited when `None`.
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
            carrier_per_idc: CarrierPerIdc::Any,
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
            && !self.carriers_in(idc).is_empty()
    }

    /// The carriers instances in `idc` may be reached through: the requested ones it has, or its
    /// first carrier when the request names none.
    pub fn carriers_in(&self, idc: &Idc) -> CarrierSet {
        if self.carriers.is_empty() {
            return idc.carriers.first().copied().into_iter().collect();
        }
        self.carriers.iter().copied().filter(|c| idc.carriers.contains(c)).collect()
    }
}

/// A set of carriers: those one IDC may serve a request through. A bit per carrier of
/// [`Carrier::ALL`], so that the planner can keep one per IDC without allocating; it iterates in
/// that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CarrierSet(u8);

impl CarrierSet {
    /// The set of `carrier` alone.
    pub fn single(carrier: Carrier) -> Self {
        CarrierSet(1 << carrier_index(carrier))
    }

    /// True when `carrier` is in the set.
    pub fn contains(self, carrier: Carrier) -> bool {
        self.0 & (1 << carrier_index(carrier)) != 0
    }

    /// How many carriers are in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when no carrier is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The carriers in the set, in [`Carrier::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Carrier> {
        Carrier::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The first carrier of the set in [`Carrier::ALL`] order.
    pub fn first(self) -> Option<Carrier> {
        self.iter().next()
    }
}

impl FromIterator<Carrier> for CarrierSet {
    fn from_iter<I: IntoIterator<Item = Carrier>>(carriers: I) -> Self {
        CarrierSet(carriers.into_iter().fold(0, |bits, c| bits | CarrierSet::single(c).0))
    }
}

/// A carrier's place in [`Carrier::ALL`] (its declaration order), the planner's index for it.
fn carrier_index(carrier: Carrier) -> usize {
    carrier as usize
}

/// Instances assigned to one IDC through one carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The IDC that runs them.
    pub idc: IdcId,
    /// The carrier they are reached through there.
    pub carrier: Carrier,
    /// How many instances.
    pub count: u64,
}

/// The planner's answer: where the instances go. `placed()` may be below the request only when the
/// request allowed a partial placement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per IDC and carrier that takes instances, in IDC id order and then carrier order,
    /// none with a zero count. An IDC has several entries only when it mixes the requested
    /// carriers; its capacity is what its entries take together.
    pub placements: Vec<Placement>,
}

impl Plan {
    /// How many instances the plan places in all.
    pub fn placed(&self) -> u64 {
        self.placements.iter().map(|p| p.count).sum()
    }
}

/// Why nothing (or not enough) could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No active IDC passes the request's area, carrier and runtime filters, whatever its room.
    #[error("no active IDC matches the requested areas, carriers and runtime")]
    NoMatchingIdc,
    /// The matching IDCs have room for fewer instances than asked for, and the request may not be
    /// placed in part (or nothing fits at all).
    #[error("only {placeable} of {requested} instances fit in the matching IDCs right now")]
    InsufficientCapacity {
        /// How many instances were asked for.
        requested: u64,
        /// How many fit (and the quota allows).
        placeable: u64,
    },
    /// The tenant's quota allows fewer instances than asked for, and is the tighter bound.
    #[error("the tenant's quota allows {placeable} more of {requested} instances")]
    QuotaExceeded {
        /// How many instances were asked for.
        requested: u64,
        /// How many more instances the quota allows.
        placeable: u64,
    },
}

/// A place the planner may put instances, with room for `slots` more of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The IDC with room.
    pub idc: IdcId,
    /// The carriers instances there may be reached through; a slot with none takes nothing. When
    /// the request names no carriers, only the first is used.
    pub carriers: CarrierSet,
    /// How many more instances of the request's size fit there, over all its carriers.
    pub slots: u64,
}

/// Plans `request` over the fleet's free capacity as the ledger sees it.
pub fn plan(fleet: &Fleet, ledger: &Ledger, request: &PlacementRequest) -> Result<Plan, PlacementError> {
    let mut any_match = false;
    let mut slots = Vec::new();
    for idc in fleet.idcs.iter().filter(|i| request.matches(i)) {
        any_match = true;
        let mut n = ledger.room_for(&idc.id, &request.spec);
        if let Some(max) = request.max_per_idc {
            n = n.min(max);
        }
        if n > 0 {
            slots.push(Slot { idc: idc.id.clone(), carriers: request.carriers_in(idc), slots: n });
        }
    }
    if !any_match {
        return Err(PlacementError::NoMatchingIdc);
    }
    plan_slots(slots, request)
}

/// Distributes the request over `slots` (in any order, one per IDC) by its strategy, capped by its
/// quota; a request naming carriers has them shared as [`carriers`] says.
pub fn plan_slots(mut slots: Vec<Slot>, request: &PlacementRequest) -> Result<Plan, PlacementError> {
    slots.retain(|s| !s.carriers.is_empty());
    // Summed wide: many IDCs with a lot of room each must not wrap around.
    let room: u128 = slots.iter().map(|s| u128::from(s.slots)).sum();
    let capacity = u64::try_from(room).unwrap_or(u64::MAX);
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
    if !request.carriers.is_empty() {
        let placements = carriers::place(&slots, target, room, request.strategy, request.carrier_per_idc);
        return Ok(Plan { placements });
    }
    let counts = match request.strategy {
        Strategy::Spread => spread(&slots, target, room),
        Strategy::Pack => pack(&slots, target),
    };
    let placements = slots
        .into_iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .filter_map(|(s, count)| Some(Placement { idc: s.idc, carrier: s.carriers.first()?, count }))
        .collect();
    Ok(Plan { placements })
}

/// Proportional to room (largest remainder): slot i takes floor or ceil of `target * room_i / capacity`.
fn spread(slots: &[Slot], target: u64, capacity: u128) -> Vec<u64> {
    let shares = shares(slots, target, capacity);
    let mut counts: Vec<u64> = shares.iter().map(|s| s.0).collect();
    let given: u64 = counts.iter().sum();
    round_up_largest(0..slots.len(), &shares, slots, target - given, &mut counts);
    counts
}

/// Each slot's exact share of `target` in proportion to its room out of `capacity`: whole
/// instances, and the remainder over `capacity`.
fn shares(slots: &[Slot], target: u64, capacity: u128) -> Vec<(u64, u128)> {
    if capacity == 0 {
        return vec![(0, 0); slots.len()];
    }
    let target = u128::from(target);
    slots
        .iter()
        .map(|s| {
            // A slot's room is at most `capacity`, so the quotient is at most `target`: a u64.
            let share = target * u128::from(s.slots);
            ((share / capacity) as u64, share % capacity)
        })
        .collect()
}

/// Adds one instance to each of the `extra` slots among `among` whose `shares` have the largest
/// remainders, so that each count is its share rounded down or up and the counts add up.
fn round_up_largest(
    among: impl Iterator<Item = usize>,
    shares: &[(u64, u128)],
    slots: &[Slot],
    extra: u64,
    counts: &mut [u64],
) {
    if extra == 0 {
        return;
    }
    // Ties go to the roomier IDC, then to the lower id, so the result is deterministic; every key
    // differs (the index is in it), so selecting the first `extra` needs no full sort.
    let mut remainders: Vec<(Reverse<u128>, Reverse<u64>, usize)> =
        among.map(|i| (Reverse(shares[i].1), Reverse(slots[i].slots), i)).collect();
    let extra = usize::try_from(extra).unwrap_or(usize::MAX).min(remainders.len());
    if extra < remainders.len() {
        remainders.select_nth_unstable(extra);
    }
    for &(_, _, i) in &remainders[..extra] {
        counts[i] += 1;
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::sample::{select, subsequence};
    use proptest::strategy::Strategy as _;

    use super::Strategy;
    use super::*;
    use crate::fleet::Area;
    use crate::ledger::{Column, IdcLedger};
    use crate::units::{MiB, MilliCpu};

    /// (region, province, city). Codes are unique across levels, as in a real fleet.
    const AREAS: &[(&str, &str, &str)] = &[
        ("north", "hebei", "tangshan"),
        ("north", "hebei", "baoding"),
        ("north", "shanxi", "taiyuan"),
        ("south", "guangdong", "shenzhen"),
        ("south", "guangdong", "foshan"),
        ("south", "hainan", "sanya"),
        ("west", "sichuan", "chengdu"),
    ];

    /// Every code above at every level, one that names no IDC, and the wildcard.
    const SELECTORS: &[&str] = &[
        "north",
        "hebei",
        "tangshan",
        "baoding",
        "shanxi",
        "taiyuan",
        "south",
        "guangdong",
        "shenzhen",
        "foshan",
        "hainan",
        "sanya",
        "west",
        "sichuan",
        "chengdu",
        "atlantis",
        "*",
    ];

    fn res(cpu_milli: u64, memory_mib: u64, gpu: u32) -> Resources {
        Resources::new(MilliCpu(cpu_milli), MiB(memory_mib), gpu)
    }

    fn idc(id: &str, area: usize, carriers: &[Carrier], capacity: Resources) -> Idc {
        let (region, province, city) = AREAS[area];
        Idc {
            id: IdcId(id.to_string()),
            name: id.to_string(),
            area: Area::new(region, province, city),
            carriers: carriers.to_vec(),
            capacity,
            runtimes: vec![Runtime::Container],
            status: IdcStatus::Active,
            kube_context: None,
            rich_runtime_class: None,
            ssh_ingress_host: None,
            headroom_percent: 0,
        }
    }

    // ---- generators ----------------------------------------------------------------------------

    fn an_idc() -> impl proptest::strategy::Strategy<Value = Idc> {
        (
            0..AREAS.len(),
            subsequence(Carrier::ALL.to_vec(), 1..=4).prop_shuffle(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![6 => Just(IdcStatus::Active), 1 => Just(IdcStatus::Draining), 1 => Just(IdcStatus::Disconnected)],
            0u64..=12,
            select(vec![64u64, 128, 256]),
            prop_oneof![3 => Just(0u32), 1 => 1u32..=16],
        )
            .prop_map(|(area, carriers, rich, vm, status, servers, gib_per_server, gpu)| {
                let mut idc = idc("", area, &carriers, res(servers * 32_000, servers * gib_per_server * 1024, gpu));
                if rich {
                    idc.runtimes.push(Runtime::Rich);
                }
                if vm {
                    idc.runtimes.push(Runtime::Vm);
                }
                idc.status = status;
                idc
            })
    }

    /// 1..60 IDCs with unique ids whose lexical order is not their generation order.
    fn a_fleet() -> impl proptest::strategy::Strategy<Value = Fleet> {
        prop::collection::vec(an_idc(), 1..60).prop_map(|idcs| Fleet {
            idcs: idcs
                .into_iter()
                .enumerate()
                .map(|(i, mut idc)| {
                    idc.id = IdcId(format!("idc-{}", (i * 37) % 101));
                    idc.name = idc.id.0.clone();
                    idc
                })
                .collect(),
        })
    }

    /// Per IDC: absent from the ledger, untouched, or partly reserved and allocated (per dimension,
    /// in percent of what is left), never beyond the total.
    type LineDraw = Option<[u64; 6]>;

    fn a_line() -> impl proptest::strategy::Strategy<Value = LineDraw> {
        prop_oneof![
            1 => Just(None),
            4 => Just(Some([0; 6])),
            10 => prop::array::uniform6(0u64..=100).prop_map(Some),
        ]
    }

    fn ledger_of(fleet: &Fleet, lines: &[LineDraw]) -> Ledger {
        let mut ledger = Ledger::default();
        for (idc, line) in fleet.idcs.iter().zip(lines) {
            let Some([rc, ac, rm, am, rg, ag]) = *line else {
                continue;
            };
            let t = idc.capacity;
            let part = |total: u64, pct: u64| total * pct / 100;
            let reserved = res(part(t.cpu.0, rc), part(t.memory.0, rm), part(u64::from(t.gpu), rg) as u32);
            let left = t - reserved;
            let allocated =
                res(part(left.cpu.0, ac), part(left.memory.0, am), part(u64::from(left.gpu), ag) as u32);
            ledger.idcs.insert(idc.id.clone(), IdcLedger { total: t, reserved, allocated });
            // Some IDCs are made of nodes half their size: a spec bigger than a node is not placed there.
            if rg % 3 == 0 {
                let node = res(t.cpu.0 / 2, t.memory.0 / 2, t.gpu / 2);
                ledger.node_shapes.insert(idc.id.clone(), vec![node]);
            }
        }
        ledger
    }

    fn a_request() -> impl proptest::strategy::Strategy<Value = PlacementRequest> {
        (
            prop_oneof![1u64..=20, 1u64..=500, 1u64..=5000],
            (
                prop_oneof![select(vec![250u64, 500, 1000, 2000, 4000, 8000]), 1u64..=8000],
                prop_oneof![select(vec![512u64, 1024, 4096, 8192, 16384]), 1u64..=32768],
                prop_oneof![4 => Just(0u32), 1 => 1u32..=2],
            ),
            prop::collection::vec(select(SELECTORS), 0..=3),
            prop_oneof![1 => Just(vec![]), 3 => subsequence(Carrier::ALL.to_vec(), 1..=4).prop_shuffle()],
            select(Runtime::ALL.to_vec()),
            (select(Strategy::ALL.to_vec()), select(CarrierPerIdc::ALL.to_vec())),
            prop::option::of(prop_oneof![1 => 0u64..=5, 4 => 1u64..=100]),
            any::<bool>(),
            prop::option::of(prop_oneof![0u64..=20, 0u64..=3000]),
        )
            .prop_map(
                |(
                    count,
                    (cpu, mem, gpu),
                    areas,
                    carriers,
                    runtime,
                    (strategy, carrier_per_idc),
                    max_per_idc,
                    all_or_nothing,
                    quota_left,
                )| {
                    PlacementRequest {
                        count,
                        spec: res(cpu, mem, gpu),
                        areas: areas.into_iter().map(str::to_string).collect(),
                        carriers,
                        runtime,
                        strategy,
                        carrier_per_idc,
                        max_per_idc,
                        all_or_nothing,
                        quota_left,
                    }
                },
            )
    }

    /// A fleet, a ledger over it, a request, and a seed to shuffle the fleet with.
    fn an_input() -> impl proptest::strategy::Strategy<Value = (Fleet, Ledger, PlacementRequest, u64)> {
        a_fleet().prop_flat_map(|fleet| {
            let n = fleet.idcs.len();
            (Just(fleet), prop::collection::vec(a_line(), n), a_request(), any::<u64>()).prop_map(
                |(fleet, lines, request, seed)| {
                    let ledger = ledger_of(&fleet, &lines);
                    (fleet, ledger, request, seed)
                },
            )
        })
    }

    // ---- an independent model of what the planner may use --------------------------------------

    /// The carriers `request` may reach `idc` through, if `idc` passes every filter; written from
    /// the documented rules, not from the planner's code.
    fn model_carriers(idc: &Idc, request: &PlacementRequest) -> Option<Vec<Carrier>> {
        if idc.status != IdcStatus::Active || !idc.runtimes.contains(&request.runtime) {
            return None;
        }
        let anywhere = request.areas.is_empty() || request.areas.iter().any(|a| a == "*");
        let codes = [&idc.area.region, &idc.area.province, &idc.area.city];
        if !anywhere && !request.areas.iter().any(|a| codes.contains(&a)) {
            return None;
        }
        let carriers: Vec<Carrier> = if request.carriers.is_empty() {
            idc.carriers.first().copied().into_iter().collect()
        } else {
            Carrier::ALL
                .into_iter()
                .filter(|c| request.carriers.contains(c) && idc.carriers.contains(c))
                .collect()
        };
        (!carriers.is_empty()).then_some(carriers)
    }

    /// Room for instances per matching IDC (zero included), by id, and whether anything matched.
    fn model_slots(
        fleet: &Fleet,
        ledger: &Ledger,
        request: &PlacementRequest,
    ) -> (bool, BTreeMap<IdcId, u64>) {
        let mut any = false;
        let mut slots = BTreeMap::new();
        for idc in &fleet.idcs {
            if model_carriers(idc, request).is_none() {
                continue;
            }
            any = true;
            let free = ledger.idcs.get(&idc.id).map(|l| l.total.saturating_sub(&(l.reserved + l.allocated)));
            let mut free = free.unwrap_or(Resources::ZERO);
            if ledger
                .node_shapes
                .get(&idc.id)
                .is_some_and(|nodes| !nodes.iter().any(|n| n.covers(&request.spec)))
            {
                free = Resources::ZERO;
            }
            let mut n = u64::MAX;
            for (have, need) in [
                (free.cpu.0, request.spec.cpu.0),
                (free.memory.0, request.spec.memory.0),
                (u64::from(free.gpu), u64::from(request.spec.gpu)),
            ] {
                if let Some(fit) = have.checked_div(need) {
                    n = n.min(fit);
                }
            }
            slots.insert(idc.id.clone(), n.min(request.max_per_idc.unwrap_or(u64::MAX)));
        }
        (any, slots)
    }

    fn shuffled(fleet: &Fleet, mut seed: u64) -> Fleet {
        let mut idcs = fleet.idcs.clone();
        for i in (1..idcs.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            idcs.swap(i, ((seed >> 33) % (i as u64 + 1)) as usize);
        }
        Fleet { idcs }
    }

    fn counts(plan: &Plan) -> Vec<(&str, u64)> {
        plan.placements.iter().map(|p| (p.idc.0.as_str(), p.count)).collect()
    }

    /// What the plan gives each IDC, over all its carriers.
    fn per_idc(plan: &Plan) -> BTreeMap<&IdcId, u64> {
        let mut sums = BTreeMap::new();
        for p in &plan.placements {
            *sums.entry(&p.idc).or_default() += p.count;
        }
        sums
    }

    /// What the plan gives each carrier, over all IDCs.
    fn per_carrier(plan: &Plan) -> BTreeMap<Carrier, u64> {
        let mut sums = BTreeMap::new();
        for p in &plan.placements {
            *sums.entry(p.carrier).or_default() += p.count;
        }
        sums
    }

    /// Each carrier's exact share of `placed`, as a numerator over the returned denominator: in
    /// proportion to `weights` (per IDC), each IDC's weight split evenly among its carriers.
    fn carrier_shares(
        weights: &BTreeMap<&IdcId, u64>,
        carriers: &BTreeMap<&IdcId, Vec<Carrier>>,
        placed: u64,
    ) -> (BTreeMap<Carrier, u128>, u128) {
        let total: u128 = weights.values().map(|&w| u128::from(w)).sum();
        let mut shares = BTreeMap::new();
        for (id, &w) in weights {
            let k = carriers[id].len() as u128;
            for c in &carriers[id] {
                *shares.entry(*c).or_default() += u128::from(placed) * u128::from(w) * (12 / k);
            }
        }
        (shares, total * 12)
    }

    // ---- properties ----------------------------------------------------------------------------

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn a_plan_never_overcommits_an_idc((fleet, ledger, request, _) in an_input()) {
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            for p in &plan.placements {
                prop_assert!(p.count > 0, "empty placement {:?}", p);
            }
            // Capacity is per IDC: all its carriers together stay within its free room.
            for (id, n) in per_idc(&plan) {
                prop_assert!(ledger.free(id).covers(&(request.spec * n)), "{} takes {} and does not fit", id, n);
            }
            let mut after = ledger.clone();
            let amounts: Vec<_> = plan.placements.iter().map(|p| (p.idc.clone(), request.spec * p.count)).collect();
            prop_assert_eq!(after.take(Column::Allocated, &amounts), Ok(()));
            for (id, line) in &after.idcs {
                prop_assert!(line.total.covers(&(line.reserved + line.allocated)), "{} over-committed: {:?}", id, line);
            }
        }

        #[test]
        fn a_plan_honours_every_filter((fleet, ledger, request, _) in an_input()) {
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            let by_id: BTreeMap<_, _> = fleet.idcs.iter().map(|i| (&i.id, i)).collect();
            let mut seen = std::collections::BTreeSet::new();
            for p in &plan.placements {
                prop_assert!(seen.insert((&p.idc, p.carrier)), "{} placed twice through {}", p.idc, p.carrier);
                let idc = by_id[&p.idc];
                prop_assert_eq!(idc.status, IdcStatus::Active);
                prop_assert!(idc.supports(request.runtime));
                let anywhere = request.areas.is_empty() || request.areas.iter().any(|a| a == "*");
                prop_assert!(anywhere || request.areas.iter().any(|a| idc.area.is_within(a)));
                prop_assert!(idc.carriers.contains(&p.carrier));
                prop_assert!(request.carriers.is_empty() || request.carriers.contains(&p.carrier));
                prop_assert!(model_carriers(idc, &request).unwrap_or_default().contains(&p.carrier));
            }
            for (id, n) in per_idc(&plan) {
                prop_assert!(n <= request.max_per_idc.unwrap_or(u64::MAX), "{} takes {}", id, n);
            }
            let mut carriers_of = BTreeMap::<&IdcId, usize>::new();
            for p in &plan.placements {
                *carriers_of.entry(&p.idc).or_default() += 1;
            }
            if request.carrier_per_idc == CarrierPerIdc::One || request.carriers.is_empty() {
                for (id, k) in carriers_of {
                    prop_assert_eq!(k, 1, "{} is reached through {} carriers", id, k);
                }
            }
        }

        #[test]
        fn planning_is_deterministic_whatever_the_fleet_order((fleet, ledger, request, seed) in an_input()) {
            let first = plan(&fleet, &ledger, &request);
            prop_assert_eq!(&first, &plan(&fleet, &ledger, &request));
            prop_assert_eq!(&first, &plan(&shuffled(&fleet, seed), &ledger, &request));
        }

        #[test]
        fn a_plan_places_exactly_what_was_asked_or_says_why_not((fleet, ledger, request, _) in an_input()) {
            let (any, slots) = model_slots(&fleet, &ledger, &request);
            let total: u64 = slots.values().sum();
            let quota = request.quota_left.unwrap_or(u64::MAX);
            let placeable = request.count.min(total).min(quota);
            let partial = PlacementRequest { all_or_nothing: false, ..request.clone() };
            match plan(&fleet, &ledger, &request) {
                Err(PlacementError::NoMatchingIdc) => prop_assert!(!any),
                Ok(plan) => {
                    prop_assert!(any);
                    if request.all_or_nothing {
                        prop_assert_eq!(plan.placed(), request.count);
                    } else {
                        prop_assert_eq!(plan.placed(), placeable);
                        prop_assert!(plan.placed() > 0);
                    }
                }
                Err(e @ (PlacementError::InsufficientCapacity { .. } | PlacementError::QuotaExceeded { .. })) => {
                    prop_assert!(any);
                    let (PlacementError::InsufficientCapacity { requested, placeable: said }
                        | PlacementError::QuotaExceeded { requested, placeable: said }) = e.clone()
                    else { unreachable!() };
                    prop_assert_eq!(requested, request.count);
                    prop_assert_eq!(said, placeable);
                    prop_assert!(said < request.count);
                    let quota_binds = quota < request.count.min(total);
                    prop_assert_eq!(matches!(e, PlacementError::QuotaExceeded { .. }), quota_binds, "{:?}", e);
                    match plan(&fleet, &ledger, &partial) {
                        Ok(p) => prop_assert_eq!(p.placed(), said),
                        Err(PlacementError::InsufficientCapacity { placeable: 0, .. })
                        | Err(PlacementError::QuotaExceeded { placeable: 0, .. }) => prop_assert_eq!(said, 0),
                        Err(other) => prop_assert!(false, "partial re-run failed with {:?}", other),
                    }
                }
            }
        }

        #[test]
        fn spread_gives_each_idc_its_share_of_the_room_rounded((fleet, ledger, mut request, _) in an_input()) {
            request.strategy = Strategy::Spread;
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            let (_, slots) = model_slots(&fleet, &ledger, &request);
            let total = u128::from(slots.values().sum::<u64>());
            let placed = u128::from(plan.placed());
            let got = per_idc(&plan);
            for (id, &room) in &slots {
                let n = u128::from(got.get(id).copied().unwrap_or(0));
                let share = placed * u128::from(room);
                prop_assert!(n <= share.div_ceil(total), "{} got {} of {} with room {}/{}", id, n, placed, room, total);
                prop_assert!(n >= share / total, "{} got {} of {} with room {}/{}", id, n, placed, room, total);
            }
        }

        #[test]
        fn pack_touches_the_fewest_idcs_possible((fleet, ledger, mut request, _) in an_input()) {
            request.strategy = Strategy::Pack;
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            let (_, slots) = model_slots(&fleet, &ledger, &request);
            let mut rooms: Vec<u64> = slots.into_values().collect();
            rooms.sort_unstable_by(|a, b| b.cmp(a));
            let (mut k, mut sum) = (0, 0);
            while sum < plan.placed() {
                sum += rooms[k];
                k += 1;
            }
            prop_assert_eq!(per_idc(&plan).len(), k);
        }

        /// The bound proved in `placement::carriers`: mixing, every carrier's total is its exact
        /// share rounded down or up; with one carrier per IDC, it is off by less than one plus
        /// `k - 1` times (the most one IDC takes, less one) for `k` carriers, and by less than one
        /// plus half of that most for two. The exact share splits every IDC's free room (spread) or
        /// what it takes (pack) evenly among the requested carriers it has.
        #[test]
        fn every_requested_carrier_takes_its_share_of_the_room((fleet, ledger, request, _) in an_input()) {
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            if request.carriers.is_empty() || plan.placed() == 0 {
                return Ok(());
            }
            let (_, slots) = model_slots(&fleet, &ledger, &request);
            let carriers: BTreeMap<&IdcId, Vec<Carrier>> = fleet
                .idcs
                .iter()
                .filter_map(|i| Some((&i.id, model_carriers(i, &request)?)))
                .collect();
            let got = per_idc(&plan);
            let weights: BTreeMap<&IdcId, u64> = match request.strategy {
                Strategy::Spread => slots.iter().map(|(id, &room)| (id, room)).collect(),
                Strategy::Pack => got.clone(),
            };
            let (shares, denominator) = carrier_shares(&weights, &carriers, plan.placed());
            let totals = per_carrier(&plan);
            let most = u128::from(got.values().copied().max().unwrap_or(0));
            let k = request.carriers.iter().collect::<std::collections::BTreeSet<_>>().len() as u128;
            for (carrier, share) in shares {
                let n = u128::from(totals.get(&carrier).copied().unwrap_or(0)) * denominator;
                let off = n.abs_diff(share);
                match request.carrier_per_idc {
                    CarrierPerIdc::Any => prop_assert!(
                        off < denominator,
                        "{} took {}/{} for a share of {}/{}", carrier, n, denominator, share, denominator
                    ),
                    CarrierPerIdc::One => {
                        let bound = if k == 2 { denominator * (2 + most) / 2 } else { denominator * (1 + (k - 1) * most.saturating_sub(1)) };
                        prop_assert!(
                            off < bound.max(denominator),
                            "{} took {}/{} for a share of {}/{} (at most {} in one IDC)", carrier, n, denominator, share, denominator, most
                        );
                    }
                }
            }
        }
    }

    // ---- examples ------------------------------------------------------------------------------

    /// Three IDCs with room for 500, 300 and 200 instances of 2 vCPU / 4 GiB.
    fn three_idcs() -> (Fleet, Ledger) {
        let fleet = Fleet {
            idcs: vec![
                idc("a", 0, &[Carrier::Telecom], res(1_000_000, 2000 * 1024, 0)),
                idc("b", 3, &[Carrier::Unicom], res(600_000, 1200 * 1024, 0)),
                idc("c", 6, &[Carrier::Mobile, Carrier::Telecom], res(400_000, 800 * 1024, 0)),
            ],
        };
        let ledger = Ledger::for_fleet(&fleet);
        (fleet, ledger)
    }

    fn two_by_four(count: u64) -> PlacementRequest {
        PlacementRequest::new(count, res(2000, 4096, 0))
    }

    #[test]
    fn spread_fills_every_idc_when_the_request_takes_all_the_room() {
        let (fleet, ledger) = three_idcs();
        let plan = plan(&fleet, &ledger, &two_by_four(1000)).unwrap();
        assert_eq!(counts(&plan), [("a", 500), ("b", 300), ("c", 200)]);
    }

    #[test]
    fn spread_shares_a_small_request_in_proportion_to_room() {
        let (fleet, ledger) = three_idcs();
        let plan = plan(&fleet, &ledger, &two_by_four(100)).unwrap();
        assert_eq!(counts(&plan), [("a", 50), ("b", 30), ("c", 20)]);
        assert_eq!(plan.placements[2].carrier, Carrier::Mobile);
    }

    #[test]
    fn spread_rounds_to_the_roomier_idc_and_still_places_the_exact_count() {
        let (fleet, ledger) = three_idcs();
        let plan = plan(&fleet, &ledger, &two_by_four(7)).unwrap();
        // Shares 3.5 / 2.1 / 1.4: the largest remainder (a) gets the extra one.
        assert_eq!(counts(&plan), [("a", 4), ("b", 2), ("c", 1)]);
    }

    #[test]
    fn pack_puts_a_small_request_in_the_biggest_idc() {
        let (fleet, ledger) = three_idcs();
        let request = PlacementRequest { strategy: Strategy::Pack, ..two_by_four(100) };
        assert_eq!(counts(&plan(&fleet, &ledger, &request).unwrap()), [("a", 100)]);
        let request = PlacementRequest { strategy: Strategy::Pack, ..two_by_four(600) };
        assert_eq!(counts(&plan(&fleet, &ledger, &request).unwrap()), [("a", 500), ("b", 100)]);
    }

    #[test]
    fn reserved_and_allocated_capacity_is_not_free() {
        let (fleet, mut ledger) = three_idcs();
        ledger.take(Column::Reserved, &[(IdcId("a".into()), res(2000, 4096, 0) * 400)]).unwrap();
        ledger.take(Column::Allocated, &[(IdcId("b".into()), res(2000, 4096, 0) * 300)]).unwrap();
        let plan = plan(&fleet, &ledger, &two_by_four(300)).unwrap();
        assert_eq!(counts(&plan), [("a", 100), ("c", 200)]);
    }

    #[test]
    fn filters_narrow_the_idcs_by_area_carrier_and_cap() {
        let (fleet, ledger) = three_idcs();
        let request = PlacementRequest { areas: vec!["south".into(), "chengdu".into()], ..two_by_four(10) };
        assert_eq!(counts(&plan(&fleet, &ledger, &request).unwrap()), [("b", 6), ("c", 4)]);
        let request = PlacementRequest { carriers: vec![Carrier::Telecom], ..two_by_four(10) };
        let telecom = plan(&fleet, &ledger, &request).unwrap();
        assert_eq!(counts(&telecom), [("a", 7), ("c", 3)]);
        assert!(telecom.placements.iter().all(|p| p.carrier == Carrier::Telecom));
        let request = PlacementRequest { max_per_idc: Some(10), ..two_by_four(30) };
        assert_eq!(counts(&plan(&fleet, &ledger, &request).unwrap()), [("a", 10), ("b", 10), ("c", 10)]);
    }

    #[test]
    fn room_beyond_u64_in_total_is_still_shared_exactly() {
        let huge = |id: &str| Slot {
            idc: IdcId(id.into()),
            carriers: CarrierSet::single(Carrier::Bgp),
            slots: u64::MAX,
        };
        let request = two_by_four(10);
        let spread = plan_slots(vec![huge("b"), huge("a")], &request).unwrap();
        assert_eq!(counts(&spread), [("a", 5), ("b", 5)]);
        let pack = PlacementRequest { strategy: Strategy::Pack, ..request };
        assert_eq!(counts(&plan_slots(vec![huge("b"), huge("a")], &pack).unwrap()), [("a", 10)]);
        let all = PlacementRequest { count: u64::MAX, ..two_by_four(0) };
        assert_eq!(plan_slots(vec![huge("b"), huge("a")], &all).unwrap().placed(), u64::MAX);

        // Shared among carriers too, with every multi-line IDC's room split among them.
        let both: CarrierSet = [Carrier::Telecom, Carrier::Unicom].into_iter().collect();
        let dual = |id: &str| Slot { carriers: both, ..huge(id) };
        let telecom = |id: &str| Slot { carriers: CarrierSet::single(Carrier::Telecom), ..huge(id) };
        let carriers = vec![Carrier::Telecom, Carrier::Unicom];
        let third = u64::MAX / 3;
        for mode in CarrierPerIdc::ALL {
            let all = PlacementRequest { carriers: carriers.clone(), carrier_per_idc: mode, ..all.clone() };
            let plan = plan_slots(vec![dual("b"), telecom("a"), dual("c")], &all).unwrap();
            assert_eq!(per_idc(&plan).into_values().collect::<Vec<_>>(), [third; 3], "{mode}");
            let expected = BTreeMap::from([(Carrier::Telecom, 2 * third), (Carrier::Unicom, third)]);
            assert_eq!(per_carrier(&plan), expected, "{mode}");
            let pack = PlacementRequest { strategy: Strategy::Pack, ..all };
            assert_eq!(
                counts(&plan_slots(vec![dual("b"), telecom("a"), dual("c")], &pack).unwrap()),
                [("a", u64::MAX)]
            );
        }
    }

    #[test]
    fn nothing_matching_is_reported_as_no_matching_idc() {
        let (fleet, ledger) = three_idcs();
        for request in [
            PlacementRequest { areas: vec!["atlantis".into()], ..two_by_four(1) },
            PlacementRequest { carriers: vec![Carrier::Bgp], ..two_by_four(1) },
            PlacementRequest { runtime: Runtime::Vm, ..two_by_four(1) },
            PlacementRequest {
                areas: vec!["north".into()],
                carriers: vec![Carrier::Mobile],
                ..two_by_four(1)
            },
        ] {
            assert_eq!(plan(&fleet, &ledger, &request), Err(PlacementError::NoMatchingIdc), "{request:?}");
        }
        assert_eq!(plan(&Fleet::default(), &ledger, &two_by_four(1)), Err(PlacementError::NoMatchingIdc));
    }

    #[test]
    fn draining_and_disconnected_idcs_get_nothing() {
        let (mut fleet, ledger) = three_idcs();
        fleet.idcs[0].status = IdcStatus::Draining;
        fleet.idcs[2].status = IdcStatus::Disconnected;
        assert_eq!(counts(&plan(&fleet, &ledger, &two_by_four(100)).unwrap()), [("b", 100)]);
        assert_eq!(
            plan(&fleet, &ledger, &two_by_four(301)),
            Err(PlacementError::InsufficientCapacity { requested: 301, placeable: 300 })
        );
        fleet.idcs[1].status = IdcStatus::Draining;
        assert_eq!(plan(&fleet, &ledger, &two_by_four(1)), Err(PlacementError::NoMatchingIdc));
    }

    #[test]
    fn a_partial_request_places_what_fits_and_quota_is_the_tighter_bound() {
        let (fleet, ledger) = three_idcs();
        let partial = PlacementRequest { all_or_nothing: false, ..two_by_four(1500) };
        assert_eq!(plan(&fleet, &ledger, &partial).unwrap().placed(), 1000);
        assert_eq!(
            plan(&fleet, &ledger, &two_by_four(1500)),
            Err(PlacementError::InsufficientCapacity { requested: 1500, placeable: 1000 })
        );
        let quota = PlacementRequest { quota_left: Some(40), ..two_by_four(100) };
        assert_eq!(
            plan(&fleet, &ledger, &quota),
            Err(PlacementError::QuotaExceeded { requested: 100, placeable: 40 })
        );
        let quota = PlacementRequest { all_or_nothing: false, ..quota };
        assert_eq!(counts(&plan(&fleet, &ledger, &quota).unwrap()), [("a", 20), ("b", 12), ("c", 8)]);
    }

    // ---- several carriers ----------------------------------------------------------------------

    const TELECOM: Carrier = Carrier::Telecom;
    const UNICOM: Carrier = Carrier::Unicom;

    /// IDCs `<name>` in Shenzhen with room for `n` instances of 2 vCPU / 4 GiB each, through
    /// `carriers`.
    fn fleet_of(idcs: &[(&str, &[Carrier], u64)]) -> (Fleet, Ledger) {
        let fleet = Fleet {
            idcs: idcs
                .iter()
                .map(|&(id, carriers, n)| idc(id, 3, carriers, res(2000, 4096, 0) * n))
                .collect(),
        };
        let ledger = Ledger::for_fleet(&fleet);
        (fleet, ledger)
    }

    fn telecom_and_unicom(count: u64) -> PlacementRequest {
        PlacementRequest { carriers: vec![TELECOM, UNICOM], ..two_by_four(count) }
    }

    fn by_carrier(plan: &Plan) -> Vec<(&str, Carrier, u64)> {
        plan.placements.iter().map(|p| (p.idc.0.as_str(), p.carrier, p.count)).collect()
    }

    #[test]
    fn two_carriers_over_dual_line_idcs_are_mixed_evenly_within_each_idc() {
        let both: &[Carrier] = &[TELECOM, UNICOM];
        let (fleet, ledger) = fleet_of(&[("a", both, 500), ("b", both, 300), ("c", both, 200)]);
        let plan = plan(&fleet, &ledger, &telecom_and_unicom(100)).unwrap();
        assert_eq!(
            by_carrier(&plan),
            [
                ("a", TELECOM, 25),
                ("a", UNICOM, 25),
                ("b", TELECOM, 15),
                ("b", UNICOM, 15),
                ("c", TELECOM, 10),
                ("c", UNICOM, 10)
            ]
        );
        // Shares of 3.5 each: one carrier rounds up, and the odd instances are dealt round the
        // carriers in turn (starting with the one rounded up), not all to the first.
        let plan = super::plan(&fleet, &ledger, &telecom_and_unicom(7)).unwrap();
        assert_eq!(
            by_carrier(&plan),
            [("a", TELECOM, 2), ("a", UNICOM, 2), ("b", TELECOM, 1), ("b", UNICOM, 1), ("c", UNICOM, 1)]
        );
        assert_eq!(per_carrier(&plan), BTreeMap::from([(TELECOM, 3), (UNICOM, 4)]));
    }

    #[test]
    fn a_dual_line_idc_shares_its_room_between_its_carriers_instead_of_counting_it_twice() {
        let (fleet, ledger) = fleet_of(&[("dual", &[TELECOM, UNICOM], 100), ("telecom", &[TELECOM], 100)]);
        // Telecom has 100 + 50 of the 200, unicom 50.
        let all = plan(&fleet, &ledger, &telecom_and_unicom(200)).unwrap();
        assert_eq!(
            by_carrier(&all),
            [("dual", TELECOM, 50), ("dual", UNICOM, 50), ("telecom", TELECOM, 100)]
        );
        let some = plan(&fleet, &ledger, &telecom_and_unicom(40)).unwrap();
        assert_eq!(per_carrier(&some), BTreeMap::from([(TELECOM, 30), (UNICOM, 10)]));
        let availability = crate::availability::availability(&fleet, &ledger, &telecom_and_unicom(0));
        let room: Vec<(Carrier, u64)> = availability.into_iter().map(|(_, c, n)| (c, n)).collect();
        assert_eq!(room, [(TELECOM, 150), (UNICOM, 50)]);
    }

    #[test]
    fn single_line_idcs_of_each_carrier_are_balanced_even_when_every_share_is_a_tie() {
        // Twenty IDCs with room for one each: every share is a half, and the ids alone would give
        // all five to the telecom IDCs, which sort first.
        let mut idcs: Vec<(String, &[Carrier], u64)> = Vec::new();
        for i in 0..10 {
            idcs.push((format!("t{i}"), &[TELECOM], 1));
            idcs.push((format!("u{i}"), &[UNICOM], 1));
        }
        let named: Vec<(&str, &[Carrier], u64)> =
            idcs.iter().map(|(id, c, n)| (id.as_str(), *c, *n)).collect();
        let (fleet, ledger) = fleet_of(&named);
        let plan = plan(&fleet, &ledger, &telecom_and_unicom(10)).unwrap();
        assert_eq!(per_carrier(&plan), BTreeMap::from([(TELECOM, 5), (UNICOM, 5)]));
        assert!(per_idc(&plan).values().all(|&n| n == 1));
    }

    #[test]
    fn one_carrier_per_idc_gives_each_idc_one_carrier_and_balances_the_carriers_over_idcs() {
        let both: &[Carrier] = &[TELECOM, UNICOM];
        let (fleet, ledger) =
            fleet_of(&[("a", both, 100), ("b", both, 100), ("c", both, 100), ("d", both, 100)]);
        let one = PlacementRequest { carrier_per_idc: CarrierPerIdc::One, ..telecom_and_unicom(40) };
        let plan = plan(&fleet, &ledger, &one).unwrap();
        assert_eq!(
            by_carrier(&plan),
            [("a", TELECOM, 10), ("b", TELECOM, 10), ("c", UNICOM, 10), ("d", UNICOM, 10)]
        );
        // Three IDCs of 10 cannot give two carriers 15 each: one carrier gets two IDCs, 5 off its
        // share, the least possible with whole IDCs.
        let (fleet, ledger) = fleet_of(&[("a", both, 100), ("b", both, 100), ("c", both, 100)]);
        let plan = super::plan(&fleet, &ledger, &PlacementRequest { count: 30, ..one }).unwrap();
        assert_eq!(per_idc(&plan).len(), plan.placements.len());
        let totals = per_carrier(&plan);
        assert_eq!(totals.values().copied().collect::<Vec<_>>(), [20, 10]);
    }

    #[test]
    fn pack_with_several_carriers_still_fills_the_fewest_idcs() {
        let both: &[Carrier] = &[TELECOM, UNICOM];
        let (fleet, ledger) = fleet_of(&[("a", both, 500), ("b", both, 300), ("c", &[UNICOM], 200)]);
        let pack = PlacementRequest { strategy: Strategy::Pack, ..telecom_and_unicom(600) };
        let plan = plan(&fleet, &ledger, &pack).unwrap();
        assert_eq!(
            by_carrier(&plan),
            [("a", TELECOM, 250), ("a", UNICOM, 250), ("b", TELECOM, 50), ("b", UNICOM, 50)]
        );
        let one = PlacementRequest { carrier_per_idc: CarrierPerIdc::One, ..pack };
        let plan = super::plan(&fleet, &ledger, &one).unwrap();
        assert_eq!(by_carrier(&plan), [("a", TELECOM, 500), ("b", UNICOM, 100)]);
    }

    #[test]
    fn no_carriers_asked_for_keeps_each_idcs_first_carrier() {
        let (fleet, ledger) =
            fleet_of(&[("a", &[UNICOM, TELECOM], 10), ("b", &[Carrier::Bgp, Carrier::Mobile], 10)]);
        let plan = plan(&fleet, &ledger, &two_by_four(10)).unwrap();
        assert_eq!(by_carrier(&plan), [("a", UNICOM, 5), ("b", Carrier::Bgp, 5)]);
    }
}
