//! Request-rate windows, in-process and on Redis: `limit` hits per window, then Limited until the
//! next window opens. Times are explicit, so nothing here depends on the wall clock.

use std::time::Duration;

use eci_store::coordination::{RateVerdict, RateWindows};
use eci_store::testing::redis_url;

const WINDOW: Duration = Duration::from_secs(1);

/// A key no other test run shares, since Redis outlives the test process.
fn unique_key(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("test-{name}-{}-{nanos}", std::process::id())
}

async fn limit_then_reopen(windows: &RateWindows, what: &str) {
    let key = unique_key(what);
    // 250 ms into a window that starts at a whole second.
    let start = 1_900_000_000_000u64 + 250;
    for n in 0..3 {
        let verdict = windows.hit(&key, 3, WINDOW, start + n * 100).await.unwrap();
        assert_eq!(verdict, RateVerdict::Allowed, "[{what}] hit {} of 3", n + 1);
    }
    let over = windows.hit(&key, 3, WINDOW, start + 500).await.unwrap();
    assert_eq!(
        over,
        RateVerdict::Limited { retry_after: Duration::from_millis(250) },
        "[{what}] the 4th hit waits for the window to end"
    );
    assert!(
        matches!(windows.hit(&key, 3, WINDOW, start + 749).await.unwrap(), RateVerdict::Limited { .. }),
        "[{what}] still limited in the last millisecond of the window"
    );

    let other = unique_key(&format!("{what}-other"));
    assert_eq!(windows.hit(&other, 3, WINDOW, start + 500).await.unwrap(), RateVerdict::Allowed, "[{what}]");

    let next = start + 750;
    for n in 0..3 {
        let verdict = windows.hit(&key, 3, WINDOW, next + n).await.unwrap();
        assert_eq!(verdict, RateVerdict::Allowed, "[{what}] a new window opens: hit {}", n + 1);
    }
    assert!(matches!(windows.hit(&key, 3, WINDOW, next + 999).await.unwrap(), RateVerdict::Limited { .. }));
}

#[tokio::test]
async fn in_process_windows_allow_the_limit_then_limit_until_the_next_window() {
    limit_then_reopen(&RateWindows::in_process(), "in-process").await;
}

#[tokio::test]
async fn redis_windows_allow_the_limit_then_limit_until_the_next_window() {
    let Some(url) = redis_url().await else { return };
    let windows = RateWindows::redis(&url).await.unwrap();
    limit_then_reopen(&windows, "redis").await;
}

#[tokio::test]
async fn redis_windows_are_shared_by_every_replica() {
    let Some(url) = redis_url().await else { return };
    let (a, b) = (RateWindows::redis(&url).await.unwrap(), RateWindows::redis(&url).await.unwrap());
    let key = unique_key("shared");
    let now = 1_900_000_000_000u64;
    assert_eq!(a.hit(&key, 2, WINDOW, now).await.unwrap(), RateVerdict::Allowed);
    assert_eq!(b.hit(&key, 2, WINDOW, now + 1).await.unwrap(), RateVerdict::Allowed);
    assert!(matches!(a.hit(&key, 2, WINDOW, now + 2).await.unwrap(), RateVerdict::Limited { .. }));
    assert!(matches!(b.hit(&key, 2, WINDOW, now + 3).await.unwrap(), RateVerdict::Limited { .. }));
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    // Nothing listens on port 1; connecting must fail promptly with a coordination error.
    let result =
        tokio::time::timeout(Duration::from_secs(30), RateWindows::redis("redis://127.0.0.1:1")).await;
    assert!(matches!(result, Ok(Err(eci_store::Error::Coordination(_)))), "{result:?}");
}
