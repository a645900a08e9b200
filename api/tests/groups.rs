//! Autoscaled groups end to end through the router and the scaler's pass, on a clock the tests
//! move: windows opening at their lead and closing exactly, preview mode, a custom-metric load
//! policy with the HPA's behaviour, capacity shortage, failed instances replaced and a failing IDC
//! avoided, shrinking order, deletion and cost, generation conflicts, the lease, and bad input.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, TimeZone, Utc};
use eci_api::scaling::{self, PassReport};
use eci_api::testing::*;
use eci_core::InstanceId;
use serde_json::{Value, json};

/// 2030-01-01 00:00 UTC is 08:00 in Shanghai; 20:00 there is 12:00 UTC.
fn utc(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, h, m, 0).single().expect("a valid time")
}

fn group(name: &str, min: u32, max: u32) -> Value {
    json!({
        "name": name,
        "template": { "spec": { "cpu": "1", "memory": "4Gi" }, "image": "nginx:1.27", "labels": { "app": "edge" } },
        "min": min,
        "max": max,
    })
}

fn evening(desired: u32, lead_seconds: u32) -> Value {
    json!({ "start": "0 20 * * *", "end": "0 23 * * *", "timezone": "Asia/Shanghai",
            "desired": desired, "lead_seconds": lead_seconds })
}

async fn pass(app: &App) -> PassReport {
    scaling::pass(&app.state, app.clock_now(), &|| true).await.expect("a scaler pass")
}

/// Moves the clock to `at` (never back).
fn at(app: &App, at: DateTime<Utc>) {
    let by = at - app.clock_now();
    assert!(by >= Duration::zero(), "the clock only moves forward");
    app.clock.advance(by);
}

async fn create(app: &App, token: &str, body: Value) -> Value {
    app.post("/v1/groups", token, body).await.expect_status(StatusCode::CREATED)
}

async fn get(app: &App, token: &str, id: &str) -> Value {
    app.get(&format!("/v1/groups/{id}"), token).await.expect_status(StatusCode::OK)
}

async fn events(app: &App, token: &str, id: &str) -> Vec<Value> {
    app.all_pages(&format!("/v1/groups/{id}/events"), token).await
}

/// The tenant's instances of the group, by state.
async fn members(app: &App, token: &str) -> BTreeMap<String, Vec<Value>> {
    let mut by_state: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for instance in app.all_pages("/v1/instances", token).await {
        by_state.entry(instance["state"].as_str().unwrap().to_string()).or_default().push(instance);
    }
    by_state
}

async fn live(app: &App, token: &str) -> usize {
    let m = members(app, token).await;
    ["pending", "creating", "running", "unknown"].iter().map(|s| m.get(*s).map_or(0, Vec::len)).sum()
}

