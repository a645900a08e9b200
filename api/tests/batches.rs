//! Batches and instances end to end through the router: creation, reads, listings with their
//! filters and cursors, release of a batch or one instance, and TTL expiry.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use eci_api::testing::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_new_batch_is_accepted_and_shows_its_placement_by_area_and_carrier_only() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;

        let batch = app.create_batch(&acme.token, batch(20)).await;
        let id = batch["id"].as_str().expect("an id").to_string();
        assert!(id.starts_with("b-"), "a batch id says what it is: {id}");
        assert_eq!(batch["state"], "active");
        assert_eq!(batch["count"], 20);
        assert_eq!(batch["requested"], 20);
        assert_eq!(batch["counts"]["pending"], 20);
        for (state, n) in batch["counts"].as_object().expect("counts by state") {
            if state != "pending" {
                assert_eq!(n, 0, "no instance is {state} yet");
            }
        }
        assert_eq!(batch["spec"], json!({ "cpu": "1", "memory": "4Gi", "gpu": 0 }));
        assert_eq!(batch["runtime"], "container");
        assert_eq!(batch["image"], "nginx:1.27");
        assert_eq!(time(&batch["created_at"]), t0());
        assert_eq!(batch["expires_at"], Value::Null);
        assert_eq!(batch["released_at"], Value::Null);
        assert_eq!(batch["create_timeout_seconds"], 120, "the platform's default");
        assert_eq!(batch["failures"], json!([]));

        let placement = batch["placement"].as_array().expect("a placement list");
        assert!(!placement.is_empty());
        for p in placement {
            let mut keys: Vec<&String> = p.as_object().expect("a placement entry").keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                ["carrier", "city", "count", "province", "region"],
                "only area and carrier: {p}"
            );
            assert!(["telecom", "unicom", "mobile", "bgp"].contains(&p["carrier"].as_str().unwrap()), "{p}");
        }
        assert_eq!(placement.iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>(), 20);
        let text = batch.to_string();
        for idc in IDC_IDS {
            assert!(!text.contains(idc), "a batch never names an IDC ({idc}): {text}");
        }
        assert!(!text.contains("ningbo"), "nothing is placed in the draining IDC: {text}");

        // Reading it back gives the same answer, and its instances are where the placement says.
        let read = app.get(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(read, batch);
        let instances = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        assert_eq!(instances.len(), 20);
        assert_eq!(by_location(&instances), placement_of(&batch));
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 20);
    })
    .await;
}

#[tokio::test]
async fn batches_are_listed_oldest_first_in_pages_that_follow_the_cursor() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let mut created = Vec::new();
        for n in 1..=5 {
            created.push(app.create_batch(&acme.token, batch(n)).await["id"].as_str().unwrap().to_string());
        }

        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut url = "/v1/batches?limit=2".to_string();
        loop {
            let page = app.get(&url, &acme.token).await.expect_status(StatusCode::OK);
            let page_items = items(&page);
            sizes.push(page_items.len());
            seen.extend(ids(&page_items));
            match page["next_cursor"].as_str() {
                Some(c) => url = format!("/v1/batches?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(seen, created, "every batch once, oldest first");

        // A page that holds exactly the rest has no next cursor.
        let page = app.get("/v1/batches?limit=5", &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ids(&items(&page)), created);
        assert_eq!(page["next_cursor"], Value::Null);
        let page = app.get("/v1/batches", &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ids(&items(&page)), created, "the default page holds them all");
    })
    .await;
}

#[tokio::test]
async fn batch_listings_filter_by_state_and_by_label() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let labelled = |labels: Value| with(&batch(1), |b| b["labels"] = labels);
        let web = app.create_batch(&acme.token, labelled(json!({ "app": "web" }))).await;
        let db = app.create_batch(&acme.token, labelled(json!({ "app": "db" }))).await;
        let edge = app.create_batch(&acme.token, labelled(json!({ "app": "web", "tier": "edge" }))).await;
        let [web, db, edge] = [&web, &db, &edge].map(|b| b["id"].as_str().unwrap().to_string());
        app.delete(&format!("/v1/batches/{web}"), &acme.token).await.expect_status(StatusCode::OK);

        let list = |query: &'static str| {
            let app = &app;
            let token = acme.token.clone();
            async move { ids(&app.all_pages(&format!("/v1/batches?{query}"), &token).await) }
        };
        assert_eq!(list("state=active").await, [db.as_str(), edge.as_str()]);
        assert_eq!(list("state=released").await, [web.as_str()]);
        assert_eq!(list("state=expired").await, Vec::<String>::new());
        assert_eq!(list("label=app=web").await, [web.as_str(), edge.as_str()]);
        assert_eq!(list("label=app%3Dweb").await, [web.as_str(), edge.as_str()], "an encoded `=` works too");
        assert_eq!(list("label=tier=edge").await, [edge.as_str()]);
        assert_eq!(list("label=app=web&state=active").await, [edge.as_str()]);
        assert_eq!(list("label=app=nothing").await, Vec::<String>::new());
        assert_eq!(
            list("label=app=web&limit=1").await,
            [web.as_str(), edge.as_str()],
            "filters hold across pages"
        );

        let shown = app.get(&format!("/v1/batches/{edge}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(shown["labels"], json!({ "app": "web", "tier": "edge" }));

        assert_invalid(&app.get("/v1/batches?state=gone", &acme.token).await, "state");
        assert_invalid(&app.get("/v1/batches?label=app", &acme.token).await, "label");
    })
    .await;
}

