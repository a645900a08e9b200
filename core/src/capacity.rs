//! What an IDC can really sell: its cluster's nodes as the instance manager read them, turned into
//! the ledger's total and the room of its nodes.
//!
//! The fleet file's capacity is an upper bound an operator sets, never a claim: an IDC sells
//! `min(bound, allocatable of its schedulable Ready nodes - what other workloads request - headroom)`,
//! and nothing before its cluster was read. A spec fits an IDC only if one node's room (its
//! allocatable less other workloads' requests) covers it, so a 32-vCPU instance is never sent to an
//! IDC of 16-vCPU nodes, whatever their sum.

use serde::{Deserialize, Serialize};

use crate::ledger::IdcLedger;
use crate::units::{MiB, MilliCpu, Resources};

/// The most headroom an IDC may keep back, in percent of what its cluster offers.
pub const MAX_HEADROOM_PERCENT: u8 = 90;

/// How many node shapes an IDC keeps. Beyond this many shapes that none covers, the smallest are
/// dropped: a spec only they could hold is refused, which errs on the side of not over-promising.
pub const MAX_NODE_SHAPES: usize = 16;

/// One node of an IDC's cluster as the instance manager read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReading {
    /// What the kubelet says Pods may use (`status.allocatable`).
    pub allocatable: Resources,
    /// Not cordoned (`spec.unschedulable` unset).
    pub schedulable: bool,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// What Pods the platform does not own request on it (system daemons, other tenants' workloads).
    pub foreign: Resources,
}

impl NodeReading {
    /// New work can land here: schedulable and Ready.
    pub fn takes_work(&self) -> bool {
        self.schedulable && self.ready
    }

    /// The largest instance this node can hold, the platform's own instances aside.
    pub fn room(&self) -> Resources {
        self.allocatable.saturating_sub(&self.foreign)
    }
}

/// An IDC's cluster as read at one moment: its nodes and the requests of foreign Pods not yet bound
/// to any node (they will take room somewhere).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterReading {
    /// Every node, whatever its state.
    pub nodes: Vec<NodeReading>,
    /// Requests of foreign Pods waiting for a node.
    pub unbound_foreign: Resources,
}

/// What an IDC's cluster offers the platform, summed from a [`ClusterReading`]: what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterCapacity {
    /// Nodes in the cluster.
    pub nodes: u32,
    /// Of them, schedulable and Ready: the ones counted below.
    pub schedulable_nodes: u32,
    /// Allocatable of the schedulable Ready nodes.
    pub allocatable: Resources,
    /// What foreign Pods request on those nodes, and those waiting for a node.
    pub foreign: Resources,
    /// The rooms of the schedulable Ready nodes, one per shape that no other covers, largest CPU
    /// first: a spec fits the IDC only if one of them covers it.
    pub node_shapes: Vec<Resources>,
}

impl ClusterReading {
    /// Sums the reading into what the ledger needs.
    pub fn capacity(&self) -> ClusterCapacity {
        let working: Vec<&NodeReading> = self.nodes.iter().filter(|n| n.takes_work()).collect();
        let allocatable = working.iter().fold(Resources::ZERO, |sum, n| sum + n.allocatable);
        // A node's foreign requests beyond its allocatable (an overcommitted node) take no more than it has.
        let foreign =
            working.iter().fold(self.unbound_foreign, |sum, n| sum + n.foreign.each_min(&n.allocatable));
        ClusterCapacity {
            nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            schedulable_nodes: u32::try_from(working.len()).unwrap_or(u32::MAX),
            allocatable,
            foreign,
            node_shapes: shapes(working.iter().map(|n| n.room())),
        }
    }
}

