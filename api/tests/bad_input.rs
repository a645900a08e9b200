//! Hostile and malformed input, through the router: each is a 4xx in the one error shape (a code
//! and a message), never a 5xx, and nothing of it is stored.

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use serde_json::{Value, json};

fn json_headers(token: &str) -> Vec<(String, String)> {
    vec![
        ("authorization".to_string(), format!("Bearer {token}")),
        ("content-type".to_string(), "application/json".to_string()),
    ]
}

/// A 4xx in the error shape, whatever its status; returns its code.
#[track_caller]
fn assert_refused(reply: &Reply, what: &str) -> String {
    let (status, body, _) = reply;
    assert!(status.is_client_error(), "{what}: a 4xx, not {status}: {body}");
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: an error code: {body}"));
    assert_error(reply, *status, code);
    code.to_string()
}

/// Nothing was stored: no batch, no reservation, all the room still free.
async fn assert_nothing_stored(app: &App, token: &str) {
    assert!(app.all_pages("/v1/batches", token).await.is_empty(), "no batch was created");
    assert!(app.all_pages("/v1/reservations", token).await.is_empty(), "no reservation was created");
    assert_eq!(app.capacity(token, SMALL).await, FLEET_ROOM, "no capacity was taken");
}

#[tokio::test]
async fn bodies_that_are_not_the_json_asked_for_are_refused_before_anything_is_done() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let headers = json_headers(&acme.token);
        for path in ["/v1/batches", "/v1/reservations"] {
            // Nested past serde_json's recursion limit: refused, not a stack overflow.
            let deep = "[".repeat(10_000);
            let reply = send_raw(&app.router, Method::POST, path, &headers, Some(deep)).await;
            assert_invalid(&reply, "body");
            let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
            let reply = send_raw(&app.router, Method::POST, path, &headers, Some(deep_object)).await;
            assert_invalid(&reply, "body");

            // Not UTF-8.
            let mut bytes = br#"{"count": 1, "image": ""#.to_vec();
            bytes.extend([0xff, 0xfe, 0x80]);
            bytes.extend(br#"", "spec": {"cpu": "1", "memory": "4Gi"}}"#);
            let reply = send_bytes(&app.router, Method::POST, path, &headers, Some(bytes)).await;
            assert_invalid(&reply, "body");

            // Not declared as JSON.
            for content_type in ["text/plain", "application/xml", "application/x-www-form-urlencoded"] {
                let typed = vec![headers[0].clone(), ("content-type".to_string(), content_type.to_string())];
                let reply =
                    send_raw(&app.router, Method::POST, path, &typed, Some(batch(1).to_string())).await;
                assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
            }
            let untyped = vec![headers[0].clone()];
            let reply = send_raw(&app.router, Method::POST, path, &untyped, Some(batch(1).to_string())).await;
            assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        }
        // serde would read a struct from an array of its fields' values; the document says object.
        for (body, field) in [
            (json!([1, { "cpu": "1", "memory": "4Gi" }, "nginx:1.27"]), "body"),
            (with(&batch(1), |b| b["spec"] = json!(["1", "4Gi", 0])), "spec"),
            (with(&batch(1), |b| b["placement"] = json!([["shenzhen"]])), "placement"),
        ] {
            assert_invalid(&app.post("/v1/batches", &acme.token, body).await, field);
        }
        let quota = format!("/v1/admin/tenants/{}/quota", acme.id);
        assert_invalid(&app.put(&quota, ADMIN, json!([null, null])).await, "body");
        let tenant = json!({ "name": "arrays", "quota": [null, null] });
        assert_invalid(&app.post("/v1/admin/tenants", ADMIN, tenant).await, "quota");
        assert_nothing_stored(&app, &acme.token).await;
    })
    .await;
}

