//! Risk control through the router: deletion protection, the bulk guard, the sliding-window breaker
//! (tripping, staying open, an approval, a reset), TTL expiry held and resumed, and the audit log
//! that records every decision.

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use serde_json::{Value, json};

const PROTECTED: &str = "eci.io/delete-protection";

async fn instances_of(app: &App, token: &str, batch: &str) -> Vec<String> {
    ids(&app.all_pages(&format!("/v1/batches/{batch}/instances"), token).await)
}

async fn patch(app: &App, path: &str, token: &str, body: Value) -> Reply {
    app.send(Method::PATCH, path, Some(token), Some(body)).await
}

async fn audit(app: &App, token: &str, query: &str) -> Vec<Value> {
    app.all_pages(&format!("/v1/risk/audit?{query}"), token).await
}

async fn set_rules(app: &App, change: impl FnOnce(&mut Value)) {
    let mut rules = app.get("/v1/risk/rules", ADMIN).await.expect_status(StatusCode::OK)["rules"].clone();
    change(&mut rules);
    app.put("/v1/admin/risk/rules", ADMIN, rules).await.expect_status(StatusCode::OK);
}

#[tokio::test]
async fn a_protected_batch_instance_or_group_survives_a_delete_until_its_label_is_removed() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let t = app.tenant("acme").await;
        let body = with(&batch(2), |b| b["labels"] = json!({ PROTECTED: "always", "app": "cdn" }));
        let protected = app.create_batch(&t.token, body).await;
        let id = protected["id"].as_str().unwrap().to_string();

        let refused = app.delete(&format!("/v1/batches/{id}"), &t.token).await;
        let details = assert_error(&refused, StatusCode::LOCKED, "delete_protected");
        assert_eq!(
            (details["resource"].as_str(), details["id"].as_str()),
            (Some("batch"), Some(id.as_str()))
        );
        let one = instances_of(&app, &t.token, &id).await[0].clone();
        let refused = app.delete(&format!("/v1/instances/{one}"), &t.token).await;
        assert_error(&refused, StatusCode::LOCKED, "delete_protected");
        let kept = app.get(&format!("/v1/batches/{id}"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(kept["state"], "active");
        assert_eq!(kept["counts"]["pending"], 2, "nothing of it was released: {kept}");

        let unlabelled =
            patch(&app, &format!("/v1/batches/{id}"), &t.token, json!({ "labels": { "app": "cdn" } })).await;
        assert_eq!(unlabelled.expect_status(StatusCode::OK)["labels"], json!({ "app": "cdn" }));
        let released = app.delete(&format!("/v1/batches/{id}"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(released["state"], "released");

        // An instance protected on its own protects its batch from a whole release too.
        let plain = app.create_batch(&t.token, batch(2)).await;
        let plain_id = plain["id"].as_str().unwrap().to_string();
        let member = instances_of(&app, &t.token, &plain_id).await[0].clone();
        let labelled = patch(
            &app,
            &format!("/v1/instances/{member}"),
            &t.token,
            json!({ "labels": { PROTECTED: "always" } }),
        )
        .await
        .expect_status(StatusCode::OK);
        assert_eq!(labelled["labels"][PROTECTED], "always");
        let refused = app.delete(&format!("/v1/batches/{plain_id}"), &t.token).await;
        let details = assert_error(&refused, StatusCode::LOCKED, "delete_protected");
        assert_eq!(details["id"], member.as_str());
        assert_error(
            &app.delete(&format!("/v1/instances/{member}"), &t.token).await,
            StatusCode::LOCKED,
            "delete_protected",
        );
        patch(&app, &format!("/v1/instances/{member}"), &t.token, json!({ "labels": {} }))
            .await
            .expect_status(StatusCode::OK);
        app.delete(&format!("/v1/instances/{member}"), &t.token).await.expect_status(StatusCode::OK);

        // A group's own label protects it.
        let group = json!({ "name": "edge", "labels": { PROTECTED: "always" }, "min": 0, "max": 3,
            "template": { "spec": { "cpu": "1", "memory": "4Gi" }, "image": "nginx:1.27" } });
        let group = app.post("/v1/groups", &t.token, group).await.expect_status(StatusCode::CREATED);
        let gid = group["id"].as_str().unwrap().to_string();
        assert_error(
            &app.delete(&format!("/v1/groups/{gid}"), &t.token).await,
            StatusCode::LOCKED,
            "delete_protected",
        );
        patch(&app, &format!("/v1/groups/{gid}"), &t.token, json!({ "labels": {} }))
            .await
            .expect_status(StatusCode::OK);
        let deleted = app.delete(&format!("/v1/groups/{gid}"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(deleted["state"], "deleted");

        // Every refusal is in the tenant's audit log, and no other tenant sees it.
        let denied = audit(&app, &t.token, "verdict=denied").await;
        assert_eq!(denied.len(), 5, "{denied:#?}");
        assert!(denied.iter().all(|d| d["rule"] == "delete_protection" && d["key_id"] == t.key_id.as_str()));
        let other = app.tenant("other").await;
        assert!(audit(&app, &other.token, "").await.is_empty());
        let allowed = audit(&app, ADMIN, &format!("tenant_id={}&verdict=allowed", t.id)).await;
        let targets: Vec<&str> = allowed.iter().map(|a| a["target_kind"].as_str().unwrap()).collect();
        assert_eq!(targets, ["batch", "instance", "group"], "{allowed:#?}");
        assert_eq!(allowed[0]["count"], 2);
    })
    .await;
}

#[tokio::test]
async fn a_bulk_delete_without_its_number_confirmed_is_refused_and_with_it_goes_through() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let t = app.tenant("acme").await;
        let big = app.create_batch(&t.token, batch(12)).await;
        app.create_batch(&t.token, batch(8)).await;
        let path = format!("/v1/batches/{}", big["id"].as_str().unwrap());

        let refused = app.delete(&path, &t.token).await;
        let details = assert_error(&refused, StatusCode::CONFLICT, "confirmation_required");
        assert_eq!((details["count"].as_u64(), details["live"].as_u64()), (Some(12), Some(20)));
        let wrong = app.delete(&format!("{path}?confirm=11"), &t.token).await;
        assert_error(&wrong, StatusCode::CONFLICT, "confirmation_required");
        assert_eq!(app.get(&path, &t.token).await.expect_status(StatusCode::OK)["state"], "active");

        let released =
            app.delete(&format!("{path}?confirm=12"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(released["state"], "released");
        let bulk = audit(&app, &t.token, "verdict=denied").await;
        assert_eq!(bulk.len(), 2);
        assert!(bulk.iter().all(|a| a["rule"] == "bulk_guard" && a["count"] == 12));
        let garbled = app.delete(&format!("{path}?confirm=many"), &t.token).await;
        assert_error(&garbled, StatusCode::BAD_REQUEST, "invalid_request");
    })
    .await;
}

#[tokio::test]
async fn a_full_window_trips_the_breaker_which_stays_open_until_an_admin_resets_it() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        set_rules(&app, |r| r["per_tenant"] = json!({ "deletions": 5, "window_seconds": 300 })).await;
        let t = app.tenant("acme").await;
        let b = app.create_batch(&t.token, batch(10)).await;
        let instances = instances_of(&app, &t.token, b["id"].as_str().unwrap()).await;
        for id in &instances[..5] {
            app.delete(&format!("/v1/instances/{id}"), &t.token).await.expect_status(StatusCode::OK);
        }
        let refused = app.delete(&format!("/v1/instances/{}", instances[5]), &t.token).await;
        let details = assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");
        let breaker = format!("tenant:{}", t.id);
        assert_eq!(details["rule"], "tenant_window");
        assert_eq!(details["breaker"], breaker.as_str());
        assert_eq!((details["limit"].as_u64(), details["used"].as_u64()), (Some(5), Some(5)));
        assert!(refused.2.get("retry-after").is_some(), "a Retry-After header");
        let instance = app.get(&format!("/v1/instances/{}", instances[5]), &t.token).await;
        assert_eq!(instance.expect_status(StatusCode::OK)["state"], "pending", "untouched");

        // Open until reset: the window emptying on its own does not close it.
        app.advance(301);
        let still = app.delete(&format!("/v1/instances/{}", instances[6]), &t.token).await;
        assert_error(&still, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");
        let open = app.get("/v1/risk/breakers", &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(open["open"][0]["breaker"], breaker.as_str());

        // One held deletion is approved: it goes through, the breaker stays open.
        let holds = app.all_pages("/v1/risk/holds", ADMIN).await;
        assert_eq!(holds.len(), 2, "{holds:#?}");
        let hold = holds.iter().find(|h| h["target_id"] == instances[5].as_str()).unwrap();
        let approve = format!("/v1/admin/risk/holds/{}/approve", hold["id"].as_str().unwrap());
        assert_eq!(app.post(&approve, ADMIN, json!({})).await.expect_status(StatusCode::OK)["state"], "approved");
        app.delete(&format!("/v1/instances/{}", instances[5]), &t.token).await.expect_status(StatusCode::OK);
        let again = app.delete(&format!("/v1/instances/{}", instances[6]), &t.token).await;
        assert_error(&again, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");
        assert_error(&app.post(&approve, ADMIN, json!({})).await, StatusCode::CONFLICT, "hold_not_approvable");

        // Reset: a whole budget goes through again, and the one after it trips the breaker anew.
        let reset = app.post(&format!("/v1/admin/risk/breakers/{breaker}/reset"), ADMIN, json!({})).await;
        assert_eq!(reset.expect_status(StatusCode::OK)["was_open"], true);
        for id in &instances[6..] {
            app.delete(&format!("/v1/instances/{id}"), &t.token).await.expect_status(StatusCode::OK);
        }
        let batch_left = app.get(&format!("/v1/batches/{}", b["id"].as_str().unwrap()), &t.token).await;
        assert_eq!(batch_left.expect_status(StatusCode::OK)["state"], "released", "every instance ended once");

        let events = app.all_pages("/v1/risk/events", &t.token).await;
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["tripped", "approved", "reset"], "{events:#?}");
        assert!(app.get("/v1/risk/breakers", ADMIN).await.expect_status(StatusCode::OK)["open"].as_array().unwrap().is_empty());
        let held = audit(&app, ADMIN, "verdict=held").await;
        assert_eq!(held.len(), 3, "each refused request is audited: {held:#?}");
        let allowed = audit(&app, ADMIN, "verdict=allowed&target_kind=instance").await;
        assert_eq!(allowed.len(), 10);
        assert_eq!(allowed.iter().filter(|a| a["rule"] == "approval").count(), 1);

        // Only admins reset, approve or change the rules.
        assert_error(&app.post(&format!("/v1/admin/risk/breakers/{breaker}/reset"), &t.token, json!({})).await,
            StatusCode::FORBIDDEN, "forbidden");
        assert_error(&app.post("/v1/admin/risk/breakers/zone:a/reset", ADMIN, json!({})).await, StatusCode::NOT_FOUND, "not_found");
        let bad = app.put("/v1/admin/risk/rules", ADMIN, json!({ "bulk_share_percent": 101, "bulk_share_min": 1,
            "bulk_count": 1, "per_idc": { "deletions": 1, "window_seconds": 1 },
            "per_tenant": { "deletions": 1, "window_seconds": 1 }, "platform": { "deletions": 1, "window_seconds": 1 } })).await;
        assert_invalid(&bad, "bulk_share_percent");
    })
    .await;
}

#[tokio::test]
async fn ttl_expiry_held_by_the_breaker_is_deferred_and_resumes_after_a_reset() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        set_rules(&app, |r| r["per_tenant"] = json!({ "deletions": 3, "window_seconds": 300 })).await;
        let t = app.tenant("acme").await;
        let filler = app.create_batch(&t.token, batch(3)).await;
        let expiring = app.create_batch(&t.token, with(&batch(2), |b| b["ttl_seconds"] = json!(60))).await;
        for id in instances_of(&app, &t.token, filler["id"].as_str().unwrap()).await {
            app.delete(&format!("/v1/instances/{id}"), &t.token).await.expect_status(StatusCode::OK);
        }
        app.advance(61);
        let path = format!("/v1/batches/{}", expiring["id"].as_str().unwrap());
        for _ in 0..3 {
            assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 0));
            app.advance(5);
        }
        assert_eq!(
            app.get(&path, &t.token).await.expect_status(StatusCode::OK)["state"],
            "active",
            "deferred"
        );
        let held = audit(&app, ADMIN, "actor=expiry").await;
        assert_eq!(held.len(), 1, "held once, not at every pass: {held:#?}");
        assert_eq!(
            (held[0]["verdict"].as_str(), held[0]["rule"].as_str()),
            (Some("held"), Some("tenant_window"))
        );

        let breaker = format!("tenant:{}", t.id);
        app.post(&format!("/v1/admin/risk/breakers/{breaker}/reset"), ADMIN, json!({}))
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (1, 0));
        assert_eq!(app.get(&path, &t.token).await.expect_status(StatusCode::OK)["state"], "expired");
        let done = app.all_pages("/v1/risk/holds?all=true", ADMIN).await;
        assert_eq!(done.len(), 1);
        assert_eq!(done[0]["state"], "done");
        let allowed = audit(&app, ADMIN, "actor=expiry&verdict=allowed").await;
        assert_eq!(allowed.len(), 1);
    })
    .await;
}