/// The rooms no other room covers (the Pareto frontier), largest CPU first, at most
/// [`MAX_NODE_SHAPES`]; rooms with no CPU or memory hold nothing and are left out.
fn shapes(rooms: impl Iterator<Item = Resources>) -> Vec<Resources> {
    let mut all: Vec<Resources> = rooms.filter(|r| r.cpu.0 > 0 && r.memory.0 > 0).collect();
    all.sort_by_key(|r| std::cmp::Reverse((r.cpu, r.memory, r.gpu)));
    all.dedup();
    let mut frontier: Vec<Resources> = Vec::new();
    for room in all {
        if !frontier.iter().any(|f| f.covers(&room)) {
            frontier.push(room);
        }
    }
    frontier.truncate(MAX_NODE_SHAPES);
    frontier
}

/// What an IDC may sell: what its cluster offers less foreign requests and `headroom_percent` of
/// the rest (CPU and memory, rounded up; GPUs are whole devices no system daemon takes), never
/// above the fleet file's `bound`; nothing while its cluster has not been read.
pub fn sellable(bound: Resources, cluster: Option<&ClusterCapacity>, headroom_percent: u8) -> Resources {
    let Some(cluster) = cluster else { return Resources::ZERO };
    let offered = cluster.allocatable.saturating_sub(&cluster.foreign);
    let percent = u64::from(headroom_percent.min(MAX_HEADROOM_PERCENT));
    let headroom = Resources::new(
        MilliCpu((offered.cpu.0 * percent).div_ceil(100)),
        MiB((offered.memory.0 * percent).div_ceil(100)),
        0,
    );
    bound.each_min(&offered.saturating_sub(&headroom))
}

/// True when `spec` fits one of an IDC's node shapes; an IDC whose nodes are not known (`None`) is
/// bounded by its total alone.
pub fn fits_a_node(shapes: Option<&[Resources]>, spec: &Resources) -> bool {
    shapes.is_none_or(|shapes| shapes.iter().any(|s| s.covers(spec)))
}

/// An IDC whose sellable capacity fell below what it has promised (allocated and reserved): new
/// placements stop there and an alert is raised; nothing running is touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityShort {
    /// What the IDC may sell now.
    pub sellable: Resources,
    /// What live instances take and reservations hold.
    pub promised: Resources,
    /// How much of the promise the cluster cannot back.
    pub short_by: Resources,
}

impl std::fmt::Display for CapacityShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the cluster backs {} of the {} promised to instances and reservations: short by {}",
            self.sellable, self.promised, self.short_by
        )
    }
}

