//! No over-commit under concurrency, on both backends: many tasks on a multi-thread runtime race
//! for a fleet far too small for all of them, and the ledger must still add up exactly.

use eci_core::{
    BatchId, BatchState, Fleet, InstanceId, PlacementError, Quota, ReservationId, ReservationRequest,
    ReservationState, Resources, Strategy, TenantId,
};
use eci_store::batches::Created;
use eci_store::instances::InstanceFilter;
use eci_store::testing::{
    all_instances, assert_ledger_consistent, batch_request, each_backend_with, idc, label,
    lift_deletion_budgets, operator, resources, seed_fleet, seed_tenant, small, t0, total_allocated,
};
use eci_store::{Error, Store};
use tokio::task::JoinSet;

/// Two IDCs with room for 12 and 8 small instances: `ROOM` in all.
const ROOM: u64 = 20;

/// Pool size per store: fewer connections than tasks, so tasks also queue for connections.
const CONNECTIONS: u32 = 8;

fn tight_fleet() -> Fleet {
    Fleet {
        idcs: vec![
            idc(
                "hz-1",
                ("east-china", "zhejiang", "hangzhou"),
                &[eci_core::Carrier::Telecom],
                resources(12, 48),
            ),
            idc(
                "nb-1",
                ("east-china", "zhejiang", "ningbo"),
                &[eci_core::Carrier::Telecom],
                resources(8, 32),
            ),
        ],
    }
}

async fn tenants(store: &Store, n: usize, quota: Quota) -> Vec<TenantId> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(seed_tenant(store, &format!("tenant-{i}"), quota).await.id);
    }
    out
}

/// A batch request that varies with `k`: 1..=5 instances, spread or pack, all-or-nothing or not.
fn varied_request(k: usize) -> eci_core::BatchRequest {
    let mut request = batch_request(1 + (k % 5) as u64);
    request.placement.all_or_nothing = !matches!(k % 3, 0);
    request.placement.strategy = [Strategy::Spread, Strategy::Pack][k % 2];
    request
}

/// Counts what a finished create placed. A refusal for lack of room or quota is a fine outcome, and
/// so is `Contention` (the store re-planned after every lost race and asks the caller to retry; it
/// placed nothing). Anything else is a bug.
fn placed(backend: &str, result: Result<Created, Error>) -> u64 {
    match result {
        Ok(created) => created.batch.count,
        Err(Error::Placement(
            PlacementError::InsufficientCapacity { .. } | PlacementError::QuotaExceeded { .. },
        )) => 0,
        Err(Error::Contention) => {
            eprintln!("[{backend}] a create gave up after repeated lost races");
            0
        }
        Err(e) => panic!("[{backend}] a concurrent create failed with {e:?}"),
    }
}

