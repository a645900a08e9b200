//! `GET /metrics` through the router: each IDC's ledger line as gauges read from the store at the
//! scrape (what it sells, what is allocated and reserved, whether it is short, when its cluster was
//! read), and the rest of the scrape served when the store cannot be read.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use eci_core::capacity::ClusterCapacity;
use eci_core::{IdcId, MiB, MilliCpu, Resources};
use serde_json::json;

/// The samples of a scrape by metric name and `idc` label (empty for a sample without one).
fn samples(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line}"));
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let idc = labels
            .split(',')
            .find_map(|l| l.strip_prefix("idc=\""))
            .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_string())
            .unwrap_or_default();
        let value = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        out.insert((name.to_string(), idc), value);
    }
    out
}

async fn scrape(app: &App) -> BTreeMap<(String, String), f64> {
    let (status, body, _) = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    samples(body.as_str().unwrap_or_else(|| panic!("the metrics are text: {body}")))
}

/// The value of `name` for `idc`, if the scrape has it.
fn of(samples: &BTreeMap<(String, String), f64>, name: &str, idc: &str) -> Option<f64> {
    samples.get(&(name.to_string(), idc.to_string())).copied()
}

#[tokio::test]
async fn every_scrape_shows_each_idcs_ledger_line_as_the_store_has_it() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        app.create_batch(&acme.token, batch_in(10, json!({ "areas": ["guangzhou"] }))).await;
        let reservation = json!({ "count": 2, "spec": { "cpu": "1", "memory": "4Gi" },
            "placement": { "areas": ["guangzhou"] }, "ends_at": at(3600) });
        app.post("/v1/reservations", &acme.token, reservation).await.expect_status(StatusCode::CREATED);

        let seen = scrape(&app).await;
        for (name, value) in [
            ("eci_idc_sellable_cpu_millis", 32_000.0),
            ("eci_idc_allocated_cpu_millis", 10_000.0),
            ("eci_idc_reserved_cpu_millis", 2_000.0),
            ("eci_idc_sellable_memory_mib", 131_072.0),
            ("eci_idc_allocated_memory_mib", 40_960.0),
            ("eci_idc_reserved_memory_mib", 8_192.0),
            ("eci_idc_capacity_short", 0.0),
            ("eci_idc_capacity_read_timestamp_seconds", t0().timestamp() as f64),
        ] {
            assert_eq!(of(&seen, name, "gd-gz-1"), Some(value), "{name}: {seen:?}");
        }
        for idc in IDC_IDS {
            assert!(of(&seen, "eci_idc_capacity_short", idc).is_some(), "{idc} has its gauges: {seen:?}");
        }

        // An IDC whose cluster was never read sells nothing and has no reading's time.
        let chengdu = json!({ "region": "west-china", "province": "sichuan", "city": "chengdu",
            "carriers": ["telecom"], "capacity": { "cpu": "8", "memory": "32Gi" } });
        app.put("/v1/admin/idcs/sc-cd-1", ADMIN, chengdu).await.expect_status(StatusCode::OK);
        // A cluster read smaller than what gd-gz-1 promised makes it short: the alert's gauge.
        let small = Resources::new(MilliCpu(8000), MiB(32768), 0);
        let cluster = ClusterCapacity {
            nodes: 1,
            schedulable_nodes: 1,
            allocatable: small,
            foreign: Resources::ZERO,
            node_shapes: vec![small],
        };
        app.advance(30);
        let id = IdcId("gd-gz-1".into());
        app.store.record_cluster_capacity(&id, &cluster, app.clock_now()).await.expect("a reading recorded");

        let seen = scrape(&app).await;
        assert_eq!(of(&seen, "eci_idc_sellable_cpu_millis", "sc-cd-1"), Some(0.0), "{seen:?}");
        assert_eq!(of(&seen, "eci_idc_capacity_read_timestamp_seconds", "sc-cd-1"), None, "{seen:?}");
        assert_eq!(of(&seen, "eci_idc_sellable_cpu_millis", "gd-gz-1"), Some(8_000.0), "{seen:?}");
        assert_eq!(of(&seen, "eci_idc_capacity_short", "gd-gz-1"), Some(1.0), "{seen:?}");
        assert_eq!(
            of(&seen, "eci_idc_capacity_read_timestamp_seconds", "gd-gz-1"),
            Some((t0().timestamp() + 30) as f64)
        );
        assert_eq!(of(&seen, "eci_idc_capacity_short", "gd-sz-1"), Some(0.0), "only gd-gz-1 is short");
    })
    .await;
}

#[tokio::test]
async fn a_store_that_cannot_be_read_leaves_out_the_idc_gauges_and_nothing_else() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        app.send(Method::GET, "/healthz", None, None).await.expect_status(StatusCode::OK);
        app.store.close().await;
        let seen = scrape(&app).await;
        assert!(seen.keys().all(|(name, _)| !name.starts_with("eci_idc_")), "{seen:?}");
        assert!(seen.keys().any(|(name, _)| name == "eci_http_requests_total"), "{seen:?}");
        assert_eq!(of(&seen, "eci_batches_created_total", ""), Some(0.0), "{seen:?}");
    })
    .await;
}
