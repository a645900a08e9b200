//! Allocation: the whole decision of where a batch's instances go and what capacity they take, over
//! one snapshot of the fleet, its ledger, the tenant's quota and the batch's reservation.
//!
//! A batch draws first on its reservation (if it names one), then on the open pool; the quota caps
//! both together. The store reads one [`Snapshot`], calls [`allocate`] and applies the
//! [`Allocation`] with conditional updates; when a concurrent request got there first it reads a new
//! snapshot and calls [`allocate`] again, so the rule lives here and only here. Reservations are
//! placed by [`place_reservation`] over the same snapshot.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::fleet::{Area, Carrier, Fleet, IdcId};
use crate::ids::{BatchId, InstanceId, ReservationId, TenantId};
use crate::ledger::Ledger;
use crate::lifecycle::{InstanceState, ReservationState};
use crate::placement::{self, CarrierSet, PlacementError, PlacementRequest, Plan, Slot};
use crate::records::{BatchRequest, Instance, PlacedArea, Reservation, ReservationRequest, Tenant};
use crate::units::Resources;

/// The fleet and its capacity ledger as they stood at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every IDC, with its area, carriers, runtimes and status.
    pub fleet: Fleet,
    /// What each IDC has, holds for reservations and has allocated.
    pub ledger: Ledger,
}

/// Why a batch (or a reservation) cannot be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// The fleet, the ledger or the quota leaves too little room.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The batch names a reservation that has ended or whose end time has passed.
    #[error("reservation `{0}` is no longer active")]
    ReservationEnded(ReservationId),
    /// The batch asks for instances of another size or runtime than its reservation holds.
    #[error(
        "reservation `{id}` holds {} vCPU / {} / {} GPU `{holds_runtime}` instances; the batch asks for {} / {} / {} `{asks_runtime}`",
        holds.cpu, holds.memory, holds.gpu, asks.cpu, asks.memory, asks.gpu
    )]
    ReservationMismatch {
        /// The reservation the batch names.
        id: ReservationId,
        /// The size of instance the reservation holds room for.
        holds: Resources,
        /// The runtime the reservation holds room for.
        holds_runtime: crate::fleet::Runtime,
        /// The size of instance the batch asks for.
        asks: Resources,
        /// The runtime the batch asks for.
        asks_runtime: crate::fleet::Runtime,
    },
}

/// Where each part of a batch goes, and whether it draws on the batch's reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// The reservation drawn on, if the batch named one.
    pub reservation: Option<ReservationId>,
    /// What the batch takes from its reservation's slots: capacity already held, moved from
    /// reserved to allocated.
    pub from_reservation: Plan,
    /// What the batch takes from the IDCs' free capacity.
    pub from_pool: Plan,
}

/// What one IDC's ledger line gives a batch: drawn from the reservation, and fresh from free room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdcShare {
    /// Instances whose capacity moves from the IDC's reserved to its allocated column.
    pub drawn: u64,
    /// Instances whose capacity comes out of the IDC's free room.
    pub fresh: u64,
}

impl Allocation {
    /// How many instances the batch gets.
    pub fn placed(&self) -> u64 {
        self.from_reservation.placed() + self.from_pool.placed()
    }

    /// Each IDC's share, in id order: the order every transaction touches IDC rows in, so that
    /// concurrent batches cannot deadlock.
    pub fn shares(&self) -> BTreeMap<&IdcId, IdcShare> {
        let mut shares: BTreeMap<&IdcId, IdcShare> = BTreeMap::new();
        for p in &self.from_reservation.placements {
            shares.entry(&p.idc).or_default().drawn += p.count;
        }
        for p in &self.from_pool.placements {
            shares.entry(&p.idc).or_default().fresh += p.count;
        }
        shares
    }

    /// The reservation drawn on and what is taken from each of its slots (one per IDC, whatever
    /// carriers the placements name), in IDC order; `None` when nothing comes from a reservation.
    pub fn reservation_draws(&self) -> Option<(&ReservationId, Vec<(&IdcId, u64)>)> {
        let id = self.reservation.as_ref().filter(|_| self.from_reservation.placed() > 0)?;
        let mut draws: BTreeMap<&IdcId, u64> = BTreeMap::new();
        for p in &self.from_reservation.placements {
            *draws.entry(&p.idc).or_default() += p.count;
        }
        Some((id, draws.into_iter().collect()))
    }

