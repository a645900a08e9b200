//! A simulated day of an autoscaled group, end to end: the API, the scaler's passes, the instance
//! manager and three simulated IDCs in Guangdong, all on one clock that the test moves through 1
//! January 2030 in Shanghai time.
//!
//! The group keeps 2, books 20 from 20:00 to 23:00 (grown from 19:50) and 30 from 22:00 to 01:00
//! (across midnight, overlapping the first window for an hour), and follows CPU at 60% of its
//! request. In the afternoon the edge-sim load curve of its Pods steps to 150% for half an hour.
//! At 19:50 the control plane restarts in the middle of growing. The counts are asserted minute by
//! minute around every boundary, and the load step's new Pods must reach the clusters within one
//! tick plus the metrics interval.

mod common;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{on_each_database, open, settle};
use eci_api::scaling;
use eci_api::testing::*;
use eci_core::Clock;
use eci_edge_sim::load::{LoadCurve, LoadUnit, Shape};
use eci_edge_sim::{EngineConfig, NodeSpec, Resource, SimCluster, SimConfig};
use eci_instance_manager::{IdcReconciler, ManagerConfig};
use serde_json::{Value, json};

const IDCS: [&str; 3] = ["gd-gz-1", "gd-sz-1", "gd-sz-2"];

/// A moment of 1 or 2 January 2030 on Shanghai's wall clock (UTC+8, no daylight saving).
fn shanghai(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, day, hour, minute, 0).unwrap() - Duration::hours(8)
}

struct Day {
    app: App,
    token: String,
    sims: BTreeMap<&'static str, SimCluster>,
    reconcilers: Vec<IdcReconciler>,
    group: String,
}

impl Day {
    /// The clock moves to `at`; the metrics are read and the scaler makes its pass there, and the
    /// instance manager makes real what it decided.
    async fn tick_at(&mut self, at: DateTime<Utc>) -> scaling::PassReport {
        let by = at - self.app.clock_now();
        assert!(by >= Duration::zero(), "the clock only moves forward");
        self.app.clock.advance(by);
        for reconciler in &self.reconcilers {
            reconciler.pass().await.expect("a pass");
            reconciler.read_cpu().await.expect("a metrics read");
        }
        let report =
            scaling::pass(&self.app.state, self.app.clock_now(), &|| true).await.expect("a scaler pass");
        self.settle().await;
        report
    }

    /// Passes until every live instance of the tenant runs and every stopping one has ended.
    async fn settle(&self) {
        settle(&self.app, &self.token, &self.reconcilers, |instances| {
            instances.iter().all(|i| matches!(i["state"].as_str(), Some("running" | "terminated" | "failed")))
        })
        .await;
    }

    async fn view(&self) -> Value {
        self.app
            .get(&format!("/v1/groups/{}", self.group), &self.token)
            .await
            .expect_status(axum::http::StatusCode::OK)
    }

    /// Running instances, and the Pods the clusters hold for them.
    async fn running(&self) -> (u64, usize) {
        let running = self.app.all_pages("/v1/instances?state=running", &self.token).await.len() as u64;
        let pods: usize = self
            .sims
            .values()
            .map(|sim| {
                let pods =
                    sim.store().list(Resource::Pods, None, &Default::default()).expect("list pods").items;
                pods.iter()
                    .filter(|p| {
                        p["metadata"]["labels"]["eci.io/group"] == self.group.as_str()
                            && p["metadata"]["deletionTimestamp"].is_null()
                    })
                    .count()
            })
            .sum();
        (running, pods)
    }

    /// Ticks every `step` minutes from `from` to `to` (inclusive) and checks the count each time.
    async fn timeline(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: i64,
        expected: impl Fn(DateTime<Utc>) -> u64,
    ) {
        let mut at = from;
        while at <= to {
            self.tick_at(at).await;
            let (running, pods) = self.running().await;
            let want = expected(at);
            assert_eq!(running, want, "running at {} Shanghai", (at + Duration::hours(8)).format("%d %H:%M"));
            assert_eq!(pods as u64, want, "one Pod per running instance at {at}");
            at += Duration::minutes(step);
        }
    }