impl IdcLedger {
    /// The shortfall when what is allocated and reserved no longer fits the total.
    pub fn short(&self) -> Option<CapacityShort> {
        let promised = self.allocated + self.reserved;
        (!self.total.covers(&promised)).then(|| CapacityShort {
            sellable: self.total,
            promised,
            short_by: promised.saturating_sub(&self.total),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn res(cpu: u64, memory: u64, gpu: u32) -> Resources {
        Resources::new(MilliCpu(cpu), MiB(memory), gpu)
    }

    fn node(cpu: u64, memory: u64, schedulable: bool, ready: bool, foreign: Resources) -> NodeReading {
        NodeReading { allocatable: res(cpu, memory, 0), schedulable, ready, foreign }
    }

    #[test]
    fn only_schedulable_ready_nodes_count_and_foreign_requests_come_off() {
        let reading = ClusterReading {
            nodes: vec![
                node(8000, 32768, true, true, res(500, 1024, 0)),
                node(8000, 32768, true, true, Resources::ZERO),
                node(64000, 262144, false, true, Resources::ZERO),
                node(64000, 262144, true, false, res(1000, 0, 0)),
            ],
            unbound_foreign: res(250, 512, 0),
        };
        let capacity = reading.capacity();
        assert_eq!((capacity.nodes, capacity.schedulable_nodes), (4, 2));
        assert_eq!(capacity.allocatable, res(16000, 65536, 0));
        assert_eq!(capacity.foreign, res(750, 1536, 0));
        assert_eq!(capacity.node_shapes, vec![res(8000, 32768, 0)], "the smaller room is covered");
        assert_eq!(sellable(res(640_000, 2_621_440, 0), Some(&capacity), 0), res(15250, 64000, 0));
    }

    #[test]
    fn the_fleet_bound_caps_and_an_unread_cluster_sells_nothing() {
        let capacity = ClusterReading {
            nodes: vec![node(16000, 65536, true, true, Resources::ZERO)],
            ..Default::default()
        }
        .capacity();
        assert_eq!(sellable(res(4000, 100_000, 2), Some(&capacity), 0), res(4000, 65536, 0));
        assert_eq!(sellable(res(4000, 8192, 0), None, 0), Resources::ZERO);
    }

    #[test]
    fn headroom_is_kept_back_rounded_up() {
        let capacity = ClusterReading {
            nodes: vec![node(1001, 1001, true, true, Resources::ZERO)],
            ..Default::default()
        }
        .capacity();
        assert_eq!(sellable(res(10_000, 10_000, 0), Some(&capacity), 10), res(900, 900, 0));
        assert_eq!(sellable(res(10_000, 10_000, 0), Some(&capacity), 200), res(100, 100, 0), "capped at 90%");
    }

    #[test]
    fn shapes_keep_every_room_no_other_covers() {
        let rooms = [res(16000, 131072, 0), res(32000, 65536, 0), res(8000, 8192, 0), res(32000, 65536, 0)];
        let shapes = shapes(rooms.into_iter());
        assert_eq!(shapes, vec![res(32000, 65536, 0), res(16000, 131072, 0)]);
        assert!(!fits_a_node(Some(&shapes), &res(20000, 100_000, 0)), "the sum of dimensions is no node");
        assert!(fits_a_node(Some(&shapes), &res(16000, 100_000, 0)));
        assert!(fits_a_node(None, &res(1_000_000, 1, 0)));
    }

    #[test]
    fn a_short_idc_names_its_figures() {
        let line = IdcLedger {
            total: res(16000, 65536, 0),
            reserved: res(2000, 0, 0),
            allocated: res(20000, 4096, 0),
        };
        let short = line.short().unwrap();
        assert_eq!(short.short_by, res(6000, 0, 0));
        assert_eq!(
            short.to_string(),
            "the cluster backs cpu 16, memory 64Gi of the cpu 22, memory 4Gi promised to instances and \
             reservations: short by cpu 6"
        );
        assert_eq!(
            IdcLedger { allocated: res(14000, 65536, 0), ..line }.short(),
            None,
            "exactly full is not short"
        );
    }

    fn a_node() -> impl Strategy<Value = NodeReading> {
        (0u64..64_000, 0u64..262_144, 0u32..8, any::<bool>(), any::<bool>(), 0u64..80_000, 0u64..300_000)
            .prop_map(|(cpu, memory, gpu, schedulable, ready, fc, fm)| NodeReading {
                allocatable: res(cpu, memory, gpu),
                schedulable,
                ready,
                foreign: res(fc, fm, 0),
            })
    }

    proptest! {
        #[test]
        fn sellable_never_exceeds_the_bound_nor_what_working_nodes_offer(
            nodes in prop::collection::vec(a_node(), 0..12),
            bound in (0u64..1_000_000, 0u64..4_000_000, 0u32..64),
            headroom in 0u8..=100,
        ) {
            let reading = ClusterReading { nodes, unbound_foreign: Resources::ZERO };
            let capacity = reading.capacity();
            let bound = res(bound.0, bound.1, bound.2);
            let sold = sellable(bound, Some(&capacity), headroom);
            prop_assert!(bound.covers(&sold));
            let offered = reading.nodes.iter().filter(|n| n.takes_work()).fold(Resources::ZERO, |s, n| s + n.room());
            prop_assert!(offered.covers(&sold), "{sold} sold of {offered} offered");
            for shape in &capacity.node_shapes {
                prop_assert!(reading.nodes.iter().any(|n| n.takes_work() && n.room() == *shape));
            }
            for n in reading.nodes.iter().filter(|n| n.takes_work() && n.room().cpu.0 > 0 && n.room().memory.0 > 0) {
                prop_assert!(fits_a_node(Some(&capacity.node_shapes), &n.room()) || capacity.node_shapes.len() == MAX_NODE_SHAPES);
            }
        }
    }
}
