//! Every way a request can fail, through the router: bad bodies and parameters (400), missing or bad
//! keys (401), the wrong kind of key (403), unknown things (404), what cannot be placed (422), and too
//! many requests (429). Every failure answers `{"error": {"code", "message", "details"}}`.

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use eci_core::Quota;
use serde_json::{Value, json};

#[tokio::test]
async fn a_bad_batch_body_is_refused_naming_the_field_at_fault() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let base = batch(1);
        let cases: Vec<(&str, Value)> = vec![
            ("count", with(&base, |b| b["count"] = json!(0))),
            ("count", with(&base, |b| b["count"] = json!(10_001))),
            ("spec.cpu", with(&base, |b| b["spec"]["cpu"] = json!("2x"))),
            ("spec.cpu", with(&base, |b| b["spec"]["cpu"] = json!("0"))),
            ("spec.memory", with(&base, |b| b["spec"]["memory"] = json!("lots"))),
            ("image", with(&base, |b| b["image"] = json!("  "))),
            ("runtime", with(&base, |b| b["runtime"] = json!("docker"))),
            ("ssh_keys", with(&base, |b| b["runtime"] = json!("rich"))),
            (
                "ssh_keys[0]",
                with(&base, |b| {
                    b["runtime"] = json!("rich");
                    b["ssh_keys"] = json!(["not a key"]);
                }),
            ),
            ("placement.areas[0]", with(&base, |b| b["placement"] = json!({ "areas": ["At lantis"] }))),
            (
                "placement.areas[1]",
                with(&base, |b| b["placement"] = json!({ "areas": ["shenzhen", "Shenzhen"] })),
            ),
            ("placement.carriers[0]", with(&base, |b| b["placement"] = json!({ "carriers": ["cmcc"] }))),
            ("placement.strategy", with(&base, |b| b["placement"] = json!({ "strategy": "random" }))),
            ("placement.max_per_idc", with(&base, |b| b["placement"] = json!({ "max_per_idc": 0 }))),
            ("ttl_seconds", with(&base, |b| b["ttl_seconds"] = json!(0))),
            ("create_timeout_seconds", with(&base, |b| b["create_timeout_seconds"] = json!(0))),
            ("create_timeout_seconds", with(&base, |b| b["create_timeout_seconds"] = json!(3601))),
            ("labels.-bad", with(&base, |b| b["labels"] = json!({ "-bad": "x" }))),
            ("env.1PATH", with(&base, |b| b["env"] = json!({ "1PATH": "x" }))),
            ("ports[0]", with(&base, |b| b["ports"] = json!([0]))),
            ("reservation_id", with(&base, |b| b["reservation_id"] = json!("b-not-a-reservation"))),
        ];
        for (field, body) in cases {
            let reply = app.post("/v1/batches", &acme.token, body.clone()).await;
            assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{body} should be refused, got {}", reply.1);
            assert_invalid(&reply, field);
        }
        // A well-formed area code the fleet does not have is a 422, not a 400: the document allows it.
        let atlantis = with(&base, |b| b["placement"] = json!({ "areas": ["shenzhen", "atlantis"] }));
        let reply = app.post("/v1/batches", &acme.token, atlantis).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "unknown_area");
        assert_eq!((&details["field"], &details["area"]), (&json!("placement.areas[1]"), &json!("atlantis")));

        // Bodies that are not the right JSON at all.
        let unknown = app.post("/v1/batches", &acme.token, with(&base, |b| b["colour"] = json!("red"))).await;
        assert_invalid(&unknown, "body");
        assert!(
            unknown.1["error"]["message"].as_str().unwrap().contains("colour"),
            "names the field: {}",
            unknown.1
        );
        let nested =
            app.post("/v1/batches", &acme.token, with(&base, |b| b["spec"]["disk"] = json!("10Gi"))).await;
        assert_invalid(&nested, "body");
        let missing = app.post("/v1/batches", &acme.token, json!({ "count": 1, "spec": base["spec"] })).await;
        assert_invalid(&missing, "body");
        assert!(missing.1["error"]["message"].as_str().unwrap().contains("image"), "{}", missing.1);
        let wrong_type =
            app.post("/v1/batches", &acme.token, with(&base, |b| b["count"] = json!("ten"))).await;
        assert_invalid(&wrong_type, "body");
        let negative = app.post("/v1/batches", &acme.token, with(&base, |b| b["count"] = json!(-1))).await;
        assert_invalid(&negative, "body");

        let json_headers = [
            ("authorization".to_string(), format!("Bearer {}", acme.token)),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        for text in [r#"{"count": 1,"#, "not json", ""] {
            let reply =
                send_raw(&app.router, Method::POST, "/v1/batches", &json_headers, Some(text.into())).await;
            assert_invalid(&reply, "body");
        }
        let no_type = [json_headers[0].clone()];
        let reply =
            send_raw(&app.router, Method::POST, "/v1/batches", &no_type, Some(base.to_string())).await;
        assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        // A body past the limit is refused as too large, whatever is in it.
        let huge = format!(r#"{{"count": 1, "image": "{}"}}"#, "x".repeat(3 << 20));
        let reply = send_raw(&app.router, Method::POST, "/v1/batches", &json_headers, Some(huge)).await;
        assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

        // Nothing was created by any of them.
        assert!(app.all_pages("/v1/batches", &acme.token).await.is_empty());
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM);
    })
    .await;
}

