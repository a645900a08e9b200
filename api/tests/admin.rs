//! Tenants and API keys as admins manage them through the router, and keys made that way used by
//! the tenant they belong to.

use axum::http::StatusCode;
use eci_api::testing::*;
use serde_json::{Value, json};

#[tokio::test]
async fn an_admin_creates_a_tenant_and_a_key_that_works_until_revoked() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let quota = json!({ "max_instances": 20, "requests_per_second": 50 });
        let created = app.post("/v1/admin/tenants", ADMIN, json!({ "name": "globex", "quota": quota })).await;
        let tenant = created.expect_status(StatusCode::CREATED);
        let tenant_id = tenant["id"].as_str().unwrap().to_string();
        assert!(tenant_id.starts_with("t-"), "{tenant}");
        assert_eq!(tenant["name"], "globex");
        assert_eq!(
            tenant["quota"],
            json!({ "max_cpu": null, "max_instances": 20, "requests_per_second": 50 })
        );
        assert_eq!((tenant["used_instances"].as_u64(), tenant["used_cpu"].as_str()), (Some(0), Some("0")));
        assert_eq!(time(&tenant["created_at"]), t0());
        assert_eq!(app.admin_tenant(&tenant_id).await, tenant);
        let all = app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(all, json!([tenant]));

        let keys_path = format!("/v1/admin/tenants/{tenant_id}/keys");
        let ci =
            app.post(&keys_path, ADMIN, json!({ "name": "ci" })).await.expect_status(StatusCode::CREATED);
        let laptop =
            app.post(&keys_path, ADMIN, json!({ "name": "laptop" })).await.expect_status(StatusCode::CREATED);
        let ci_secret = ci["secret"].as_str().expect("the secret, shown once").to_string();
        let laptop_secret = laptop["secret"].as_str().unwrap().to_string();
        assert!(ci_secret.starts_with("eci_") && ci_secret.len() == 4 + 64, "{ci_secret}");
        assert_ne!(ci_secret, laptop_secret);
        assert!(ci["id"].as_str().unwrap().starts_with("k-"));
        assert_eq!(
            (ci["tenant_id"].as_str(), ci["admin"].as_bool(), ci["name"].as_str()),
            (Some(tenant_id.as_str()), Some(false), Some("ci"))
        );
        assert_eq!(ci["revoked_at"], Value::Null);

        let listed = app.get(&keys_path, ADMIN).await.expect_status(StatusCode::OK);
        let listed = listed.as_array().unwrap();
        assert_eq!(ids(listed), [ci["id"].as_str().unwrap(), laptop["id"].as_str().unwrap()]);
        for key in listed {
            assert!(key.get("secret").is_none(), "a listing never shows a secret: {key}");
        }
        let text = Value::Array(listed.clone()).to_string();
        assert!(!text.contains(&ci_secret) && !text.contains(&laptop_secret));

        // The new key acts for the new tenant, within its quota.
        let made = app.create_batch(&ci_secret, batch(3)).await;
        let seen = app.all_pages("/v1/batches", &laptop_secret).await;
        assert_eq!(ids(&seen), [made["id"].as_str().unwrap()], "both keys are the same tenant");
        let reply = app.post("/v1/batches", &ci_secret, batch(18)).await;
        assert_eq!(assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded")["placeable"], 17);
        assert_eq!(app.admin_tenant(&tenant_id).await["used_instances"], 3);

        // Revoked, the key is refused at once; the tenant's other key goes on working.
        app.advance(1);
        let revoked = app.delete(&format!("/v1/admin/keys/{}", ci["id"].as_str().unwrap()), ADMIN).await;
        assert_eq!(revoked.0, StatusCode::NO_CONTENT);
        assert_eq!(revoked.1, Value::Null, "204 has no body");
        assert_error(&app.get("/v1/batches", &ci_secret).await, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_error(
            &app.post("/v1/batches", &ci_secret, batch(1)).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        app.get("/v1/batches", &laptop_secret).await.expect_status(StatusCode::OK);
        let listed = app.get(&keys_path, ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(time(&listed[0]["revoked_at"]), t0() + chrono::Duration::seconds(1));
        assert_eq!(listed[1]["revoked_at"], Value::Null);
        let again = app.delete(&format!("/v1/admin/keys/{}", ci["id"].as_str().unwrap()), ADMIN).await;
        assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}

#[tokio::test]
async fn tenant_names_are_unique_and_never_blank() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        app.post("/v1/admin/tenants", ADMIN, json!({ "name": "acme" }))
            .await
            .expect_status(StatusCode::CREATED);
        let reply = app.post("/v1/admin/tenants", ADMIN, json!({ "name": "acme" })).await;
        assert_error(&reply, StatusCode::CONFLICT, "conflict");
        // A name is taken as written: one with outer spaces is refused, not trimmed into a clash.
        for name in [json!(""), json!("   "), json!("  acme  "), json!("x".repeat(129))] {
            assert_invalid(&app.post("/v1/admin/tenants", ADMIN, json!({ "name": name })).await, "name");
        }
        assert_invalid(
            &app.post("/v1/admin/tenants", ADMIN, json!({ "name": "a", "plan": "gold" })).await,
            "body",
        );
        assert_invalid(&app.post("/v1/admin/tenants", ADMIN, json!({})).await, "body");
        let bad_quota = json!({ "name": "b", "quota": { "max_cpu": "many" } });
        assert_invalid(&app.post("/v1/admin/tenants", ADMIN, bad_quota).await, "quota.max_cpu");
        let tenants = app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(tenants.as_array().unwrap().len(), 1, "only the first acme exists: {tenants}");
    })
    .await;
}

#[tokio::test]
async fn an_admin_sees_and_changes_a_tenants_quota() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        app.create_batch(&acme.token, with(&batch(3), |b| b["spec"]["cpu"] = json!("1500m"))).await;
        let tenant = app.admin_tenant(&acme.id).await;
        assert_eq!(
            (tenant["used_instances"].as_u64(), tenant["used_cpu"].as_str()),
            (Some(3), Some("4500m"))
        );

        let path = format!("/v1/admin/tenants/{}/quota", acme.id);
        let quota = json!({ "max_cpu": "1000", "max_instances": 100, "requests_per_second": 10 });
        let changed = app.put(&path, ADMIN, quota.clone()).await.expect_status(StatusCode::OK);
        assert_eq!(changed["quota"], quota);
        assert_eq!(app.admin_tenant(&acme.id).await["quota"], quota);
        // An empty quota is no limit at all.
        let cleared = app.put(&path, ADMIN, json!({})).await.expect_status(StatusCode::OK);
        assert_eq!(
            cleared["quota"],
            json!({ "max_cpu": null, "max_instances": null, "requests_per_second": null })
        );
        assert_invalid(&app.put(&path, ADMIN, json!({ "max_gpus": 1 })).await, "body");
    })
    .await;
}

#[tokio::test]
async fn an_admin_key_cannot_revoke_itself_but_another_admin_can() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let own = format!("/v1/admin/keys/{}", app.admin_key_id);
        assert_error(&app.delete(&own, ADMIN).await, StatusCode::CONFLICT, "self_revocation");
        app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);

        let second = "eci_test_second_admin";
        app.store.create_key(None, true, "second", second, t0()).await.unwrap();
        assert_eq!(app.delete(&own, second).await.0, StatusCode::NO_CONTENT);
        assert_error(&app.get("/v1/admin/tenants", ADMIN).await, StatusCode::UNAUTHORIZED, "unauthorized");
        app.get("/v1/admin/tenants", second).await.expect_status(StatusCode::OK);
    })
    .await;
}
