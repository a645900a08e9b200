//! Load curves end to end: set on a cluster from code or over the control port, moved on by an
//! injected clock, and read back as PodMetrics and NodeMetrics through the real HTTP API with `kube`.

mod common;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use eci_edge_sim::load::Shape;
use eci_edge_sim::{LoadCurve, NodeSpec, Resource, SimCluster, SimConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

/// A clock that stands still until the test moves it.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(
            DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").unwrap().to_utc(),
        )))
    }

    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    fn advance(&self, seconds: i64) {
        *self.0.lock().unwrap() += Duration::seconds(seconds);
    }
}

/// A cluster of one node `n1` whose metrics read `clock`, with no stage engine: the test runs its pods.
async fn cluster(clock: &ManualClock) -> SimCluster {
    let clock = clock.clone();
    let config = SimConfig::default().without_engine().node(NodeSpec::new("n1")).clock(move || clock.now());
    SimCluster::start(config).await.expect("the cluster starts")
}

fn client(cluster: &SimCluster) -> Client {
    Client::try_from(Config::new(cluster.url().parse().expect("the sim url is a uri"))).expect("a client")
}

/// Creates a pod requesting `cpu` through the API, then runs it on `n1` as a kubelet would.
async fn running_pod(cluster: &SimCluster, name: &str, group: &str, cpu: &str) {
    let pods: Api<Pod> = Api::namespaced(client(cluster), "default");
    let requests = json!({"cpu": cpu, "memory": "256Mi"});
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"eci.io/group": group}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"requests": requests}}]},
    }))
    .expect("a valid pod");
    pods.create(&PostParams::default(), &pod).await.expect("the pod is created");
    cluster
        .store()
        .modify(Resource::Pods, Some("default"), name, |pod| {
            pod["spec"]["nodeName"] = json!("n1");
            pod["status"]["phase"] = json!("Running");
        })
        .expect("the pod runs");
}

