//! `GET /v1/openapi.json` is the contract: every route the router serves is an operation of the
//! document and every operation is routed, every operation lists the errors it can answer (each
//! with the one error body), and the rules the server enforces on a request are stated in it. What
//! the document allows the server accepts; CI's schemathesis run (`.ci/run`) checks that by
//! generating requests from it.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use eci_api::testing::*;
use serde_json::{Value, json};

async fn document(app: &App) -> Value {
    app.send(Method::GET, "/v1/openapi.json", None, None).await.expect_status(StatusCode::OK)
}

/// Every operation of the document: (lowercase method, path template) to the operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            out.insert((method.clone(), path.clone()), operation.clone());
        }
    }
    out
}

/// The `{name}`s of a path template.
fn placeholders(path: &str) -> Vec<&str> {
    path.split('{').skip(1).map(|rest| rest.split('}').next().unwrap_or_default()).collect()
}

/// `path` with every placeholder filled with a value no resource has.
fn concrete(path: &str) -> String {
    placeholders(path).iter().fold(path.to_string(), |p, n| p.replace(&format!("{{{n}}}"), "x-0"))
}

#[tokio::test]
async fn every_route_is_a_documented_operation_and_every_documented_operation_is_routed() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let doc = document(&app).await;
        let documented: BTreeSet<(String, String)> = operations(&doc).into_keys().collect();
        let routed: BTreeSet<(String, String)> =
            eci_api::routes().into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        assert!(undocumented.is_empty(), "routed but not in the document: {undocumented:?}");
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(unrouted.is_empty(), "in the document but not routed: {unrouted:?}");
        assert!(documented.len() >= 35, "the document lists every operation, not {}", documented.len());

        // The router itself agrees, path by path: a method it has no route for is a 405 whose Allow
        // header lists exactly the documented methods (and HEAD, which axum adds to every GET).
        let mut by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (method, path) in &documented {
            by_path.entry(path).or_default().insert(method.to_uppercase());
        }
        for (path, methods) in &by_path {
            let (status, body, headers) = app.send(Method::TRACE, &concrete(path), Some(ADMIN), None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "TRACE {path}: {body}");
            let allow = headers.get("allow").unwrap_or_else(|| panic!("{path}: an Allow header"));
            let allowed: BTreeSet<String> = allow
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| m != "HEAD")
                .collect();
            assert_eq!(&allowed, methods, "{path}: what the router allows is what the document lists");
        }

        // And each operation reaches its handler: neither a 405 nor the router's fallback.
        for (method, path) in &documented {
            let method: Method = method.to_uppercase().parse().expect("an HTTP method");
            let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
            let (status, reply, _) = app.send(method.clone(), &concrete(path), Some(ADMIN), body).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed: {reply}");
            assert_ne!(reply["error"]["message"], "no such endpoint", "{method} {path} is routed");
        }
    })
    .await;
}

#[tokio::test]
async fn every_path_parameter_is_declared_and_every_query_parameter_is_in_the_query() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let doc = document(&app).await;
        for ((method, path), operation) in operations(&doc) {
            let names = placeholders(&path);
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            for p in &parameters {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str() {
                    Some("path") => {
                        assert!(names.contains(&name), "{method} {path}: `{name}` is not in the path");
                        assert_eq!(p["required"], true, "{method} {path}: path parameters are required");
                    }
                    Some("query" | "header") => {}
                    other => panic!("{method} {path}: parameter `{name}` in {other:?}"),
                }
            }
            for name in names {
                assert!(
                    parameters.iter().any(|p| p["in"] == "path" && p["name"] == name),
                    "{method} {path} declares its path parameter `{name}`"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn every_operation_lists_the_errors_it_can_answer_with_the_error_body() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let doc = document(&app).await;
        let components = doc["components"]["responses"].as_object().expect("reusable responses");
        for (name, response) in components {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                "{name} answers the error body: {response}"
            );
        }
        for ((method, path), operation) in operations(&doc) {
            let responses = operation["responses"].as_object().expect("responses");
            let has = |code: &str| responses.contains_key(code);
            let open = operation["security"] == json!([{}]);
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let mut want = Vec::new();
            if !open {
                want.extend(["401", "403", "500"]);
                if !path.starts_with("/v1/admin/") {
                    want.push("429");
                }
            }
            if operation.get("requestBody").is_some() {
                want.extend(["400", "413", "415"]);
            }
            if parameters.iter().any(|p| p["in"] == "query" || p["in"] == "header") {
                want.push("400");
            }
            // Every id in a path may name nothing, except the one an admin PUT creates.
            let creates = method == "put" && path == "/v1/admin/idcs/{id}";
            if parameters.iter().any(|p| p["in"] == "path") && !creates {
                want.push("404");
            }
            for code in want {
                assert!(has(code), "{method} {path} documents {code}: {:?}", responses.keys());
            }
            for (code, response) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let target = response["$ref"].as_str().unwrap_or_default();
                    assert!(
                        target
                            .strip_prefix("#/components/responses/")
                            .is_some_and(|n| components.contains_key(n)),
                        "{method} {path} {code} is one of the error responses: {response}"
                    );
                }
            }
            if !open && !path.starts_with("/v1/admin/") {
                let rate_limited = &components["RateLimited"];
                assert!(rate_limited["headers"]["Retry-After"].is_object(), "429 says when: {rate_limited}");
            }
        }
    })
    .await;
}

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

