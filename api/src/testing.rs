//! Test harness for the API's tests and the end-to-end tests built on it (enabled by the `testing`
//! feature): an app over a fresh harness store (the harness's six-IDC fleet, an admin key, tenants
//! with keys), and a tiny client that drives the real router with `tower::ServiceExt::oneshot`, no
//! socket.
//!
//! Every test body runs on SQLite and PostgreSQL through `each_backend`, which labels a failure with
//! the backend it happened on.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{ApiConfig, AppState};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::{DateTime, Duration, Utc};
use eci_core::{IdcId, ManualClock, MiB, MilliCpu, Quota, Resources};
use eci_store::Store;
use eci_store::coordination::RateWindows;
use eci_store::testing;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub use eci_store::testing::{FLEET_ROOM, each_backend, each_backend_with, t0};

/// What the router answered: status, JSON body (`Null` when empty) and headers.
pub type Reply = (StatusCode, Value, HeaderMap);

/// The secret of the admin key every app is seeded with.
pub const ADMIN: &str = "eci_test_admin_secret";

/// The ids of the harness fleet's IDCs; none of them may ever show up in a customer's placement.
pub const IDC_IDS: [&str; 6] = ["gd-gz-1", "gd-sz-1", "gd-sz-2", "zj-hz-1", "zj-hz-2", "zj-nb-1"];

/// The size the harness fleet is measured in (1 vCPU, 4 GiB), as a capacity query.
pub const SMALL: &str = "cpu=1&memory=4Gi";

/// Sends one request through a clone of `router`.
pub async fn send(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(("authorization".to_string(), format!("Bearer {t}")));
    }
    let raw = body.map(|b| {
        headers.push(("content-type".to_string(), "application/json".to_string()));
        b.to_string()
    });
    send_raw(router, method, path, &headers, raw).await
}

/// Sends one request with exactly these headers and this body text.
pub async fn send_raw(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: Option<String>,
) -> Reply {
    send_bytes(router, method, path, headers, body.map(String::into_bytes)).await
}

/// Sends one request with exactly these headers and these body bytes, which need not be UTF-8.
pub async fn send_bytes(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
) -> Reply {
    let mut request = Request::builder().method(method.clone()).uri(path);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(body.map(Body::from).unwrap_or_else(Body::empty)).expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("a readable body").to_bytes();
    // A body that is not JSON comes back as a string, for tests that check it is JSON.
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body, headers)
}

/// Checks a reply's status and hands back its body; on a mismatch, shows what came instead.
pub trait Expect {
    /// The body, after asserting the status is `want`.
    fn expect_status(self, want: StatusCode) -> Value;
}

impl Expect for Reply {
    #[track_caller]
    fn expect_status(self, want: StatusCode) -> Value {
        assert_eq!(self.0, want, "unexpected status; body: {}", self.1);
        self.1
    }
}

/// Checks that `reply` is the error `status`/`code` in the one error shape
/// `{"error": {"code", "message", "details"}}`, and returns its details.
#[track_caller]
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) -> Value {
    let (got, body, _) = reply;
    assert_eq!(*got, status, "unexpected status; body: {body}");
    let outer = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(outer.keys().collect::<Vec<_>>(), vec!["error"], "error body has other keys: {body}");
    let error = body["error"].as_object().unwrap_or_else(|| panic!("`error` is not an object: {body}"));
    let mut keys: Vec<&String> = error.keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["code", "details", "message"], "error fields: {body}");
    assert_eq!(body["error"]["code"], code, "error code: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("message not a string: {body}"));
    assert!(!message.is_empty(), "an error message says something: {body}");
    assert!(body["error"]["details"].is_object(), "details is an object: {body}");
    body["error"]["details"].clone()
}

