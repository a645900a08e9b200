//! What keeps tenants apart and honest, through the router: idempotent retries, isolation of every
//! tenant's batches, instances and reservations, and quotas on instances and vCPU.

use axum::http::StatusCode;
use eci_api::testing::*;
use serde_json::{Value, json};

#[tokio::test]
async fn retrying_a_batch_with_the_same_idempotency_key_returns_the_same_batch_and_creates_nothing() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let body = with(&batch(10), |b| b["labels"] = json!({ "app": "web" }));

        let first = app.post_idempotent(&acme.token, "order-42", body.clone()).await;
        assert_eq!(first.2.get("idempotent-replayed"), None, "a first request is not a replay");
        let first = first.expect_status(StatusCode::ACCEPTED);

        app.advance(10);
        let retry = app.post_idempotent(&acme.token, "order-42", body.clone()).await;
        assert_eq!(retry.2.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        let retry = retry.expect_status(StatusCode::ACCEPTED);
        assert_eq!(retry["id"], first["id"]);
        assert_eq!(retry, first, "the retry answers with the batch the first request made");

        assert_eq!(app.all_pages("/v1/batches", &acme.token).await.len(), 1);
        assert_eq!(app.all_pages("/v1/instances", &acme.token).await.len(), 10, "no extra instances");
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 10);

        // The same key with another request is a conflict, and changes nothing.
        let changed =
            app.post_idempotent(&acme.token, "order-42", with(&body, |b| b["count"] = json!(11))).await;
        let details = assert_error(&changed, StatusCode::CONFLICT, "idempotency_conflict");
        assert_eq!(details["idempotency_key"], "order-42");
        let relabelled = with(&body, |b| b["labels"] = json!({ "app": "db" }));
        let relabelled = app.post_idempotent(&acme.token, "order-42", relabelled).await;
        assert_error(&relabelled, StatusCode::CONFLICT, "idempotency_conflict");
        assert_eq!(app.all_pages("/v1/instances", &acme.token).await.len(), 10);

        // A new key is a new batch; keys belong to one tenant.
        let second = app
            .post_idempotent(&acme.token, "order-43", body.clone())
            .await
            .expect_status(StatusCode::ACCEPTED);
        assert_ne!(second["id"], first["id"]);
        let globex = app.tenant("globex").await;
        let theirs = app.post_idempotent(&globex.token, "order-42", body.clone()).await;
        assert_eq!(theirs.2.get("idempotent-replayed"), None);
        assert_ne!(theirs.expect_status(StatusCode::ACCEPTED)["id"], first["id"]);
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM - 30);

        for bad in ["   ", &"k".repeat(256)] {
            let reply = app.post_idempotent(&acme.token, bad, body.clone()).await;
            assert_invalid(&reply, "Idempotency-Key");
        }
        app.post_idempotent(&acme.token, &"k".repeat(255), batch(1))
            .await
            .expect_status(StatusCode::ACCEPTED);
    })
    .await;
}

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_batches_instances_or_reservations() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let globex = app.tenant("globex").await;
        let batch = app.create_batch(&acme.token, batch(3)).await;
        let batch_id = batch["id"].as_str().unwrap();
        let instance =
            app.all_pages("/v1/instances", &acme.token).await[0]["id"].as_str().unwrap().to_string();
        let reservation = json!({ "count": 2, "spec": { "cpu": "1", "memory": "4Gi" }, "ends_at": at(3600) });
        let reservation =
            app.post("/v1/reservations", &acme.token, reservation).await.expect_status(StatusCode::CREATED);
        let reservation_id = reservation["id"].as_str().unwrap();

        for path in [
            format!("/v1/batches/{batch_id}"),
            format!("/v1/batches/{batch_id}/instances"),
            format!("/v1/instances/{instance}"),
            format!("/v1/reservations/{reservation_id}"),
        ] {
            let reply = app.get(&path, &globex.token).await;
            assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
            assert!(!reply.1.to_string().contains("acme"), "nothing about the owner leaks: {}", reply.1);
        }
        for path in [
            format!("/v1/batches/{batch_id}"),
            format!("/v1/instances/{instance}"),
            format!("/v1/reservations/{reservation_id}"),
        ] {
            assert_error(&app.delete(&path, &globex.token).await, StatusCode::NOT_FOUND, "not_found");
        }
        let borrowing = with(&eci_api::testing::batch(1), |b| b["reservation_id"] = json!(reservation_id));
        let reply = app.post("/v1/batches", &globex.token, borrowing).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");

        for listing in [
            "/v1/batches",
            "/v1/instances",
            "/v1/reservations",
            &format!("/v1/instances?batch_id={batch_id}"),
        ] {
            assert!(
                app.all_pages(listing, &globex.token).await.is_empty(),
                "{listing} shows nothing of acme's"
            );
        }

        // The owner's things are as they were.
        let still =
            app.get(&format!("/v1/batches/{batch_id}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(still["state"], "active");
        assert_eq!(still["counts"]["pending"], 3);
        let one =
            app.get(&format!("/v1/instances/{instance}"), &acme.token).await.expect_status(StatusCode::OK);
        assert_eq!(one["state"], "pending");
        let held = app
            .get(&format!("/v1/reservations/{reservation_id}"), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!((held["state"].as_str(), held["used"].as_u64()), (Some("active"), Some(0)));
        assert_eq!(app.all_pages("/v1/batches", &acme.token).await.len(), 1);
        assert_eq!(app.all_pages("/v1/reservations", &acme.token).await.len(), 1);
    })
    .await;
}

