//! Request-rate windows, in-process and on Redis: `limit` hits per window, then Limited until the
//! next window opens; and leases, one holder at a time. Times are explicit, so nothing here
//! depends on the wall clock. Risk control's deletion breakers too: sliding windows, all or nothing,
//! open until reset.

use std::time::Duration;

use eci_store::coordination::{Admission, Breakers, Leases, RateVerdict, RateWindows};
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

/// Leases: one holder at a time, renewed by it, taken over when it runs out or is given up, each
/// taking with a higher epoch.
#[tokio::test]
async fn an_in_process_lease_has_one_holder_until_it_runs_out_or_is_given_up() {
    let leases = Leases::in_process();
    let ttl = Duration::from_secs(45);
    assert_eq!(leases.hold("scaler", "a", ttl, 1_000).await.unwrap(), Some(1));
    assert_eq!(leases.hold("scaler", "b", ttl, 2_000).await.unwrap(), None, "held by a");
    assert_eq!(leases.hold("scaler", "a", ttl, 30_000).await.unwrap(), Some(1), "a renews");
    assert_eq!(leases.hold("scaler", "b", ttl, 74_999).await.unwrap(), None, "renewed until 75 s");
    assert_eq!(leases.hold("scaler", "b", ttl, 75_000).await.unwrap(), Some(2), "run out: b takes it");
    assert_eq!(leases.hold("scaler", "a", ttl, 76_000).await.unwrap(), None, "a lost it");
    leases.give_up("scaler", "a").await.unwrap();
    assert_eq!(leases.hold("scaler", "a", ttl, 76_001).await.unwrap(), None, "only the holder gives it up");
    leases.give_up("scaler", "b").await.unwrap();
    assert_eq!(leases.hold("scaler", "a", ttl, 76_002).await.unwrap(), Some(3), "given up: taken at once");
    assert_eq!(leases.hold("other", "b", ttl, 76_003).await.unwrap(), Some(1), "leases are by name");
}

#[tokio::test]
async fn a_redis_lease_is_shared_by_every_replica() {
    let Some(url) = redis_url().await else { return };
    let (one, two) = (Leases::redis(&url).await.unwrap(), Leases::redis(&url).await.unwrap());
    let name = unique_key("lease");
    let ttl = Duration::from_secs(45);
    let epoch = one.hold(&name, "a", ttl, 0).await.unwrap().expect("a free lease is taken");
    assert_eq!(two.hold(&name, "b", ttl, 0).await.unwrap(), None, "another replica sees it held");
    assert_eq!(two.hold(&name, "a", ttl, 0).await.unwrap(), Some(epoch), "the holder renews from anywhere");
    let mut conn =
        redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let left: i64 = redis::cmd("PTTL").arg(format!("eci:lease:{name}")).query_async(&mut conn).await.unwrap();
    assert!(left > 0 && left <= 45_000, "the lease runs out on its own after its ttl: {left} ms left");
    two.give_up(&name, "b").await.unwrap();
    assert_eq!(one.hold(&name, "b", ttl, 0).await.unwrap(), None, "only the holder gives it up");
    one.give_up(&name, "a").await.unwrap();
    assert_eq!(two.hold(&name, "b", ttl, 0).await.unwrap(), Some(epoch + 1), "given up: taken at once");
}

/// The windows of one deletion: a unique IDC (3 per minute) and a unique tenant (5 per minute).
fn takes(idc: &str, tenant: &str, count: u64) -> Vec<eci_core::risk::Take> {
    use eci_core::risk::{Budget, Take, Window};
    vec![
        Take {
            window: Window::Idc(eci_core::IdcId(idc.into())),
            budget: Budget { deletions: 3, window_seconds: 60 },
            count,
        },
        Take {
            window: Window::Tenant(eci_core::TenantId(tenant.into())),
            budget: Budget { deletions: 5, window_seconds: 60 },
            count,
        },
    ]
}

/// Two handles on one set of breakers (two replicas, or one): the windows slide, a full one trips
/// its breaker and counts nothing anywhere, the breaker stays open after the window empties, an
/// approved deletion passes, and a reset closes it.
async fn breakers_trip_stay_open_and_reset(a: &Breakers, b: &Breakers) {
    use eci_core::risk::Window;
    let (idc, tenant) = (unique_key("idc"), unique_key("tenant"));
    let t0 = 1_000_000;
    assert_eq!(a.take(&takes(&idc, &tenant, 2), t0, false).await.unwrap(), Admission::Admitted);
    assert_eq!(b.take(&takes(&idc, &tenant, 1), t0 + 10_000, false).await.unwrap(), Admission::Admitted);
    let Admission::Refused(refusal) = a.take(&takes(&idc, &tenant, 1), t0 + 20_000, false).await.unwrap()
    else {
        panic!("the IDC's window holds 3")
    };
    assert_eq!(refusal.window, Window::Idc(eci_core::IdcId(idc.clone())));
    assert!(refusal.tripped);
    assert_eq!(refusal.used, 3);
    assert_eq!(
        refusal.retry_after,
        std::time::Duration::from_secs(40),
        "the first two leave the window at 60 s"
    );
    let open = b.open().await.unwrap();
    assert!(open.iter().any(|(w, at)| *w == refusal.window && *at == t0 + 20_000), "{open:?}");

    // The tenant's window counted nothing of the refused deletion: another IDC still fits in it.
    let other = unique_key("idc");
    assert_eq!(b.take(&takes(&other, &tenant, 2), t0 + 30_000, false).await.unwrap(), Admission::Admitted);
    // Long after the window emptied, the breaker is still open.
    let Admission::Refused(again) = b.take(&takes(&idc, &tenant, 1), t0 + 600_000, false).await.unwrap()
    else {
        panic!("open until reset")
    };
    assert!(!again.tripped, "tripped once");
    assert_eq!(a.take(&takes(&idc, &tenant, 1), t0 + 600_000, true).await.unwrap(), Admission::Admitted);
    assert!(a.reset(&refusal.window).await.unwrap());
    assert!(!b.reset(&refusal.window).await.unwrap(), "closed already");
    assert_eq!(b.take(&takes(&idc, &tenant, 3), t0 + 600_001, false).await.unwrap(), Admission::Admitted);
}

#[tokio::test]
async fn in_process_breakers_trip_stay_open_and_reset() {
    let breakers = Breakers::in_process();
    breakers_trip_stay_open_and_reset(&breakers, &breakers).await;
}

#[tokio::test]
async fn redis_breakers_are_shared_by_every_replica() {
    let Some(url) = redis_url().await else { return };
    let (a, b) = (Breakers::redis(&url).await.unwrap(), Breakers::redis(&url).await.unwrap());
    breakers_trip_stay_open_and_reset(&a, &b).await;
}