#[tokio::test]
async fn labels_follow_kubernetes_rules_and_a_huge_label_map_is_refused() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;

        // 100,000 labels: under the 2 MiB body limit, far over the 32 a batch may carry.
        let many: serde_json::Map<String, Value> =
            (0..100_000).map(|i| (format!("l{i}"), json!("v"))).collect();
        let body = with(&batch(1), |b| b["labels"] = Value::Object(many));
        assert!(body.to_string().len() < 2 << 20, "under the body limit");
        assert_invalid(&app.post("/v1/batches", &acme.token, body).await, "labels");
        let too_many: serde_json::Map<String, Value> =
            (0..33).map(|i| (format!("l{i}"), json!("v"))).collect();
        let body = with(&batch(1), |b| b["labels"] = Value::Object(too_many));
        assert_invalid(&app.post("/v1/batches", &acme.token, body).await, "labels");

        let name = |n: usize| "n".repeat(n);
        let prefix = |n: usize| format!("{}.io", "p".repeat(n - 3));
        let refused = [
            (name(64), "v".to_string()),                  // name over 63
            (format!("{}/app", prefix(254)), "v".into()), // prefix over 253
            ("app".into(), "v".repeat(64)),               // value over 63
            ("a/b/c".into(), "v".into()),                 // two slashes
            ("Upper.IO/app".into(), "v".into()),          // a prefix is lowercase
            ("a..b/app".into(), "v".into()),              // a prefix is DNS labels
            ("app".into(), "-v".into()),                  // a value starts with a letter or digit
            ("app".into(), "v\u{0}".into()),              // control characters
            ("".into(), "v".into()),                      // an empty key
        ];
        for (key, value) in refused {
            let body = with(&batch(1), |b| b["labels"] = json!({ key.clone(): value.clone() }));
            let reply = app.post("/v1/batches", &acme.token, body).await;
            assert_invalid(&reply, &format!("labels.{key}"));
        }
        assert_nothing_stored(&app, &acme.token).await;

        // At the limits, labels are taken.
        let at_limits = json!({
            name(63): "v".repeat(63),
            format!("{}/{}", prefix(253), name(63)): "",
            "app.kubernetes.io/name": "cdn_edge-1.2",
        });
        let created =
            app.create_batch(&acme.token, with(&batch(1), |b| b["labels"] = at_limits.clone())).await;
        assert_eq!(created["labels"], at_limits);
    })
    .await;
}

#[tokio::test]
async fn ids_of_the_wrong_shape_name_nothing_and_are_never_looked_up() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let shapes =
            ["nope", "b-", "B-0123456789ABCDEF0123456789ABCDEF", "%00", "%2e%2e", "b-%00", &"x".repeat(4096)];
        for id in shapes {
            for (method, path) in [
                (Method::GET, format!("/v1/batches/{id}")),
                (Method::DELETE, format!("/v1/batches/{id}")),
                (Method::GET, format!("/v1/batches/{id}/instances")),
                (Method::GET, format!("/v1/batches/{id}/cost")),
                (Method::GET, format!("/v1/instances/{id}")),
                (Method::DELETE, format!("/v1/instances/{id}")),
                (Method::GET, format!("/v1/reservations/{id}")),
                (Method::DELETE, format!("/v1/reservations/{id}")),
            ] {
                let reply = app.send(method.clone(), &path, Some(&acme.token), None).await;
                assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
            }
            for (method, path, body) in [
                (Method::GET, format!("/v1/admin/tenants/{id}"), None),
                (Method::GET, format!("/v1/admin/tenants/{id}/keys"), None),
                (Method::POST, format!("/v1/admin/tenants/{id}/keys"), Some(json!({}))),
                (Method::PUT, format!("/v1/admin/tenants/{id}/quota"), Some(json!({}))),
                (Method::DELETE, format!("/v1/admin/keys/{id}"), None),
                (Method::DELETE, format!("/v1/admin/prices/{id}"), None),
                (Method::GET, format!("/v1/admin/idcs/{id}"), None),
                (Method::POST, format!("/v1/admin/idcs/{id}/drain"), None),
            ] {
                let reply = app.send(method.clone(), &path, Some(ADMIN), body).await;
                assert_refused(&reply, &format!("{method} {path}"));
            }
            let reply = app.get(&format!("/v1/invoices/{id}"), &acme.token).await;
            assert_refused(&reply, "an invoice period");
        }
        let reply = app
            .post("/v1/batches", &acme.token, with(&batch(1), |b| b["reservation_id"] = json!("r-nope")))
            .await;
        assert_invalid(&reply, "reservation_id");
        let reply = app.get("/v1/instances?batch_id=b-nope", &acme.token).await;
        assert_invalid(&reply, "batch_id");
        assert_nothing_stored(&app, &acme.token).await;
    })
    .await;
}