#[tokio::test]
async fn bad_paging_and_filter_parameters_are_refused() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for listing in ["/v1/batches", "/v1/instances", "/v1/reservations"] {
            for limit in ["0", "1001", "100000", "1000000000"] {
                assert_invalid(&app.get(&format!("{listing}?limit={limit}"), &acme.token).await, "limit");
            }
            for query in ["limit=abc", "limit=-1", "colour=red"] {
                let reply = app.get(&format!("{listing}?{query}"), &acme.token).await;
                let details = assert_invalid(&reply, "query");
                let what = query.split('=').next().unwrap();
                assert!(details["reason"].as_str().unwrap().contains(what), "{listing}?{query}: {}", reply.1);
            }
            app.get(&format!("{listing}?limit=1000"), &acme.token).await.expect_status(StatusCode::OK);
            app.get(&format!("{listing}?limit=1"), &acme.token).await.expect_status(StatusCode::OK);
        }
        let batch = app.create_batch(&acme.token, batch(1)).await;
        let path = format!("/v1/batches/{}/instances?limit=0", batch["id"].as_str().unwrap());
        assert_invalid(&app.get(&path, &acme.token).await, "limit");
        for filter in ["state=sleeping", "carrier=cmcc", "area=At%20lantis"] {
            let field = filter.split('=').next().unwrap();
            assert_invalid(&app.get(&format!("/v1/instances?{filter}"), &acme.token).await, field);
        }
        let unknown = app.get("/v1/instances?area=atlantis", &acme.token).await;
        assert_eq!(assert_error(&unknown, StatusCode::UNPROCESSABLE_ENTITY, "unknown_area")["field"], "area");
        assert_invalid(&app.get("/v1/batches?state=sleeping", &acme.token).await, "state");
        assert_invalid(&app.get("/v1/batches?label=no-equals-sign", &acme.token).await, "label");
    })
    .await;
}

#[tokio::test]
async fn a_request_without_a_live_key_is_unauthorized() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;

        for path in ["/v1/batches", "/v1/instances", "/v1/areas", "/v1/admin/tenants"] {
            let reply = app.send(Method::GET, path, None, None).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let reply = app.send(Method::POST, "/v1/batches", None, Some(batch(1))).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_error(
            &app.get("/v1/batches", "eci_not_a_key").await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        assert_error(
            &app.get("/v1/admin/tenants", "eci_not_a_key").await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        for header in ["Basic YWNtZTpzZWNyZXQ=", "Bearer ", "Bearer", acme.token.as_str()] {
            let headers = [("authorization".to_string(), header.to_string())];
            let reply = send_raw(&app.router, Method::GET, "/v1/batches", &headers, None).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        }

        app.get("/v1/batches", &acme.token).await.expect_status(StatusCode::OK);
        let revoked = app.delete(&format!("/v1/admin/keys/{}", acme.key_id), ADMIN).await;
        assert_eq!(revoked.0, StatusCode::NO_CONTENT, "{}", revoked.1);
        let reply = app.get("/v1/batches", &acme.token).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        let reply = app.post("/v1/batches", &acme.token, batch(1)).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            app.capacity(&app.tenant("other").await.token, SMALL).await,
            FLEET_ROOM,
            "nothing was created"
        );
    })
    .await;
}

