//! Edge autonomy: when an IDC's cluster cannot be reached its instances keep running as far as the
//! platform is concerned (`unknown`, still allocated, never failed or re-created), new batches avoid
//! it, and when the link returns everything is reconciled calmly, including a release asked for
//! during the partition.

mod common;

use std::time::Duration;

use common::{settle, start_reconciler};
use eci_core::{IdcId, IdcStatus, InstanceState, PlacementError};
use eci_edge_sim::{EngineConfig, Fault, NodeSpec, SimCluster, SimConfig};
use eci_instance_manager::{IdcReconciler, ManagerConfig};
use eci_store::testing::{self, each_backend};
use eci_store::{Error, Store};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

const IDC: &str = "gd-sz-1";

fn config() -> ManagerConfig {
    ManagerConfig {
        probe_timeout: Duration::from_millis(300),
        failures_before_disconnect: 2,
        ..ManagerConfig::default()
    }
}

async fn states(store: &Store, tenant: &eci_core::TenantId) -> Vec<InstanceState> {
    let page = store.list_instances(tenant, &Default::default(), None, 1000).await.expect("list instances");
    page.items.into_iter().filter(|i| i.idc.0 == IDC).map(|i| i.state).collect()
}

/// Runs passes until every instance in the test IDC is in `state`.
async fn settle_all(
    reconciler: &IdcReconciler,
    store: &Store,
    tenant: &eci_core::TenantId,
    state: InstanceState,
) {
    settle(reconciler, || async move { states(store, tenant).await.iter().all(|s| *s == state) }).await;
}

