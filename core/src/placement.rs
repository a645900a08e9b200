//! The placement planner: which IDCs get how many instances of a request.
//!
//! Planning is a pure function of the fleet, the ledger and the request, deterministic for the same
//! input, so that the API can re-plan after a lost race and tests can state exact expectations.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use crate::fleet::{Carrier, Fleet, Idc, IdcId, IdcStatus, Runtime};
use crate::ledger::Ledger;
use crate::units::Resources;
use crate::words::word_enum;

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

/// What the customer asked for, in the planner's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    /// How many instances to place.
    pub count: u64,
    /// The size of each instance.
    pub spec: Resources,
    /// Area codes at any level; empty or containing `*` means anywhere.
    pub areas: Vec<String>,
    /// Empty means any carrier.
    pub carriers: Vec<Carrier>,
    /// How the instances run; only IDCs that support it match.
    pub runtime: Runtime,
    /// Whether to spread over the matching IDCs or pack into the fewest.
    pub strategy: Strategy,
    /// The most instances any one IDC may take; unlimited when `None`.
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
    /// One entry per IDC that takes instances, in IDC id order, none with a zero count.
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
    /// The carrier instances there are reached through.
    pub carrier: Carrier,
    /// How many more instances of the request's size fit there.
    pub slots: u64,
}

/// Plans `request` over the fleet's free capacity as the ledger sees it.
pub fn plan(fleet: &Fleet, ledger: &Ledger, request: &PlacementRequest) -> Result<Plan, PlacementError> {
    let mut any_match = false;
    let mut slots = Vec::new();
    for idc in fleet.idcs.iter().filter(|i| request.matches(i)) {
        any_match = true;
        let Some(carrier) = request.carrier_in(idc) else {
            continue;
        };
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
    let counts = match request.strategy {
        Strategy::Spread => spread(&slots, target, room),
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
fn spread(slots: &[Slot], target: u64, capacity: u128) -> Vec<u64> {
    if capacity == 0 {
        return vec![0; slots.len()];
    }
    let target = u128::from(target);
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
            subsequence(Carrier::ALL.to_vec(), 0..=2).prop_shuffle(),
            select(Runtime::ALL.to_vec()),
            prop_oneof![Just(Strategy::Spread), Just(Strategy::Pack)],
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
                    strategy,
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

    /// The carrier `request` would reach `idc` through, if `idc` passes every filter; written from
    /// the documented rules, not from the planner's code.
    fn model_carrier(idc: &Idc, request: &PlacementRequest) -> Option<Carrier> {
        if idc.status != IdcStatus::Active || !idc.runtimes.contains(&request.runtime) {
            return None;
        }
        let anywhere = request.areas.is_empty() || request.areas.iter().any(|a| a == "*");
        let codes = [&idc.area.region, &idc.area.province, &idc.area.city];
        if !anywhere && !request.areas.iter().any(|a| codes.contains(&a)) {
            return None;
        }
        if request.carriers.is_empty() {
            idc.carriers.first().copied()
        } else {
            request.carriers.iter().copied().find(|c| idc.carriers.contains(c))
        }
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
            if model_carrier(idc, request).is_none() {
                continue;
            }
            any = true;
            let free = ledger.idcs.get(&idc.id).map(|l| l.total.saturating_sub(&(l.reserved + l.allocated)));
            let free = free.unwrap_or(Resources::ZERO);
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

    // ---- properties ----------------------------------------------------------------------------

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn a_plan_never_overcommits_an_idc((fleet, ledger, request, _) in an_input()) {
            let Ok(plan) = plan(&fleet, &ledger, &request) else { return Ok(()) };
            for p in &plan.placements {
                prop_assert!(p.count > 0, "empty placement {:?}", p);
                prop_assert!(ledger.free(&p.idc).covers(&(request.spec * p.count)), "{:?} does not fit", p);
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
                prop_assert!(seen.insert(&p.idc), "{} placed twice", p.idc);
                let idc = by_id[&p.idc];
                prop_assert_eq!(idc.status, IdcStatus::Active);
                prop_assert!(idc.supports(request.runtime));
                let anywhere = request.areas.is_empty() || request.areas.iter().any(|a| a == "*");
                prop_assert!(anywhere || request.areas.iter().any(|a| idc.area.is_within(a)));
                prop_assert!(idc.carriers.contains(&p.carrier));
                prop_assert!(request.carriers.is_empty() || request.carriers.contains(&p.carrier));
                prop_assert_eq!(Some(p.carrier), model_carrier(idc, &request));
                prop_assert!(p.count <= request.max_per_idc.unwrap_or(u64::MAX));
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
            let got: BTreeMap<_, _> = plan.placements.iter().map(|p| (&p.idc, u128::from(p.count))).collect();
            for (id, &room) in &slots {
                let n = got.get(id).copied().unwrap_or(0);
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
            prop_assert_eq!(plan.placements.len(), k);
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
        let huge = |id: &str| Slot { idc: IdcId(id.into()), carrier: Carrier::Bgp, slots: u64::MAX };
        let request = two_by_four(10);
        let spread = plan_slots(vec![huge("b"), huge("a")], &request).unwrap();
        assert_eq!(counts(&spread), [("a", 5), ("b", 5)]);
        let pack = PlacementRequest { strategy: Strategy::Pack, ..request };
        assert_eq!(counts(&plan_slots(vec![huge("b"), huge("a")], &pack).unwrap()), [("a", 10)]);
        let all = PlacementRequest { count: u64::MAX, ..two_by_four(0) };
        assert_eq!(plan_slots(vec![huge("b"), huge("a")], &all).unwrap().placed(), u64::MAX);
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
}
