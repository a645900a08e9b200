//! Reservations on both backends: held capacity, drawing on it, giving it back, expiry.

use chrono::{DateTime, Duration, Utc};
use eci_core::{
    BatchState, PlacementError, PlacementSpec, Quota, ReservationId, ReservationRequest, ReservationState,
    Resources, Runtime, TenantId,
};
use eci_store::instances::InstanceFilter;
use eci_store::testing::{
    FLEET_ROOM, all_instances, assert_ledger_consistent, batch_request, each_backend, label, operator,
    resources, seed, seed_tenant, small, t0, total_allocated,
};
use eci_store::{Error, Store};

fn reservation_request(count: u64, ends_at: DateTime<Utc>) -> ReservationRequest {
    ReservationRequest {
        count,
        spec: small(),
        runtime: Runtime::Container,
        placement: PlacementSpec { all_or_nothing: true, ..Default::default() },
        ends_at,
    }
}

async fn total_reserved(store: &Store) -> Resources {
    store.list_idcs().await.unwrap().iter().fold(Resources::ZERO, |sum, (_, line)| sum + line.reserved)
}

async fn reserve(store: &Store, tenant: &TenantId, count: u64) -> ReservationId {
    store
        .create_reservation(tenant, &reservation_request(count, t0() + Duration::days(1)), t0())
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn a_reservation_holds_its_capacity_away_from_other_tenants() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let rival = seed_tenant(&store, "rival", Quota::default()).await.id;

        let reservation = store
            .create_reservation(owner, &reservation_request(90, t0() + Duration::days(1)), t0())
            .await
            .unwrap();
        assert_eq!(reservation.state, ReservationState::Active, "[{b}]");
        assert_eq!(reservation.slots.iter().map(|s| s.count).sum::<u64>(), 90, "[{b}]");
        assert_eq!(reservation.used(), 0, "[{b}]");
        assert_eq!(total_reserved(&store).await, small() * 90, "[{b}]");
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        assert_eq!(store.get_reservation(owner, &reservation.id).await.unwrap(), reservation, "[{b}]");
        assert!(matches!(store.get_reservation(&rival, &reservation.id).await, Err(Error::NotFound { .. })));
        assert_ledger_consistent(&store).await;

        let all = store.create_batch(&rival, &batch_request(10), None, t0()).await;
        assert!(
            matches!(
                all,
                Err(Error::Placement(PlacementError::InsufficientCapacity {
                    requested: 10,
                    placeable
                })) if placeable == FLEET_ROOM - 90
            ),
            "[{b}] {all:?}"
        );
        let mut partial = batch_request(10);
        partial.placement.all_or_nothing = false;
        let batch = store.create_batch(&rival, &partial, None, t0()).await.unwrap().batch;
        assert_eq!(batch.count, FLEET_ROOM - 90, "[{b}] only the unreserved rest");

        // Not even the owner takes reserved capacity without naming the reservation.
        let plain = store.create_batch(owner, &batch_request(1), None, t0()).await;
        assert!(matches!(plain, Err(Error::Placement(PlacementError::InsufficientCapacity { .. }))), "[{b}]");
        let more =
            store.create_reservation(&rival, &reservation_request(1, t0() + Duration::days(1)), t0()).await;
        assert!(matches!(more, Err(Error::Placement(PlacementError::InsufficientCapacity { .. }))), "[{b}]");

        let mut named = batch_request(40);
        named.reservation_id = Some(reservation.id.clone());
        let drawn = store.create_batch(owner, &named, None, t0()).await.unwrap().batch;
        assert_eq!(drawn.count, 40, "[{b}]");
        assert_eq!(store.get_reservation(owner, &reservation.id).await.unwrap().used(), 40, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn the_owners_batch_draws_from_its_reservation_first_and_the_rest_from_the_pool() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let reservation = reserve(&store, owner, 10).await;
        let mut request = batch_request(14);
        request.reservation_id = Some(reservation.clone());

        let batch = store.create_batch(owner, &request, None, t0()).await.unwrap().batch;
        assert_eq!(batch.count, 14, "[{b}]");
        let instances = all_instances(&store, owner, &InstanceFilter::default()).await;
        let from_reservation =
            instances.iter().filter(|i| i.reservation_id.as_ref() == Some(&reservation)).count();
        assert_eq!(from_reservation, 10, "[{b}] the reservation is drawn first");
        assert_eq!(
            instances.iter().filter(|i| i.reservation_id.is_none()).count(),
            4,
            "[{b}] the rest from the pool"
        );

        let held = store.get_reservation(owner, &reservation).await.unwrap();
        assert_eq!(held.used(), 10, "[{b}]");
        for i in instances.iter().filter(|i| i.reservation_id.is_some()) {
            assert!(
                held.slots.iter().any(|s| s.idc == i.idc),
                "[{b}] drawn instances sit in the reserved IDCs"
            );
        }
        assert_eq!(total_reserved(&store).await, Resources::ZERO, "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * 14, "[{b}]");
        let t = store.get_tenant(owner).await.unwrap();
        assert_eq!(t.used_instances, 14, "[{b}] drawn instances count against the quota too");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_that_does_not_match_the_reservation_is_refused() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let rival = seed_tenant(&store, "rival", Quota::default()).await.id;
        let reservation = reserve(&store, owner, 4).await;

        let mut bigger = batch_request(2);
        bigger.spec = resources(2, 8);
        bigger.reservation_id = Some(reservation.clone());
        let r = store.create_batch(owner, &bigger, None, t0()).await;
        assert!(matches!(r, Err(Error::ReservationMismatch(_))), "[{b}] spec: {r:?}");

        let mut rich = batch_request(2);
        rich.runtime = Runtime::Rich;
        rich.reservation_id = Some(reservation.clone());
        let r = store.create_batch(owner, &rich, None, t0()).await;
        assert!(matches!(r, Err(Error::ReservationMismatch(_))), "[{b}] runtime: {r:?}");

        let mut theirs = batch_request(2);
        theirs.reservation_id = Some(reservation.clone());
        let r = store.create_batch(&rival, &theirs, None, t0()).await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "[{b}] someone else's reservation: {r:?}");

        let r = store.create_batch(owner, &theirs, None, t0() + Duration::days(1)).await;
        assert!(matches!(r, Err(Error::ReservationMismatch(_))), "[{b}] past its end: {r:?}");

        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        assert_eq!(store.get_reservation(owner, &reservation).await.unwrap().used(), 0, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_drawing_on_a_reservation_respects_all_or_nothing_and_the_quota() {
    each_backend(|store| async move {
        let b = label(&store);
        seed(&store).await;
        let owner =
            seed_tenant(&store, "owner", Quota { max_instances: Some(12), ..Default::default() }).await.id;
        let filler = seed_tenant(&store, "filler", Quota::default()).await.id;
        let reservation = reserve(&store, &owner, 10).await;
        let mut fill = batch_request(FLEET_ROOM - 10);
        fill.placement.all_or_nothing = true;
        store.create_batch(&filler, &fill, None, t0()).await.unwrap();

        let mut request = batch_request(11);
        request.reservation_id = Some(reservation.clone());
        let r = store.create_batch(&owner, &request, None, t0()).await;
        assert!(
            matches!(
                r,
                Err(Error::Placement(PlacementError::InsufficientCapacity { requested: 11, placeable: 10 }))
            ),
            "[{b}] the pool is full: {r:?}"
        );
        assert_eq!(store.get_reservation(&owner, &reservation).await.unwrap().used(), 0, "[{b}]");

        request.placement.all_or_nothing = false;
        let batch = store.create_batch(&owner, &request, None, t0()).await.unwrap().batch;
        assert_eq!(batch.count, 10, "[{b}] the reservation alone");

        let mut again = batch_request(3);
        again.reservation_id = Some(reservation.clone());
        store.release_batch(&owner, &batch.id, BatchState::Released, &operator(), t0()).await.unwrap();
        assert_eq!(
            total_reserved(&store).await,
            small() * 10,
            "[{b}] the capacity went back to the reservation"
        );
        store.set_quota(&owner, Quota { max_instances: Some(2), ..Default::default() }).await.unwrap();
        let r = store.create_batch(&owner, &again, None, t0()).await;
        assert!(
            matches!(r, Err(Error::Placement(PlacementError::QuotaExceeded { requested: 3, placeable: 2 }))),
            "[{b}] {r:?}"
        );
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn ending_a_drawn_instance_gives_its_capacity_back_to_the_active_reservation() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let reservation = reserve(&store, owner, 5).await;
        let mut request = batch_request(5);
        request.reservation_id = Some(reservation.clone());
        store.create_batch(owner, &request, None, t0()).await.unwrap();
        let drawn = all_instances(&store, owner, &InstanceFilter::default()).await;

        store.release_instance(owner, &drawn[0].id, &operator(), t0()).await.unwrap();
        let held = store.get_reservation(owner, &reservation).await.unwrap();
        assert_eq!(held.used(), 4, "[{b}]");
        assert_eq!(total_reserved(&store).await, small(), "[{b}] back to the reservation, not the pool");
        assert_eq!(total_allocated(&store).await, small() * 4, "[{b}]");
        let slot = held.slots.iter().find(|s| s.idc == drawn[0].idc).unwrap();
        assert_eq!(slot.count - slot.used, 1, "[{b}] in the IDC the instance ran in");
        assert_ledger_consistent(&store).await;

        let mut one = batch_request(1);
        one.reservation_id = Some(reservation.clone());
        let batch = store.create_batch(owner, &one, None, t0()).await.unwrap().batch;
        let refill =
            all_instances(&store, owner, &InstanceFilter { batch_id: Some(batch.id), ..Default::default() })
                .await;
        assert_eq!(refill[0].reservation_id, Some(reservation.clone()), "[{b}] the owner draws on it again");
        assert_eq!(refill[0].idc, drawn[0].idc, "[{b}]");
        assert_eq!(total_reserved(&store).await, Resources::ZERO, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn releasing_a_reservation_frees_what_is_unused_and_the_rest_when_its_instances_end() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let reservation = reserve(&store, owner, 10).await;
        let mut request = batch_request(6);
        request.reservation_id = Some(reservation.clone());
        let batch = store.create_batch(owner, &request, None, t0()).await.unwrap().batch;
        assert_eq!(total_reserved(&store).await, small() * 4, "[{b}]");

        let later = t0() + Duration::minutes(10);
        assert!(matches!(
            store.release_reservation(owner, &reservation, ReservationState::Active, later).await,
            Err(Error::IllegalTransition(_))
        ));
        let released =
            store.release_reservation(owner, &reservation, ReservationState::Released, later).await.unwrap();
        assert_eq!(released.state, ReservationState::Released, "[{b}]");
        assert_eq!(released.ended_at, Some(later), "[{b}]");
        assert_eq!(total_reserved(&store).await, Resources::ZERO, "[{b}] the unused part is free at once");
        assert_eq!(total_allocated(&store).await, small() * 6, "[{b}] drawn instances keep running");
        assert_ledger_consistent(&store).await;

        let again =
            store.release_reservation(owner, &reservation, ReservationState::Released, later).await.unwrap();
        assert_eq!(again, released, "[{b}] releasing again changes nothing");
        assert_eq!(total_reserved(&store).await, Resources::ZERO, "[{b}]");

        let one = all_instances(&store, owner, &InstanceFilter::default()).await.remove(0);
        store.release_instance(owner, &one.id, &operator(), later).await.unwrap();
        assert_eq!(
            total_reserved(&store).await,
            Resources::ZERO,
            "[{b}] an ended reservation takes nothing back"
        );
        assert_eq!(total_allocated(&store).await, small() * 5, "[{b}]");
        store.release_batch(owner, &batch.id, BatchState::Released, &operator(), later).await.unwrap();
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        assert_ledger_consistent(&store).await;

        let mut after = batch_request(1);
        after.reservation_id = Some(reservation.clone());
        let r = store.create_batch(owner, &after, None, later).await;
        assert!(matches!(r, Err(Error::ReservationMismatch(_))), "[{b}] {r:?}");
        let rival = seed_tenant(&store, "rival", Quota::default()).await.id;
        let all = store.create_batch(&rival, &batch_request(FLEET_ROOM), None, later).await;
        assert!(all.is_ok(), "[{b}] the whole fleet is free again: {all:?}");
    })
    .await;
}

#[tokio::test]
async fn reservations_expire_at_their_end_time() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let ends_at = t0() + Duration::hours(1);
        let soon = store.create_reservation(owner, &reservation_request(8, ends_at), t0()).await.unwrap().id;
        let late = store
            .create_reservation(owner, &reservation_request(2, ends_at + Duration::hours(1)), t0())
            .await
            .unwrap()
            .id;
        let mut request = batch_request(3);
        request.reservation_id = Some(soon.clone());
        store.create_batch(owner, &request, None, t0()).await.unwrap();

        assert!(
            store.expire_reservations(ends_at - Duration::milliseconds(1)).await.unwrap().is_empty(),
            "[{b}]"
        );
        assert_eq!(store.expire_reservations(ends_at).await.unwrap(), vec![soon.clone()], "[{b}]");
        let expired = store.get_reservation(owner, &soon).await.unwrap();
        assert_eq!((expired.state, expired.ended_at), (ReservationState::Expired, Some(ends_at)), "[{b}]");
        assert_eq!(
            total_reserved(&store).await,
            small() * 2,
            "[{b}] only the later reservation holds capacity"
        );
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}]");
        assert!(store.expire_reservations(ends_at).await.unwrap().is_empty(), "[{b}] expiring is done once");
        assert_ledger_consistent(&store).await;

        let r = store.create_batch(owner, &request, None, ends_at).await;
        assert!(matches!(r, Err(Error::ReservationMismatch(_))), "[{b}] {r:?}");

        assert_eq!(store.expire_reservations(t0() + Duration::days(1)).await.unwrap(), vec![late], "[{b}]");
        assert_eq!(total_reserved(&store).await, Resources::ZERO, "[{b}]");
        let page = store.list_reservations(owner, None, 1).await.unwrap();
        assert_eq!(page.items.len(), 1, "[{b}]");
        let rest = store.list_reservations(owner, page.next_cursor.as_deref(), 1).await.unwrap();
        assert_eq!(rest.items.len(), 1, "[{b}]");
        assert!(rest.next_cursor.is_none(), "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}