#[tokio::test]
async fn a_tenant_key_is_forbidden_on_admin_endpoints_and_an_admin_key_on_tenant_ones() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let tenant_calls = [
            (Method::GET, "/v1/admin/tenants".to_string(), None),
            (Method::POST, "/v1/admin/tenants".to_string(), Some(json!({ "name": "sneaky" }))),
            (Method::GET, format!("/v1/admin/tenants/{}", acme.id), None),
            (Method::PUT, format!("/v1/admin/tenants/{}/quota", acme.id), Some(json!({}))),
            (Method::POST, format!("/v1/admin/tenants/{}/keys", acme.id), Some(json!({ "name": "more" }))),
            (Method::GET, format!("/v1/admin/tenants/{}/keys", acme.id), None),
            (Method::DELETE, format!("/v1/admin/keys/{}", acme.key_id), None),
            (Method::GET, "/v1/admin/idcs".to_string(), None),
            (Method::GET, "/v1/admin/idcs/gd-gz-1".to_string(), None),
            (Method::POST, "/v1/admin/idcs/gd-gz-1/drain".to_string(), None),
        ];
        for (method, path, body) in tenant_calls {
            let reply = app.send(method.clone(), &path, Some(&acme.token), body).await;
            assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
        }
        let idc = json!({ "region": "west-china", "province": "sichuan", "city": "chengdu",
            "carriers": ["telecom"], "capacity": { "cpu": "8", "memory": "32Gi" } });
        assert_error(
            &app.put("/v1/admin/idcs/sc-cd-1", &acme.token, idc).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );

        // None of it happened.
        assert_eq!(app.admin_tenant(&acme.id).await["name"], "acme");
        let tenants = app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);
        assert_eq!(tenants.as_array().unwrap().len(), 1);
        app.get("/v1/batches", &acme.token).await.expect_status(StatusCode::OK);
        let areas = app.get("/v1/areas", &acme.token).await.expect_status(StatusCode::OK);
        assert!(!areas.to_string().contains("chengdu"));

        for path in ["/v1/batches", "/v1/instances", "/v1/reservations", "/v1/areas"] {
            assert_error(&app.get(path, ADMIN).await, StatusCode::FORBIDDEN, "forbidden");
        }
        assert_error(&app.post("/v1/batches", ADMIN, batch(1)).await, StatusCode::FORBIDDEN, "forbidden");
    })
    .await;
}

#[tokio::test]
async fn unknown_ids_and_routes_are_not_found() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for (method, path, resource) in [
            (Method::GET, "/v1/batches/b-nope", "batch"),
            (Method::DELETE, "/v1/batches/b-nope", "batch"),
            (Method::GET, "/v1/batches/b-nope/instances", "batch"),
            (Method::GET, "/v1/instances/i-nope", "instance"),
            (Method::DELETE, "/v1/instances/i-nope", "instance"),
            (Method::GET, "/v1/reservations/r-nope", "reservation"),
            (Method::DELETE, "/v1/reservations/r-nope", "reservation"),
        ] {
            let reply = app.send(method, path, Some(&acme.token), None).await;
            let details = assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
            assert_eq!(details["resource"], resource, "{path}");
            assert_eq!(details["id"], path.split('/').nth(3).unwrap(), "{path}");
        }
        let unknown = json!("r-00000000000000000000000000000000");
        let reply =
            app.post("/v1/batches", &acme.token, with(&batch(1), |b| b["reservation_id"] = unknown)).await;
        assert_eq!(assert_error(&reply, StatusCode::NOT_FOUND, "not_found")["resource"], "reservation");

        for (method, path) in [
            (Method::GET, "/v1/admin/tenants/t-nope"),
            (Method::GET, "/v1/admin/tenants/t-nope/keys"),
            (Method::DELETE, "/v1/admin/keys/k-nope"),
            (Method::GET, "/v1/admin/idcs/nope"),
            (Method::POST, "/v1/admin/idcs/nope/drain"),
        ] {
            assert_error(
                &app.send(method, path, Some(ADMIN), None).await,
                StatusCode::NOT_FOUND,
                "not_found",
            );
        }
        for (path, body) in
            [("/v1/admin/tenants/t-nope/quota", json!({})), ("/v1/admin/tenants/t-nope/keys", json!({}))]
        {
            let method = if path.ends_with("quota") { Method::PUT } else { Method::POST };
            let reply = app.send(method, path, Some(ADMIN), Some(body)).await;
            assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
        }

        for path in ["/v1/nothing", "/v2/batches", "/v1/batches/b-1/instances/extra", "/"] {
            assert_error(&app.get(path, &acme.token).await, StatusCode::NOT_FOUND, "not_found");
            let anonymous = app.send(Method::GET, path, None, None).await;
            assert_error(&anonymous, StatusCode::NOT_FOUND, "not_found");
        }
    })
    .await;
}