/// Checks that `reply` is a 400 `invalid_request` naming `field`, and returns its details.
#[track_caller]
pub fn assert_invalid(reply: &Reply, field: &str) -> Value {
    let details = assert_error(reply, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(details["field"], field, "the field named by {}", reply.1);
    assert!(details["reason"].as_str().is_some_and(|r| !r.is_empty()), "a reason is given: {}", reply.1);
    details
}

/// Checks that `reply` is a 422 `unprocessable_request` naming `field` (well-formed, but not possible
/// now), and returns its details.
#[track_caller]
pub fn assert_unprocessable(reply: &Reply, field: &str) -> Value {
    let details = assert_error(reply, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_request");
    assert_eq!(details["field"], field, "the field named by {}", reply.1);
    details
}

/// A tenant seeded through the store, with a key whose secret the test chose.
#[derive(Debug, Clone)]
pub struct TestTenant {
    /// The tenant's id (`t-...`).
    pub id: String,
    /// The tenant's name.
    pub name: String,
    /// The secret of its key, to send as the bearer token.
    pub token: String,
    /// The id of that key (`k-...`).
    pub key_id: String,
}

/// The API over one fresh store, with its clock standing still at [`t0`] until told to move.
pub struct App {
    /// The whole API, as `eci` serves it.
    pub router: Router,
    /// What the handlers share.
    pub state: AppState,
    /// The clock every handler reads; tests move it.
    pub clock: Arc<ManualClock>,
    /// The store behind the API.
    pub store: Store,
    /// The id of the admin key whose secret is [`ADMIN`].
    pub admin_key_id: String,
}

impl App {
    /// The harness fleet (96 small instances of room in five active IDCs, one draining) and an
    /// admin key with secret [`ADMIN`].
    pub async fn seeded(store: Store) -> App {
        testing::seed_fleet(&store, &testing::fleet()).await;
        App::without_fleet(store).await
    }

    /// No IDCs at all; just the admin key.
    pub async fn without_fleet(store: Store) -> App {
        let key = store.create_key(None, true, "root", ADMIN, t0()).await.expect("creating the admin key");
        let clock = Arc::new(ManualClock::new(t0()));
        // Alerts counted in the metrics and delivered nowhere, as `eci` runs without receivers.
        let state = AppState::new(store, RateWindows::in_process(), clock.clone(), ApiConfig::default())
            .raising_alerts(crate::alerts::AlertConfig::default());
        let store = state.store.clone();
        App { router: crate::router(state.clone()), state, clock, store, admin_key_id: key.id.0 }
    }

    /// The API as it comes back after a restart of the control plane: a new process state over
    /// `store` (the same database, opened again), on the same clock.
    pub fn restarted(&self, store: Store) -> App {
        let state = AppState::new(store, RateWindows::in_process(), self.clock.clone(), ApiConfig::default())
            .raising_alerts(crate::alerts::AlertConfig::default());
        App {
            router: crate::router(state.clone()),
            store: state.store.clone(),
            state,
            clock: self.clock.clone(),
            admin_key_id: self.admin_key_id.clone(),
        }
    }

    /// A tenant without limits, except a request rate high enough for any test: the clock stands
    /// still, so every request of a test falls in the same one-second window.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        self.tenant_with(name, Quota { requests_per_second: Some(1_000_000), ..Quota::default() }).await
    }

    /// A new tenant with a key and `quota`.
    pub async fn tenant_with(&self, name: &str, quota: Quota) -> TestTenant {
        let tenant = testing::seed_tenant(&self.store, name, quota).await;
        let token = format!("eci_test_{name}_secret");
        let key =
            self.store.create_key(Some(&tenant.id), false, name, &token, t0()).await.expect("a tenant key");
        TestTenant { id: tenant.id.0, name: name.to_string(), token, key_id: key.id.0 }
    }

    /// The app's clock.
    pub fn clock_now(&self) -> DateTime<Utc> {
        use eci_core::Clock;
        self.clock.now()
    }

    /// Moves the app's clock forward.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(Duration::seconds(seconds));
    }

    /// Sends one request through the router, with a bearer `token` and a JSON `body` if given.
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        send(&self.router, method, path, token, body).await
    }

    /// `GET path` as the holder of `token`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// `POST path` with `body` as the holder of `token`.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    /// `PUT path` with `body` as the holder of `token`.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }

    /// `DELETE path` as the holder of `token`.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// `POST /v1/batches` with an `Idempotency-Key`.
    pub async fn post_idempotent(&self, token: &str, key: &str, body: Value) -> Reply {
        let headers = [
            ("authorization".to_string(), format!("Bearer {token}")),
            ("content-type".to_string(), "application/json".to_string()),
            ("idempotency-key".to_string(), key.to_string()),
        ];
        send_raw(&self.router, Method::POST, "/v1/batches", &headers, Some(body.to_string())).await
    }

    /// Creates a batch and returns it, insisting on a 202.
    pub async fn create_batch(&self, token: &str, body: Value) -> Value {
        self.post("/v1/batches", token, body).await.expect_status(StatusCode::ACCEPTED)
    }

    /// Every item of a paged listing, following `next_cursor` to the end.
    pub async fn all_pages(&self, path: &str, token: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_string(),
            };
            let page = self.get(&url, token).await.expect_status(StatusCode::OK);
            items.extend(page["items"].as_array().expect("a page has items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
        panic!("{path} never stopped paging");
    }

    /// `GET /v1/capacity?<query>` as `token` sees it: how many instances of that size fit.
    pub async fn capacity(&self, token: &str, query: &str) -> u64 {
        let view = self.get(&format!("/v1/capacity?{query}"), token).await.expect_status(StatusCode::OK);
        view["total"].as_u64().unwrap_or_else(|| panic!("capacity total is a number: {view}"))
    }

    /// A tenant as admins see it.
    pub async fn admin_tenant(&self, id: &str) -> Value {
        self.get(&format!("/v1/admin/tenants/{id}"), ADMIN).await.expect_status(StatusCode::OK)
    }

    /// An IDC as admins see it.
    pub async fn admin_idc(&self, id: &str) -> Value {
        self.get(&format!("/v1/admin/idcs/{id}"), ADMIN).await.expect_status(StatusCode::OK)
    }

    /// Has an IDC's cluster read as exactly as big as its bound, like the seeded IDCs': what its
    /// instance manager would record on its first pass, without which an IDC put through the admin
    /// API sells nothing. Returns the IDC as admins then see it.
    pub async fn read_cluster_as_bound(&self, id: &str) -> Value {
        let (idc, _) = self.store.get_idc(&IdcId(id.to_string())).await.expect("a known IDC");
        testing::read_cluster_as_bound(&self.store, &idc).await;
        self.admin_idc(id).await
    }
}