/// What the clusters would do: every pending instance starts running now.
async fn start_all(app: &App, token: &str) {
    let pending: Vec<(InstanceId, Option<String>, Option<eci_core::SshEndpoint>)> = members(app, token)
        .await
        .remove("pending")
        .unwrap_or_default()
        .iter()
        .map(|i| (InstanceId(i["id"].as_str().unwrap().to_string()), Some("10.0.0.1".into()), None))
        .collect();
    let ids: Vec<InstanceId> = pending.iter().map(|(id, _, _)| id.clone()).collect();
    app.store.record_created(&ids, app.clock_now()).await.unwrap();
    app.store.record_running(&pending, app.clock_now()).await.unwrap();
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_window_is_reached_at_its_lead_and_left_exactly_at_its_end() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&group("evening", 2, 50), |b| b["schedules"] = json!([evening(10, 600)]));
        let created = create(&app, &acme.token, body).await;
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("g-"), "{id}");
        assert_eq!(created["state"], "active");
        assert_eq!(created["mode"], "auto");
        assert_eq!(created["generation"], 1);
        assert_eq!(created["decided_at"], Value::Null);
        assert_eq!(created["load"], Value::Null);
        assert_eq!(created["schedules"][0]["lead_seconds"], 600);

        // 08:00 Shanghai: outside the window, at the minimum.
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 2);
        let view = get(&app, &acme.token, &id).await;
        assert_eq!((view["current"].as_u64(), view["desired"].as_u64()), (Some(2), Some(2)));
        assert_eq!(view["active_window"], Value::Null);
        assert_eq!(time(&view["next_boundary"]), utc(11, 50), "the window opens at 20:00 less 10 minutes");

        // A tick just before the lead changes nothing.
        at(&app, utc(11, 49));
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 2);

        // At 19:50 Shanghai the group is at the window's count at once, not at a rate.
        at(&app, utc(11, 50));
        let report = pass(&app).await;
        assert_eq!(report.placed, 8);
        assert_eq!(live(&app, &acme.token).await, 10);
        let view = get(&app, &acme.token, &id).await;
        assert_eq!(view["desired"], 10);
        assert_eq!(view["active_window"]["index"], 0);
        assert_eq!(time(&view["active_window"]["starts_at"]), utc(12, 0));
        assert_eq!(time(&view["active_window"]["ends_at"]), utc(15, 0));
        assert_eq!(time(&view["next_boundary"]), utc(15, 0));
        start_all(&app, &acme.token).await;

        // One second before 23:00 it is still booked; at 23:00 it is back at its minimum.
        at(&app, utc(14, 59) + Duration::seconds(59));
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 10);
        at(&app, utc(15, 0));
        let report = pass(&app).await;
        assert_eq!(report.released, 8);
        let by_state = members(&app, &acme.token).await;
        assert_eq!(by_state["stopping"].len(), 8, "running instances stop through the release path");
        assert_eq!(live(&app, &acme.token).await, 2);
        assert_eq!(get(&app, &acme.token, &id).await["current"], 2);

        let log = events(&app, &acme.token, &id).await;
        assert_eq!(
            kinds(&log),
            ["created", "decided", "scaled_out", "decided", "scaled_out", "decided", "scaled_in"],
            "{log:#?}"
        );
        let opened = &log[3];
        assert_eq!(opened["desired"], 10);
        assert_eq!(opened["details"]["window"]["timezone"], "Asia/Shanghai");
        assert_eq!(time(&opened["details"]["window"]["opens_at"]), utc(11, 50));
        assert!(opened["message"].as_str().unwrap().contains("window 0 books 10"), "{opened}");
        let placed: u64 =
            log[4]["details"]["placed"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(placed, 8);
        assert_eq!(log[6]["message"].as_str().unwrap().split(':').next(), Some("released 8"));
    })
    .await;
}

#[tokio::test]
async fn preview_records_every_decision_and_acts_on_none() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&group("trial", 3, 50), |b| {
            b["schedules"] = json!([evening(12, 0)]);
            b["mode"] = json!("preview");
        });
        let id = create(&app, &acme.token, body).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 0, "preview places nothing");
        let view = get(&app, &acme.token, &id).await;
        assert_eq!((view["current"].as_u64(), view["desired"].as_u64()), (Some(0), Some(3)));
        assert!(view["conditions"].as_array().unwrap().contains(&json!("preview")), "{view}");

        at(&app, utc(12, 0));
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 0);
        let log = events(&app, &acme.token, &id).await;
        assert_eq!(kinds(&log), ["created", "decided", "decided"]);
        assert_eq!(log[2]["details"]["would"], json!({ "grow": 12 }));
        assert!(log[2]["message"].as_str().unwrap().ends_with("(preview: nothing done)"), "{}", log[2]);

        // Switching to auto acts at the next pass.
        let patched = app
            .send(
                Method::PATCH,
                &format!("/v1/groups/{id}"),
                Some(&acme.token),
                Some(json!({ "mode": "auto" })),
            )
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(patched["mode"], "auto");
        assert_eq!(patched["generation"], 2, "one change by its tenant; the scaler's writes leave it");
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 12);
    })
    .await;
}