#[tokio::test]
async fn an_id_that_is_not_valid_utf8_in_the_path_is_refused_in_the_error_shape() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for path in
            ["/v1/batches/%FF", "/v1/batches/%FF/instances", "/v1/instances/%C3%28", "/v1/reservations/%FF"]
        {
            assert_invalid(&app.get(path, &acme.token).await, "path");
            if !path.ends_with("instances") {
                assert_invalid(&app.delete(path, &acme.token).await, "path");
            }
        }
        for path in ["/v1/admin/tenants/%FF", "/v1/admin/idcs/%FF"] {
            assert_invalid(&app.send(Method::GET, path, Some(ADMIN), None).await, "path");
        }
        assert_invalid(&app.delete("/v1/admin/keys/%FF", ADMIN).await, "path");
        // Authentication still comes first.
        let anonymous = app.send(Method::GET, "/v1/batches/%FF", None, None).await;
        assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    })
    .await;
}

#[tokio::test]
async fn a_method_a_route_does_not_have_is_refused_in_the_error_shape() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        for (method, path) in [
            (Method::PUT, "/v1/batches"),
            (Method::PUT, "/v1/batches/b-1"),
            (Method::POST, "/v1/instances"),
            (Method::DELETE, "/v1/capacity"),
        ] {
            let reply = app.send(method.clone(), path, Some(&acme.token), None).await;
            assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            let allow = reply.2.get("allow").unwrap_or_else(|| panic!("{method} {path}: an Allow header"));
            assert!(allow.to_str().unwrap().contains("GET"), "{method} {path}: Allow: {allow:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_batch_larger_than_the_free_capacity_is_refused_unless_partial_placement_is_allowed() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;

        let reply = app.post("/v1/batches", &acme.token, batch(FLEET_ROOM + 1)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(97), Some(96)));
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM, "nothing was taken");
        assert!(app.all_pages("/v1/batches", &acme.token).await.is_empty());

        let in_shenzhen = json!({ "areas": ["shenzhen"], "carriers": ["telecom"] });
        let reply = app.post("/v1/batches", &acme.token, batch_in(17, in_shenzhen.clone())).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(17), Some(16)));

        let partial = with(&batch_in(17, in_shenzhen), |b| b["placement"]["all_or_nothing"] = json!(false));
        let placed = app.create_batch(&acme.token, partial).await;
        assert_eq!((placed["count"].as_u64(), placed["requested"].as_u64()), (Some(16), Some(17)));
        assert_eq!(placed["counts"]["pending"], 16);
        assert_eq!(placed["placement_request"]["all_or_nothing"], false);
        let id = placed["id"].as_str().unwrap();
        assert_eq!(app.all_pages(&format!("/v1/batches/{id}/instances"), &acme.token).await.len(), 16);

        let rest = with(&batch(FLEET_ROOM), |b| b["placement"] = json!({ "all_or_nothing": false }));
        let rest = app.create_batch(&acme.token, rest).await;
        assert_eq!(rest["count"], FLEET_ROOM - 16, "a partial batch takes what is left");
        assert_eq!(app.capacity(&acme.token, SMALL).await, 0);

        for body in [batch(1), with(&batch(1), |b| b["placement"] = json!({ "all_or_nothing": false }))] {
            let reply = app.post("/v1/batches", &acme.token, body).await;
            let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
            assert_eq!(details["placeable"], 0, "a full fleet places nothing, partial or not");
        }
        eci_store::testing::assert_ledger_consistent(&app.store).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_no_active_idc_can_take_is_refused_as_no_matching_idc() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let ssh = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHp0 test@example"]);
        for body in [
            batch_in(1, json!({ "areas": ["guangdong"], "carriers": ["mobile"] })),
            batch_in(1, json!({ "areas": ["ningbo"] })), // only a draining IDC there
            with(&batch_in(1, json!({ "areas": ["guangdong"] })), |b| {
                b["runtime"] = json!("vm");
                b["ssh_keys"] = ssh.clone();
            }),
        ] {
            let reply = app.post("/v1/batches", &acme.token, body.clone()).await;
            let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "no_matching_idc");
            assert_eq!(details["placeable"], 0, "{body}");
        }
        // A rich container goes where rich containers run.
        let rich = with(&batch(2), |b| {
            b["runtime"] = json!("rich");
            b["ssh_keys"] = ssh.clone();
        });
        let placed = app.create_batch(&acme.token, rich).await;
        let path = format!("/v1/instances?batch_id={}", placed["id"].as_str().unwrap());
        for i in app.all_pages(&path, &acme.token).await {
            assert_eq!((i["idc"].as_str(), i["runtime"].as_str()), (Some("gd-sz-1"), Some("rich")), "{i}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_batch_beyond_the_tenants_quota_is_refused_as_quota_exceeded() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let acme = app.tenant("acme").await;
        let quota = json!({ "max_instances": 5, "requests_per_second": 1000 });
        let tenant = app.put(&format!("/v1/admin/tenants/{}/quota", acme.id), ADMIN, quota.clone()).await;
        assert_eq!(
            tenant.expect_status(StatusCode::OK)["quota"],
            json!({ "max_cpu": null, "max_instances": 5, "requests_per_second": 1000 })
        );

        let reply = app.post("/v1/batches", &acme.token, batch(6)).await;
        let details = assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded");
        assert_eq!((details["requested"].as_u64(), details["placeable"].as_u64()), (Some(6), Some(5)));
        assert_eq!(app.capacity(&acme.token, SMALL).await, FLEET_ROOM, "nothing was taken");
        app.create_batch(&acme.token, batch(5)).await;

        let path = format!("/v1/admin/tenants/{}/quota", acme.id);
        assert_invalid(&app.put(&path, ADMIN, json!({ "max_cpu": "lots" })).await, "quota.max_cpu");
        assert_invalid(
            &app.put(&path, ADMIN, json!({ "requests_per_second": 0 })).await,
            "quota.requests_per_second",
        );
    })
    .await;
}

