//! The instances' CPU use, read from the cluster's pod metrics into the store for the autoscaler:
//! each instance's sample is what its Pod uses, at the moment the cluster measured it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{settle, start_reconciler};
use eci_core::{Clock, InstanceId, InstanceState, ManualClock, MilliCpu};
use eci_edge_sim::load::Shape;
use eci_edge_sim::{EngineConfig, LoadCurve, NodeSpec, SimCluster, SimConfig};
use eci_instance_manager::ManagerConfig;
use eci_store::Store;
use eci_store::groups::CpuSample;
use eci_store::testing::{self, each_backend};
use tokio::sync::watch;

const IDC: &str = "gd-sz-1";

/// Checks `done` until it holds, for at most 300 rounds 20 ms apart: the reconciler's loops run on
/// their own, so unlike `settle` this runs no pass. Bounded by rounds, not by time.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

async fn instances(store: &Store, tenant: &eci_core::TenantId) -> Vec<(InstanceId, InstanceState)> {
    let page = store.list_instances(tenant, &Default::default(), None, 1000).await.expect("list instances");
    page.items.into_iter().map(|i| (i.id, i.state)).collect()
}

/// Whether every one of `ids` has a sample of `used` measured at `at`.
async fn sampled(store: &Store, ids: &[InstanceId], used: u64, at: DateTime<Utc>) -> bool {
    let mut samples = store.cpu_samples(ids).await.expect("cpu samples");
    samples.sort_by(|a, b| a.instance.cmp(&b.instance));
    let expected: Vec<CpuSample> = ids
        .iter()
        .map(|id| CpuSample { instance: id.clone(), used: MilliCpu(used), sampled_at: at })
        .collect();
    samples == expected
}

fn constant(millicores: f64) -> LoadCurve {
    LoadCurve::millicores(Shape::Constant { value: millicores }).expect("a constant curve")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_is_sampled_at_what_its_pod_uses_when_the_cluster_measured_it() {
    each_backend(|store| async move {
        let seeded = testing::seed(&store).await;
        let tenant = seeded.tenant_id().clone();
        // The cluster's metrics run on a clock of their own, unlike the manager's, so that a sample's
        // time is seen to be the cluster's.
        let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc();
        let cluster_clock = Arc::new(ManualClock::new(start));
        let metrics_clock = cluster_clock.clone();
        let sim = SimCluster::start(
            SimConfig::default()
                .name(IDC)
                .engine(EngineConfig::default().boot_delay(Duration::ZERO))
                .node(NodeSpec::new("node-1").cpu_millis(64_000).memory_mib(256 * 1024))
                .clock(move || metrics_clock.now()),
        )
        .await
        .expect("start sim");
        let mut request = testing::batch_request(3);
        request.placement.areas = vec!["shenzhen".into()];
        request.placement.carriers = vec![eci_core::Carrier::Telecom];
        store.create_batch(&tenant, &request, None, testing::t0()).await.expect("batch");

        let config =
            ManagerConfig { metrics_interval: Duration::from_millis(50), ..ManagerConfig::default() };
        let reconciler = start_reconciler(IDC, &sim, &store, config);
        let (s, t) = (&store, &tenant);
        settle(&reconciler, || async move {
            let now = instances(s, t).await;
            now.len() == 3 && now.iter().all(|(_, state)| *state == InstanceState::Running)
        })
        .await;
        let (stop, shutdown) = watch::channel(false);
        let running = tokio::spawn(reconciler.run(shutdown));
        let mut ids: Vec<InstanceId> =
            instances(&store, &tenant).await.into_iter().map(|(id, _)| id).collect();
        ids.sort();

        // The store keeps a sample only over an older one, and the cluster measures anew as its clock
        // moves on, so each curve is read at a later moment of the cluster's clock.
        sim.set_load("eci.io/instance", constant(700.0)).expect("set load");
        cluster_clock.advance(chrono::Duration::seconds(15));
        let measured = cluster_clock.now();
        eventually("700m sampled", || sampled(&store, &ids, 700, measured)).await;

        sim.set_load("eci.io/instance", constant(250.0)).expect("set load");
        cluster_clock.advance(chrono::Duration::seconds(15));
        let measured = cluster_clock.now();
        eventually("250m sampled", || sampled(&store, &ids, 250, measured)).await;

        stop.send(true).expect("stop the reconciler");
        running.await.expect("the reconciler stops");
        sim.shutdown().await.expect("shutdown");
    })
    .await;
}