#[tokio::test]
async fn a_custom_metric_grows_the_group_at_the_hpa_rate_and_shrinks_it_after_stabilisation() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&group("load", 2, 40), |b| {
            b["load"] = json!({ "metric": "custom", "target": 100 });
        });
        let id = create(&app, &acme.token, body).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 2, "up to the minimum first, whatever the load");
        start_all(&app, &acme.token).await;
        app.advance(15);
        pass(&app).await;
        let view = get(&app, &acme.token, &id).await;
        assert!(view["conditions"].as_array().unwrap().contains(&json!("metrics_missing")), "{view}");
        assert_eq!(view["current"], 2, "without metrics the load holds the count");

        // Instances started less than 30 s ago are not trusted yet.
        let push = |value: f64| {
            let app = &app;
            let token = acme.token.clone();
            let path = format!("/v1/groups/{id}/metrics");
            async move {
                app.post(&path, &token, json!({ "samples": [{ "value": value }] }))
                    .await
                    .expect_status(StatusCode::NO_CONTENT);
            }
        };
        app.advance(60);
        push(500.0).await;
        pass(&app).await;
        // 5x the target over 2 instances asks for 10; the HPA's default allows max(4, 100%) per 15 s.
        assert_eq!(live(&app, &acme.token).await, 6, "2 + max(4 instances, 100%)");
        let view = get(&app, &acme.token, &id).await;
        assert_eq!(view["metric"]["value"], 500.0);
        assert_eq!(view["metric"]["reporting"], 2);
        assert_eq!(view["desired"], 6);
        assert!(view["reason"].as_str().unwrap().contains("limited by the scale-up policy"), "{view}");

        // The new instances are fresh: left out of the average, nothing counted on a scale-up.
        start_all(&app, &acme.token).await;
        app.advance(15);
        push(500.0).await;
        pass(&app).await;
        // 2 at 500 and 4 counted as 0 make 1000: 10 instances' worth of the target.
        assert_eq!(live(&app, &acme.token).await, 10, "the fresh four count as idle");

        // The load falls: the group holds for the scale-down stabilisation window (300 s).
        start_all(&app, &acme.token).await;
        app.advance(60);
        push(50.0).await;
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 10, "a scale-down waits for the stabilisation window");
        let last_high = app.clock_now() - Duration::seconds(60);
        let mut shrunk_at = None;
        for _ in 0..19 {
            app.advance(15);
            push(50.0).await;
            pass(&app).await;
            if shrunk_at.is_none() && live(&app, &acme.token).await < 10 {
                shrunk_at = Some(app.clock_now());
            }
        }
        // Exactly when the 300 s window stops holding the last high recommendation (a window is
        // the last 300 s, its start left out, as the HPA's).
        assert_eq!(shrunk_at, Some(last_high + Duration::seconds(300)));
        // Half the target over 10 instances asks for 5 once the window holds only low recommendations.
        assert_eq!(live(&app, &acme.token).await, 5);
        let log = events(&app, &acme.token, &id).await;
        let scaled_in = log.iter().find(|e| e["kind"] == "scaled_in").expect("a scale-in event");
        assert_eq!(scaled_in["current"], 10);
        assert_eq!(scaled_in["desired"], 5);
        let decided = log.iter().rev().find(|e| e["kind"] == "decided").unwrap();
        assert_eq!(decided["details"]["load"]["metric"], "custom");
        assert_eq!(decided["details"]["load"]["target"], 100.0);

        // Custom values for another group's instance, or for a group without a custom metric, are refused.
        let other = create(&app, &acme.token, group("plain", 0, 1)).await["id"].as_str().unwrap().to_string();
        let refused = app
            .post(&format!("/v1/groups/{other}/metrics"), &acme.token, json!({ "samples": [{ "value": 1 }] }))
            .await;
        assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_request");
        let stranger = "i-0123456789abcdef0123456789abcdef";
        let refused = app
            .post(
                &format!("/v1/groups/{id}/metrics"),
                &acme.token,
                json!({ "samples": [{ "instance_id": stranger, "value": 1 }] }),
            )
            .await;
        assert_error(&refused, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}

