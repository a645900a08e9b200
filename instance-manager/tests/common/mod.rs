//! What the instance manager's tests share.

use std::time::Duration;

use eci_edge_sim::SimCluster;
use eci_instance_manager::{ClusterClient, IdcReconciler, ManagerConfig, WorkQueue};
use eci_store::Store;

/// A reconciler for the IDC `idc` over the simulated cluster `sim`. Its work queue is the
/// reconciler's alone (the store reports to nobody), so the tests drive it by passes.
pub fn start_reconciler(idc: &str, sim: &SimCluster, store: &Store, config: ManagerConfig) -> IdcReconciler {
    let client = ClusterClient::for_url(&sim.url()).expect("cluster client");
    IdcReconciler::start(eci_core::IdcId(idc.into()), client, store.clone(), &WorkQueue::default(), config)
}

/// Runs passes until `done` holds, for at most 300 rounds: the reflectors see a change a moment
/// after it is made. Bounded by rounds, not by time.
pub async fn settle<F, Fut>(reconciler: &IdcReconciler, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        reconciler.pass().await.expect("pass");
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the IDC did not settle");
}