/// The `metrics.k8s.io` resources, which `k8s-openapi` has no types for.
fn metrics_api(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What the metrics API says each pod of the default namespace uses (its one container's cpu), by name,
/// and what node `n1` uses, with the moment the readings carry.
async fn readings(cluster: &SimCluster) -> (Vec<(String, String)>, String, String) {
    let pods: Api<DynamicObject> =
        Api::namespaced_with(client(cluster), "default", &metrics_api("PodMetrics", "pods"));
    let nodes: Api<DynamicObject> = Api::all_with(client(cluster), &metrics_api("NodeMetrics", "nodes"));
    let mut pod_cpu: Vec<(String, String)> = pods
        .list(&Default::default())
        .await
        .expect("PodMetrics list")
        .items
        .into_iter()
        .map(|m| {
            let cpu = m.data["containers"][0]["usage"]["cpu"].as_str().unwrap_or_default().to_string();
            (m.metadata.name.unwrap_or_default(), cpu)
        })
        .collect();
    pod_cpu.sort();
    let node = nodes.get("n1").await.expect("NodeMetrics of n1");
    let node_cpu = node.data["usage"]["cpu"].as_str().unwrap_or_default().to_string();
    let at = node.data["timestamp"].as_str().unwrap_or_default().to_string();
    (pod_cpu, node_cpu, at)
}

fn cpu(readings: &[(&str, &str)]) -> Vec<(String, String)> {
    readings.iter().map(|(name, cpu)| (name.to_string(), cpu.to_string())).collect()
}

#[tokio::test]
async fn pods_follow_a_steps_curve_as_the_injected_clock_moves_and_their_node_adds_them_up() {
    let clock = ManualClock::new();
    let sim = cluster(&clock).await;
    running_pod(&sim, "web-1", "g-1", "1").await;
    running_pod(&sim, "web-2", "g-1", "1").await;
    running_pod(&sim, "db-1", "g-2", "400m").await;
    let steps = vec![(0.0, 200.0), (60.0, 700.0), (120.0, 300.0)];
    let setting =
        sim.set_load("eci.io/group=g-1", LoadCurve::millicores(Shape::Steps { steps }).unwrap()).unwrap();
    assert_eq!(setting.since, clock.now());

    // The node's base is 100m; db-1 follows no curve and uses half its request.
    let (pods, node, at) = readings(&sim).await;
    assert_eq!(pods, cpu(&[("db-1", "200m"), ("web-1", "200m"), ("web-2", "200m")]));
    assert_eq!((node.as_str(), at.as_str()), ("700m", "2025-06-01T12:00:00Z"));

    clock.advance(59);
    assert_eq!(readings(&sim).await.1, "700m", "a second before the step, still the first value");
    clock.advance(1);
    let (pods, node, at) = readings(&sim).await;
    assert_eq!(pods, cpu(&[("db-1", "200m"), ("web-1", "700m"), ("web-2", "700m")]));
    assert_eq!((node.as_str(), at.as_str()), ("1700m", "2025-06-01T12:01:00Z"));

    clock.advance(600);
    let (pods, node, _) = readings(&sim).await;
    assert_eq!(pods, cpu(&[("db-1", "200m"), ("web-1", "300m"), ("web-2", "300m")]));
    assert_eq!(node, "900m");

    // One pod's own PodMetrics reads the same as the list.
    let one: Api<DynamicObject> =
        Api::namespaced_with(client(&sim), "default", &metrics_api("PodMetrics", "pods"));
    assert_eq!(one.get("web-1").await.unwrap().data["containers"][0]["usage"]["cpu"], "300m");

    sim.clear_load();
    assert!(sim.load().is_empty());
    assert_eq!(readings(&sim).await.1, "1300m", "without curves every pod uses half its request again");
    sim.shutdown().await.unwrap();
}

/// Sends one request to the control port and returns the status code and the body as JSON (`null` when
/// empty).
async fn control(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, body) = common::control_request(addr, method, path, body).await;
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn load_curves_are_set_listed_and_cleared_over_the_control_port() {
    let clock = ManualClock::new();
    let sim = cluster(&clock).await;
    running_pod(&sim, "web-1", "g-1", "500m").await;
    let (addr, path) = (sim.control_addr(), format!("/sim/{}/load", sim.name()));
    let curve =
        json!({"kind": "ramp", "unit": "percent_of_request", "from": 20, "to": 120, "over_seconds": 100});
    let body = json!({"selector": "eci.io/group=g-1", "curve": curve}).to_string();

    let (code, stored) = control(addr, "PUT", &path, &body).await;
    assert_eq!(code, 200, "{stored}");
    let since = "2025-06-01T12:00:00Z";
    let expected = json!({
        "selector": "eci.io/group=g-1",
        "curve": {
            "kind": "ramp", "unit": "percent_of_request", "from": 20.0, "to": 120.0, "over_seconds": 100.0,
        },
        "since": since,
    });
    assert_eq!(stored, expected);
    assert_eq!(control(addr, "GET", &path, "").await, (200, json!({"items": [expected]})));

    // 20% of 500m at first, 70% halfway up the ramp.
    assert_eq!(readings(&sim).await.0, cpu(&[("web-1", "100m")]));
    clock.advance(50);
    assert_eq!(readings(&sim).await.0, cpu(&[("web-1", "350m")]));

    let (code, body) = control(addr, "DELETE", &path, "").await;
    assert_eq!((code, body), (204, Value::Null));
    assert_eq!(control(addr, "GET", &path, "").await, (200, json!({"items": []})));
    assert_eq!(readings(&sim).await.0, cpu(&[("web-1", "250m")]));

    let sine = json!({"kind": "sine", "mean": 5, "amplitude": 1, "period_seconds": 0});
    let constant = json!({"kind": "constant", "value": 1});
    let refusals = [
        (json!({"selector": "app=x", "curve": sine}).to_string(), "`period_seconds` must be greater than 0"),
        (json!({"selector": "app in x", "curve": constant}).to_string(), "unable to parse requirement"),
        (json!({"selector": "app=x", "curve": constant, "extra": 1}).to_string(), "unknown field `extra`"),
        ("{not json".to_string(), "load body"),
    ];
    for (body, why) in refusals {
        let (code, status) = control(addr, "PUT", &path, &body).await;
        assert_eq!((code, &status["reason"]), (400, &json!("BadRequest")), "{body}");
        assert!(status["message"].as_str().unwrap_or_default().contains(why), "{body}: {status}");
    }
    assert!(sim.load().is_empty(), "a refused curve changes nothing");

    let (code, status) = control(addr, "GET", "/sim/nowhere/load", "").await;
    assert_eq!((code, &status["reason"]), (404, &json!("NotFound")));
    sim.shutdown().await.unwrap();
}
