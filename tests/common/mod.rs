//! What the end-to-end tests over the API and simulated IDCs share.

use std::future::Future;
use std::time::Duration;

use eci_api::testing::App;
use eci_instance_manager::IdcReconciler;
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

/// Runs passes of every reconciler until the tenant's instances are as `done` wants; bounded by
/// rounds, not by time.
pub async fn settle(app: &App, token: &str, reconcilers: &[IdcReconciler], done: impl Fn(&[Value]) -> bool) {
    let mut instances = Vec::new();
    for _ in 0..1000 {
        for reconciler in reconcilers {
            reconciler.pass().await.expect("pass");
        }
        instances = app.all_pages("/v1/instances", token).await;
        if done(&instances) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the IDCs did not settle at {}: {instances:#?}", app.clock_now());
}
