//! What the instance manager's tests share.

use std::time::Duration;

use eci_instance_manager::IdcReconciler;

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
