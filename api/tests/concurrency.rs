//! Many tenants asking for the same small slice of the fleet at once, through the router on a
//! multi-thread runtime: the ledger never promises more than the IDCs have.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use eci_core::Resources;
use serde_json::json;

/// Room in hangzhou, in small instances: zj-hz-1 (mobile) and zj-hz-2 (bgp), 16 each.
const HANGZHOU_ROOM: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_never_over_commit_an_idc() {
    each_backend_with(8, |store| async move {
        let app = App::seeded(store).await;
        let tenants = [app.tenant("acme").await, app.tenant("globex").await, app.tenant("initech").await];
        // A few idle neighbours elsewhere, so the slice is not the whole fleet.
        app.create_batch(&tenants[0].token, batch_in(5, json!({ "areas": ["guangdong"] }))).await;

        let counts = [5u64, 3, 4, 2, 6, 1, 7, 2];
        let mut tasks = Vec::new();
        for n in 0..24 {
            let router = app.router.clone();
            let token = tenants[n % 3].token.clone();
            let count = counts[n % counts.len()];
            // Every fourth request takes what fits rather than all or nothing.
            let partial = n % 4 == 3;
            let body = batch_in(count, json!({ "areas": ["hangzhou"], "all_or_nothing": !partial }));
            tasks.push(tokio::spawn(async move {
                let reply = send(&router, Method::POST, "/v1/batches", Some(&token), Some(body)).await;
                (n % 3, count, reply)
            }));
        }
        let asked: u64 = (0..24).map(|n| counts[n % counts.len()]).sum();
        assert!(asked > HANGZHOU_ROOM, "the requests ask for more than there is ({asked})");

        let mut accepted_by_tenant: BTreeMap<usize, u64> = BTreeMap::new();
        let mut refused = 0;
        for task in tasks {
            let (tenant, count, reply) = task.await.expect("the request task ran");
            match reply.0 {
                StatusCode::ACCEPTED => {
                    let placed = reply.1["count"].as_u64().unwrap();
                    assert!(placed >= 1 && placed <= count, "{}", reply.1);
                    for p in reply.1["placement"].as_array().unwrap() {
                        assert_eq!(p["city"], "hangzhou", "{p}");
                    }
                    *accepted_by_tenant.entry(tenant).or_default() += placed;
                }
                StatusCode::UNPROCESSABLE_ENTITY => {
                    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
                    refused += 1;
                }
                other => panic!("a concurrent batch answered {other}: {}", reply.1),
            }
        }
        let accepted: u64 = accepted_by_tenant.values().sum();
        assert!(accepted <= HANGZHOU_ROOM, "{accepted} instances accepted into room for {HANGZHOU_ROOM}");
        assert!(accepted > 0 && refused > 0, "some got in, some were turned away ({accepted}, {refused})");
        let left = app.capacity(&tenants[0].token, "cpu=1&memory=4Gi&area=hangzhou").await;
        assert_eq!(left, HANGZHOU_ROOM - accepted, "what was not accepted is still free");

        // Every tenant's live instances are what it was told it got, and the ledger agrees.
        let mut live_by_idc: BTreeMap<String, Resources> = BTreeMap::new();
        for (i, tenant) in tenants.iter().enumerate() {
            let instances = app.all_pages("/v1/instances?limit=1000", &tenant.token).await;
            let live: Vec<_> =
                instances.iter().filter(|i| i["state"] != "terminated" && i["state"] != "failed").collect();
            let in_hangzhou = live.iter().filter(|i| i["city"] == "hangzhou").count() as u64;
            assert_eq!(
                in_hangzhou,
                accepted_by_tenant.get(&i).copied().unwrap_or(0),
                "tenant {}",
                tenant.name
            );
            for inst in live {
                let sum =
                    live_by_idc.entry(inst["idc"].as_str().unwrap().to_string()).or_insert(Resources::ZERO);
                *sum = *sum + spec(&inst["spec"]);
            }
        }
        let idcs = app.get("/v1/admin/idcs", ADMIN).await.expect_status(StatusCode::OK);
        for idc in idcs.as_array().unwrap() {
            let id = idc["id"].as_str().unwrap();
            let (total, allocated, reserved) =
                (spec(&idc["capacity"]), spec(&idc["allocated"]), spec(&idc["reserved"]));
            assert!(total.covers(&(allocated + reserved)), "IDC {id} is over-committed: {idc}");
            assert_eq!(
                allocated,
                live_by_idc.remove(id).unwrap_or(Resources::ZERO),
                "IDC {id}: allocated = live instances"
            );
            assert_eq!(spec(&idc["free"]), total.saturating_sub(&(allocated + reserved)), "IDC {id}: free");
        }
        assert!(live_by_idc.is_empty(), "instances in IDCs the admin listing does not show: {live_by_idc:?}");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_idempotency_key_make_one_batch() {
    each_backend_with(8, |store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let router = app.router.clone();
            let headers = [
                ("authorization".to_string(), format!("Bearer {}", acme.token)),
                ("content-type".to_string(), "application/json".to_string()),
                ("idempotency-key".to_string(), "deploy-7".to_string()),
            ];
            tasks.push(tokio::spawn(async move {
                send_raw(&router, Method::POST, "/v1/batches", &headers, Some(batch(5).to_string())).await
            }));
        }
        let mut batch_ids = std::collections::BTreeSet::new();
        let mut fresh = 0;
        for task in tasks {
            let (status, body, headers) = task.await.expect("the request task ran");
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            batch_ids.insert(body["id"].as_str().unwrap().to_string());
            if headers.get("idempotent-replayed").is_none() {
                fresh += 1;
            }
        }
        assert_eq!(batch_ids.len(), 1, "every retry got the same batch: {batch_ids:?}");
        assert_eq!(fresh, 1, "exactly one request made it; the others were replays");
        assert_eq!(app.all_pages("/v1/instances", &acme.token).await.len(), 5, "no extra instances");
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 5);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}