/// A script asks for 10,000 instance deletions at once, 100 in flight at a time, and starts again
/// whenever the admin resets the breakers: they proceed at the breaker's pace (1,000 per window,
/// the tenant's budget), none is lost or done twice, every instance ends exactly once, and each is
/// billed up to where it really ended.
#[tokio::test]
async fn ten_thousand_deletions_at_once_proceed_at_the_breakers_pace_and_each_ends_once() {
    const COUNT: usize = 10_000;
    each_backend(|store| async move {
        let area = ("south-china", "guangdong", "shenzhen");
        let idcs: Vec<_> = (0..10)
            .map(|n| {
                eci_store::testing::idc(
                    &format!("sz-{n}"),
                    area,
                    &[eci_core::Carrier::Telecom],
                    eci_store::testing::resources(1_000, 4_000),
                )
            })
            .collect();
        eci_store::testing::seed_fleet(&store, &eci_core::Fleet { idcs }).await;
        let app = App::without_fleet(store).await;
        // The tenant's window sets the pace: 1,000 per 5 minutes, over ten IDCs that may each go
        // as fast.
        set_rules(&app, |r| r["per_idc"] = json!({ "deletions": 1_000, "window_seconds": 300 })).await;
        let t = app.tenant("bulk").await;
        let b = app.create_batch(&t.token, batch(COUNT as u64)).await;
        let batch_id = b["id"].as_str().unwrap().to_string();
        let instances = instances_of(&app, &t.token, &batch_id).await;
        assert_eq!(instances.len(), COUNT);
        let running: Vec<_> =
            instances.iter().map(|id| (eci_core::InstanceId(id.clone()), None, None)).collect();
        app.store.record_running(&running, app.clock_now()).await.unwrap();
        let started = app.clock_now();

        let mut left = instances.clone();
        let mut ended_at = std::collections::BTreeMap::new();
        let mut rounds = 0;
        while !left.is_empty() {
            rounds += 1;
            assert!(rounds <= 10, "the deletions never finished: {} left", left.len());
            app.advance(60);
            let mut refused = Vec::new();
            let mut released = Vec::new();
            for wave in left.chunks(100) {
                let mut sent = tokio::task::JoinSet::new();
                for id in wave {
                    let (router, token, id) = (app.router.clone(), t.token.clone(), id.clone());
                    sent.spawn(async move {
                        let reply =
                            send(&router, Method::DELETE, &format!("/v1/instances/{id}"), Some(&token), None)
                                .await;
                        (id, reply)
                    });
                }
                let mut wave_refused = false;
                while let Some(done) = sent.join_next().await {
                    let (id, reply) = done.unwrap();
                    match reply.0 {
                        StatusCode::OK => released.push(id),
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "deletion_rate_limited");
                            wave_refused = true;
                            refused.push(id);
                        }
                        other => panic!("{id}: {other} {}", reply.1),
                    }
                }
                if wave_refused {
                    // The script backs off until the breakers close; what it has not sent is left.
                    let sent_ids: std::collections::BTreeSet<String> =
                        released.iter().chain(&refused).cloned().collect();
                    refused.extend(left.iter().filter(|id| !sent_ids.contains(*id)).cloned());
                    break;
                }
            }
            assert_eq!(released.len(), 1_000, "round {rounds} goes at the tenant window's pace");
            // The clusters remove the released instances' Pods at once: each ends now.
            let now = app.clock_now();
            for id in &released {
                let changed = app
                    .store
                    .record_observation(
                        &eci_core::InstanceId(id.clone()),
                        &eci_core::lifecycle::Observed::Gone,
                        now,
                    )
                    .await
                    .unwrap();
                assert_eq!(changed, Some(eci_core::InstanceState::Terminated), "{id}");
                assert!(ended_at.insert(id.clone(), now).is_none(), "{id} released twice");
            }
            let open = app.get("/v1/risk/breakers", ADMIN).await.expect_status(StatusCode::OK);
            for breaker in open["open"].as_array().unwrap() {
                let path = format!("/v1/admin/risk/breakers/{}/reset", breaker["breaker"].as_str().unwrap());
                app.post(&path, ADMIN, json!({})).await.expect_status(StatusCode::OK);
            }
            left = refused;
        }
        assert_eq!(ended_at.len(), COUNT, "every instance ended, once");
        assert_eq!(rounds, 10, "1,000 a window");

        let cost = app
            .get(&format!("/v1/batches/{batch_id}/cost?instances=true"), &t.token)
            .await
            .expect_status(StatusCode::OK);
        let each = cost["instances"].as_array().unwrap();
        assert_eq!(each.len(), COUNT);
        for line in each {
            let id = line["instance_id"].as_str().unwrap();
            let ended = ended_at[id];
            assert_eq!(
                line["ended_at"].as_str().map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
                Some(ended),
                "{line}"
            );
            assert_eq!(
                line["totals"]["billed_ms"].as_i64(),
                Some((ended - started).num_milliseconds()),
                "{line}"
            );
        }
        let view = app.get(&format!("/v1/batches/{batch_id}"), &t.token).await.expect_status(StatusCode::OK);
        assert_eq!(view["counts"]["terminated"], COUNT as u64, "{view}");
    })
    .await;
}