    /// The placement summed by city and carrier, the only placement detail customers see.
    pub fn placed_areas(&self, fleet: &Fleet) -> Vec<PlacedArea> {
        let mut sums: BTreeMap<(&str, &str, &str, Carrier), u64> = BTreeMap::new();
        for p in self.from_reservation.placements.iter().chain(&self.from_pool.placements) {
            if let Some(idc) = fleet.idcs.iter().find(|i| i.id == p.idc) {
                let a = &idc.area;
                *sums.entry((&a.region, &a.province, &a.city, p.carrier)).or_default() += p.count;
            }
        }
        sums.into_iter()
            .map(|((region, province, city, carrier), count)| PlacedArea {
                region: region.to_string(),
                province: province.to_string(),
                city: city.to_string(),
                carrier,
                count,
            })
            .collect()
    }

    /// The batch's instances as allocated, all `pending` and created at `now`; `next_id` names
    /// each. An IDC the fleet does not know yields an error naming it.
    pub fn instances(
        &self,
        batch: &BatchId,
        tenant: &TenantId,
        request: &BatchRequest,
        fleet: &Fleet,
        now: DateTime<Utc>,
        mut next_id: impl FnMut() -> InstanceId,
    ) -> Result<Vec<Instance>, IdcId> {
        let areas: BTreeMap<&IdcId, &Area> = fleet.idcs.iter().map(|i| (&i.id, &i.area)).collect();
        let mut instances = Vec::with_capacity(usize::try_from(self.placed()).unwrap_or_default());
        for (plan, reservation) in
            [(&self.from_reservation, self.reservation.as_ref()), (&self.from_pool, None)]
        {
            for p in &plan.placements {
                let area = areas.get(&p.idc).ok_or_else(|| p.idc.clone())?;
                for _ in 0..p.count {
                    instances.push(Instance {
                        id: next_id(),
                        batch_id: batch.clone(),
                        tenant_id: tenant.clone(),
                        state: InstanceState::Pending,
                        spec: request.spec,
                        runtime: request.runtime,
                        idc: p.idc.clone(),
                        area: (*area).clone(),
                        carrier: p.carrier,
                        reservation_id: reservation.cloned(),
                        labels: BTreeMap::new(),
                        ip: None,
                        ssh: None,
                        failure_reason: None,
                        created_at: now,
                        updated_at: now,
                        started_at: None,
                        ended_at: None,
                    });
                }
            }
        }
        Ok(instances)
    }
}

