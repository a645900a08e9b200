//! The API through the router itself (no socket): the wire details clients depend on.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use eci_edge_sim::api::{ApiState, ApiStats, router};
use eci_edge_sim::{Resource, Store, StoreConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

struct Harness {
    store: Arc<Store>,
    app: Router,
    _shutdown: watch::Sender<bool>,
}

fn harness(config: StoreConfig) -> Harness {
    let store = Arc::new(Store::new(config));
    store.create(Resource::Namespaces, None, json!({"metadata": {"name": "default"}})).unwrap();
    let (shutdown, signal) = watch::channel(false);
    let state = ApiState {
        store: store.clone(),
        bookmark_interval: Duration::from_millis(50),
        stats: Arc::new(ApiStats::default()),
        shutdown: signal,
        link: watch::channel(eci_edge_sim::Fault::None).1,
        load: Arc::default(),
        admission: Arc::default(),
    };
    Harness { store, app: router(state), _shutdown: shutdown }
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}})
}

impl Harness {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String, Body) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = self.app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        (response.status(), content_type.unwrap_or_default(), response.into_body())
    }

    async fn json(
        &self,
        method: &str,
        uri: &str,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, content_type, body) = self.send(method, uri, accept, body).await;
        assert_eq!(content_type, "application/json", "{method} {uri}");
        let bytes = body.collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

