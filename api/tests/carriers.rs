//! Batches asking for several carriers, through the router: spread over the carriers as over the
//! IDCs, mixed within dual-line IDCs by default or one carrier per IDC when asked, and the batch's
//! placement shows it.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use serde_json::{Value, json};

/// Three dual-line (telecom and unicom) IDCs of room for 16 small instances each (their clusters
/// read as big as their bounds), one per city of Sichuan, so that a city in the placement view
/// stands for one IDC.
const CITIES: [&str; 3] = ["chengdu", "mianyang", "leshan"];

async fn with_dual_line_idcs(app: &App) {
    for city in CITIES {
        let idc = json!({
            "region": "west-china", "province": "sichuan", "city": city,
            "carriers": ["telecom", "unicom"], "capacity": { "cpu": "16", "memory": "64Gi" },
        });
        let id = format!("sc-{city}-1");
        app.put(&format!("/v1/admin/idcs/{id}"), ADMIN, idc).await.expect_status(StatusCode::OK);
        app.read_cluster_as_bound(&id).await;
    }
}

fn in_sichuan(count: u64, carrier_per_idc: Option<&str>) -> Value {
    let mut placement = json!({ "areas": ["sichuan"], "carriers": ["telecom", "unicom"] });
    if let Some(mode) = carrier_per_idc {
        placement["carrier_per_idc"] = json!(mode);
    }
    batch_in(count, placement)
}

/// The batch's placement view as city -> carrier -> count.
fn by_city(batch: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((_, _, city, carrier), n) in placement_of(batch) {
        *out.entry(city).or_default().entry(carrier).or_default() += n;
    }
    out
}

fn by_carrier(batch: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((_, _, _, carrier), n) in placement_of(batch) {
        *out.entry(carrier).or_default() += n;
    }
    out
}

#[tokio::test]
async fn two_carriers_over_dual_line_idcs_are_both_in_the_placement_and_mixed_within_each_idc() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        with_dual_line_idcs(&app).await;
        let acme = app.tenant("acme").await;

        let batch = app.create_batch(&acme.token, in_sichuan(30, None)).await;
        let half = BTreeMap::from([("telecom".to_string(), 5), ("unicom".to_string(), 5)]);
        let expected: BTreeMap<String, BTreeMap<String, u64>> =
            CITIES.iter().map(|c| (c.to_string(), half.clone())).collect();
        assert_eq!(by_city(&batch), expected, "{batch}");
        assert_eq!(batch["placement_request"]["carrier_per_idc"], "any", "the default is spelt out");

        let id = batch["id"].as_str().unwrap();
        let read = app.get(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(read, batch);
        let instances = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        assert_eq!(by_location(&instances), placement_of(&batch), "the instances are where it says");
        // Each IDC's capacity is taken once, whatever carriers its instances use.
        assert_eq!(app.capacity(&acme.token, "cpu=1&memory=4Gi&area=sichuan").await, 3 * 16 - 30);
    })
    .await;
}

#[tokio::test]
async fn one_carrier_per_idc_gives_every_idc_a_single_carrier_and_uses_both() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        with_dual_line_idcs(&app).await;
        let acme = app.tenant("acme").await;

        let batch = app.create_batch(&acme.token, in_sichuan(30, Some("one"))).await;
        let cities = by_city(&batch);
        assert_eq!(cities.len(), 3, "{batch}");
        for (city, carriers) in &cities {
            assert_eq!(carriers.len(), 1, "{city} is reached through one carrier: {batch}");
            assert_eq!(carriers.values().sum::<u64>(), 10, "{city} takes its share: {batch}");
        }
        // Three IDCs of 10 for two carriers: as near 15 each as whole IDCs allow.
        let mut totals: Vec<u64> = by_carrier(&batch).into_values().collect();
        totals.sort_unstable();
        assert_eq!(totals, [10, 20], "{batch}");
        assert_eq!(batch["placement_request"]["carrier_per_idc"], "one");

        let id = batch["id"].as_str().unwrap();
        let instances = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        assert_eq!(by_location(&instances), placement_of(&batch));
    })
    .await;
}

#[tokio::test]
async fn a_bad_carrier_per_idc_is_refused_naming_the_field_and_the_document_lists_the_words() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for bad in ["two", "One", ""] {
            let placement = json!({ "carriers": ["telecom", "unicom"], "carrier_per_idc": bad });
            let reply = app.post("/v1/batches", &acme.token, batch_in(1, placement)).await;
            let details = assert_invalid(&reply, "placement.carrier_per_idc");
            assert!(
                details["reason"].as_str().unwrap().contains("any, one"),
                "says what is accepted: {details}"
            );
        }
        let reply = app.post("/v1/batches", &acme.token, batch_in(1, json!({ "carrier_per_idc": 1 }))).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request");
        let listed = app.get("/v1/batches", &acme.token).await.expect_status(StatusCode::OK);
        assert!(items(&listed).is_empty(), "nothing was created: {listed}");

        let doc = app.send(Method::GET, "/v1/openapi.json", None, None).await.expect_status(StatusCode::OK);
        let listed = &doc["components"]["schemas"]["PlacementBody"]["properties"]["carrier_per_idc"]["enum"];
        assert_eq!(listed, &json!(["any", "one", null]), "{}", doc["components"]["schemas"]["PlacementBody"]);
    })
    .await;
}