/// The smallest valid batch body: `count` plain containers of 1 vCPU and 4 GiB, anywhere.
pub fn batch(count: u64) -> Value {
    json!({ "count": count, "spec": { "cpu": "1", "memory": "4Gi" }, "image": "nginx:1.27" })
}

/// [`batch`] with `placement` set.
pub fn batch_in(count: u64, placement: Value) -> Value {
    let mut body = batch(count);
    body["placement"] = placement;
    body
}

/// `f(body)` applied to a copy of `body`, for one-field variations.
pub fn with(body: &Value, f: impl FnOnce(&mut Value)) -> Value {
    let mut body = body.clone();
    f(&mut body);
    body
}

/// The ids of the items of a listing.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["id"].as_str().expect("every item has an id").to_string()).collect()
}

/// The `items` of one page.
pub fn items(page: &Value) -> Vec<Value> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page}")).clone()
}

/// Instances counted by (region, province, city, carrier), the key a batch's placement is summed by.
pub fn by_location(instances: &[Value]) -> BTreeMap<(String, String, String, String), u64> {
    let mut out = BTreeMap::new();
    for i in instances {
        let key = |f: &str| i[f].as_str().unwrap_or_else(|| panic!("instance {f}: {i}")).to_string();
        *out.entry((key("region"), key("province"), key("city"), key("carrier"))).or_default() += 1;
    }
    out
}

/// A batch's `placement` list keyed like [`by_location`].
pub fn placement_of(batch: &Value) -> BTreeMap<(String, String, String, String), u64> {
    let mut out = BTreeMap::new();
    for p in batch["placement"].as_array().unwrap_or_else(|| panic!("batch placement is a list: {batch}")) {
        let key = |f: &str| p[f].as_str().unwrap_or_else(|| panic!("placement {f}: {p}")).to_string();
        let n = p["count"].as_u64().unwrap_or_else(|| panic!("placement count: {p}"));
        *out.entry((key("region"), key("province"), key("city"), key("carrier"))).or_default() += n;
    }
    out
}

/// A spec as the API writes it (`{"cpu": "2", "memory": "4Gi", "gpu": 0}`), parsed back.
pub fn spec(v: &Value) -> Resources {
    let cpu = MilliCpu::parse(v["cpu"].as_str().unwrap_or_else(|| panic!("spec cpu: {v}")))
        .expect("a cpu quantity");
    let memory =
        MiB::parse(v["memory"].as_str().unwrap_or_else(|| panic!("spec memory: {v}"))).expect("a memory");
    let gpu = v["gpu"].as_u64().unwrap_or(0) as u32;
    Resources::new(cpu, memory, gpu)
}

/// A timestamp field, parsed.
pub fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"))
        .with_timezone(&Utc)
}

/// `t0` plus `seconds`, as the API would print it in a body.
pub fn at(seconds: i64) -> String {
    (t0() + Duration::seconds(seconds)).to_rfc3339()
}
