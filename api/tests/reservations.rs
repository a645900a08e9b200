//! Reservations through the router: held capacity is gone for everyone else, its owner's batches draw
//! on it, and it comes back when the reservation is deleted or runs out.

use axum::http::StatusCode;
use eci_api::testing::*;
use serde_json::{Value, json};

/// A reservation of `count` small instances in shenzhen (two IDCs, 32 small instances of room),
/// ending `seconds` after t0.
fn in_shenzhen(count: u64, seconds: i64) -> Value {
    json!({
        "count": count,
        "spec": { "cpu": "1", "memory": "4Gi" },
        "placement": { "areas": ["shenzhen"] },
        "ends_at": at(seconds),
    })
}

const SHENZHEN: &str = "cpu=1&memory=4Gi&area=shenzhen";

async fn reserve(app: &App, tenant: &TestTenant, body: Value) -> Value {
    app.post("/v1/reservations", &tenant.token, body).await.expect_status(StatusCode::CREATED)
}

async fn reservation(app: &App, tenant: &TestTenant, id: &str) -> Value {
    app.get(&format!("/v1/reservations/{id}"), &tenant.token).await.expect_status(StatusCode::OK)
}

#[tokio::test]
async fn a_reservation_holds_capacity_that_other_tenants_cannot_use() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 32);

        let held = reserve(&app, &acme, in_shenzhen(20, 3600)).await;
        let id = held["id"].as_str().unwrap();
        assert!(id.starts_with("r-"), "{id}");
        assert_eq!(held["state"], "active");
        assert_eq!((held["count"].as_u64(), held["used"].as_u64()), (Some(20), Some(0)));
        assert_eq!(held["spec"], json!({ "cpu": "1", "memory": "4Gi", "gpu": 0 }));
        assert_eq!(time(&held["created_at"]), t0());
        assert_eq!(time(&held["ends_at"]), t0() + chrono::Duration::hours(1));
        assert!(time(&held["ends_at"]) > t0(), "a reservation ends in the future");
        assert_eq!(held["ended_at"], Value::Null);
        let slots = held["placement"].as_array().unwrap();
        assert_eq!(slots.iter().map(|s| s["count"].as_u64().unwrap()).sum::<u64>(), 20);
        assert!(slots.iter().all(|s| s["city"] == "shenzhen" && s["used"] == 0), "{held}");
        for idc in IDC_IDS {
            assert!(!held.to_string().contains(idc), "a reservation never names an IDC: {held}");
        }
        assert_eq!(reservation(&app, &acme, id).await, held);

        // Everyone else sees 20 fewer instances of room, and a batch that needed them fails.
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 12);
        assert_eq!(app.capacity(&globex.token, SMALL).await, FLEET_ROOM - 20);
        let reply =
            app.post("/v1/batches", &globex.token, batch_in(13, json!({ "areas": ["shenzhen"] }))).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(13), Some(12)));
        app.create_batch(&globex.token, batch_in(12, json!({ "areas": ["shenzhen"] }))).await;
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 0);

        // The owner still gets all 20 out of its reservation.
        let own = with(&batch(20), |b| b["reservation_id"] = json!(id));
        let own = app.create_batch(&acme.token, own).await;
        assert_eq!(own["count"], 20);
        assert_eq!(reservation(&app, &acme, id).await["used"], 20);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_drawing_on_its_reservation_uses_the_held_capacity_first() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let held = reserve(&app, &acme, in_shenzhen(10, 3600)).await;
        let id = held["id"].as_str().unwrap();
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 10);

        let four = app.create_batch(&acme.token, with(&batch(4), |b| b["reservation_id"] = json!(id))).await;
        assert_eq!(four["reservation_id"], id);
        assert_eq!(four["count"], 4);
        let instances = app
            .all_pages(&format!("/v1/batches/{}/instances", four["id"].as_str().unwrap()), &acme.token)
            .await;
        for i in &instances {
            assert_eq!(i["reservation_id"], id, "{i}");
            assert_eq!(i["city"], "shenzhen", "{i}");
        }
        let now = reservation(&app, &acme, id).await;
        assert_eq!(now["used"], 4);
        assert_eq!(
            now["placement"].as_array().unwrap().iter().map(|s| s["used"].as_u64().unwrap()).sum::<u64>(),
            4
        );
        assert_eq!(
            app.capacity(&acme.token, SMALL).await,
            FLEET_ROOM - 10,
            "drawn from what was held already"
        );

        // A batch bigger than what is left takes the rest of the reservation, then the open pool.
        let eight = app.create_batch(&acme.token, with(&batch(8), |b| b["reservation_id"] = json!(id))).await;
        assert_eq!(eight["count"], 8);
        let instances = app
            .all_pages(&format!("/v1/batches/{}/instances", eight["id"].as_str().unwrap()), &acme.token)
            .await;
        let drawn = instances.iter().filter(|i| i["reservation_id"] == id).count();
        assert_eq!(drawn, 6, "{instances:?}");
        assert_eq!(reservation(&app, &acme, id).await["used"], 10);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 12);

        // Releasing a batch gives its share back to the reservation, not to the pool.
        app.delete(&format!("/v1/batches/{}", four["id"].as_str().unwrap()), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(reservation(&app, &acme, id).await["used"], 6);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 12);

        // A batch of another size or runtime cannot use it.
        let bigger = with(&batch(1), |b| {
            b["reservation_id"] = json!(id);
            b["spec"]["cpu"] = json!("2");
        });
        assert_error(
            &app.post("/v1/batches", &acme.token, bigger).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "reservation_mismatch",
        );
        let rich = with(&batch(1), |b| {
            b["reservation_id"] = json!(id);
            b["runtime"] = json!("rich");
            b["ssh_keys"] = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0 test@example"]);
        });
        assert_error(
            &app.post("/v1/batches", &acme.token, rich).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "reservation_mismatch",
        );
        assert_eq!(reservation(&app, &acme, id).await["used"], 6, "a refused batch draws nothing");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_reservation_frees_what_it_does_not_use() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        let held = reserve(&app, &acme, in_shenzhen(10, 3600)).await;
        let id = held["id"].as_str().unwrap();
        let four = app.create_batch(&acme.token, with(&batch(4), |b| b["reservation_id"] = json!(id))).await;
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 22);

        app.advance(60);
        let ended =
            app.delete(&format!("/v1/reservations/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ended["state"], "released");
        assert_eq!(time(&ended["ended_at"]), t0() + chrono::Duration::seconds(60));
        assert_eq!(
            app.capacity(&globex.token, SHENZHEN).await,
            28,
            "the six unused are free; four still run"
        );

        let reply =
            app.post("/v1/batches", &acme.token, with(&batch(1), |b| b["reservation_id"] = json!(id))).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "reservation_mismatch");
        let again =
            app.delete(&format!("/v1/reservations/{id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(again["state"], "released", "deleting twice changes nothing");
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 28);

        // Instances that drew on it end into the open pool now.
        app.delete(&format!("/v1/batches/{}", four["id"].as_str().unwrap()), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(app.capacity(&globex.token, SHENZHEN).await, 32);
        assert_eq!(app.capacity(&globex.token, SMALL).await, FLEET_ROOM);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_reservation_expires_once_the_clock_passes_its_end() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let held = reserve(&app, &acme, in_shenzhen(10, 600)).await;
        let id = held["id"].as_str().unwrap();
        let three = app.create_batch(&acme.token, with(&batch(3), |b| b["reservation_id"] = json!(id))).await;
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 10);

        app.advance(599);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 0), "not due yet");
        assert_eq!(reservation(&app, &acme, id).await["state"], "active");

        app.advance(2);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 1));
        let expired = reservation(&app, &acme, id).await;
        assert_eq!(expired["state"], "expired");
        assert_eq!(time(&expired["ended_at"]), t0() + chrono::Duration::seconds(601));
        assert_eq!(
            app.capacity(&acme.token, SMALL).await,
            FLEET_ROOM - 3,
            "only the running three still hold room"
        );
        let reply =
            app.post("/v1/batches", &acme.token, with(&batch(1), |b| b["reservation_id"] = json!(id))).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "reservation_mismatch");

        let batch_now = app.get(&format!("/v1/batches/{}", three["id"].as_str().unwrap()), &acme.token).await;
        assert_eq!(batch_now.expect_status(StatusCode::OK)["state"], "active", "its batches run on");
        app.delete(&format!("/v1/batches/{}", three["id"].as_str().unwrap()), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM);
        assert_eq!(eci_api::expiry::expire_due(&app.state).await.unwrap(), (0, 0), "nothing expires twice");
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn reservations_are_listed_in_pages_and_bad_ones_are_refused() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let base = in_shenzhen(1, 3600);
        // Well-formed, but past, or somewhere the fleet is not: 422s.
        for (field, body) in [
            ("ends_at", with(&base, |b| b["ends_at"] = json!(at(-1)))),
            ("ends_at", with(&base, |b| b["ends_at"] = json!(at(0)))),
        ] {
            assert_unprocessable(&app.post("/v1/reservations", &acme.token, body).await, field);
        }
        let atlantis = with(&base, |b| b["placement"]["areas"] = json!(["atlantis"]));
        let reply = app.post("/v1/reservations", &acme.token, atlantis).await;
        assert_eq!(
            assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "unknown_area")["field"],
            "placement.areas[0]"
        );
        for (field, body) in [
            ("count", with(&base, |b| b["count"] = json!(0))),
            ("spec.cpu", with(&base, |b| b["spec"]["cpu"] = json!("2x"))),
            ("runtime", with(&base, |b| b["runtime"] = json!("docker"))),
            ("placement.areas[0]", with(&base, |b| b["placement"]["areas"] = json!(["Atlantis"]))),
            ("placement.carriers[0]", with(&base, |b| b["placement"]["carriers"] = json!(["cmcc"]))),
            ("body", with(&base, |b| b["ends_at"] = json!("tomorrow"))),
            ("body", with(&base, |b| b["labels"] = json!({}))),
        ] {
            assert_invalid(&app.post("/v1/reservations", &acme.token, body).await, field);
        }
        let reply = app.post("/v1/reservations", &acme.token, in_shenzhen(33, 3600)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(33), Some(32)));
        let reply = app.post(
            "/v1/reservations",
            &acme.token,
            with(&base, |b| b["placement"]["carriers"] = json!(["mobile"])),
        );
        assert_error(&reply.await, StatusCode::UNPROCESSABLE_ENTITY, "no_matching_idc");
        assert_eq!(
            app.capacity(&acme.token, SMALL).await,
            FLEET_ROOM,
            "nothing held by refused reservations"
        );

        let mut made = Vec::new();
        for n in 1..=3 {
            made.push(reserve(&app, &acme, in_shenzhen(n, 3600)).await["id"].as_str().unwrap().to_string());
        }
        let first = app.get("/v1/reservations?limit=2", &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(ids(&items(&first)), made[..2]);
        let cursor = first["next_cursor"].as_str().expect("a second page");
        let second = app.get(&format!("/v1/reservations?limit=2&cursor={cursor}"), &acme.token).await;
        let second = second.expect_status(StatusCode::OK);
        assert_eq!(ids(&items(&second)), made[2..]);
        assert_eq!(second["next_cursor"], Value::Null);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 6);
    })
    .await;
}