#[tokio::test]
async fn a_batch_lists_only_its_own_instances_in_pages() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let seven = app.create_batch(&acme.token, batch(7)).await;
        let other = app.create_batch(&acme.token, batch(3)).await;
        let id = seven["id"].as_str().unwrap();

        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut url = format!("/v1/batches/{id}/instances?limit=3");
        loop {
            let page = app.get(&url, &acme.token).await.expect_status(StatusCode::OK);
            let page_items = items(&page);
            sizes.push(page_items.len());
            for i in &page_items {
                assert_eq!(i["batch_id"], id, "{i}");
            }
            seen.extend(ids(&page_items));
            match page["next_cursor"].as_str() {
                Some(c) => url = format!("/v1/batches/{id}/instances?limit=3&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7, "no instance shows twice");

        let pending = app.all_pages(&format!("/v1/batches/{id}/instances?state=pending"), &acme.token).await;
        assert_eq!(pending.len(), 7);
        let ended = app.all_pages(&format!("/v1/batches/{id}/instances?state=terminated"), &acme.token).await;
        assert!(ended.is_empty());
        let others = format!("/v1/batches/{}/instances", other["id"].as_str().unwrap());
        assert_eq!(app.all_pages(&others, &acme.token).await.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn releasing_a_batch_terminates_every_instance_and_gives_the_capacity_back() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let before = app.capacity(&acme.token, SMALL).await;
        assert_eq!(before, FLEET_ROOM);

        let batch = app.create_batch(&acme.token, batch(30)).await;
        let id = batch["id"].as_str().unwrap();
        assert_eq!(app.capacity(&acme.token, SMALL).await, before - 30);
        assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 30);

        app.advance(5);
        let released = app
            .delete(&format!("/v1/batches/{id}?confirm=30"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(released["id"], id);
        assert_eq!(released["state"], "released");
        assert_eq!(time(&released["released_at"]), t0() + chrono::Duration::seconds(5));
        assert_eq!(released["counts"]["terminated"], 30);
        assert_eq!(released["counts"]["pending"], 0);
        assert_eq!(released["count"], 30, "the batch still says how many it had");

        let instances = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        assert_eq!(instances.len(), 30);
        for i in &instances {
            assert_eq!(i["state"], "terminated", "{i}");
            assert_eq!(time(&i["ended_at"]), t0() + chrono::Duration::seconds(5), "{i}");
        }
        assert_eq!(app.capacity(&acme.token, SMALL).await, before, "the capacity is back");
        assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 0);
        for idc in app.get("/v1/admin/idcs", ADMIN).await.expect_status(StatusCode::OK).as_array().unwrap() {
            assert_eq!(idc["allocated"]["cpu"], "0", "{idc}");
        }

        // Releasing it again changes nothing.
        app.advance(5);
        let again = app.delete(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(again, released);
        assert_eq!(app.capacity(&acme.token, SMALL).await, before);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn instances_are_listed_with_filters_by_batch_state_area_and_carrier() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let spread = app.create_batch(&acme.token, batch(40)).await;
        let hangzhou = app.create_batch(&acme.token, batch_in(10, json!({ "areas": ["hangzhou"] }))).await;
        let [spread_id, hangzhou_id] = [&spread, &hangzhou].map(|b| b["id"].as_str().unwrap().to_string());

        let all = app.all_pages("/v1/instances?limit=7", &acme.token).await;
        assert_eq!(all.len(), 50);
        assert_eq!(ids(&all).iter().collect::<BTreeSet<_>>().len(), 50, "no instance shows twice");
        let list = |query: String| {
            let app = &app;
            let token = acme.token.clone();
            async move { app.all_pages(&format!("/v1/instances?{query}"), &token).await }
        };
        let count_where = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|i| f(i)).count();

        let of_spread = list(format!("batch_id={spread_id}")).await;
        assert_eq!(of_spread.len(), 40);
        assert!(of_spread.iter().all(|i| i["batch_id"] == spread_id.as_str()));
        assert_eq!(by_location(&of_spread), placement_of(&spread), "instances are where the batch says");
        assert_eq!(by_location(&list(format!("batch_id={hangzhou_id}")).await), placement_of(&hangzhou));

        for (field, code) in [("region", "south-china"), ("province", "guangdong"), ("city", "shenzhen")] {
            let found = list(format!("area={code}")).await;
            assert!(!found.is_empty(), "a spread batch reaches {code}");
            assert!(found.iter().all(|i| i[field] == code), "area={code}: {found:?}");
            assert_eq!(found.len(), count_where(&|i| i[field] == code), "area={code} finds them all");
        }
        let in_hangzhou = list("area=hangzhou".into()).await;
        assert!(in_hangzhou.len() >= 10, "all of the hangzhou batch, and some of the spread one");
        assert_eq!(list("area=ningbo".into()).await.len(), 0, "nothing in the draining IDC");

        for carrier in ["telecom", "unicom", "mobile", "bgp"] {
            let found = list(format!("carrier={carrier}")).await;
            assert!(found.iter().all(|i| i["carrier"] == carrier), "carrier={carrier}");
            assert_eq!(found.len(), count_where(&|i| i["carrier"] == carrier), "carrier={carrier}");
        }
        let bgp_of_hangzhou = list(format!("batch_id={hangzhou_id}&carrier=bgp&area=east-china")).await;
        assert!(
            bgp_of_hangzhou.iter().all(|i| i["batch_id"] == hangzhou_id.as_str() && i["carrier"] == "bgp")
        );
        assert_eq!(
            bgp_of_hangzhou.len(),
            count_where(&|i| i["batch_id"] == hangzhou_id.as_str() && i["carrier"] == "bgp")
        );

        assert_eq!(list("state=pending".into()).await.len(), 50);
        let victim = all[0]["id"].as_str().unwrap();
        app.delete(&format!("/v1/instances/{victim}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ids(&list("state=terminated".into()).await), [victim]);
        assert_eq!(list("state=pending".into()).await.len(), 49);

        assert_invalid(&app.get("/v1/instances?carrier=cmcc", &acme.token).await, "carrier");
        assert_invalid(&app.get("/v1/instances?state=sleeping", &acme.token).await, "state");
    })
    .await;
}

#[tokio::test]
async fn an_instance_shows_where_it_runs_and_can_be_released_on_its_own() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let unicom_shenzhen = "area=shenzhen&carrier=unicom&cpu=1&memory=4Gi";
        assert_eq!(app.capacity(&acme.token, unicom_shenzhen).await, 16);
        let batch = app
            .create_batch(&acme.token, batch_in(4, json!({ "areas": ["shenzhen"], "carriers": ["unicom"] })))
            .await;
        let id = batch["id"].as_str().unwrap();
        assert_eq!(app.capacity(&acme.token, unicom_shenzhen).await, 12);

        let listed = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        let first = listed[0]["id"].as_str().unwrap();
        let instance =
            app.get(&format!("/v1/instances/{first}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(instance, listed[0], "read alone as listed");
        assert!(first.starts_with("i-"));
        assert_eq!(instance["batch_id"], id);
        assert_eq!(instance["state"], "pending");
        assert_eq!(instance["region"], "south-china");
        assert_eq!(instance["province"], "guangdong");
        assert_eq!(instance["city"], "shenzhen");
        assert_eq!(instance["carrier"], "unicom");
        assert_eq!(instance["idc"], "gd-sz-2", "the only unicom IDC in shenzhen");
        assert_eq!(instance["spec"], json!({ "cpu": "1", "memory": "4Gi", "gpu": 0 }));
        assert_eq!(instance["runtime"], "container");
        assert_eq!(instance["reservation_id"], Value::Null);
        assert_eq!(time(&instance["created_at"]), t0());
        assert_eq!(instance["ended_at"], Value::Null);

        app.advance(30);
        let ended =
            app.delete(&format!("/v1/instances/{first}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ended["state"], "terminated");
        assert_eq!(time(&ended["ended_at"]), t0() + chrono::Duration::seconds(30));
        assert_eq!(app.capacity(&acme.token, unicom_shenzhen).await, 13, "its capacity is back at once");
        let batch_now =
            app.get(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(batch_now["state"], "active", "the rest of the batch runs on");
        assert_eq!(
            (batch_now["counts"]["pending"].as_u64(), batch_now["counts"]["terminated"].as_u64()),
            (Some(3), Some(1))
        );

        // Ending it again changes nothing.
        let again =
            app.delete(&format!("/v1/instances/{first}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(again, ended);
        assert_eq!(app.capacity(&acme.token, unicom_shenzhen).await, 13);
        assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 3);

        let released =
            app.delete(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(released["counts"]["terminated"], 4);
        assert_eq!(app.capacity(&acme.token, unicom_shenzhen).await, 16);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_with_a_ttl_expires_once_the_clock_passes_it_and_others_stay() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let short = app.create_batch(&acme.token, with(&batch(10), |b| b["ttl_seconds"] = json!(60))).await;
        let long = app.create_batch(&acme.token, batch(5)).await;
        let [short_id, long_id] = [&short, &long].map(|b| b["id"].as_str().unwrap().to_string());
        assert_eq!(time(&short["expires_at"]), t0() + chrono::Duration::seconds(60));
        assert_eq!(long["expires_at"], Value::Null);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 15);

        app.advance(59);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 0), "not due yet");
        let still =
            app.get(&format!("/v1/batches/{short_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(still["state"], "active");

        app.advance(2);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (1, 0));
        let expired =
            app.get(&format!("/v1/batches/{short_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(expired["state"], "expired");
        assert_eq!(time(&expired["released_at"]), t0() + chrono::Duration::seconds(61));
        assert_eq!(expired["counts"]["terminated"], 10);
        let instances = app.all_pages(&format!("/v1/instances?batch_id={short_id}"), &acme.token).await;
        assert!(instances.iter().all(|i| i["state"] == "terminated"), "{instances:?}");
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 5, "its capacity is back");

        let untouched =
            app.get(&format!("/v1/batches/{long_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(untouched["state"], "active");
        assert_eq!(untouched["counts"]["pending"], 5);
        let listed = ids(&app.all_pages("/v1/batches?state=expired", &acme.token).await);
        assert_eq!(listed, [short_id.as_str()]);

        app.advance(3600);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 0), "nothing expires twice");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

/// A batch whose last instance ended is no longer `active`: released one by one it is `released`,
/// and when every instance failed without ever running it is `failed`, and lists as such.
#[tokio::test]
async fn a_batch_ends_by_itself_with_its_last_instance() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let released = app.create_batch(&acme.token, batch(2)).await;
        let id = released["id"].as_str().unwrap();
        let instances = app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await;
        app.advance(5);
        let first = instances[0]["id"].as_str().unwrap();
        app.delete(&format!("/v1/instances/{first}"), &acme.token).await.expect_status(StatusCode::OK);
        let one_left = app.get(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(one_left["state"], "active", "{one_left}");
        let second = instances[1]["id"].as_str().unwrap();
        app.delete(&format!("/v1/instances/{second}"), &acme.token).await.expect_status(StatusCode::OK);
        let ended = app.get(&format!("/v1/batches/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ended["state"], "released", "{ended}");
        assert_eq!(time(&ended["released_at"]), t0() + chrono::Duration::seconds(5), "{ended}");

        let doomed = app.create_batch(&acme.token, batch(3)).await;
        let doomed_id = doomed["id"].as_str().unwrap();
        let unschedulable = "Unschedulable: 0/2 nodes are available: 2 Insufficient cpu";
        let instances = app.all_pages(&format!("/v1/batches/{doomed_id}/instances"), &acme.token).await;
        for (i, reason) in instances.iter().zip(["ErrImagePull", unschedulable, unschedulable]) {
            let id = eci_core::InstanceId(i["id"].as_str().unwrap().to_string());
            let failed = eci_store::instances::Observed::Failed { reason: reason.into(), ended_at: None };
            app.store.record_observation(&id, &failed, app.clock_now()).await.expect("failure recorded");
        }
        let gone =
            app.get(&format!("/v1/batches/{doomed_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!((&gone["state"], &gone["counts"]["failed"]), (&json!("failed"), &json!(3)), "{gone}");
        assert_eq!(
            gone["failures"],
            json!([{ "reason": unschedulable, "count": 2 }, { "reason": "ErrImagePull", "count": 1 }]),
            "the most common reason first"
        );
        let listed = app.get("/v1/batches?state=failed", &acme.token).await.expect_status(StatusCode::OK);
        let ids: Vec<&str> =
            listed["items"].as_array().unwrap().iter().filter_map(|b| b["id"].as_str()).collect();
        assert_eq!(ids, [doomed_id], "{listed}");
    })
    .await;
}
