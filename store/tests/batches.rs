//! Batches on both backends: placement and storage, listing, idempotency, quotas, partial
//! placement, release and expiry.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use chrono::Duration;
use eci_core::{
    BatchId, BatchRequest, BatchState, Carrier, IdcId, Instance, InstanceId, InstanceState, MilliCpu,
    PlacementError, Quota, Resources, TenantId,
};
use eci_store::batches::BatchFilter;
use eci_store::instances::{InstanceFilter, Observed};
use eci_store::testing::{
    FLEET_ROOM, all_instances, assert_ledger_consistent, batch_request, each_backend, label, operator,
    resources, seed, seed_tenant, small, t0, total_allocated,
};
use eci_store::work::WorkSink;
use eci_store::{Error, Store, testing};

fn is_not_found(r: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::NotFound { .. }))
}

async fn live_count(store: &Store, tenant: &TenantId) -> u64 {
    all_instances(store, tenant, &InstanceFilter::default())
        .await
        .iter()
        .filter(|i| !i.state.is_ended())
        .count() as u64
}

#[tokio::test]
async fn a_batch_is_placed_stored_pending_and_its_capacity_allocated() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let mut request = batch_request(10);
        request.labels = BTreeMap::from([("app".to_string(), "web".to_string())]);

        let created = store.create_batch(tenant, &request, None, t0()).await.unwrap();
        assert!(!created.replayed, "[{b}]");
        let batch = created.batch;
        assert_eq!(batch.count, 10, "[{b}]");
        assert_eq!(batch.state, BatchState::Active, "[{b}]");
        assert_eq!(batch.counts, BTreeMap::from([(InstanceState::Pending, 10)]), "[{b}]");
        assert_eq!(batch.placement.iter().map(|p| p.count).sum::<u64>(), 10, "[{b}]");
        assert_eq!(batch.request, request, "[{b}]");
        assert_eq!(batch.created_at, t0(), "[{b}]");

        assert_eq!(total_allocated(&store).await, small() * 10, "[{b}] allocated grows by count * spec");
        let tenant_now = store.get_tenant(tenant).await.unwrap();
        assert_eq!((tenant_now.used_instances, tenant_now.used_cpu), (10, MilliCpu(10_000)), "[{b}]");
        assert_ledger_consistent(&store).await;

        assert_eq!(store.get_batch(tenant, &batch.id).await.unwrap(), batch, "[{b}] stored as returned");

        let instances = all_instances(
            &store,
            tenant,
            &InstanceFilter { batch_id: Some(batch.id.clone()), ..Default::default() },
        )
        .await;
        assert_eq!(instances.len(), 10, "[{b}]");
        for i in &instances {
            assert_eq!(i.state, InstanceState::Pending, "[{b}]");
            assert_eq!(i.batch_id, batch.id, "[{b}]");
            assert_eq!(&i.tenant_id, tenant, "[{b}]");
            assert_eq!(i.spec, small(), "[{b}]");
            assert_eq!(i.reservation_id, None, "[{b}]");
            assert_eq!(i.ended_at, None, "[{b}]");
            let idc = seeded.fleet.idcs.iter().find(|d| d.id == i.idc).expect("placed in a known IDC");
            assert_eq!(i.area, idc.area, "[{b}]");
            assert!(idc.carriers.contains(&i.carrier), "[{b}]");
            assert_ne!(i.idc.0, "zj-nb-1", "[{b}] nothing new lands in a draining IDC");
        }
        assert_eq!(&store.get_instance(tenant, &instances[3].id).await.unwrap(), &instances[3], "[{b}]");
    })
    .await;
}