#[tokio::test]
async fn a_tenant_over_its_request_rate_is_told_when_to_retry() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let slow = app.tenant_with("slow", Quota { requests_per_second: Some(3), ..Quota::default() }).await;
        let other =
            app.tenant_with("other", Quota { requests_per_second: Some(3), ..Quota::default() }).await;

        for _ in 0..3 {
            app.get("/v1/batches", &slow.token).await.expect_status(StatusCode::OK);
        }
        for reply in
            [app.get("/v1/batches", &slow.token).await, app.post("/v1/batches", &slow.token, batch(1)).await]
        {
            let details = assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            assert_eq!(details["limit_per_second"], 3);
            let retry = reply.2.get("retry-after").expect("a Retry-After header").to_str().unwrap();
            assert_eq!(retry, "1", "the window reopens at the next second");
        }
        // Another tenant has its own window; admins are not counted against it.
        app.get("/v1/batches", &other.token).await.expect_status(StatusCode::OK);
        app.get("/v1/admin/tenants", ADMIN).await.expect_status(StatusCode::OK);

        // Half a second later the window is still shut, and says so.
        app.clock.advance(chrono::Duration::milliseconds(500));
        let reply = app.get("/v1/batches", &slow.token).await;
        assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert_eq!(reply.2.get("retry-after").unwrap(), "1", "rounded up, never 0");

        // The next second, the tenant may go on, and the refused POST created nothing.
        app.clock.advance(chrono::Duration::milliseconds(500));
        let page = app.get("/v1/batches", &slow.token).await.expect_status(StatusCode::OK);
        assert!(items(&page).is_empty());
        assert_eq!(app.capacity(&slow.token, SMALL).await, FLEET_ROOM);
    })
    .await;
}
