//! The capacity ledger: per IDC, what exists, what is reserved for a tenant and what is allocated.
//!
//! The store keeps the authoritative copy and applies the same rules with conditional updates; this
//! in-memory form is the snapshot the planner reads and the model the property tests check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, IdcId};
use crate::units::Resources;

/// One IDC's line in the ledger. Invariant: `reserved + allocated <= total` in every dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdcLedger {
    /// Everything the IDC may give out: its capacity in the fleet.
    pub total: Resources,
    /// Held for reservations and not yet drawn on; used for everyone but the reservation's owner.
    pub reserved: Resources,
    /// Taken by live instances (including those drawn from reservations).
    pub allocated: Resources,
}

impl IdcLedger {
    /// The line of an IDC of capacity `total`, with nothing reserved or allocated yet.
    pub fn new(total: Resources) -> Self {
        IdcLedger { total, ..Default::default() }
    }

    /// What a new allocation or reservation may still take. Saturates so that a shrunk IDC (total
    /// lowered below what is in use) shows no room rather than underflowing.
    pub fn free(&self) -> Resources {
        self.total.saturating_sub(&(self.reserved + self.allocated))
    }
}

/// Why a ledger change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The change names an IDC the ledger has no line for.
    #[error("IDC `{0}` is not in the ledger")]
    UnknownIdc(IdcId),
    /// The IDC's free room does not cover what the change takes.
    #[error("IDC `{0}` has not enough free capacity")]
    OverCommit(IdcId),
}

/// The ledger of the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    /// One line per IDC, keyed and ordered by id.
    pub idcs: BTreeMap<IdcId, IdcLedger>,
    /// Per IDC whose cluster was read, the rooms of its nodes ([`ClusterCapacity::node_shapes`]):
    /// a spec no shape covers is not placed there. An IDC absent here is bounded by its total alone.
    ///
    /// [`ClusterCapacity::node_shapes`]: crate::capacity::ClusterCapacity::node_shapes
    pub node_shapes: BTreeMap<IdcId, Vec<Resources>>,
}

/// Which column of a ledger line a change touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Capacity held for reservations and not yet drawn on.
    Reserved,
    /// Capacity taken by live instances.
    Allocated,
}

impl Ledger {
    /// An empty ledger sized to the fleet.
    pub fn for_fleet(fleet: &Fleet) -> Self {
        Ledger {
            idcs: fleet.idcs.iter().map(|i| (i.id.clone(), IdcLedger::new(i.capacity))).collect(),
            node_shapes: BTreeMap::new(),
        }
    }

    /// How many more instances of `spec` `idc` can take: its free room, if one of its nodes can
    /// hold the spec at all.
    pub fn room_for(&self, idc: &IdcId, spec: &Resources) -> u64 {
        if !crate::capacity::fits_a_node(self.node_shapes.get(idc).map(Vec::as_slice), spec) {
            return 0;
        }
        self.free(idc).how_many(spec)
    }

    /// What `idc` has free; nothing when the ledger does not know it.
    pub fn free(&self, idc: &IdcId) -> Resources {
        self.idcs.get(idc).map(IdcLedger::free).unwrap_or(Resources::ZERO)
    }