/// Allocates a batch for `tenant` over `snapshot`: first from `reservation` (the one the request
/// names, read for its owner; `None` when it names none), then from the open pool, within the
/// tenant's quota. A partial placement is allowed only when the request allows it; the error names
/// the bound that stops the whole batch, reservation and pool together.
pub fn allocate(
    snapshot: &Snapshot,
    tenant: &Tenant,
    reservation: Option<&Reservation>,
    request: &BatchRequest,
    now: DateTime<Utc>,
) -> Result<Allocation, AllocationError> {
    let quota_left = tenant.instances_left(&request.spec);
    // Room left in the batch's reservation, whatever the quota says.
    let mut reservation_room = 0;
    let from_reservation = match reservation {
        None => Plan::default(),
        Some(reservation) => {
            check_reservation_serves(reservation, request, now)?;
            let slots: Vec<Slot> = reservation
                .slots
                .iter()
                .filter(|s| s.used < s.count)
                // An IDC whose cluster no longer backs what it promised takes no new instance, not
                // even one its reservation holds room for.
                .filter(|s| snapshot.ledger.idcs.get(&s.idc).is_none_or(|l| l.short().is_none()))
                .map(|s| Slot {
                    idc: s.idc.clone(),
                    carriers: CarrierSet::single(s.carrier),
                    slots: s.count - s.used,
                })
                .collect();
            reservation_room = slots.iter().map(|s| s.slots).sum();
            let mut partial = request.placement_request(request.count, quota_left);
            partial.all_or_nothing = false;
            partial.max_per_idc = None;
            match placement::plan_slots(slots, &partial) {
                Ok(plan) => plan,
                Err(PlacementError::InsufficientCapacity { .. }) => Plan::default(),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let drawn = from_reservation.placed();
    let remaining = request.count - drawn;
    let from_pool = if remaining == 0 {
        Plan::default()
    } else {
        let pool_request = request.placement_request(remaining, quota_left.map(|q| q.saturating_sub(drawn)));
        match placement::plan(&snapshot.fleet, &snapshot.ledger, &pool_request) {
            Ok(plan) => plan,
            Err(_) if drawn > 0 && !request.placement.all_or_nothing => Plan::default(),
            Err(e) if reservation.is_none() => return Err(e.into()),
            Err(PlacementError::NoMatchingIdc) if reservation_room == 0 => {
                return Err(PlacementError::NoMatchingIdc.into());
            }
            Err(_) => {
                // The planner's rule over reservation and pool together: the quota when it is
                // tighter than the room, else the room.
                let room = reservation_room.saturating_add(pool_room(snapshot, &pool_request));
                let quota = quota_left.unwrap_or(u64::MAX);
                let requested = request.count;
                return Err(if quota < requested.min(room) {
                    PlacementError::QuotaExceeded { requested, placeable: quota }
                } else {
                    PlacementError::InsufficientCapacity { requested, placeable: room.min(quota) }
                }
                .into());
            }
        }
    };
    Ok(Allocation { reservation: reservation.map(|r| r.id.clone()), from_reservation, from_pool })
}

/// Places a reservation over `snapshot`'s free capacity, all or nothing. Reservations are not
/// bounded by the quota: it limits live instances, and those drawn from a reservation count there.
pub fn place_reservation(snapshot: &Snapshot, request: &ReservationRequest) -> Result<Plan, AllocationError> {
    Ok(placement::plan(&snapshot.fleet, &snapshot.ledger, &request.placement_request())?)
}

/// How many instances of the request's kind the open pool has room for, quota aside.
fn pool_room(snapshot: &Snapshot, request: &PlacementRequest) -> u64 {
    let unbounded =
        PlacementRequest { count: u64::MAX, all_or_nothing: true, quota_left: None, ..request.clone() };
    match placement::plan(&snapshot.fleet, &snapshot.ledger, &unbounded) {
        Err(PlacementError::InsufficientCapacity { placeable, .. }) => placeable,
        Err(_) => 0,
        Ok(plan) => plan.placed(),
    }
}

/// A reservation serves batches of its owner with the same size and runtime while it is active.
fn check_reservation_serves(
    reservation: &Reservation,
    request: &BatchRequest,
    now: DateTime<Utc>,
) -> Result<(), AllocationError> {
    if reservation.state != ReservationState::Active || reservation.request.ends_at <= now {
        return Err(AllocationError::ReservationEnded(reservation.id.clone()));
    }
    if reservation.request.spec != request.spec || reservation.request.runtime != request.runtime {
        return Err(AllocationError::ReservationMismatch {
            id: reservation.id.clone(),
            holds: reservation.request.spec,
            holds_runtime: reservation.request.runtime,
            asks: request.spec,
            asks_runtime: request.runtime,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::fleet::{Idc, IdcStatus, Runtime};
    use crate::ledger::{IdcLedger, Ledger};
    use crate::placement::CarrierPerIdc;
    use crate::records::{PlacementSpec, Quota, ReservationSlot, Workload};
    use crate::units::{MiB, MilliCpu};

    const SPEC: Resources = Resources::new(MilliCpu(2000), MiB(4096), 0);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
    }

    fn idc(n: usize) -> Idc {
        Idc {
            id: IdcId(format!("idc-{n:02}")),
            name: format!("idc-{n:02}"),
            area: Area::new("south", "guangdong", if n.is_multiple_of(2) { "shenzhen" } else { "foshan" }),
            carriers: vec![Carrier::Telecom],
            capacity: Resources::new(MilliCpu(64_000), MiB(256 * 1024), 0),
            runtimes: vec![Runtime::Container],
            status: IdcStatus::Active,
            kube_context: None,
            rich_runtime_class: None,
            ssh_ingress_host: None,
            headroom_percent: 0,
        }
    }

    /// Up to 8 IDCs of room for 32 instances each, some of it held by the reservation (`held`, of
    /// which `used` is drawn) and some allocated to others (`taken`).
    #[derive(Debug, Clone)]
    struct Line {
        held: u64,
        used: u64,
        taken: u64,
    }

    fn a_line() -> impl Strategy<Value = Line> {
        (0u64..=12, 0u64..=12, 0u64..=20).prop_map(|(held, used, taken)| Line {
            held,
            used: used.min(held),
            taken: taken.min(32 - held),
        })
    }

    #[derive(Debug, Clone)]
    struct Case {
        snapshot: Snapshot,
        reservation: Option<Reservation>,
        tenant: Tenant,
        request: BatchRequest,
    }

    fn a_case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec(a_line(), 1..=8),
            any::<bool>(),
            1u64..=200,
            any::<bool>(),
            prop::option::of(0u64..=150),
            prop::option::of(1u64..=20),
            prop::sample::select(vec![vec![], vec!["shenzhen".to_string()], vec!["guangdong".to_string()]]),
            prop::option::of(prop::sample::select(CarrierPerIdc::ALL.to_vec())),
        )
            .prop_map(
                |(
                    lines,
                    with_reservation,
                    count,
                    all_or_nothing,
                    max_instances,
                    max_per_idc,
                    areas,
                    carriers,
                )| {
                    let mut snapshot = Snapshot::default();
                    let mut slots = Vec::new();
                    for (n, line) in lines.iter().enumerate() {
                        let mut idc = idc(n);
                        // Asking for two carriers, every other IDC is dual-line, so that a batch
                        // may take one IDC's capacity through both.
                        if carriers.is_some() && n % 2 == 0 {
                            idc.carriers.push(Carrier::Unicom);
                        }
                        let reserved =
                            if with_reservation { SPEC * (line.held - line.used) } else { Resources::ZERO };
                        let allocated = SPEC * (line.taken + if with_reservation { line.used } else { 0 });
                        snapshot
                            .ledger
                            .idcs
                            .insert(idc.id.clone(), IdcLedger { total: idc.capacity, reserved, allocated });
                        if with_reservation && line.held > 0 {
                            slots.push(ReservationSlot {
                                idc: idc.id.clone(),
                                area: idc.area.clone(),
                                carrier: Carrier::Telecom,
                                count: line.held,
                                used: line.used,
                            });
                        }
                        snapshot.fleet.idcs.push(idc);
                    }
                    let reservation = with_reservation.then(|| Reservation {
                        id: ReservationId("r-1".into()),
                        tenant_id: TenantId("t-1".into()),
                        state: ReservationState::Active,
                        request: ReservationRequest {
                            count: slots.iter().map(|s| s.count).sum(),
                            spec: SPEC,
                            runtime: Runtime::Container,
                            placement: PlacementSpec::default(),
                            ends_at: now() + chrono::Duration::hours(1),
                        },
                        slots,
                        created_at: now(),
                        ended_at: None,
                    });
                    let tenant = Tenant {
                        id: TenantId("t-1".into()),
                        name: "t".into(),
                        quota: Quota { max_cpu: None, max_instances, requests_per_second: None },
                        used_cpu: MilliCpu(0),
                        used_instances: 0,
                        created_at: now(),
                    };
                    let request = BatchRequest {
                        count,
                        spec: SPEC,
                        runtime: Runtime::Container,
                        workload: Workload { image: "nginx".into(), ..Default::default() },
                        placement: PlacementSpec {
                            areas,
                            carriers: match carriers {
                                Some(_) => vec![Carrier::Telecom, Carrier::Unicom],
                                None => vec![],
                            },
                            strategy: Default::default(),
                            carrier_per_idc: carriers.unwrap_or_default(),
                            max_per_idc,
                            all_or_nothing,
                        },
                        reservation_id: reservation.as_ref().map(|r| r.id.clone()),
                        ttl_seconds: None,
                        create_timeout_seconds: None,
                        labels: Default::default(),
                    };
                    Case { snapshot, reservation, tenant, request }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the snapshot, an allocation fits: the pool part in free room, the reservation
        /// part in the slots' unused room, both together within the quota and the request.
        #[test]
        fn an_allocation_never_takes_more_than_there_is(case in a_case()) {
            let Case { snapshot, reservation, tenant, request } = &case;
            let Ok(allocation) = allocate(snapshot, tenant, reservation.as_ref(), request, now()) else {
                return Ok(());
            };
            prop_assert!(allocation.placed() <= request.count);
            if request.placement.all_or_nothing {
                prop_assert_eq!(allocation.placed(), request.count);
            }
            if let Some(max) = tenant.quota.max_instances {
                prop_assert!(allocation.placed() <= max);
            }
            for (idc, share) in allocation.shares() {
                prop_assert!(snapshot.ledger.free(idc).how_many(&SPEC) >= share.fresh, "{idc}: {share:?}");
                let room = reservation
                    .iter()
                    .flat_map(|r| &r.slots)
                    .find(|s| &s.idc == idc)
                    .map_or(0, |s| s.count - s.used);
                prop_assert!(room >= share.drawn, "{idc}: {share:?} with room {room}");
            }
            let instances = allocation
                .instances(&BatchId("b-1".into()), &tenant.id, request, &snapshot.fleet, now(), || InstanceId("i".into()))
                .unwrap();
            prop_assert_eq!(instances.len() as u64, allocation.placed());
            prop_assert_eq!(
                instances.iter().filter(|i| i.reservation_id.is_some()).count() as u64,
                allocation.from_reservation.placed()
            );
            let by_area: u64 = allocation.placed_areas(&snapshot.fleet).iter().map(|a| a.count).sum();
            prop_assert_eq!(by_area, allocation.placed());
        }

        /// A refusal names a bound below the request, and asking for exactly that bound succeeds
        /// (all or nothing), so the figure a customer is shown is one they can have.
        #[test]
        fn a_refusal_names_what_could_have_been_placed(case in a_case()) {
            let Case { snapshot, reservation, tenant, request } = &case;
            let Err(AllocationError::Placement(
                PlacementError::InsufficientCapacity { requested, placeable }
                | PlacementError::QuotaExceeded { requested, placeable },
            )) = allocate(snapshot, tenant, reservation.as_ref(), request, now())
            else {
                return Ok(());
            };
            prop_assert_eq!(requested, request.count);
            prop_assert!(placeable < requested);
            if placeable > 0 && request.placement.max_per_idc.is_none() {
                let smaller = BatchRequest { count: placeable, ..request.clone() };
                let again = allocate(snapshot, tenant, reservation.as_ref(), &smaller, now());
                prop_assert!(again.is_ok(), "{placeable} of {requested}: {again:?}");
            }
        }
    }

    /// A tenant with the default quota and nothing used yet.
    fn unlimited_tenant() -> Tenant {
        Tenant {
            id: TenantId("t-1".into()),
            name: "t".into(),
            quota: Quota::default(),
            used_cpu: MilliCpu(0),
            used_instances: 0,
            created_at: now(),
        }
    }

    #[test]
    fn a_reservation_of_another_size_or_past_its_end_serves_no_batch() {
        let mut snapshot = Snapshot::default();
        snapshot.fleet.idcs.push(idc(0));
        snapshot.ledger = Ledger::for_fleet(&snapshot.fleet);
        let tenant = unlimited_tenant();
        let reservation = Reservation {
            id: ReservationId("r-1".into()),
            tenant_id: tenant.id.clone(),
            state: ReservationState::Active,
            request: ReservationRequest {
                count: 0,
                spec: SPEC,
                runtime: Runtime::Container,
                placement: PlacementSpec::default(),
                ends_at: now() + chrono::Duration::hours(1),
            },
            slots: vec![],
            created_at: now(),
            ended_at: None,
        };
        let request = BatchRequest {
            count: 1,
            spec: SPEC * 2,
            runtime: Runtime::Container,
            workload: Workload::default(),
            placement: PlacementSpec { all_or_nothing: true, ..Default::default() },
            reservation_id: Some(reservation.id.clone()),
            ttl_seconds: None,
            create_timeout_seconds: None,
            labels: Default::default(),
        };
        let refused = allocate(&snapshot, &tenant, Some(&reservation), &request, now());
        assert_eq!(
            refused.unwrap_err().to_string(),
            "reservation `r-1` holds 2 vCPU / 4Gi / 0 GPU `container` instances; the batch asks for 4 / 8Gi / 0 `container`"
        );
        let request = BatchRequest { spec: SPEC, ..request };
        let late = now() + chrono::Duration::hours(2);
        let refused = allocate(&snapshot, &tenant, Some(&reservation), &request, late);
        assert_eq!(refused, Err(AllocationError::ReservationEnded(reservation.id.clone())));
        assert_eq!(refused.unwrap_err().to_string(), "reservation `r-1` is no longer active");
        let served = allocate(&snapshot, &tenant, Some(&reservation), &request, now()).unwrap();
        assert_eq!((served.from_reservation.placed(), served.from_pool.placed()), (0, 1));
    }

    #[test]
    fn carriers_mixed_in_one_idc_take_its_capacity_once_and_a_reservation_keeps_one_per_idc() {
        let mut snapshot = Snapshot::default();
        for n in 0..2 {
            let mut dual = idc(n);
            dual.carriers = vec![Carrier::Telecom, Carrier::Unicom];
            snapshot.fleet.idcs.push(dual);
        }
        snapshot.ledger = Ledger::for_fleet(&snapshot.fleet);
        let tenant = unlimited_tenant();
        let placement = PlacementSpec {
            carriers: vec![Carrier::Telecom, Carrier::Unicom],
            all_or_nothing: true,
            ..Default::default()
        };
        let request = BatchRequest {
            count: 20,
            spec: SPEC,
            runtime: Runtime::Container,
            workload: Workload::default(),
            placement: placement.clone(),
            reservation_id: None,
            ttl_seconds: None,
            create_timeout_seconds: None,
            labels: Default::default(),
        };
        let allocation = allocate(&snapshot, &tenant, None, &request, now()).unwrap();
        assert_eq!(allocation.from_pool.placements.len(), 4, "{allocation:?}");
        let shares: Vec<(&str, u64)> =
            allocation.shares().into_iter().map(|(id, s)| (id.0.as_str(), s.fresh)).collect();
        assert_eq!(shares, [("idc-00", 10), ("idc-01", 10)]);
        let seen: Vec<(String, Carrier, u64)> = allocation
            .placed_areas(&snapshot.fleet)
            .into_iter()
            .map(|a| (a.city, a.carrier, a.count))
            .collect();
        assert_eq!(
            seen,
            [
                ("foshan".to_string(), Carrier::Telecom, 5),
                ("foshan".to_string(), Carrier::Unicom, 5),
                ("shenzhen".to_string(), Carrier::Telecom, 5),
                ("shenzhen".to_string(), Carrier::Unicom, 5),
            ]
        );
        let instances = allocation
            .instances(&BatchId("b-1".into()), &tenant.id, &request, &snapshot.fleet, now(), || {
                InstanceId("i".into())
            })
            .unwrap();
        let telecom = instances.iter().filter(|i| i.carrier == Carrier::Telecom).count();
        assert_eq!((telecom, instances.len()), (10, 20));

        // A reservation holds one slot, one carrier, per IDC: the carriers are balanced over IDCs.
        let reservation = ReservationRequest {
            count: 20,
            spec: SPEC,
            runtime: Runtime::Container,
            placement,
            ends_at: now() + chrono::Duration::hours(1),
        };
        let held = place_reservation(&snapshot, &reservation).unwrap();
        let held: Vec<(&str, Carrier, u64)> =
            held.placements.iter().map(|p| (p.idc.0.as_str(), p.carrier, p.count)).collect();
        assert_eq!(held, [("idc-00", Carrier::Telecom, 10), ("idc-01", Carrier::Unicom, 10)]);
    }
}
