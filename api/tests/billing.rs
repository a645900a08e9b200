//! Per-second billing through the API: usage grouped every way, a batch's cost, a price change that
//! splits an instance's time, a true end time reported late, and invoices that become final and carry
//! later corrections as adjustment lines, never rewritten.

use axum::http::StatusCode;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use eci_api::testing::*;
use eci_core::InstanceId;
use eci_store::instances::Observed;
use serde_json::{Value, json};

fn moment(seconds: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(seconds * 1000)
}

fn query_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn total(view: &Value) -> i64 {
    view["total_micros"].as_i64().unwrap_or_else(|| panic!("a total in micro-units: {view}"))
}

async fn instance_ids(app: &App, token: &str, batch: &Value) -> Vec<String> {
    let id = batch["id"].as_str().expect("a batch id");
    ids(&app.all_pages(&format!("/v1/batches/{id}/instances"), token).await)
}

/// What the instance manager would record: the instance's Pod made, then running from `at`.
async fn runs_from(app: &App, id: &str, at: DateTime<Utc>) {
    let id = InstanceId(id.to_string());
    app.store.record_created(std::slice::from_ref(&id), at).await.expect("creating");
    let running = Observed::Running { ip: Some("10.0.0.9".into()), ssh: None };
    app.store.record_observation(&id, &running, at).await.expect("running");
}