    /// Takes `amounts` from free capacity into `column`, all or nothing.
    pub fn take(&mut self, column: Column, amounts: &[(IdcId, Resources)]) -> Result<(), LedgerError> {
        let mut next = self.idcs.clone();
        for (idc, amount) in amounts {
            let line = next.get_mut(idc).ok_or_else(|| LedgerError::UnknownIdc(idc.clone()))?;
            if !line.free().covers(amount) {
                return Err(LedgerError::OverCommit(idc.clone()));
            }
            match column {
                Column::Reserved => line.reserved = line.reserved + *amount,
                Column::Allocated => line.allocated = line.allocated + *amount,
            }
        }
        self.idcs = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::units::{MiB, MilliCpu};

    fn res(cpu: u64, memory: u64, gpu: u32) -> Resources {
        Resources::new(MilliCpu(cpu), MiB(memory), gpu)
    }

    fn id(i: usize) -> IdcId {
        IdcId(format!("idc-{i}"))
    }

    fn used(line: &IdcLedger) -> Resources {
        line.reserved + line.allocated
    }

    fn within(total: u64, pct: u64) -> u64 {
        total * pct / 100
    }

    /// 1..12 lines, each with a total and reserved + allocated somewhere at or below it.
    fn a_ledger() -> impl Strategy<Value = Ledger> {
        prop::collection::vec(
            (0u64..=640_000, 0u64..=2_621_440, 0u32..=16, prop::array::uniform6(0u64..=100)),
            1..12,
        )
        .prop_map(|lines| Ledger {
            node_shapes: BTreeMap::new(),
            idcs: lines
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpu, [rc, ac, rm, am, rg, ag]))| {
                    let total = res(cpu, mem, gpu);
                    let reserved = res(within(cpu, rc), within(mem, rm), within(u64::from(gpu), rg) as u32);
                    let left = total - reserved;
                    let allocated = res(
                        within(left.cpu.0, ac),
                        within(left.memory.0, am),
                        within(u64::from(left.gpu), ag) as u32,
                    );
                    (id(i), IdcLedger { total, reserved, allocated })
                })
                .collect(),
        })
    }

    fn a_column() -> impl Strategy<Value = Column> {
        prop_oneof![Just(Column::Reserved), Just(Column::Allocated)]
    }

    /// A ledger and 0..6 amounts against it: mostly within an IDC's free room (sometimes the
    /// same IDC twice, sometimes an IDC that is not in the ledger), sometimes beyond it.
    fn a_ledger_and_amounts() -> impl Strategy<Value = (Ledger, Vec<(IdcId, Resources)>)> {
        a_ledger().prop_flat_map(|ledger| {
            let n = ledger.idcs.len();
            let amount = (prop_oneof![20 => 0..n, 1 => Just(n)], prop::array::uniform3(0u64..=60), 1u64..=4);
            (Just(ledger), prop::collection::vec(amount, 0..6)).prop_map(|(ledger, draws)| {
                let amounts = draws
                    .into_iter()
                    .map(|(i, [c, m, g], scale)| {
                        // Up to 60% of the free room, times 1..4: two draws or one big one may not fit.
                        let free = ledger.free(&id(i));
                        let pick = |x: u64, pct: u64| within(x, pct) * scale;
                        (
                            id(i),
                            res(
                                pick(free.cpu.0, c),
                                pick(free.memory.0, m),
                                pick(u64::from(free.gpu), g) as u32,
                            ),
                        )
                    })
                    .collect();
                (ledger, amounts)
            })
        })
    }

    /// Whether `amounts` fit, summed per IDC, into the ledger's free room: the rule `take` must follow.
    fn fits(ledger: &Ledger, amounts: &[(IdcId, Resources)]) -> bool {
        let mut per_idc: BTreeMap<&IdcId, Resources> = BTreeMap::new();
        for (idc, amount) in amounts {
            let sum = per_idc.entry(idc).or_default();
            *sum = *sum + *amount;
        }
        per_idc.iter().all(|(idc, sum)| ledger.idcs.get(*idc).is_some_and(|line| line.free().covers(sum)))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn take_succeeds_exactly_when_every_idc_has_room((ledger, amounts) in a_ledger_and_amounts(), column in a_column()) {
            let mut after = ledger.clone();
            let result = after.take(column, &amounts);
            prop_assert_eq!(result.is_ok(), fits(&ledger, &amounts), "{:?}", result);
            if result.is_ok() {
                for (idc, line) in &after.idcs {
                    prop_assert!(line.total.covers(&used(line)), "{} over-committed: {:?}", idc, line);
                    let other = match column {
                        Column::Reserved => line.allocated == ledger.idcs[idc].allocated,
                        Column::Allocated => line.reserved == ledger.idcs[idc].reserved,
                    };
                    prop_assert!(other, "{} changed the other column", idc);
                }
            }
        }

        #[test]
        fn a_failing_take_leaves_the_ledger_unchanged((ledger, mut amounts) in a_ledger_and_amounts(), column in a_column(), at in any::<prop::sample::Index>()) {
            // Whatever else is in the take, one line asking for more than an IDC's free room fails it.
            let (idc, line) = ledger.idcs.iter().nth(at.index(ledger.idcs.len())).unwrap();
            let too_much = line.free() + res(1, 0, 0);
            amounts.insert(at.index(amounts.len() + 1), (idc.clone(), too_much));
            let mut after = ledger.clone();
            prop_assert!(after.take(column, &amounts).is_err());
            prop_assert_eq!(after, ledger);
        }
    }

    #[test]
    fn a_take_over_several_idcs_is_all_or_nothing() {
        let mut ledger = Ledger::default();
        ledger.idcs.insert(id(1), IdcLedger::new(res(4000, 8192, 0)));
        ledger.idcs.insert(id(2), IdcLedger::new(res(4000, 8192, 0)));
        let before = ledger.clone();
        let two = res(2000, 4096, 0);
        assert_eq!(
            ledger.take(Column::Allocated, &[(id(1), two), (id(2), two), (id(2), two), (id(2), two)]),
            Err(LedgerError::OverCommit(id(2)))
        );
        assert_eq!(ledger, before);
        assert_eq!(
            ledger.take(Column::Allocated, &[(id(1), two), (id(3), two)]),
            Err(LedgerError::UnknownIdc(id(3)))
        );
        assert_eq!(ledger, before);
        ledger.take(Column::Reserved, &[(id(1), two), (id(2), two), (id(2), two)]).unwrap();
        assert_eq!(ledger.free(&id(1)), two);
        assert_eq!(ledger.free(&id(2)), Resources::ZERO);
        assert_eq!(ledger.free(&id(3)), Resources::ZERO);
    }

    #[test]
    fn a_shrunk_idc_shows_no_room_rather_than_underflowing() {
        let line =
            IdcLedger { total: res(1000, 1024, 0), reserved: res(0, 0, 0), allocated: res(2000, 512, 0) };
        assert_eq!(line.free(), res(0, 512, 0));
        let mut ledger = Ledger { idcs: [(id(1), line)].into(), ..Ledger::default() };
        assert_eq!(
            ledger.take(Column::Allocated, &[(id(1), res(1, 1, 0))]),
            Err(LedgerError::OverCommit(id(1)))
        );
    }

    #[test]
    fn a_fresh_ledger_has_the_whole_fleet_free() {
        let fleet = crate::builtin::builtin_fleet();
        let ledger = Ledger::for_fleet(&fleet);
        assert_eq!(ledger.idcs.len(), fleet.idcs.len());
        for idc in &fleet.idcs {
            assert_eq!(ledger.free(&idc.id), idc.capacity);
        }
    }
}