async fn idc_status(store: &Store) -> IdcStatus {
    store.get_idc(&IdcId(IDC.into())).await.expect("idc").0.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_idc_keeps_its_instances_and_reconciles_when_the_link_returns() {
    for fault in [Fault::Unreachable, Fault::BlackHole] {
        each_backend(|store| async move {
            let seeded = testing::seed(&store).await;
            let tenant = seeded.tenant_id().clone();
            let (sim, kube) = start_sim().await;
            let request = shenzhen(3);
            store.create_batch(&tenant, &request, None, testing::t0()).await.expect("batch");
            let reconciler = start_reconciler(IDC, &sim, &store, config());
            settle_all(&reconciler, &store, &tenant, InstanceState::Running).await;
            let allocated = testing::ledger(&store).await[&IdcId(IDC.into())].allocated;

            // The link goes down: after a couple of missed probes the IDC is disconnected and its
            // instances unknown, with their capacity still allocated. The pass never hangs.
            sim.set_fault(fault);
            settle_all(&reconciler, &store, &tenant, InstanceState::Unknown).await;
            assert_eq!(idc_status(&store).await, IdcStatus::Disconnected, "{fault:?}");
            assert_eq!(testing::ledger(&store).await[&IdcId(IDC.into())].allocated, allocated);
            for _ in 0..3 {
                assert!(reconciler.pass().await.unwrap().unreachable);
            }
            assert!(
                states(&store, &tenant).await.iter().all(|s| *s == InstanceState::Unknown),
                "never failed"
            );

            // New work avoids the disconnected IDC.
            let refused = store.create_batch(&tenant, &request, None, testing::t0()).await;
            assert!(
                matches!(refused, Err(Error::Placement(PlacementError::NoMatchingIdc))),
                "{fault:?}: {refused:?}"
            );

            // A release asked for during the partition stops the instance, holding its capacity until
            // the cluster can be told; further passes while unreachable keep it so...
            let page = store.list_instances(&tenant, &Default::default(), None, 10).await.unwrap();
            let released = page.items.iter().find(|i| i.idc.0 == IDC).unwrap().id.clone();
            let stopping = store
                .release_instance(&tenant, &released, &testing::operator(), testing::t0())
                .await
                .unwrap();
            assert_eq!(stopping.state, InstanceState::Stopping, "{fault:?}");
            assert!(reconciler.pass().await.unwrap().unreachable);
            assert_eq!(store.get_instance(&tenant, &released).await.unwrap().state, InstanceState::Stopping);
            assert_eq!(testing::ledger(&store).await[&IdcId(IDC.into())].allocated, allocated);

            // ...and when the link returns, its Pod is deleted and it ends; the others are running
            // again, untouched.
            let pods: Api<Pod> = Api::all(kube.clone());
            let before = pod_names_and_uids(&sim);
            sim.set_fault(Fault::None);
            let (s, t, p, r) = (store.clone(), tenant.clone(), pods.clone(), released.clone());
            settle(&reconciler, || {
                let (store, tenant, pods, released) = (s.clone(), t.clone(), p.clone(), r.clone());
                async move {
                    let running = states(&store, &tenant)
                        .await
                        .iter()
                        .filter(|s| **s == InstanceState::Running)
                        .count();
                    let names: Vec<String> = pods
                        .list(&ListParams::default())
                        .await
                        .unwrap()
                        .items
                        .into_iter()
                        .filter_map(|p| p.metadata.name)
                        .collect();
                    let ended = store.get_instance(&tenant, &released).await.unwrap().state
                        == InstanceState::Terminated;
                    running == 2 && names.len() == 2 && !names.contains(&released.0) && ended
                }
            })
            .await;
            assert_eq!(idc_status(&store).await, IdcStatus::Active);
            for pod in pod_names_and_uids(&sim) {
                assert!(before.contains(&pod), "healthy Pods are kept, never re-created: {pod:?} is new");
            }
            testing::assert_ledger_consistent(&store).await;
            sim.shutdown().await.expect("shutdown");
        })
        .await;
    }
}

/// A flapping link (up, down, up...) may turn instances `unknown` and back many times, but never
/// fails, duplicates or re-creates one; when it settles, every instance runs in its one Pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_never_fails_or_duplicates_instances() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        let (sim, _) = start_sim().await;
        store.create_batch(&tenant, &shenzhen(12), None, testing::t0()).await.expect("batch");
        let config = ManagerConfig { request_retries: 1, ..config() };
        let reconciler = start_reconciler(IDC, &sim, &store, config);
        sim.set_fault(Fault::Flapping(Duration::from_millis(150)));
        let mut first_uids = None;
        let mut seen_unknown = false;
        for _ in 0..150 {
            reconciler.pass().await.expect("a pass over a flapping link does not fail");
            let now = states(&store, &tenant).await;
            assert!(!now.contains(&InstanceState::Failed), "nothing fails for a flapping link: {now:?}");
            seen_unknown |= now.contains(&InstanceState::Unknown);
            let pods = pod_names_and_uids(&sim);
            assert!(pods.len() <= 12, "one Pod per instance, never more: {pods:?}");
            if pods.len() == 12 && first_uids.is_none() {
                first_uids = Some(pods);
            }
            if first_uids.is_some() && seen_unknown {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen_unknown, "the link's down periods were noticed");
        let first_uids = first_uids.expect("every Pod was created while the link flapped");

        sim.set_fault(Fault::None);
        settle_all(&reconciler, &store, &tenant, InstanceState::Running).await;
        assert_eq!(idc_status(&store).await, IdcStatus::Active);
        assert_eq!(pod_names_and_uids(&sim), first_uids, "no Pod was deleted or created again");
        testing::assert_ledger_consistent(&store).await;
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A link slower than the probe allows is a partition (reached by timeouts, never by hanging); a
/// slow link within it is merely slow, and instances start over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_is_a_partition_only_beyond_the_probe_timeout() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        let (sim, _) = start_sim().await;
        store.create_batch(&tenant, &shenzhen(4), None, testing::t0()).await.expect("batch");
        let reconciler = start_reconciler(IDC, &sim, &store, config());
        reconciler.ready().await;

        sim.set_fault(Fault::Slow(Duration::from_millis(60)));
        settle_all(&reconciler, &store, &tenant, InstanceState::Running).await;
        assert_eq!(idc_status(&store).await, IdcStatus::Active, "slow is not disconnected");

        sim.set_fault(Fault::Slow(Duration::from_secs(2)));
        settle_all(&reconciler, &store, &tenant, InstanceState::Unknown).await;
        assert_eq!(idc_status(&store).await, IdcStatus::Disconnected);

        sim.set_fault(Fault::None);
        settle_all(&reconciler, &store, &tenant, InstanceState::Running).await;
        assert_eq!(pod_names_and_uids(&sim).len(), 4);
        testing::assert_ledger_consistent(&store).await;
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}

/// One simulated IDC whose Pods run as soon as they are scheduled, and a client for the test to look
/// at it with.
async fn start_sim() -> (SimCluster, kube::Client) {
    let sim = SimCluster::start(
        SimConfig::default()
            .name(IDC)
            .engine(EngineConfig::default().boot_delay(Duration::ZERO))
            .node(NodeSpec::new("node-1").cpu_millis(64_000).memory_mib(256 * 1024)),
    )
    .await
    .expect("start sim");
    let kube = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    (sim, kube)
}

/// `count` small instances in the test IDC.
fn shenzhen(count: u64) -> eci_core::BatchRequest {
    let mut request = testing::batch_request(count);
    request.placement.areas = vec!["shenzhen".into()];
    request.placement.carriers = vec![eci_core::Carrier::Telecom];
    request
}

/// The Pods in the cluster as (name, uid), read from the simulator's store: the faults only affect
/// its HTTP API, and the test must see through them.
fn pod_names_and_uids(sim: &SimCluster) -> Vec<(String, String)> {
    let pods = sim.store().list(eci_edge_sim::Resource::Pods, None, &Default::default()).expect("list pods");
    pods.items
        .iter()
        .map(|p| {
            let text =
                |pointer: &str| p.pointer(pointer).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (text("/metadata/name"), text("/metadata/uid"))
        })
        .collect()
}