#[tokio::test]
async fn another_tenant_cannot_see_or_touch_a_batch() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let owner = seeded.tenant_id();
        let other = seed_tenant(&store, "other", Quota::default()).await.id;
        let batch = store.create_batch(owner, &batch_request(3), None, t0()).await.unwrap().batch;
        let instance = all_instances(&store, owner, &InstanceFilter::default()).await.remove(0);

        assert!(is_not_found(&store.get_batch(&other, &batch.id).await), "[{b}]");
        assert!(is_not_found(&store.get_instance(&other, &instance.id).await), "[{b}]");
        assert!(
            store.list_batches(&other, &BatchFilter::default(), None, 10).await.unwrap().items.is_empty()
        );
        assert!(all_instances(&store, &other, &InstanceFilter::default()).await.is_empty(), "[{b}]");
        assert!(
            is_not_found(
                &store.release_batch(&other, &batch.id, BatchState::Released, &operator(), t0()).await
            ),
            "[{b}]"
        );
        assert!(
            is_not_found(&store.release_instance(&other, &instance.id, &operator(), t0()).await),
            "[{b}]"
        );

        assert_eq!(store.get_batch(owner, &batch.id).await.unwrap().state, BatchState::Active, "[{b}]");
        assert_eq!(live_count(&store, owner).await, 3, "[{b}] nothing was released");
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}]");
        assert!(is_not_found(&store.get_batch(owner, &BatchId("b-missing".into())).await), "[{b}]");
        assert!(is_not_found(&store.get_instance(owner, &InstanceId("i-missing".into())).await), "[{b}]");
    })
    .await;
}

#[tokio::test]
async fn batches_are_listed_in_pages_and_filtered_by_state_and_label() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let mut ids = Vec::new();
        for n in 0..5u64 {
            let mut request = batch_request(1);
            let env = if n % 2 == 0 { "prod" } else { "dev" };
            request.labels =
                BTreeMap::from([("env".to_string(), env.to_string()), ("n".to_string(), n.to_string())]);
            ids.push(store.create_batch(tenant, &request, None, t0()).await.unwrap().batch.id);
        }
        store.release_batch(tenant, &ids[2], BatchState::Released, &operator(), t0()).await.unwrap();

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page =
                store.list_batches(tenant, &BatchFilter::default(), cursor.as_deref(), 2).await.unwrap();
            assert!(page.items.len() <= 2, "[{b}]");
            pages += 1;
            seen.extend(page.items.into_iter().map(|batch| batch.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, 3, "[{b}]");
        assert_eq!(seen, ids, "[{b}] every batch once, oldest first");

        let only = |state: Option<BatchState>, label: Option<(&str, &str)>| BatchFilter {
            state,
            label: label.map(|(k, v)| (k.to_string(), v.to_string())),
        };
        let list = |filter: BatchFilter| {
            let store = store.clone();
            let tenant = tenant.clone();
            async move {
                let page = store.list_batches(&tenant, &filter, None, 100).await.unwrap();
                assert!(page.next_cursor.is_none());
                page.items.into_iter().map(|batch| batch.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(list(only(Some(BatchState::Released), None)).await, vec![ids[2].clone()], "[{b}]");
        assert_eq!(list(only(Some(BatchState::Active), None)).await.len(), 4, "[{b}]");
        assert_eq!(
            list(only(None, Some(("env", "prod")))).await,
            vec![ids[0].clone(), ids[2].clone(), ids[4].clone()],
            "[{b}]"
        );
        assert_eq!(
            list(only(Some(BatchState::Active), Some(("env", "prod")))).await,
            vec![ids[0].clone(), ids[4].clone()],
            "[{b}]"
        );
        assert_eq!(list(only(None, Some(("n", "3")))).await, vec![ids[3].clone()], "[{b}]");
        assert!(list(only(None, Some(("env", "staging")))).await.is_empty(), "[{b}]");

        let page = store.list_batches(tenant, &BatchFilter::default(), None, 10).await.unwrap();
        let released = page.items.iter().find(|batch| batch.id == ids[2]).unwrap();
        assert_eq!(
            released.counts,
            BTreeMap::from([(InstanceState::Terminated, 1)]),
            "[{b}] counts in listings"
        );
    })
    .await;
}

#[tokio::test]
async fn instances_are_filtered_by_batch_state_area_at_any_level_and_carrier() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let mut south = batch_request(8);
        south.placement.areas = vec!["guangdong".into()];
        let south = store.create_batch(tenant, &south, None, t0()).await.unwrap().batch;
        let mut east = batch_request(4);
        east.placement.areas = vec!["zhejiang".into()];
        east.placement.carriers = vec![Carrier::Mobile];
        let east = store.create_batch(tenant, &east, None, t0()).await.unwrap().batch;

        let find = |filter: InstanceFilter| {
            let store = store.clone();
            let tenant = tenant.clone();
            async move { all_instances(&store, &tenant, &filter).await }
        };
        let by_batch = find(InstanceFilter { batch_id: Some(south.id.clone()), ..Default::default() }).await;
        assert_eq!(by_batch.len(), 8, "[{b}]");
        assert!(by_batch.iter().all(|i| i.area.province == "guangdong"), "[{b}]");

        let in_east = find(InstanceFilter { area: Some("east-china".into()), ..Default::default() }).await;
        assert_eq!(in_east.len(), 4, "[{b}] region");
        assert!(in_east.iter().all(|i| i.batch_id == east.id && i.idc.0 == "zj-hz-1"), "[{b}]");
        assert_eq!(
            find(InstanceFilter { area: Some("guangdong".into()), ..Default::default() }).await.len(),
            8
        );
        let in_shenzhen = by_batch.iter().filter(|i| i.area.city == "shenzhen").count();
        assert_eq!(
            find(InstanceFilter { area: Some("shenzhen".into()), ..Default::default() }).await.len(),
            in_shenzhen,
            "[{b}] city"
        );
        assert_eq!(
            find(InstanceFilter { area: Some("hangzhou".into()), ..Default::default() }).await.len(),
            4
        );
        assert!(find(InstanceFilter { area: Some("ningbo".into()), ..Default::default() }).await.is_empty());

        let mobile = find(InstanceFilter { carrier: Some(Carrier::Mobile), ..Default::default() }).await;
        assert_eq!(mobile.len(), 4, "[{b}] carrier");
        assert!(find(InstanceFilter { carrier: Some(Carrier::Bgp), ..Default::default() }).await.is_empty());

        store.release_instance(tenant, &by_batch[0].id, &operator(), t0()).await.unwrap();
        let terminated =
            find(InstanceFilter { state: Some(InstanceState::Terminated), ..Default::default() }).await;
        assert_eq!(
            terminated.iter().map(|i| &i.id).collect::<Vec<_>>(),
            vec![&by_batch[0].id],
            "[{b}] state"
        );
        assert_eq!(
            find(InstanceFilter { state: Some(InstanceState::Pending), ..Default::default() }).await.len(),
            11
        );
        let combined = InstanceFilter {
            batch_id: Some(east.id.clone()),
            state: Some(InstanceState::Pending),
            area: Some("zhejiang".into()),
            carrier: Some(Carrier::Mobile),
        };
        assert_eq!(find(combined).await.len(), 4, "[{b}] all filters at once");

        // Pages of 5 cover every instance once, in creation order.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                store.list_instances(tenant, &InstanceFilter::default(), cursor.as_deref(), 5).await.unwrap();
            seen.extend(page.items.into_iter().map(|i| i.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 12, "[{b}]");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen, "[{b}] ordered by id, no repeats");
    })
    .await;
}