/// Read watch events from a streaming body until `count` have arrived (frames may hold several lines).
async fn events(body: &mut Body, count: usize) -> Vec<Value> {
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    while events.len() < count {
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        buffer.extend_from_slice(&frame.into_data().unwrap_or_else(|_| Bytes::new()));
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn discovery_answers_in_json_with_the_legacy_documents() {
    let h = harness(StoreConfig::default());
    let (status, version) = h.json("GET", "/version", None, None).await;
    assert_eq!((status, version["major"].as_str()), (StatusCode::OK, Some("1")));
    let aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (_, api) = h.json("GET", "/api", Some(aggregated), None).await;
    assert_eq!(api["kind"], "APIVersions");
    let (_, apis) = h.json("GET", "/apis", Some(aggregated), None).await;
    assert_eq!(apis["kind"], "APIGroupList");
    let (_, core) = h.json("GET", "/api/v1", None, None).await;
    assert_eq!(core["kind"], "APIResourceList");
    let (_, kubevirt) = h.json("GET", "/apis/kubevirt.io/v1", None, None).await;
    assert_eq!(kubevirt["groupVersion"], "kubevirt.io/v1");
    let (status, missing) = h.json("GET", "/apis/apps/v1", None, None).await;
    assert_eq!((status, missing["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
}

#[tokio::test]
async fn lists_parse_sloppy_queries_and_refuse_malformed_selectors() {
    let h = harness(StoreConfig::default());
    for name in ["a", "b", "c"] {
        h.store.create(Resource::Pods, Some("default"), pod(name)).unwrap();
    }
    let (status, list) = h.json("GET", "/api/v1/namespaces/default/pods?&limit=2&", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let token = list["metadata"]["continue"].as_str().unwrap();
    let (_, rest) = h.json("GET", &format!("/api/v1/pods?limit=2&continue={token}"), None, None).await;
    assert_eq!(rest["items"][0]["metadata"]["name"], "c");
    assert!(rest["metadata"].get("continue").is_none());

    let (_, by_name) = h.json("GET", "/api/v1/pods?fieldSelector=metadata.name%3Db", None, None).await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    let (status, bad) = h.json("GET", "/api/v1/pods?labelSelector=app%20in%20x", None, None).await;
    assert_eq!(
        (status, bad["reason"].as_str(), bad["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"), Some(400))
    );
    let (status, _) = h.json("GET", "/api/v1/pods?fieldSelector=spec.image%3Dx", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.json("GET", "/api/v1/namespaces/default/pods?", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_list_asked_for_as_a_table_has_pod_columns_and_rows() {
    let h = harness(StoreConfig::default());
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    let (_, table) = h.json("GET", "/api/v1/namespaces/default/pods?limit=500", Some(TABLE), None).await;
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> =
        table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]);
    assert_eq!(table["rows"][0]["cells"][0], "a");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "a");
    assert!(table["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));
}

#[tokio::test]
async fn create_delete_and_errors_speak_status_objects() {
    let h = harness(StoreConfig::default());
    let (status, created) = h.json("POST", "/api/v1/namespaces/default/pods", None, Some(pod("a"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["metadata"]["namespace"], "default");
    let (status, again) = h.json("POST", "/api/v1/namespaces/default/pods", None, Some(pod("a"))).await;
    assert_eq!((status, again["reason"].as_str()), (StatusCode::CONFLICT, Some("AlreadyExists")));
    assert_eq!(again["kind"], "Status");
    assert_eq!(again["status"], "Failure");
    let (status, invalid) =
        h.json("POST", "/api/v1/namespaces/default/pods", None, Some(json!({"metadata": {}}))).await;
    assert_eq!((status, invalid["reason"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid")));
    let (status, _) = h
        .json(
            "POST",
            "/api/v1/namespaces/default/pods",
            None,
            Some(json!({"metadata": {"generateName": "g-"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
    let (status, deleted) = h.json("DELETE", "/api/v1/namespaces/default/pods/a", None, Some(options)).await;
    assert_eq!((status, deleted["metadata"]["name"].as_str()), (StatusCode::OK, Some("a")));
    let (status, gone) = h.json("GET", "/api/v1/namespaces/default/pods/a", None, None).await;
    assert_eq!((status, gone["message"].as_str()), (StatusCode::NOT_FOUND, Some("pods \"a\" not found")));
    let (status, _) = h.json("DELETE", "/api/v1/namespaces/default/pods/a", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.json("GET", "/nothing/here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_graceful_pod_delete_marks_it_terminating_when_grace_is_honoured() {
    let h = harness(StoreConfig::default().honour_grace_period(true));
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    let (status, object) = h
        .json("DELETE", "/api/v1/namespaces/default/pods/a", None, Some(json!({"gracePeriodSeconds": 3600})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(object["metadata"]["deletionTimestamp"].is_string());
    let (_, table) = h.json("GET", "/api/v1/namespaces/default/pods/a", Some(TABLE), None).await;
    assert_eq!(table["rows"][0]["cells"][2], "Terminating");
    let (status, _) = h
        .json("DELETE", "/api/v1/namespaces/default/pods/a", None, Some(json!({"gracePeriodSeconds": 0})))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn put_and_patch_change_objects_and_their_status_separately() {
    let h = harness(StoreConfig::default());
    let (_, created) = h.json("POST", "/api/v1/namespaces/default/pods", None, Some(pod("a"))).await;
    let mut replaced = created.clone();
    replaced["metadata"]["labels"]["tier"] = json!("web");
    let (status, put) = h.json("PUT", "/api/v1/namespaces/default/pods/a", None, Some(replaced)).await;
    assert_eq!((status, put["metadata"]["labels"]["tier"].as_str()), (StatusCode::OK, Some("web")));
    let (status, stale) = h.json("PUT", "/api/v1/namespaces/default/pods/a", None, Some(created)).await;
    assert_eq!((status, stale["reason"].as_str()), (StatusCode::CONFLICT, Some("Conflict")));

    let request = Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/pods/a/status")
        .header(header::CONTENT_TYPE, "application/strategic-merge-patch+json")
        .body(Body::from(json!({"status": {"phase": "Running"}}).to_string()))
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(h.store.get(Resource::Pods, Some("default"), "a").unwrap()["status"]["phase"], "Running");

    let request = Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/pods/a")
        .header(header::CONTENT_TYPE, "application/json-patch+json")
        .body(Body::from("[]"))
        .unwrap();
    assert_eq!(h.app.clone().oneshot(request).await.unwrap().status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_watch_from_zero_starts_with_the_current_state_then_goes_live() {
    let h = harness(StoreConfig::default());
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    let (status, content_type, mut body) =
        h.send("GET", "/api/v1/namespaces/default/pods?watch=1&resourceVersion=0", None, None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    let first = events(&mut body, 1).await;
    assert_eq!(
        (first[0]["type"].as_str(), first[0]["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("a"))
    );

    h.store
        .modify(Resource::Pods, Some("default"), "a", |p| p["status"]["phase"] = json!("Running"))
        .unwrap();
    h.store.delete(Resource::Pods, Some("default"), "a", None).unwrap();
    let live = events(&mut body, 2).await;
    let types: Vec<&str> = live.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["MODIFIED", "DELETED"]);
    assert!(
        live.iter()
            .all(|e| e["object"]["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()))
    );
}

#[tokio::test]
async fn a_watch_resumes_from_a_known_version_and_a_selector_turns_leaving_into_deleted() {
    let h = harness(StoreConfig::default());
    let a = h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    h.store.create(Resource::Pods, Some("default"), pod("b")).unwrap();
    let rv = a["metadata"]["resourceVersion"].as_str().unwrap();
    let uri =
        format!("/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dx&resourceVersion={rv}");
    let (_, _, mut body) = h.send("GET", &uri, None, None).await;
    let replayed = events(&mut body, 1).await;
    assert_eq!(replayed[0]["object"]["metadata"]["name"], "b");
    h.store
        .modify(Resource::Pods, Some("default"), "b", |p| p["metadata"]["labels"]["app"] = json!("y"))
        .unwrap();
    let left = events(&mut body, 1).await;
    assert_eq!(
        (left[0]["type"].as_str(), left[0]["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("b"))
    );
}

#[tokio::test]
async fn a_watch_from_an_expired_version_is_a_200_stream_with_one_410_error_event() {
    let h = harness(StoreConfig::default().history_limit(2));
    for name in ["a", "b", "c", "d"] {
        h.store.create(Resource::Pods, Some("default"), pod(name)).unwrap();
    }
    let (status, _, body) =
        h.send("GET", "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let bytes = body.collect().await.unwrap().to_bytes();
    let event: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(
        (event["object"]["kind"].as_str(), event["object"]["code"].as_i64()),
        (Some("Status"), Some(410))
    );
    assert_eq!(event["object"]["reason"], "Expired");
}

#[tokio::test]
async fn a_watch_sends_bookmarks_tables_and_ends_at_its_timeout() {
    let h = harness(StoreConfig::default());
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    let rv = h.store.resource_version();
    let uri = format!("/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}");
    let (_, _, mut body) = h.send("GET", &uri, None, None).await;
    let bookmark = events(&mut body, 1).await;
    assert_eq!(bookmark[0]["type"], "BOOKMARK");
    assert_eq!(bookmark[0]["object"]["metadata"]["resourceVersion"], rv.to_string());
    assert_eq!(bookmark[0]["object"]["kind"], "Pod");

    let (_, _, mut table_body) =
        h.send("GET", "/api/v1/namespaces/default/pods?watch=true", Some(TABLE), None).await;
    let added = events(&mut table_body, 1).await;
    assert_eq!(added[0]["object"]["kind"], "Table");
    assert_eq!(added[0]["object"]["rows"][0]["cells"][0], "a");

    let (_, _, timed) =
        h.send("GET", "/api/v1/pods?watch=true&timeoutSeconds=1&resourceVersion=0", None, None).await;
    let all = timed.collect().await.unwrap().to_bytes();
    assert_eq!(all.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(), 1, "one ADDED, then the end");
}

#[tokio::test]
async fn initial_events_end_with_an_annotated_bookmark_when_asked() {
    let h = harness(StoreConfig::default());
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    let uri = "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let (_, _, mut body) = h.send("GET", uri, None, None).await;
    let initial = events(&mut body, 2).await;
    assert_eq!(initial[0]["type"], "ADDED");
    assert_eq!(initial[1]["type"], "BOOKMARK");
    assert_eq!(initial[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
}

#[tokio::test]
async fn metrics_are_served_for_running_pods_and_all_nodes() {
    let h = harness(StoreConfig::default());
    h.store.create(Resource::Nodes, None, eci_edge_sim::NodeSpec::new("n1").to_object()).unwrap();
    h.store.create(Resource::Pods, Some("default"), pod("a")).unwrap();
    h.store.create(Resource::Pods, Some("default"), pod("b")).unwrap();
    h.store
        .modify(Resource::Pods, Some("default"), "a", |p| {
            p["spec"]["nodeName"] = json!("n1");
            p["status"]["phase"] = json!("Running");
        })
        .unwrap();
    let (status, pods) =
        h.json("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods", None, None).await;
    assert_eq!((status, pods["kind"].as_str()), (StatusCode::OK, Some("PodMetricsList")));
    let names: Vec<&str> =
        pods["items"].as_array().unwrap().iter().map(|m| m["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a"], "only running pods have metrics");
    let (status, _) =
        h.json("GET", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/b", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, node) = h.json("GET", "/apis/metrics.k8s.io/v1beta1/nodes/n1", None, None).await;
    assert_eq!(node["kind"], "NodeMetrics");
}