    fn set_cpu(&self, percent: f64) {
        let curve =
            LoadCurve::new(Shape::Constant { value: percent }, LoadUnit::PercentOfRequest).expect("a curve");
        for sim in self.sims.values() {
            sim.clear_load();
            sim.set_load("eci.io/instance", curve.clone()).expect("a load curve");
        }
    }
}

async fn start_sims(app: &App) -> BTreeMap<&'static str, SimCluster> {
    let mut sims = BTreeMap::new();
    for idc in IDCS {
        let clock = app.clock.clone();
        let sim = SimCluster::start(
            SimConfig::default()
                .name(idc)
                .engine(EngineConfig::default().boot_delay(StdDuration::ZERO))
                .node(NodeSpec::new(format!("{idc}-node-1")).cpu_millis(64_000).memory_mib(256 * 1024))
                .clock(move || clock.now()),
        )
        .await
        .expect("start sim");
        sims.insert(idc, sim);
    }
    sims
}

fn start_reconcilers(sims: &BTreeMap<&'static str, SimCluster>, app: &App) -> Vec<IdcReconciler> {
    let config = ManagerConfig { request_retries: 1, ..ManagerConfig::default() };
    sims.iter().map(|(idc, sim)| common::reconciler(app, idc, sim, &config)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_follows_its_windows_and_its_load_through_a_day() {
    on_each_database(|url| async move { simulated_day(&url).await }).await;
}

async fn simulated_day(url: &str) {
    let app = App::seeded(open(url).await).await;
    let acme = app.tenant("acme").await;
    let sims = start_sims(&app).await;
    let reconcilers = start_reconcilers(&sims, &app);
    let body = json!({
        "name": "cdn-edge",
        "template": { "spec": { "cpu": "500m", "memory": "2Gi" }, "image": "nginx:1.27" },
        "placement": { "areas": ["guangdong"] },
        "min": 2,
        "max": 60,
        "schedules": [
            { "start": "0 20 * * *", "end": "0 23 * * *", "timezone": "Asia/Shanghai", "desired": 20, "lead_seconds": 600 },
            { "start": "0 22 * * *", "end": "0 1 * * *", "timezone": "Asia/Shanghai", "desired": 30 },
        ],
        "load": { "metric": "cpu", "target": 60 },
    });
    let group =
        app.post("/v1/groups", &acme.token, body).await.expect_status(axum::http::StatusCode::CREATED);
    let mut day = Day {
        token: acme.token.clone(),
        group: group["id"].as_str().unwrap().to_string(),
        app,
        sims,
        reconcilers,
    };

    // 12:00: the minimum, at a quiet 40% of the request.
    day.set_cpu(40.0);
    day.timeline(shanghai(1, 12, 0), shanghai(1, 12, 10), 5, |_| 2).await;

    // 14:00: the load steps to 150% for four minutes. The first tick after the crossing (one
    // metrics read, one scaler pass) puts the scale-out's Pods in the clusters: 2 at 150% of a 60%
    // target asks for 5, and the HPA allows up to +4 per 15 s.
    day.set_cpu(150.0);
    let crossed = shanghai(1, 14, 0);
    day.tick_at(crossed).await;
    let (_, pods) = day.running().await;
    assert_eq!(pods, 5, "the first tick after the load crossed the target placed the scale-out");
    let view = day.view().await;
    assert_eq!(view["metric"]["value"], 150.0, "{view}");
    assert!(view["reason"].as_str().unwrap().starts_with("load:"), "{view}");
    // For five minutes the three new ones are fresh (CPU runs high while an instance starts): left
    // out, and idle in a recount, which lands on the target: the group holds.
    day.timeline(shanghai(1, 14, 1), shanghai(1, 14, 3), 1, |_| 5).await;
    // 14:04 the load falls to 40%. Recommendations drop (2 at 14:04, 5 x 40% = 4 from 14:05 once
    // none is fresh), but the scale-down follows the highest of the last 300 s: 5 until the 14:03
    // one leaves the window at 14:08, then 4 until 14:13, 3 until 14:18, then the minimum.
    day.set_cpu(40.0);
    day.timeline(shanghai(1, 14, 4), shanghai(1, 14, 20), 1, |at| match at {
        at if at < shanghai(1, 14, 8) => 5,
        at if at < shanghai(1, 14, 13) => 4,
        at if at < shanghai(1, 14, 18) => 3,
        _ => 2,
    })
    .await;

    // 19:45 to 19:49: still the minimum. 19:50 (20:00 less the 10-minute lead): 20 at once, not
    // at the load policy's rate; the control plane restarts while they are being created.
    day.timeline(shanghai(1, 19, 45), shanghai(1, 19, 49), 1, |_| 2).await;
    day.app.clock.advance(shanghai(1, 19, 50) - day.app.clock_now());
    let report = scaling::pass(&day.app.state, day.app.clock_now(), &|| true).await.unwrap();
    assert_eq!(report.placed, 18, "the window's 20 at once");
    drop(std::mem::take(&mut day.reconcilers));
    day.app = day.app.restarted(open(url).await);
    day.reconcilers = start_reconcilers(&day.sims, &day.app);
    day.settle().await;
    let report = scaling::pass(&day.app.state, day.app.clock_now(), &|| true).await.unwrap();
    assert_eq!((report.placed, report.released), (0, 0), "after the restart nothing is placed twice");
    day.timeline(shanghai(1, 19, 51), shanghai(1, 20, 5), 1, |_| 20).await;

    // 22:00: the second window opens over the first: the highest (30) wins; at 23:00 the first
    // ends and the second still books 30; it ends at 01:00 on the 2nd, across midnight.
    day.timeline(
        shanghai(1, 21, 58),
        shanghai(1, 22, 2),
        1,
        |at| if at < shanghai(1, 22, 0) { 20 } else { 30 },
    )
    .await;
    day.timeline(shanghai(1, 22, 58), shanghai(1, 23, 2), 1, |_| 30).await;
    day.timeline(shanghai(1, 23, 58), shanghai(2, 0, 2), 1, |_| 30).await;
    // At 01:00 the windows are over: what the load has asked for over the last 300 s (30 at 40%
    // of a 60% target is 20) holds, at once, not the window's 30 nor the minimum; it falls later
    // as the scale-down stabilisation lets it.
    day.timeline(shanghai(2, 0, 58), shanghai(2, 1, 4), 1, |at| if at < shanghai(2, 1, 0) { 30 } else { 20 })
        .await;
    day.timeline(shanghai(2, 1, 5), shanghai(2, 1, 5), 1, |_| 14).await;

    // Every decision is in the events, each saying why.
    let events = day.app.all_pages(&format!("/v1/groups/{}/events", day.group), &day.token).await;
    let reasons: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["kind"] == "decided")
        .map(|e| (e["message"].as_str().unwrap().to_string(), e["desired"].as_u64().unwrap()))
        .collect();
    assert!(reasons.iter().any(|(m, d)| *d == 20 && m.contains("window 0 books 20")), "{reasons:#?}");
    assert!(reasons.iter().any(|(m, d)| *d == 30 && m.contains("window 1 books 30")), "{reasons:#?}");
    assert!(reasons.iter().any(|(m, d)| *d == 5 && m.contains("load:")), "{reasons:#?}");
    let scaled_out: u64 = events
        .iter()
        .filter(|e| e["kind"] == "scaled_out")
        .map(|e| {
            e["details"]["placed"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum::<u64>()
        })
        .sum();
    let all = day.app.all_pages("/v1/instances", &day.token).await.len() as u64;
    assert_eq!(scaled_out, all, "every instance the group ever had was placed by a recorded scale-out");
    eci_store::testing::assert_ledger_matches_records(&day.app.store).await;
}