#[tokio::test]
async fn a_short_fleet_places_what_fits_and_says_so_then_tops_up_when_room_returns() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let filler = app.create_batch(&acme.token, batch(FLEET_ROOM - 10)).await;
        let id = create(&app, &acme.token, group("short", 25, 50)).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        let view = get(&app, &acme.token, &id).await;
        assert_eq!((view["current"].as_u64(), view["desired"].as_u64()), (Some(10), Some(25)));
        assert!(view["conditions"].as_array().unwrap().contains(&json!("capacity_limited")), "{view}");
        let log = events(&app, &acme.token, &id).await;
        assert_eq!(kinds(&log), ["created", "decided", "scaled_out", "capacity_limited"]);
        assert!(log[3]["message"].as_str().unwrap().starts_with("only 10 of 25 fit"), "{}", log[3]);

        // Still short: no new event on every tick.
        app.advance(15);
        pass(&app).await;
        assert_eq!(events(&app, &acme.token, &id).await.len(), 4);

        // Room comes back: the group tops up and the condition clears.
        let filler = filler["id"].as_str().unwrap();
        app.delete(&format!("/v1/batches/{filler}?confirm=86"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        app.advance(15);
        pass(&app).await;
        let view = get(&app, &acme.token, &id).await;
        assert_eq!(view["current"], 25);
        assert!(!view["conditions"].as_array().unwrap().contains(&json!("capacity_limited")), "{view}");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn failed_instances_are_replaced_away_from_an_idc_where_they_keep_failing() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&group("healing", 12, 12), |b| {
            b["placement"] = json!({ "areas": ["guangzhou", "shenzhen"] })
        });
        let id = create(&app, &acme.token, body).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 12);

        // Every instance in gd-gz-1 fails (its cluster keeps refusing them).
        let in_gz: Vec<InstanceId> = app
            .all_pages("/v1/instances?area=guangzhou", &acme.token)
            .await
            .iter()
            .map(|i| InstanceId(i["id"].as_str().unwrap().to_string()))
            .collect();
        assert!(in_gz.len() >= 3, "the spread puts several in the largest IDC: {}", in_gz.len());
        app.advance(30);
        for instance in &in_gz {
            let failed =
                eci_core::lifecycle::Observed::Failed { reason: "ImagePullBackOff".into(), ended_at: None };
            app.store.record_observation(instance, &failed, app.clock_now()).await.unwrap();
        }
        app.advance(15);
        pass(&app).await;
        let view = get(&app, &acme.token, &id).await;
        assert_eq!(view["current"], 12, "the failed ones are replaced");
        assert_eq!(view["avoided_idcs"][0]["idc_id"], "gd-gz-1", "{view}");
        assert_eq!(view["avoided_idcs"][0]["strikes"], 1);
        assert!(view["conditions"].as_array().unwrap().contains(&json!("avoiding_idcs")));
        let replacements = app.all_pages("/v1/instances?state=pending&area=guangzhou", &acme.token).await;
        assert!(replacements.is_empty(), "nothing new goes to the failing IDC: {replacements:?}");
        let log = events(&app, &acme.token, &id).await;
        let avoiding = log.iter().find(|e| e["kind"] == "avoiding_idc").expect("an avoidance event");
        assert!(avoiding["message"].as_str().unwrap().contains("gd-gz-1"), "{avoiding}");

        // After the first avoidance (60 s) the IDC takes instances again.
        app.advance(61);
        pass(&app).await;
        assert!(get(&app, &acme.token, &id).await["avoided_idcs"].as_array().unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn shrinking_removes_unstarted_instances_first_then_evens_out_the_idcs_newest_first() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let id = create(&app, &acme.token, group("shrink", 20, 30)).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        start_all(&app, &acme.token).await;
        let patch = |min: u32| {
            let app = &app;
            let path = format!("/v1/groups/{id}");
            let token = acme.token.clone();
            async move {
                app.send(Method::PATCH, &path, Some(&token), Some(json!({ "min": min })))
                    .await
                    .expect_status(StatusCode::OK);
            }
        };
        // Four more that have not started yet.
        patch(24).await;
        app.advance(15);
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 24);
        patch(18).await;
        app.advance(15);
        pass(&app).await;
        let by_state = members(&app, &acme.token).await;
        assert_eq!(by_state.get("pending").map_or(0, Vec::len), 0, "the four unstarted go first");
        assert_eq!(by_state["terminated"].len(), 4, "unstarted instances end at once");
        assert_eq!(by_state["stopping"].len(), 2, "then two running ones");
        assert_eq!(by_state["running"].len(), 18);

        // Deleting the group releases everything, and its cost covers every instance it had.
        app.advance(60);
        let deleted = app
            .delete(&format!("/v1/groups/{id}?confirm=18"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(deleted["state"], "deleted");
        assert_eq!(live(&app, &acme.token).await, 0);
        app.delete(&format!("/v1/groups/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        let cost = app
            .get(&format!("/v1/groups/{id}/cost?instances=true"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(cost["instances"].as_array().unwrap().len(), 24);
        assert!(cost["total"]["total_micros"].as_u64().unwrap() > 0, "{cost}");
        let listed = app.all_pages("/v1/groups?state=deleted", &acme.token).await;
        assert_eq!(ids(&listed), [id.as_str()]);
        assert!(app.all_pages("/v1/groups", &acme.token).await.is_empty());
        pass(&app).await;
        assert_eq!(live(&app, &acme.token).await, 0, "a deleted group is never scaled again");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_change_decided_on_an_old_generation_is_refused() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let id = create(&app, &acme.token, group("gen", 1, 5)).await["id"].as_str().unwrap().to_string();
        let stale = app
            .send(
                Method::PATCH,
                &format!("/v1/groups/{id}"),
                Some(&acme.token),
                Some(json!({ "generation": 7, "max": 9 })),
            )
            .await;
        assert_error(&stale, StatusCode::CONFLICT, "generation_conflict");
        assert_eq!(get(&app, &acme.token, &id).await["max"], 5, "nothing changed");

        // A scaler that read the group before a PATCH cannot act on what it read.
        let read = app.store.active_groups().await.unwrap().remove(0).group;
        app.send(Method::PATCH, &format!("/v1/groups/{id}"), Some(&acme.token), Some(json!({ "max": 9 })))
            .await
            .expect_status(StatusCode::OK);
        let refused = app.store.grow_group(&read, 3, &Default::default(), app.clock_now()).await;
        assert!(matches!(refused, Err(eci_store::Error::StaleGeneration(_))), "{refused:?}");
        assert_eq!(live(&app, &acme.token).await, 0, "no instance was placed for the stale decision");
        let refused = app.store.shrink_group(&read, &[], app.clock_now()).await;
        assert!(matches!(refused, Err(eci_store::Error::StaleGeneration(_))), "{refused:?}");

        // Two scalers that read the same revision: the first to write wins, the other writes nothing.
        let (one, two) = {
            let mut groups = app.store.active_groups().await.unwrap();
            (groups.remove(0).group, app.store.active_groups().await.unwrap().remove(0).group)
        };
        let grown = app.store.grow_group(&one, 2, &Default::default(), app.clock_now()).await.unwrap();
        assert_eq!(grown.count(), 2);
        let refused = app.store.grow_group(&two, 2, &Default::default(), app.clock_now()).await;
        assert!(matches!(refused, Err(eci_store::Error::StaleGeneration(_))), "{refused:?}");
        assert_eq!(live(&app, &acme.token).await, 2, "one decision, acted on once");
        assert_eq!(
            get(&app, &acme.token, &id).await["generation"],
            2,
            "the scaler's writes leave the generation"
        );

        // Names are the tenant's to fix; a deleted group no longer changes.
        let taken = app.post("/v1/groups", &acme.token, group("gen", 0, 1)).await;
        assert_eq!(assert_error(&taken, StatusCode::CONFLICT, "conflict")["field"], "name");
        app.delete(&format!("/v1/groups/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        let view = get(&app, &acme.token, &id).await;
        assert_eq!((view["current"].as_u64(), view["desired"].as_u64()), (Some(0), Some(0)), "{view}");
        let late = app
            .send(Method::PATCH, &format!("/v1/groups/{id}"), Some(&acme.token), Some(json!({ "max": 3 })))
            .await;
        assert_error(&late, StatusCode::CONFLICT, "illegal_state");
        create(&app, &acme.token, group("gen", 0, 1)).await;

        // Another tenant sees no such group.
        let other = app.tenant("other").await;
        let hidden = app.get(&format!("/v1/groups/{id}"), &other.token).await;
        assert_error(&hidden, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}

#[tokio::test]
async fn a_scaler_that_may_have_lost_its_lease_writes_nothing() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        create(&app, &acme.token, group("leased", 4, 5)).await;
        let report = scaling::pass(&app.state, app.clock_now(), &|| false).await.unwrap();
        assert_eq!(report.skipped, 1, "a scaler that may have lost its lease writes nothing");
        assert_eq!(live(&app, &acme.token).await, 0);
    })
    .await;
}

#[tokio::test]
async fn bad_groups_are_refused_with_the_field_that_is_wrong() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let base = group("bad", 1, 5);
        let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
            (with(&base, |b| b["name"] = json!("-no-")), StatusCode::BAD_REQUEST, "invalid_request", "name"),
            (with(&base, |b| b["min"] = json!(-1)), StatusCode::BAD_REQUEST, "invalid_request", "body"),
            (with(&base, |b| b["max"] = json!(10001)), StatusCode::BAD_REQUEST, "invalid_request", "max"),
            (with(&base, |b| b["template"]["spec"]["cpu"] = json!("lots")), StatusCode::BAD_REQUEST, "invalid_request", "template.spec.cpu"),
            (with(&base, |b| b["template"]["labels"] = json!({ "eci.io/group": "g-x" })), StatusCode::BAD_REQUEST, "invalid_request", "template.labels.eci.io/group"),
            (with(&base, |b| b["min"] = json!(6)), StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", "max"),
            (with(&base, |b| b["schedules"] = json!([{ "start": "0 25 * * *", "end": "0 23 * * *", "timezone": "UTC", "desired": 3 }])), StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", "schedules[0]"),
            (with(&base, |b| b["schedules"] = json!([evening(3, 0)]) ), StatusCode::CREATED, "", ""),
            (with(&base, |b| { b["name"] = json!("tz"); b["schedules"] = json!([{ "start": "0 20 * * *", "end": "0 23 * * *", "timezone": "Mars/Olympus", "desired": 3 }]) }), StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", "schedules[0]"),
            (with(&base, |b| b["schedules"] = json!([{ "start": "0 20 * *", "end": "0 23 * * *", "timezone": "UTC", "desired": 3 }])), StatusCode::BAD_REQUEST, "invalid_request", "schedules[0].start"),
            (with(&base, |b| b["load"] = json!({ "metric": "memory", "target": 50 })), StatusCode::BAD_REQUEST, "invalid_request", "load.metric"),
            (with(&base, |b| b["load"] = json!({ "metric": "cpu", "target": 0 })), StatusCode::BAD_REQUEST, "invalid_request", "load.target"),
            (with(&base, |b| b["load"] = json!({ "metric": "cpu", "target": 60, "tolerance": 1.5 })), StatusCode::BAD_REQUEST, "invalid_request", "load.tolerance"),
            (with(&base, |b| b["load"] = json!({ "metric": "cpu", "target": 60, "scale_up": { "policies": [] } })), StatusCode::BAD_REQUEST, "invalid_request", "load.scale_up.policies"),
            (with(&base, |b| b["mode"] = json!("yolo")), StatusCode::BAD_REQUEST, "invalid_request", "mode"),
        ];
        for (body, status, code, field) in cases {
            let reply = app.post("/v1/groups", &acme.token, body.clone()).await;
            if status == StatusCode::CREATED {
                reply.expect_status(StatusCode::CREATED);
                continue;
            }
            let details = assert_error(&reply, status, code);
            assert_eq!(details["field"], field, "{body}: {reply:?}");
        }
        // Names are unique among the tenant's active groups.
        let again = app.post("/v1/groups", &acme.token, base.clone()).await;
        assert_error(&again, StatusCode::CONFLICT, "conflict");

        // Metric pushes are checked and bounded in rate.
        let id = create(&app, &acme.token, with(&group("pushed", 0, 3), |b| b["load"] = json!({ "metric": "custom", "target": 1 })))
            .await["id"].as_str().unwrap().to_string();
        let path = format!("/v1/groups/{id}/metrics");
        for (body, field) in [
            (json!({ "samples": [] }), "samples"),
            (json!({ "samples": [{ "value": -1 }] }), "samples[0].value"),
            (json!({ "samples": [{ "value": 1e300 }] }), "samples[0].value"),
            (json!({ "samples": [{ "value": 1, "instance_id": "nope" }] }), "samples[0].instance_id"),
        ] {
            assert_invalid(&app.post(&path, &acme.token, body).await, field);
        }
        for _ in 0..scaling_pushes() {
            app.post(&path, &acme.token, json!({ "samples": [{ "value": 1 }] })).await.expect_status(StatusCode::NO_CONTENT);
        }
        let limited = app.post(&path, &acme.token, json!({ "samples": [{ "value": 1 }] })).await;
        assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert_eq!(limited.2["retry-after"], "1");
    })
    .await;
}

fn scaling_pushes() -> u64 {
    eci_api::groups::METRIC_PUSHES_PER_SECOND
}

#[tokio::test]
async fn unknown_instances_count_and_are_never_removed() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let id = create(&app, &acme.token, group("edge", 6, 10)).await["id"].as_str().unwrap().to_string();
        pass(&app).await;
        start_all(&app, &acme.token).await;
        // The link to every IDC is lost: the instances turn unknown.
        for idc in IDC_IDS {
            app.store.mark_idc_disconnected(&eci_core::IdcId(idc.into()), app.clock_now()).await.unwrap();
        }
        app.send(Method::PATCH, &format!("/v1/groups/{id}"), Some(&acme.token), Some(json!({ "min": 2 })))
            .await
            .expect_status(StatusCode::OK);
        app.advance(15);
        pass(&app).await;
        let view = get(&app, &acme.token, &id).await;
        assert_eq!(view["current"], 6, "unknown instances are still running");
        assert!(view["conditions"].as_array().unwrap().contains(&json!("disconnected_idcs")), "{view}");
        let by_state = members(&app, &acme.token).await;
        assert_eq!(by_state["unknown"].len(), 6, "none of them is released");
    })
    .await;
}

#[tokio::test]
async fn a_new_york_window_opens_once_across_both_daylight_saving_changes() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let window = |start: &str, end: &str| {
            json!({ "start": start, "end": end, "timezone": "America/New_York", "desired": 5 })
        };
        let body = with(&group("new-york", 0, 10), |b| {
            b["schedules"] = json!([window("30 2 * * *", "0 4 * * *"), window("30 1 * * *", "45 1 * * *")]);
        });
        let id = create(&app, &acme.token, body).await["id"].as_str().unwrap().to_string();
        let utc_on = |month: u32, day: u32, h: u32, m: u32| Utc.with_ymd_and_hms(2030, month, day, h, m, 0).unwrap();
        let count_at = |when: DateTime<Utc>| {
            let app = &app;
            let token = acme.token.clone();
            async move {
                at(app, when);
                pass(app).await;
                live(app, &token).await
            }
        };
        // 10 March: 02:00 EST jumps to 03:00 EDT, so 02:30 never happens; the window opens when the
        // jump ends (03:00 EDT, 07:00 UTC) and ends at 04:00 EDT (08:00 UTC).
        assert_eq!(count_at(utc_on(3, 10, 6, 59)).await, 0);
        assert_eq!(count_at(utc_on(3, 10, 7, 0)).await, 5);
        assert_eq!(time(&get(&app, &acme.token, &id).await["next_boundary"]), utc_on(3, 10, 8, 0));
        assert_eq!(count_at(utc_on(3, 10, 7, 59)).await, 5);
        assert_eq!(count_at(utc_on(3, 10, 8, 0)).await, 0);
        // 3 November: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice; the window opens
        // the first time (05:30 UTC), closes at the first 01:45 (05:45 UTC), and not again.
        assert_eq!(count_at(utc_on(11, 3, 5, 29)).await, 0);
        assert_eq!(count_at(utc_on(11, 3, 5, 30)).await, 5);
        assert_eq!(count_at(utc_on(11, 3, 5, 45)).await, 0);
        assert_eq!(count_at(utc_on(11, 3, 6, 30)).await, 0, "the repeated 01:30 is not a second start");
        assert_eq!(count_at(utc_on(11, 3, 6, 45)).await, 0);
    })
    .await;
}