/// The schema of the query parameter `name` of `GET path`, and whether it is required.
fn query_parameter<'a>(doc: &'a Value, path: &str, name: &str) -> (&'a Value, bool) {
    let parameters = doc["paths"][path]["get"]["parameters"].as_array().expect("parameters");
    let p = parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{path} has `{name}`"));
    assert_eq!(p["in"], "query", "{path} `{name}` is a query parameter");
    (resolve(doc, &p["schema"]), p["required"] == true)
}

#[tokio::test]
async fn the_document_states_the_rules_the_server_enforces() {
    each_backend(|store| async move {
        let app = App::seeded(store).await;
        let doc = document(&app).await;
        let schemas = &doc["components"]["schemas"];

        // The batch body: its own object, and the ssh-key rule of rich containers and VMs.
        let batch = &schemas["CreateBatchBody"];
        let body = &batch["allOf"][0];
        assert_eq!(body["additionalProperties"], false, "{batch}");
        assert_eq!(
            (&body["properties"]["count"]["minimum"], &body["properties"]["count"]["maximum"]),
            (&json!(1), &json!(10000))
        );
        assert!(batch["allOf"][1]["anyOf"].is_array(), "rich and vm need ssh keys: {batch}");
        assert_eq!(body["properties"]["labels"]["maxProperties"], 32);
        assert!(body["properties"]["labels"]["propertyNames"]["allOf"].is_array());
        let reservation = &schemas["CreateReservationBody"]["properties"];
        assert_eq!(
            (&reservation["count"]["minimum"], &reservation["count"]["maximum"]),
            (&json!(1), &json!(10000))
        );
        assert_eq!(reservation["ends_at"]["format"], "date-time");
        assert_eq!(schemas["PriceBody"]["properties"]["effective_from"]["format"], "date-time");

        // Quantities are Kubernetes quantities, by pattern, and the server takes what they allow.
        for rule in ["Cpu", "CpuLimit", "Memory"] {
            let pattern = schemas[rule]["pattern"].as_str().unwrap_or_else(|| panic!("{rule} has a pattern"));
            assert!(pattern.starts_with('^') && pattern.ends_with('$'), "{rule}: {pattern}");
        }
        let acme = app.tenant("acme").await;
        for size in ["cpu=2&memory=4Gi", "cpu=500m&memory=512Mi", "cpu=0.5&memory=1.5Gi", "cpu=1&memory=1G"] {
            app.get(&format!("/v1/capacity?{size}"), &acme.token).await.expect_status(StatusCode::OK);
        }
        assert_eq!(
            resolve(&doc, &schemas["SpecBody"]["properties"]["cpu"])["pattern"],
            schemas["Cpu"]["pattern"]
        );

        // /v1/capacity needs a size; everything else of it is optional.
        let (cpu, required) = query_parameter(&doc, "/v1/capacity", "cpu");
        assert!(required && cpu["pattern"].is_string(), "{cpu}");
        assert!(query_parameter(&doc, "/v1/capacity", "memory").1);
        assert!(!query_parameter(&doc, "/v1/capacity", "area").1);
        let (runtime, _) = query_parameter(&doc, "/v1/capacity", "runtime");
        assert_eq!(runtime["enum"], json!(["container", "rich", "vm"]));

        // Paging: `limit` is 1 to 1000 on every listing.
        for listing in ["/v1/batches", "/v1/instances", "/v1/reservations", "/v1/batches/{id}/instances"] {
            let (limit, required) = query_parameter(&doc, listing, "limit");
            assert!(!required, "{listing}");
            assert_eq!(
                (&limit["minimum"], &limit["maximum"]),
                (&json!(1), &json!(1000)),
                "{listing}: {limit}"
            );
        }

        // Closed sets of words are enums.
        let (state, _) = query_parameter(&doc, "/v1/batches", "state");
        assert_eq!(state["enum"], json!(["active", "released", "expired", "failed"]));
        let (carrier, _) = query_parameter(&doc, "/v1/instances", "carrier");
        assert_eq!(carrier["enum"], json!(["telecom", "unicom", "mobile", "bgp"]));
        let (format, _) = query_parameter(&doc, "/v1/invoices/{period}", "format");
        assert_eq!(format["enum"], json!(["json", "csv"]));
        let (from, _) = query_parameter(&doc, "/v1/usage", "from");
        assert_eq!(from["format"], "date-time", "{from}");
        let idc = &schemas["IdcBody"]["properties"];
        assert_eq!(idc["carriers"]["minItems"], 1);
        assert_eq!(idc["runtimes"]["items"]["enum"], json!(["container", "rich", "vm"]));
    })
    .await;
}