async fn live_instances(store: &Store, tenants: &[TenantId]) -> u64 {
    let mut n = 0;
    for t in tenants {
        n += all_instances(store, t, &InstanceFilter::default())
            .await
            .iter()
            .filter(|i| !i.state.is_ended())
            .count();
    }
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_from_many_tenants_never_over_commit_the_fleet() {
    each_backend_with(CONNECTIONS, |store| async move {
        let b = label(&store);
        seed_fleet(&store, &tight_fleet()).await;
        let tenants = tenants(&store, 4, Quota::default()).await;
        let mut tasks = JoinSet::new();
        let mut asked = 0;
        for k in 0..24 {
            let request = varied_request(k);
            asked += request.count;
            let (store, tenant) = (store.clone(), tenants[k % tenants.len()].clone());
            tasks.spawn(async move { store.create_batch(&tenant, &request, None, t0()).await });
        }
        assert!(asked > 3 * ROOM, "the tasks together ask for far more than fits");
        let mut total = 0;
        while let Some(result) = tasks.join_next().await {
            total += placed(b, result.unwrap());
        }
        assert!(total <= ROOM, "[{b}] placed {total} instances in room for {ROOM}");
        assert!(total > 0, "[{b}] somebody got capacity");
        assert_eq!(live_instances(&store, &tenants).await, total, "[{b}] every placed instance is stored");
        assert_eq!(total_allocated(&store).await, small() * total, "[{b}] the ledger holds exactly them");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_releases_and_creates_never_over_commit_or_free_twice() {
    each_backend_with(CONNECTIONS, |store| async move {
        let b = label(&store);
        seed_fleet(&store, &tight_fleet()).await;
        let tenants = tenants(&store, 4, Quota::default()).await;
        // Fill the fleet with five batches of four.
        let mut batches: Vec<(TenantId, BatchId, Vec<InstanceId>)> = Vec::new();
        for k in 0..5 {
            let tenant = tenants[k % tenants.len()].clone();
            let batch = store.create_batch(&tenant, &batch_request(4), None, t0()).await.unwrap().batch;
            let filter = InstanceFilter { batch_id: Some(batch.id.clone()), ..Default::default() };
            let ids = all_instances(&store, &tenant, &filter).await.into_iter().map(|i| i.id).collect();
            batches.push((tenant, batch.id, ids));
        }
        assert_eq!(total_allocated(&store).await, small() * ROOM, "[{b}] full");

        let mut creates = JoinSet::new();
        let mut releases = JoinSet::new();
        for (n, (tenant, batch, instances)) in batches.iter().enumerate() {
            // Three of the five batches are released whole while one of their instances is released
            // on its own at the same moment; the other two lose two instances each.
            if n < 3 {
                let (store, tenant, batch) = (store.clone(), tenant.clone(), batch.clone());
                releases.spawn(async move {
                    store
                        .release_batch(&tenant, &batch, BatchState::Released, &operator(), t0())
                        .await
                        .map(|_| ())
                });
            }
            for id in instances.iter().take(if n < 3 { 1 } else { 2 }) {
                let (store, tenant, id) = (store.clone(), tenant.clone(), id.clone());
                releases.spawn(async move {
                    store.release_instance(&tenant, &id, &operator(), t0()).await.map(|_| ())
                });
            }
        }
        for k in 0..20 {
            let request = varied_request(k);
            let (store, tenant) = (store.clone(), tenants[k % tenants.len()].clone());
            creates.spawn(async move { store.create_batch(&tenant, &request, None, t0()).await });
        }
        while let Some(result) = releases.join_next().await {
            result.unwrap().unwrap_or_else(|e| panic!("[{b}] a concurrent release failed with {e:?}"));
        }
        let mut total = 0;
        while let Some(result) = creates.join_next().await {
            total += placed(b, result.unwrap());
        }
        // 3 * 4 + 2 * 2 = 16 were freed; what the creates got cannot exceed that.
        assert!(total <= 16, "[{b}] placed {total} new instances in 16 freed slots");
        let live = live_instances(&store, &tenants).await;
        assert_eq!(live, 4 + total, "[{b}] the two kept batches' survivors plus the new instances");
        assert!(live <= ROOM, "[{b}]");
        assert_eq!(total_allocated(&store).await, small() * live, "[{b}]");
        assert_ledger_consistent(&store).await;
        for (tenant, batch, _) in &batches {
            store.release_batch(tenant, batch, BatchState::Released, &operator(), t0()).await.unwrap();
        }
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_of_one_tenant_never_pass_its_quota() {
    each_backend_with(CONNECTIONS, |store| async move {
        let b = label(&store);
        seed_fleet(&store, &tight_fleet()).await;
        let quota =
            Quota { max_instances: Some(10), max_cpu: Some(eci_core::MilliCpu(9_000)), ..Default::default() };
        let tenant = seed_tenant(&store, "capped", quota).await.id;
        let mut tasks = JoinSet::new();
        for k in 0..16 {
            let mut request = batch_request(3);
            request.placement.all_or_nothing = k % 2 == 0;
            let (store, tenant) = (store.clone(), tenant.clone());
            tasks.spawn(async move { store.create_batch(&tenant, &request, None, t0()).await });
        }
        let mut total = 0;
        while let Some(result) = tasks.join_next().await {
            total += placed(b, result.unwrap());
        }
        let used = store.get_tenant(&tenant).await.unwrap();
        assert!(total <= 9, "[{b}] {total} instances of 1 vCPU under a 9 vCPU quota");
        assert_eq!((used.used_instances, used.used_cpu.0), (total, total * 1000), "[{b}]");
        assert_ledger_consistent(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_draws_on_reservations_and_the_pool_never_over_commit() {
    each_backend_with(CONNECTIONS, |store| async move {
        let b = label(&store);
        seed_fleet(&store, &tight_fleet()).await;
        let tenants = tenants(&store, 3, Quota::default()).await;
        // Tenants 0 and 1 hold four slots each; tenant 2 has only the pool.
        let mut reservations: Vec<ReservationId> = Vec::new();
        for tenant in &tenants[..2] {
            let request = ReservationRequest {
                count: 4,
                spec: small(),
                runtime: eci_core::Runtime::Container,
                placement: eci_core::PlacementSpec { all_or_nothing: true, ..Default::default() },
                ends_at: t0() + chrono::Duration::days(1),
            };
            reservations.push(store.create_reservation(tenant, &request, t0()).await.unwrap().id);
        }
        let mut creates = JoinSet::new();
        for k in 0..24 {
            let owner = k % 3;
            let mut request = varied_request(k);
            if owner < 2 {
                request.reservation_id = Some(reservations[owner].clone());
            }
            let (store, tenant) = (store.clone(), tenants[owner].clone());
            creates.spawn(async move { store.create_batch(&tenant, &request, None, t0()).await });
        }
        // Meanwhile tenant 1 gives its reservation up, and whatever batches exist end one by one.
        let releaser = {
            let (store, tenant, reservation) = (store.clone(), tenants[1].clone(), reservations[1].clone());
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                store.release_reservation(&tenant, &reservation, ReservationState::Released, t0()).await
            })
        };
        let mut made: Vec<(TenantId, BatchId)> = Vec::new();
        let mut total = 0;
        while let Some(result) = creates.join_next().await {
            match result.unwrap() {
                Ok(created) => {
                    made.push((created.batch.tenant_id.clone(), created.batch.id.clone()));
                    total += created.batch.count;
                }
                // Tenant 1's batches may come after its reservation ended.
                Err(Error::ReservationMismatch(why)) => {
                    assert!(why.contains("no longer active"), "[{b}] {why}")
                }
                Err(e) => {
                    placed(b, Err(e));
                }
            }
        }
        releaser.await.unwrap().unwrap_or_else(|e| panic!("[{b}] releasing the reservation: {e:?}"));
        assert!(total <= ROOM, "[{b}] placed {total} in room for {ROOM}");
        assert_ledger_consistent(&store).await;

        let mut ends = JoinSet::new();
        for (tenant, batch) in made.into_iter().step_by(2) {
            let store = store.clone();
            ends.spawn(async move {
                store.release_batch(&tenant, &batch, BatchState::Released, &operator(), t0()).await
            });
        }
        for k in 0..8 {
            let request = varied_request(k);
            let (store, tenant) = (store.clone(), tenants[2].clone());
            ends.spawn(async move {
                match store.create_batch(&tenant, &request, None, t0()).await {
                    Ok(created) => Ok(created.batch),
                    Err(e @ Error::Placement(_)) => Err(e),
                    Err(e) => panic!("a concurrent create failed with {e:?}"),
                }
            });
        }
        while let Some(result) = ends.join_next().await {
            if let Err(e) = result.unwrap() {
                assert!(matches!(e, Error::Placement(_)), "[{b}] {e:?}");
            }
        }
        assert_ledger_consistent(&store).await;
        let line_total: Resources = total_allocated(&store).await;
        assert!(small() * ROOM == line_total || resources(ROOM, ROOM * 4).covers(&line_total), "[{b}]");
    })
    .await;
}

const ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_that_draw_on_a_reservation_and_the_pool_do_not_deadlock_with_plain_batches() {
    each_backend_with(CONNECTIONS, |store| async move {
        let b = label(&store);
        let fleet = Fleet {
            idcs: vec![
                idc(
                    "a-1",
                    ("east-china", "zhejiang", "hangzhou"),
                    &[eci_core::Carrier::Telecom],
                    resources(64, 256),
                ),
                idc(
                    "b-1",
                    ("east-china", "zhejiang", "ningbo"),
                    &[eci_core::Carrier::Telecom],
                    resources(64, 256),
                ),
            ],
        };
        seed_fleet(&store, &fleet).await;
        // Rounds of releases far beyond an IDC's deletion budget: this is about locks, not risk.
        lift_deletion_budgets(&store).await;
        let tenants = tenants(&store, 2, Quota::default()).await;
        for round in 0..ROUNDS {
            // The reservation sits in b-1 only, so its owner's batches lock b-1 before spilling into
            // a-1, while plain batches lock a-1 first.
            let request = ReservationRequest {
                count: 4,
                spec: small(),
                runtime: eci_core::Runtime::Container,
                placement: eci_core::PlacementSpec {
                    areas: vec!["ningbo".into()],
                    all_or_nothing: true,
                    ..Default::default()
                },
                ends_at: t0() + chrono::Duration::days(1),
            };
            let reservation = store.create_reservation(&tenants[0], &request, t0()).await.unwrap().id;
            let mut tasks = JoinSet::new();
            for k in 0..16 {
                let mut request = batch_request(3);
                request.placement.all_or_nothing = false;
                if k % 2 == 0 {
                    request.reservation_id = Some(reservation.clone());
                }
                let (store, tenant) = (store.clone(), tenants[k % 2].clone());
                tasks.spawn(async move { store.create_batch(&tenant, &request, None, t0()).await });
            }
            let mut made = Vec::new();
            while let Some(result) = tasks.join_next().await {
                match result.unwrap() {
                    Ok(created) => made.push(created.batch),
                    Err(e) => panic!("[{b}] round {round}: a create failed with {e:?}"),
                }
            }
            assert_ledger_consistent(&store).await;
            let mut ends = JoinSet::new();
            for batch in made {
                let store = store.clone();
                ends.spawn(async move {
                    store
                        .release_batch(&batch.tenant_id, &batch.id, BatchState::Released, &operator(), t0())
                        .await
                });
            }
            let giving_up = {
                let (store, owner) = (store.clone(), tenants[0].clone());
                tokio::spawn(async move {
                    store.release_reservation(&owner, &reservation, ReservationState::Released, t0()).await
                })
            };
            while let Some(result) = ends.join_next().await {
                result
                    .unwrap()
                    .unwrap_or_else(|e| panic!("[{b}] round {round}: a release failed with {e:?}"));
            }
            giving_up
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("[{b}] round {round}: releasing the reservation: {e:?}"));
            assert_ledger_consistent(&store).await;
            assert_eq!(total_allocated(&store).await, Resources::ZERO, "[{b}] round {round}");
        }
    })
    .await;
}