async fn set_quota(app: &App, tenant: &TestTenant, quota: Value) {
    app.put(&format!("/v1/admin/tenants/{}/quota", tenant.id), ADMIN, quota)
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn the_instance_quota_counts_live_instances_and_released_ones_make_room_again() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        set_quota(&app, &acme, json!({ "max_instances": 10, "requests_per_second": 1000 })).await;

        let six = app.create_batch(&acme.token, batch(6)).await;
        let reply = app.post("/v1/batches", &acme.token, batch(5)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(5), Some(4)));

        let partial = app.create_batch(&acme.token, batch_in(5, json!({ "all_or_nothing": false }))).await;
        assert_eq!((partial["count"].as_u64(), partial["requested"].as_u64()), (Some(4), Some(5)));
        let reply = app.post("/v1/batches", &acme.token, batch(1)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");
        assert_eq!(details["placeable"], 0);
        let tenant = app.admin_tenant(&acme.id).await;
        assert_eq!((tenant["used_instances"].as_u64(), tenant["used_cpu"].as_str()), (Some(10), Some("10")));

        // One instance ended makes room for one more.
        let instance = app
            .all_pages(&format!("/v1/batches/{}/instances", six["id"].as_str().unwrap()), &acme.token)
            .await;
        app.delete(&format!("/v1/instances/{}", instance[0]["id"].as_str().unwrap()), &acme.token).await;
        app.create_batch(&acme.token, batch(1)).await;
        assert_error(
            &app.post("/v1/batches", &acme.token, batch(1)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
        );

        // Releasing the batch of six gives back the five still live.
        app.delete(&format!("/v1/batches/{}", six["id"].as_str().unwrap()), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 5);
        app.create_batch(&acme.token, batch(5)).await;
        assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 10);

        // Other tenants are not limited by acme's quota.
        let globex = app.tenant("globex").await;
        app.create_batch(&globex.token, batch(20)).await;
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn the_cpu_quota_counts_the_vcpu_of_live_instances() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        set_quota(&app, &acme, json!({ "max_cpu": "8", "requests_per_second": 1000 })).await;
        let two_vcpu = |count: u64| with(&batch(count), |b| b["spec"]["cpu"] = json!("2"));

        let reply = app.post("/v1/batches", &acme.token, two_vcpu(5)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(5), Some(4)));

        let three = app.create_batch(&acme.token, two_vcpu(3)).await;
        let reply = app.post("/v1/batches", &acme.token, two_vcpu(2)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");
        assert_eq!(details["placeable"], 1);
        // What fits is measured in vCPU, not instances: four 500m instances take the last 2 vCPU.
        let halves = with(&batch(4), |b| b["spec"]["cpu"] = json!("500m"));
        app.create_batch(&acme.token, halves).await;
        assert_eq!(app.admin_tenant(&acme.id).await["used_cpu"], "8");
        let reply =
            app.post("/v1/batches", &acme.token, with(&batch(1), |b| b["spec"]["cpu"] = json!("100m"))).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");

        app.delete(&format!("/v1/batches/{}", three["id"].as_str().unwrap()), &acme.token)
            .await
            .expect_status(StatusCode::OK);
        assert_eq!(app.admin_tenant(&acme.id).await["used_cpu"], "2");
        app.create_batch(&acme.token, two_vcpu(3)).await;
        assert_eq!(app.admin_tenant(&acme.id).await["used_cpu"], "8");

        // Lowering the quota below what is in use ends nothing, but refuses new work.
        set_quota(&app, &acme, json!({ "max_cpu": "4", "requests_per_second": 1000 })).await;
        let tenant = app.admin_tenant(&acme.id).await;
        assert_eq!((tenant["used_cpu"].as_str(), tenant["used_instances"].as_u64()), (Some("8"), Some(7)));
        let reply =
            app.post("/v1/batches", &acme.token, with(&batch(1), |b| b["spec"]["cpu"] = json!("100m"))).await;
        assert_eq!(assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded")["placeable"], 0);
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}