/// Two replicas run the scaler's loop over one database and one set of leases: the holder acts
/// and the other only waits; once the holder stops (giving its lease up), the other takes over.
/// The loops tick every 20 ms of real time. The second replica's clock reads twelve hours earlier,
/// in the group's evening window, so that anything it did would show; its clock is behind the
/// first's, so the first's lease cannot run out for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_scalers_only_the_lease_holder_acts_and_the_other_takes_over() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&group("twice", 5, 20), |b| b["schedules"] = json!([evening(9, 0)]));
        let id = create(&app, &acme.token, body).await["id"].as_str().unwrap().to_string();
        let leases = eci_store::coordination::Leases::in_process();
        let replica = |name: &str| scaling::ScalerConfig {
            tick: std::time::Duration::from_millis(20),
            lease_ttl: std::time::Duration::from_secs(45),
            holder: name.to_string(),
        };
        let ticks = |n: u64| tokio::time::sleep(std::time::Duration::from_millis(20 * n));
        let (stop_a, stopped_a) = tokio::sync::watch::channel(false);
        let (stop_b, stopped_b) = tokio::sync::watch::channel(false);
        let a = tokio::spawn(scaling::run(app.state.clone(), leases.clone(), replica("a"), stopped_a));
        // The second replica is another process's state over the same database.
        let evening_clock =
            std::sync::Arc::new(eci_core::ManualClock::new(app.clock_now() - Duration::hours(12)));
        let other = eci_api::AppState::new(
            app.store.clone(),
            eci_store::coordination::RateWindows::in_process(),
            evening_clock,
            eci_api::ApiConfig::default(),
        );
        let b = tokio::spawn(scaling::run(other, leases.clone(), replica("b"), stopped_b));
        for _ in 0..500 {
            if live(&app, &acme.token).await >= 5 {
                break;
            }
            ticks(1).await;
        }
        ticks(20).await;
        assert_eq!(
            live(&app, &acme.token).await,
            5,
            "only the holder acted: at 08:00 the group is at its minimum"
        );
        let scale_outs =
            events(&app, &acme.token, &id).await.iter().filter(|e| e["kind"] == "scaled_out").count();
        assert_eq!(scale_outs, 1);

        stop_a.send(true).unwrap();
        a.await.unwrap();
        app.send(Method::PATCH, &format!("/v1/groups/{id}"), Some(&acme.token), Some(json!({ "min": 7 })))
            .await
            .expect_status(StatusCode::OK);
        for _ in 0..500 {
            if live(&app, &acme.token).await >= 9 {
                break;
            }
            ticks(1).await;
        }
        assert_eq!(live(&app, &acme.token).await, 9, "the second replica took the lease over, on its clock");
        stop_b.send(true).unwrap();
        b.await.unwrap();
    })
    .await;
}