#[tokio::test]
async fn usage_costs_and_invoices_are_exact_to_the_micro_unit() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let other = app.tenant("other").await;
        let t = acme.token.as_str();
        // 1 vCPU and 4 GiB of container at the base price (40 per vCPU-second, 5 per GiB-second):
        // 60 micro-units a second.
        let probe = app.create_batch(t, with(&batch(2), |b| b["labels"] = json!({"team": "probe"}))).await;
        let single = app.create_batch(t, batch(1)).await;
        let (probes, singles) = (instance_ids(&app, t, &probe).await, instance_ids(&app, t, &single).await);
        let (a, b, c) = (probes[0].as_str(), probes[1].as_str(), singles[0].as_str());
        runs_from(&app, a, moment(10)).await;
        runs_from(&app, b, moment(10)).await;
        runs_from(&app, c, moment(20)).await;

        // Live usage: every running instance up to now, this month by default, costed as if it ended
        // now: instances younger than a minute are billed the one-minute minimum, as the invoice says.
        app.advance(30);
        let young = app.get("/v1/usage", t).await.expect_status(StatusCode::OK);
        assert_eq!((young["total"]["billed_ms"].as_i64(), total(&young["total"])), (Some(180_000), 3 * 60 * 60));
        let draft = app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK);
        assert_eq!(total(&draft), total(&young["total"]));
        app.advance(70);
        let usage = app.get("/v1/usage", t).await.expect_status(StatusCode::OK);
        assert_eq!((usage["instances"].as_u64(), total(&usage["total"])), (Some(3), 90 * 60 * 2 + 80 * 60));
        assert_eq!(usage["total"]["billed_ms"], 260_000);
        assert_eq!(usage["total"]["cpu_milli_vcpu_ms"], "260000000");
        let by_team = app.get("/v1/usage?group_by=label:team", t).await.expect_status(StatusCode::OK);
        let groups: Vec<(String, i64)> = by_team["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["key"].as_str().unwrap().to_string(), total(&g["totals"])))
            .collect();
        assert_eq!(groups, vec![(String::new(), 4_800), ("probe".to_string(), 10_800)]);
        for group_by in ["batch", "area", "carrier", "runtime", "day"] {
            let grouped = app.get(&format!("/v1/usage?group_by={group_by}"), t).await.expect_status(StatusCode::OK);
            let sum: i64 = grouped["groups"].as_array().unwrap().iter().map(|g| total(&g["totals"])).sum();
            assert_eq!(sum, 15_600, "groups by {group_by} add up to the total");
        }
        let theirs = app.get("/v1/usage", &other.token).await.expect_status(StatusCode::OK);
        assert_eq!((theirs["instances"].as_u64(), total(&theirs["total"])), (Some(0), 0));

        // A released instance is billed until its Pod is gone, rounded up to the second: 120.2 s -> 121 s.
        app.delete(&format!("/v1/instances/{a}"), t).await.expect_status(StatusCode::OK);
        let released = InstanceId(a.into());
        app.store.record_observation(&released, &Observed::Gone, moment(130) + Duration::milliseconds(200)).await.unwrap();
        // An instance whose cluster reports its true end is billed to then: 30.5 s, so the 60 s minimum.
        let oom = Observed::Failed { reason: "OOMKilled".into(), ended_at: Some(moment(50) + Duration::milliseconds(500)) };
        app.store.record_observation(&InstanceId(c.into()), &oom, moment(140)).await.unwrap();

        // Prices never change the past; a new version applies from its moment on.
        let price = |id: &str, from: DateTime<Utc>, cpu: u64| {
            json!({"id": id, "runtime": "container", "effective_from": query_time(from),
                   "cpu_micros_per_vcpu_second": cpu, "memory_micros_per_gib_second": 5, "gpu_micros_per_gpu_second": 1500})
        };
        let past = app.post("/v1/admin/prices", ADMIN, price("container-past", moment(0), 80)).await;
        assert_error(&past, StatusCode::UNPROCESSABLE_ENTITY, "invalid_price");
        app.post("/v1/admin/prices", ADMIN, price("container-2030", moment(300), 80)).await.expect_status(StatusCode::CREATED);
        let twice = app.post("/v1/admin/prices", ADMIN, price("container-2030", moment(900), 90)).await;
        assert_error(&twice, StatusCode::UNPROCESSABLE_ENTITY, "invalid_price");
        let bad = with(&price("vm-x", moment(900), 1), |p| p["runtime"] = json!("wasm"));
        assert_invalid(&app.post("/v1/admin/prices", ADMIN, bad).await, "runtime");
        assert_error(&app.post("/v1/admin/prices", t, price("mine", moment(900), 1)).await, StatusCode::FORBIDDEN, "forbidden");
        let prices = app.get("/v1/admin/prices", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(prices.as_array().unwrap().len(), 4, "three base prices and the new one");

        // The batch's cost splits the live instance at the price change: 290 s at 60, 100 s at 100.
        app.advance(300);
        let probe_id = probe["id"].as_str().unwrap();
        let cost = app.get(&format!("/v1/batches/{probe_id}/cost?instances=true"), t).await.expect_status(StatusCode::OK);
        let each: Vec<i64> = cost["instances"].as_array().unwrap().iter().map(|i| total(&i["totals"])).collect();
        let mut expected = vec![121 * 60, 290 * 60 + 100 * 100];
        if probes[0] > probes[1] {
            expected.reverse();
        }
        assert_eq!(each, expected);
        assert_eq!(total(&cost["total"]), 7_260 + 27_400);
        assert!(app.get(&format!("/v1/batches/{probe_id}/cost"), t).await.expect_status(StatusCode::OK)["instances"].is_null());
        assert_error(&app.get(&format!("/v1/batches/{probe_id}/cost"), &other.token).await, StatusCode::NOT_FOUND, "not_found");

        // This month's invoice is a draft, one line per price charged, and exports as CSV.
        let invoices = app.get("/v1/invoices", t).await.expect_status(StatusCode::OK);
        assert_eq!(invoices.as_array().unwrap().len(), 1);
        assert_eq!((invoices[0]["period"].as_str(), invoices[0]["state"].as_str()), (Some("2030-01"), Some("draft")));
        let january = app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK);
        assert_eq!(total(&january), 7_260 + 27_400 + 3_600);
        let lines: Vec<(&str, &str, i64)> = january["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["kind"].as_str().unwrap(), l["price_id"].as_str().unwrap(), l["amount_micros"].as_i64().unwrap()))
            .collect();
        assert_eq!(lines, vec![("usage", "base-container", 7_260 + 290 * 60 + 3_600), ("usage", "container-2030", 100 * 100)]);
        let (status, _, headers) = app.get("/v1/invoices/2030-01?format=csv", t).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/csv"));

        // February: January is final once its grace period is over, with B billed as running to the end.
        app.clock.advance(moment(35 * 86_400) - app.clock_now());
        let final_january = app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK);
        assert_eq!(final_january["state"], "final");
        let b_in_january = 290 * 60 + (31 * 86_400 - 300) * 100;
        assert_eq!(total(&final_january), 7_260 + 3_600 + b_in_january);

        // B's IDC comes back and reports that B died on 20 January: January stays as it was, and
        // February's invoice credits the difference.
        let died = Observed::Failed { reason: "Error".into(), ended_at: Some(moment(19 * 86_400)) };
        app.store.record_observation(&InstanceId(b.into()), &died, app.clock_now()).await.unwrap();
        let still = app.get("/v1/invoices/2030-01", t).await.expect_status(StatusCode::OK);
        assert_eq!((still["state"].clone(), still["lines"].clone(), total(&still)), (json!("final"), final_january["lines"].clone(), total(&final_january)));
        let february = app.get("/v1/invoices/2030-02", t).await.expect_status(StatusCode::OK);
        assert_eq!(february["state"], "draft");
        let credit = -(31 - 19) * 86_400 * 100;
        assert_eq!(total(&february), credit);
        let adjustment = &february["lines"][0];
        assert_eq!((adjustment["kind"].as_str(), adjustment["period"].as_str(), adjustment["price_id"].as_str()), (Some("adjustment"), Some("2030-01"), Some("container-2030")));

        // Once February is final too, the correction is not made again.
        app.clock.advance(Duration::days(30));
        assert_eq!(app.get("/v1/invoices/2030-02", t).await.expect_status(StatusCode::OK)["state"], "final");
        assert_eq!(total(&app.get("/v1/invoices/2030-03", t).await.expect_status(StatusCode::OK)), 0);
        let listed = app.get("/v1/invoices", t).await.expect_status(StatusCode::OK);
        let states: Vec<(&str, &str)> = listed.as_array().unwrap().iter().map(|i| (i["period"].as_str().unwrap(), i["state"].as_str().unwrap())).collect();
        assert_eq!(states, vec![("2030-01", "final"), ("2030-02", "final"), ("2030-03", "draft")]);

        // Bad questions get clear answers.
        assert_invalid(&app.get("/v1/usage?group_by=colour", t).await, "group_by");
        assert_invalid(&app.get("/v1/usage?group_by=label:", t).await, "group_by");
        let reversed = format!("/v1/usage?from={}&to={}", query_time(moment(100)), query_time(moment(50)));
        assert_unprocessable(&app.get(&reversed, t).await, "to");
        assert_invalid(&app.get("/v1/invoices/2030-13", t).await, "period");
        assert_invalid(&app.get("/v1/invoices/2030-01?format=xml", t).await, "format");
        assert_error(&app.get("/v1/invoices/2029-12", t).await, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}