#[tokio::test]
async fn paging_and_filters_outside_their_range_are_refused() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        // Out-of-range limits are in errors.rs; here, what is not a limit or a cursor at all.
        for listing in ["/v1/batches", "/v1/instances", "/v1/reservations"] {
            for query in ["limit=10000000000000", "limit=1.5", "limit=", "limit=1&limit=2"] {
                assert_invalid(&app.get(&format!("{listing}?{query}"), &acme.token).await, "query");
            }
            for cursor in ["%00", "a%20b", "%FF", &"c".repeat(256)] {
                assert_invalid(&app.get(&format!("{listing}?cursor={cursor}"), &acme.token).await, "cursor");
            }
        }
        for query in ["group_by=week", "group_by=label:", "from=2026-01-01%2000:00:00Z", "from=yesterday"] {
            assert_refused(&app.get(&format!("/v1/usage?{query}"), &acme.token).await, query);
        }
        assert_refused(&app.get("/v1/invoices/2026-11?format=pdf", &acme.token).await, "format=pdf");
        assert_nothing_stored(&app, &acme.token).await;
    })
    .await;
}

#[tokio::test]
async fn an_idempotency_key_must_be_short_printable_ascii() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for key in ["k".repeat(10 * 1024), "k".repeat(256), " padded".into(), String::new()] {
            let reply = app.post_idempotent(&acme.token, &key, batch(1)).await;
            assert_invalid(&reply, "Idempotency-Key");
        }
        assert_nothing_stored(&app, &acme.token).await;
        let key = "k".repeat(255);
        let first =
            app.post_idempotent(&acme.token, &key, batch(1)).await.expect_status(StatusCode::ACCEPTED);
        let again = app.post_idempotent(&acme.token, &key, batch(1)).await;
        assert_eq!(again.2.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
        assert_eq!(again.expect_status(StatusCode::ACCEPTED)["id"], first["id"]);
    })
    .await;
}

#[tokio::test]
async fn text_with_control_characters_is_refused_on_every_backend() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        // PostgreSQL's text cannot hold NUL; the API refuses it before the database is asked.
        for (path, body, field) in [
            ("/v1/admin/tenants", json!({ "name": "a\u{0}b" }), "name"),
            ("/v1/admin/tenants", json!({ "name": " acme" }), "name"),
            ("/v1/admin/tenants", json!({ "name": "x".repeat(129) }), "name"),
            (&format!("/v1/admin/tenants/{}/keys", acme.id), json!({ "name": "k\u{0}" }), "name"),
        ] {
            assert_invalid(&app.post(path, ADMIN, body).await, field);
        }
        let idc = json!({ "name": "n\u{0}", "region": "west-china", "province": "sichuan", "city": "chengdu",
            "carriers": ["telecom"], "capacity": { "cpu": "8", "memory": "32Gi" } });
        assert_invalid(&app.put("/v1/admin/idcs/sc-cd-1", ADMIN, idc).await, "name");
        let tenants = app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(tenants.as_array().map(Vec::len), Some(1), "no tenant was created: {tenants}");
        assert_error(&app.get("/v1/admin/idcs/sc-cd-1", ADMIN).await, StatusCode::NOT_FOUND, "not_found");
    })
    .await;
}

#[tokio::test]
async fn whole_numbers_are_taken_however_json_spells_them() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let headers = json_headers(&acme.token);
        let text = r#"{"count": 2.0, "spec": {"cpu": "1", "memory": "4Gi", "gpu": 0.0}, "image": "nginx:1.27",
            "ports": [8.0e1], "ttl_seconds": 3600.000, "create_timeout_seconds": 3e2}"#;
        let reply = send_raw(&app.router, Method::POST, "/v1/batches", &headers, Some(text.into())).await;
        let created = reply.expect_status(StatusCode::ACCEPTED);
        assert_eq!((&created["count"], &created["create_timeout_seconds"]), (&json!(2), &json!(300)));
        for count in ["2.5", "-1", "1e5", "\"2\""] {
            let text =
                format!(r#"{{"count": {count}, "spec": {{"cpu": "1", "memory": "4Gi"}}, "image": "x"}}"#);
            let reply = send_raw(&app.router, Method::POST, "/v1/batches", &headers, Some(text)).await;
            assert_refused(&reply, count);
        }
        // What is no whole number at all breaks the body's shape; the reason names the field.
        for timeout in [json!("x"), json!(1.5)] {
            let body = with(&batch(1), |b| b["create_timeout_seconds"] = timeout.clone());
            let details = assert_invalid(&app.post("/v1/batches", &acme.token, body).await, "body");
            let reason = details["reason"].as_str().unwrap();
            assert!(reason.contains("create_timeout_seconds"), "{timeout}: {reason}");
        }
    })
    .await;
}