#[tokio::test]
async fn repeating_a_request_with_its_idempotency_key_replays_the_first_batch() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let first = store.create_batch(tenant, &batch_request(3), Some("key-1"), t0()).await.unwrap();
        assert!(!first.replayed, "[{b}]");

        let again =
            store.create_batch(tenant, &batch_request(3), Some("key-1"), t0() + Duration::minutes(5)).await;
        let again = again.unwrap();
        assert!(again.replayed, "[{b}]");
        assert_eq!(again.batch, first.batch, "[{b}] the same batch comes back");
        assert_eq!(live_count(&store, tenant).await, 3, "[{b}] no new instances");
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}] no new capacity");

        let different = store.create_batch(tenant, &batch_request(4), Some("key-1"), t0()).await;
        assert!(
            matches!(different, Err(Error::IdempotencyMismatch(ref k)) if k == "key-1"),
            "[{b}] {different:?}"
        );
        assert_eq!(live_count(&store, tenant).await, 3, "[{b}]");

        // Keys belong to one tenant; another tenant may use the same one.
        let other = seed_tenant(&store, "other", Quota::default()).await.id;
        let theirs = store.create_batch(&other, &batch_request(4), Some("key-1"), t0()).await.unwrap();
        assert!(!theirs.replayed, "[{b}]");
        assert_ne!(theirs.batch.id, first.batch.id, "[{b}]");

        // A released batch still answers its key.
        store.release_batch(tenant, &first.batch.id, BatchState::Released, &operator(), t0()).await.unwrap();
        let replay = store.create_batch(tenant, &batch_request(3), Some("key-1"), t0()).await.unwrap();
        assert!(replay.replayed, "[{b}]");
        assert_eq!(replay.batch.state, BatchState::Released, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn keys_stored_before_fingerprints_had_a_version_still_replay_their_batch() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let first = store.create_batch(tenant, &batch_request(3), Some("old-key"), t0()).await.unwrap();
        testing::write_unversioned_fingerprint(&store, &first.batch.id).await;
        assert_eq!(testing::upgrade_fingerprints(&store).await, 1, "[{b}]");
        assert_eq!(testing::upgrade_fingerprints(&store).await, 0, "[{b}] once is enough");

        let again = store.create_batch(tenant, &batch_request(3), Some("old-key"), t0()).await.unwrap();
        assert!(again.replayed, "[{b}]");
        assert_eq!(again.batch.id, first.batch.id, "[{b}]");
        let different = store.create_batch(tenant, &batch_request(4), Some("old-key"), t0()).await;
        assert!(matches!(different, Err(Error::IdempotencyMismatch(_))), "[{b}] {different:?}");
        assert_eq!(live_count(&store, tenant).await, 3, "[{b}]");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_idempotency_key_make_one_batch() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let store = store.clone();
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                store.create_batch(&tenant, &batch_request(2), Some("same"), t0()).await
            }));
        }
        let mut made = 0;
        let mut ids = Vec::new();
        for task in tasks {
            let created = task.await.unwrap().unwrap_or_else(|e| panic!("[{b}] {e:?}"));
            made += usize::from(!created.replayed);
            ids.push(created.batch.id);
        }
        assert_eq!(made, 1, "[{b}] exactly one request made the batch");
        ids.dedup();
        assert_eq!(ids.len(), 1, "[{b}] every request got the same batch");
        assert_eq!(live_count(&store, &tenant).await, 2, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn the_instance_quota_is_enforced_and_usage_goes_down_on_release() {
    each_backend(|store| async move {
        let b = label(&store);
        seed(&store).await;
        let tenant =
            seed_tenant(&store, "small", Quota { max_instances: Some(5), ..Default::default() }).await.id;

        let over = store.create_batch(&tenant, &batch_request(6), None, t0()).await;
        assert!(
            matches!(
                over,
                Err(Error::Placement(PlacementError::QuotaExceeded { requested: 6, placeable: 5 }))
            ),
            "[{b}] {over:?}"
        );
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}] a refused batch takes nothing");

        let batch = store.create_batch(&tenant, &batch_request(5), None, t0()).await.unwrap().batch;
        assert_eq!(store.get_tenant(&tenant).await.unwrap().used_instances, 5, "[{b}]");
        let full = store.create_batch(&tenant, &batch_request(1), None, t0()).await;
        assert!(
            matches!(
                full,
                Err(Error::Placement(PlacementError::QuotaExceeded { requested: 1, placeable: 0 }))
            ),
            "[{b}] {full:?}"
        );

        let one = all_instances(&store, &tenant, &InstanceFilter::default()).await.remove(0);
        store.release_instance(&tenant, &one.id, &operator(), t0()).await.unwrap();
        let t = store.get_tenant(&tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (4, MilliCpu(4000)), "[{b}]");
        store.create_batch(&tenant, &batch_request(1), None, t0()).await.unwrap();

        store.release_batch(&tenant, &batch.id, BatchState::Released, &operator(), t0()).await.unwrap();
        let t = store.get_tenant(&tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (1, MilliCpu(1000)), "[{b}]");
        store.create_batch(&tenant, &batch_request(4), None, t0()).await.unwrap();
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn the_cpu_quota_is_enforced_and_a_partial_batch_stops_at_it() {
    each_backend(|store| async move {
        let b = label(&store);
        seed(&store).await;
        let quota = Quota { max_cpu: Some(MilliCpu(5000)), ..Default::default() };
        let tenant = seed_tenant(&store, "cpu-bound", quota).await.id;
        let mut request = batch_request(3);
        request.spec = resources(2, 8);

        let over = store.create_batch(&tenant, &request, None, t0()).await;
        assert!(
            matches!(
                over,
                Err(Error::Placement(PlacementError::QuotaExceeded { requested: 3, placeable: 2 }))
            ),
            "[{b}] {over:?}"
        );
        request.placement.all_or_nothing = false;
        let partial = store.create_batch(&tenant, &request, None, t0()).await.unwrap().batch;
        assert_eq!(partial.count, 2, "[{b}] places what the quota allows");
        let t = store.get_tenant(&tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (2, MilliCpu(4000)), "[{b}]");

        let mut one = batch_request(1);
        one.spec = resources(2, 8);
        assert!(matches!(
            store.create_batch(&tenant, &one, None, t0()).await,
            Err(Error::Placement(PlacementError::QuotaExceeded { .. }))
        ));
        store.create_batch(&tenant, &batch_request(1), None, t0()).await.expect("1 vCPU still fits");

        store.release_batch(&tenant, &partial.id, BatchState::Released, &operator(), t0()).await.unwrap();
        let t = store.get_tenant(&tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (1, MilliCpu(1000)), "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn a_partial_batch_places_what_fits_and_a_full_one_reports_what_would() {
    each_backend(|store| async move {
        let b = label(&store);
        seed(&store).await;
        let tenant = seed_tenant(&store, "big", Quota::default()).await.id;

        let too_many = store.create_batch(&tenant, &batch_request(FLEET_ROOM + 4), None, t0()).await;
        assert!(
            matches!(too_many, Err(Error::Placement(PlacementError::InsufficientCapacity { requested, placeable }))
                if requested == FLEET_ROOM + 4 && placeable == FLEET_ROOM),
            "[{b}] {too_many:?}"
        );
        let mut east = batch_request(40);
        east.placement.areas = vec!["zhejiang".into()];
        let east_result = store.create_batch(&tenant, &east, None, t0()).await;
        assert!(
            matches!(
                east_result,
                Err(Error::Placement(PlacementError::InsufficientCapacity { requested: 40, placeable: 32 }))
            ),
            "[{b}] only the two active Zhejiang IDCs count: {east_result:?}"
        );
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");

        let mut partial = batch_request(FLEET_ROOM + 4);
        partial.placement.all_or_nothing = false;
        let batch = store.create_batch(&tenant, &partial, None, t0()).await.unwrap().batch;
        assert_eq!(batch.count, FLEET_ROOM, "[{b}]");
        assert_eq!(batch.request.count, FLEET_ROOM + 4, "[{b}]");
        assert_eq!(batch.counts, BTreeMap::from([(InstanceState::Pending, FLEET_ROOM)]), "[{b}]");
        assert_eq!(live_count(&store, &tenant).await, FLEET_ROOM, "[{b}]");

        let none_left = store.create_batch(&tenant, &batch_request(1), None, t0()).await;
        assert!(
            matches!(
                none_left,
                Err(Error::Placement(PlacementError::InsufficientCapacity { requested: 1, placeable: 0 }))
            ),
            "[{b}] {none_left:?}"
        );
        let mut partial_one = batch_request(1);
        partial_one.placement.all_or_nothing = false;
        assert!(store.create_batch(&tenant, &partial_one, None, t0()).await.is_err(), "[{b}] zero is not a batch");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn releasing_a_batch_ends_its_instances_and_frees_its_capacity_once() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let batch = store.create_batch(tenant, &batch_request(7), None, t0()).await.unwrap().batch;
        let later = t0() + Duration::seconds(30);

        assert!(matches!(
            store.release_batch(tenant, &batch.id, BatchState::Active, &operator(), later).await,
            Err(Error::IllegalTransition(_))
        ));
        let released =
            store.release_batch(tenant, &batch.id, BatchState::Released, &operator(), later).await.unwrap();
        assert_eq!(released.state, BatchState::Released, "[{b}]");
        assert_eq!(released.ended_at, Some(later), "[{b}]");
        assert_eq!(released.counts, BTreeMap::from([(InstanceState::Terminated, 7)]), "[{b}]");
        for i in all_instances(&store, tenant, &InstanceFilter::default()).await {
            assert_eq!(i.state, InstanceState::Terminated, "[{b}]");
            assert_eq!(i.ended_at, Some(later), "[{b}]");
        }
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}] the ledger is back to zero");
        let t = store.get_tenant(tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (0, MilliCpu(0)), "[{b}]");

        let again = store
            .release_batch(tenant, &batch.id, BatchState::Released, &operator(), later + Duration::hours(1))
            .await;
        assert_eq!(again.unwrap(), released, "[{b}] releasing again changes nothing");
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        let expired =
            store.release_batch(tenant, &batch.id, BatchState::Expired, &operator(), later).await.unwrap();
        assert_eq!(expired.state, BatchState::Released, "[{b}] an ended batch keeps its end");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn releasing_one_instance_frees_its_capacity_and_the_batch_release_does_not_free_it_twice() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let batch = store.create_batch(tenant, &batch_request(4), None, t0()).await.unwrap().batch;
        let instances = all_instances(&store, tenant, &InstanceFilter::default()).await;
        let later = t0() + Duration::seconds(5);

        let ended = store.release_instance(tenant, &instances[1].id, &operator(), later).await.unwrap();
        assert_eq!(ended.state, InstanceState::Terminated, "[{b}]");
        assert_eq!(ended.ended_at, Some(later), "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}]");
        let line = store.get_idc(&instances[1].idc).await.unwrap().1;
        let left_there =
            instances[2..].iter().chain(&instances[..1]).filter(|i| i.idc == instances[1].idc).count();
        assert_eq!(line.allocated, small() * left_there as u64, "[{b}] freed in the instance's own IDC");

        let again = store
            .release_instance(tenant, &instances[1].id, &operator(), later + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(again, ended, "[{b}] ending an ended instance changes nothing");
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}]");
        assert_ledger_consistent(&store).await;

        let released =
            store.release_batch(tenant, &batch.id, BatchState::Released, &operator(), later).await.unwrap();
        assert_eq!(released.counts, BTreeMap::from([(InstanceState::Terminated, 4)]), "[{b}]");
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        let t = store.get_tenant(tenant).await.unwrap();
        assert_eq!((t.used_instances, t.used_cpu), (0, MilliCpu(0)), "[{b}] usage never goes below zero");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

/// Records what the store reports, as the instance manager's work queue would hear it.
#[derive(Debug, Default)]
struct Heard {
    new: Mutex<Vec<(Instance, Arc<BatchRequest>)>>,
    raised: Mutex<BTreeSet<IdcId>>,
}

impl WorkSink for Heard {
    fn new_instances(&self, instances: Vec<Instance>, request: Arc<BatchRequest>) {
        let mut raised = self.raised.lock().unwrap();
        let mut new = self.new.lock().unwrap();
        for instance in instances {
            raised.insert(instance.idc.clone());
            new.push((instance, request.clone()));
        }
    }

    fn stopping(&self, idcs: &BTreeSet<IdcId>) {
        self.raised.lock().unwrap().extend(idcs.iter().cloned());
    }
}

#[tokio::test]
async fn a_started_instance_stops_holding_its_capacity_until_its_object_is_gone() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        // What the instance manager hears: the IDCs a write gives work, and only those.
        let heard = Arc::new(Heard::default());
        let store = store.reporting_work_to(heard.clone());
        let raised = || std::mem::take(&mut *heard.raised.lock().unwrap());
        let batch = store.create_batch(tenant, &batch_request(3), None, t0()).await.unwrap().batch;
        let instances = all_instances(&store, tenant, &InstanceFilter::default()).await;
        let placed: BTreeSet<_> = instances.iter().map(|i| i.idc.clone()).collect();
        assert_eq!(raised(), placed, "[{b}]");
        assert!(raised().is_empty(), "[{b}] a report is heard once");
        // The new instances come with the report, exactly as stored, each once.
        let mut handed = std::mem::take(&mut *heard.new.lock().unwrap());
        handed.sort_by(|x, y| x.0.id.cmp(&y.0.id));
        let stored: Vec<_> = instances.iter().map(|i| (i.id.clone(), i.idc.clone(), i.created_at)).collect();
        let as_handed: Vec<_> =
            handed.iter().map(|(i, _)| (i.id.clone(), i.idc.clone(), i.created_at)).collect();
        assert_eq!(as_handed, stored, "[{b}]");
        assert!(handed.iter().all(|(_, r)| **r == batch_request(3)), "[{b}]");
        let at = |s: i64| t0() + Duration::seconds(s);
        let running = Observed::Running { ip: Some("10.0.0.1".into()), ssh: None };
        for i in &instances[..2] {
            store.record_observation(&i.id, &running, at(1)).await.unwrap();
        }

        // A started instance stops: capacity and quota stay taken while its Pod shuts down.
        let stopping = store.release_instance(tenant, &instances[0].id, &operator(), at(10)).await.unwrap();
        assert_eq!((stopping.state, stopping.ended_at), (InstanceState::Stopping, None), "[{b}]");
        assert_eq!(raised(), BTreeSet::from([instances[0].idc.clone()]), "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * 3, "[{b}]");
        let again = store.release_instance(tenant, &instances[0].id, &operator(), at(11)).await.unwrap();
        assert_eq!(again.state, InstanceState::Stopping, "[{b}] releasing twice changes nothing");
        assert_eq!(again.updated_at, stopping.updated_at, "[{b}]");
        // Whatever the cluster says of it meanwhile changes nothing; only its object's removal does.
        assert_eq!(
            store.record_observation(&instances[0].id, &running, at(12)).await.unwrap(),
            None,
            "[{b}]"
        );
        let gone = store.record_observation(&instances[0].id, &Observed::Gone, at(15)).await.unwrap();
        assert_eq!(gone, Some(InstanceState::Terminated), "[{b}]");
        let ended = store.get_instance(tenant, &instances[0].id).await.unwrap();
        assert_eq!((ended.ended_at, ended.failure_reason), (Some(at(15)), None), "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * 2, "[{b}]");

        // Releasing the batch ends the never-started instance at once and stops the running one.
        let released =
            store.release_batch(tenant, &batch.id, BatchState::Released, &operator(), at(20)).await.unwrap();
        assert_eq!(
            released.counts,
            BTreeMap::from([(InstanceState::Stopping, 1), (InstanceState::Terminated, 2)]),
            "[{b}]"
        );
        assert_eq!(total_allocated(&store).await, small(), "[{b}]");
        let t = store.get_tenant(tenant).await.unwrap();
        assert_eq!(t.used_instances, 1, "[{b}] the stopping instance still counts against the quota");

        // A partition does not turn a stopping instance `unknown`: its release must still reach the IDC.
        store.mark_idc_disconnected(&instances[1].idc, at(21)).await.unwrap();
        let held = store.get_instance(tenant, &instances[1].id).await.unwrap();
        assert_eq!(held.state, InstanceState::Stopping, "[{b}]");
        store.record_observation(&instances[1].id, &Observed::Gone, at(30)).await.unwrap();
        assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test]
async fn batches_expire_when_their_ttl_runs_out() {
    each_backend(|store| async move {
        let b = label(&store);
        let seeded = seed(&store).await;
        let tenant = seeded.tenant_id();
        let mut short = batch_request(2);
        short.ttl_seconds = Some(60);
        let short = store.create_batch(tenant, &short, None, t0()).await.unwrap().batch;
        assert_eq!(short.expires_at, Some(t0() + Duration::seconds(60)), "[{b}]");
        let mut long = batch_request(3);
        long.ttl_seconds = Some(3600);
        let long = store.create_batch(tenant, &long, None, t0()).await.unwrap().batch;
        let forever = store.create_batch(tenant, &batch_request(1), None, t0()).await.unwrap().batch;

        assert!(store.expire_batches(t0() + Duration::seconds(59)).await.unwrap().is_empty(), "[{b}]");
        let at = t0() + Duration::seconds(60);
        assert_eq!(store.expire_batches(at).await.unwrap(), vec![short.id.clone()], "[{b}]");
        let expired = store.get_batch(tenant, &short.id).await.unwrap();
        assert_eq!((expired.state, expired.ended_at), (BatchState::Expired, Some(at)), "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * 4, "[{b}]");
        assert!(store.expire_batches(at).await.unwrap().is_empty(), "[{b}] expiring is done once");

        let much_later = t0() + Duration::days(1);
        assert_eq!(store.expire_batches(much_later).await.unwrap(), vec![long.id.clone()], "[{b}]");
        assert_eq!(store.get_batch(tenant, &forever.id).await.unwrap().state, BatchState::Active, "[{b}]");
        assert_eq!(total_allocated(&store).await, small(), "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}
