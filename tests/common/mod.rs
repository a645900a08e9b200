//! What the end-to-end tests over the API and simulated IDCs share.

use std::future::Future;
use std::time::Duration;

use eci_api::testing::App;
use eci_core::IdcId;
use eci_edge_sim::SimCluster;
use eci_instance_manager::{ClusterClient, IdcReconciler, ManagerConfig, WorkQueue};
use eci_store::{Store, StoreConfig, testing};
use serde_json::Value;

/// Runs `test` on a fresh SQLite database, then on a fresh PostgreSQL one (where there is one),
/// each given by its URL so the test can open it, and open it again as a restarted replica would.
pub async fn on_each_database<F, Fut>(test: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    eprintln!("---- running on SQLite ----");
    let (store, dir) = testing::sqlite_store().await;
    store.close().await;
    test(testing::sqlite_url(&dir)).await;
    eprintln!("---- running on PostgreSQL ----");
    if let Some(db) = testing::postgres_database(testing::DEFAULT_TEST_CONNECTIONS).await {
        db.store.close().await;
        test(db.url.clone()).await;
        db.cleanup().await;
    }
}

/// Opens the database at `url` as the tests' store.
pub async fn open(url: &str) -> Store {
    Store::connect(&StoreConfig::new(url).max_connections(testing::DEFAULT_TEST_CONNECTIONS))
        .await
        .unwrap_or_else(|e| panic!("opening the database: {e:?}"))
}

/// A reconciler of `idc` over `sim` with `config` on the app's clock, driven by the test's passes.
pub fn reconciler(app: &App, idc: &str, sim: &SimCluster, config: &ManagerConfig) -> IdcReconciler {
    let config = ManagerConfig { clock: app.clock.clone(), ..config.clone() };
    let client = ClusterClient::for_url(&sim.url()).expect("cluster client");
    IdcReconciler::start(IdcId(idc.into()), client, app.store.clone(), &WorkQueue::default(), config)
}

/// Runs passes of every reconciler until the tenant's instances are as `done` wants; bounded by
/// rounds, not by time.
pub async fn settle(app: &App, token: &str, reconcilers: &[IdcReconciler], done: impl Fn(&[Value]) -> bool) {
    let at = app.clock_now();
    passes_until(
        reconcilers,
        1000,
        &format!("the instances at {at}"),
        || app.all_pages("/v1/instances", token),
        |i| done(i),
    )
    .await;
}

/// Runs a pass of every reconciler and then `look`, until `done` holds of what it saw, at most
/// `rounds` times (the reflectors see a change a moment after it is made); returns what it saw.
/// Bounded by rounds, not by time.
pub async fn passes_until<T, Fut>(
    reconcilers: &[IdcReconciler],
    rounds: usize,
    what: &str,
    mut look: impl FnMut() -> Fut,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
    Fut: Future<Output = T>,
{
    let mut seen = None;
    for _ in 0..rounds {
        for reconciler in reconcilers {
            reconciler.pass().await.expect("pass");
        }
        let now = look().await;
        if done(&now) {
            return now;
        }
        seen = Some(now);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not settle: {seen:#?}");
}
