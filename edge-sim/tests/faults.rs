//! Fault injection over HTTP, as tests and the demo use it: `PUT /sim/{cluster}/fault` makes the cluster
//! unreachable, black-holed, slow or flapping for every client, and heals it again; and what happens
//! behind a cut link (a node evicting a Pod) is told when the link returns.

mod common;

use std::time::Duration;

use eci_edge_sim::{ControlServer, EngineConfig, Fault, NodeSpec, SimCluster, SimConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// Sends one request to `path` under the cluster's control endpoints and returns the status code and
/// the body.
async fn control(sim: &SimCluster, method: &str, path: &str, body: &str) -> (u16, String) {
    let path = format!("/sim/{}{path}", sim.name());
    common::control_request(sim.control_addr(), method, &path, body).await
}

/// Sends `PUT /sim/{cluster}/fault` with `body` and returns the status code.
async fn put_fault(sim: &SimCluster, body: &str) -> u16 {
    control(sim, "PUT", "/fault", body).await.0
}

/// Whether `check` comes true within a generous guard: the listener applies a new fault a moment
/// after it is set.
async fn soon<F: AsyncFnMut() -> bool>(mut check: F) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Whether connecting to the cluster's API port is refused.
async fn refused(sim: &SimCluster) -> bool {
    matches!(
        tokio::net::TcpStream::connect(sim.addr()).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn answers(client: &kube::Client) -> bool {
    matches!(tokio::time::timeout(Duration::from_millis(500), client.apiserver_version()).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_set_over_http_cut_every_client_off_until_healed() {
    let sim = SimCluster::start(SimConfig::default().without_engine()).await.expect("start");
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    assert!(answers(&client).await);

    assert_eq!(put_fault(&sim, r#"{"fault": "unreachable"}"#).await, 204);
    // The client's pooled connection is cut and a new one is refused, as for a real IDC out of reach.
    assert!(!answers(&client).await, "an unreachable cluster answers nothing");
    assert!(soon(async || refused(&sim).await).await, "connecting is refused");

    // A black hole accepts and never answers; the admin endpoint still works, so it can be healed.
    assert_eq!(put_fault(&sim, r#"{"fault": "black_hole"}"#).await, 204);
    assert!(!answers(&client).await, "a black-holed cluster never answers");

    assert_eq!(put_fault(&sim, r#"{"fault": "slow"}"#).await, 400, "slow needs its delay");
    assert_eq!(put_fault(&sim, r#"{"fault": "cut"}"#).await, 400);
    assert_eq!(put_fault(&sim, r#"{"fault": "none"}"#).await, 204);
    assert!(soon(async || answers(&client).await).await, "healed, on the same address");

    sim.set_fault(Fault::Unreachable);
    assert!(!answers(&client).await);
    sim.set_fault(Fault::None);
    assert!(soon(async || answers(&client).await).await);
    sim.shutdown().await.expect("shutdown");
}

/// A partition reaches watches that were already streaming: they end, and what changes in the
/// cluster meanwhile is not delivered over the broken link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_watches_already_streaming() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    let sim = SimCluster::start(SimConfig::default().without_engine()).await.expect("start");
    let mut config = kube::Config::new(sim.url().parse().unwrap());
    config.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
            .unwrap()
    };
    let mut events = pods.watch(&WatchParams::default(), "0").await.expect("watch").boxed();
    pods.create(&PostParams::default(), &pod("before")).await.expect("create");
    let first = events.try_next().await.expect("an event").expect("the stream is open");
    assert!(matches!(first, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("before")));

    sim.set_fault(Fault::Unreachable);
    let during = serde_json::json!({"metadata": {"name": "during"}, "spec": {"containers": [{"name": "c"}]}});
    sim.store().create(eci_edge_sim::Resource::Pods, Some("default"), during).expect("create in the cluster");
    // A generous guard against a hang, not a speed bound: the stream ends as soon as the link breaks.
    let rest = tokio::time::timeout(Duration::from_secs(60), events.collect::<Vec<_>>())
        .await
        .expect("the watch ends when the link goes down");
    assert!(
        !rest
            .iter()
            .any(|e| matches!(e, Ok(WatchEvent::Added(p)) if p.metadata.name.as_deref() == Some("during"))),
        "nothing crosses a broken link: {rest:?}"
    );
    sim.set_fault(Fault::None);
    sim.shutdown().await.expect("shutdown");
}

/// A node evicts a Pod while the link is down (the control port still reaches the cluster); once
/// the link returns, clients see it failed, with the moment its container finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_evicted_behind_a_cut_link_reports_when_it_stopped() {
    let sim = SimCluster::start(
        SimConfig::default()
            .engine(EngineConfig::default().boot_delay(Duration::ZERO))
            .node(NodeSpec::new("node-1")),
    )
    .await
    .expect("start");
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.expect("create");
    let phase =
        async |pods: &Api<Pod>| pods.get("web").await.ok().and_then(|p| p.status?.phase).unwrap_or_default();
    assert!(soon(async || phase(&pods).await == "Running").await);

    assert_eq!(put_fault(&sim, r#"{"fault": "unreachable"}"#).await, 204);
    let at = r#"{"at": "2030-01-10T14:00:00.125Z"}"#;
    let (code, body) = control(&sim, "POST", "/namespaces/default/pods/web/evict", at).await;
    assert_eq!(code, 200, "{body}");
    // Evicting what has stopped already changes nothing.
    let later = r#"{"at": "2030-01-10T15:00:00Z"}"#;
    assert_eq!(control(&sim, "POST", "/namespaces/default/pods/web/evict", later).await.0, 200);
    let (code, body) = control(&sim, "POST", "/namespaces/default/pods/nope/evict", "").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("NotFound"), "a Kubernetes Status: {body}");
    assert_eq!(control(&sim, "POST", "/namespaces/default/services/web/evict", "").await.0, 400);
    assert_eq!(control(&sim, "POST", "/namespaces/default/pods/web/evict", r#"{"at": 3}"#).await.0, 400);

    assert_eq!(put_fault(&sim, r#"{"fault": "none"}"#).await, 204);
    assert!(soon(async || phase(&pods).await == "Failed").await);
    let status = pods.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    let container = &status.container_statuses.unwrap()[0];
    let terminated = container.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("terminated");
    assert_eq!(
        terminated.finished_at.as_ref().map(|t| t.0.to_string()).as_deref(),
        Some("2030-01-10T14:00:00.125Z")
    );
    assert!(!container.ready);
    sim.shutdown().await.expect("shutdown");
}

/// Many clusters share one control port, each under its name: a fault set for one reaches no other,
/// and a name no cluster has is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_control_port_serves_many_clusters_by_name() {
    let control = ControlServer::start(([127, 0, 0, 1], 0).into()).await.expect("control port");
    let start = async |name: &str| {
        SimCluster::start(SimConfig::default().name(name).without_engine().control(control.clone()))
            .await
            .expect("start")
    };
    let (east, west) = (start("idc-east").await, start("idc-west").await);
    assert_eq!(east.control_addr(), west.control_addr());
    assert_eq!(east.control_url(), format!("http://{}/sim/idc-east", control.addr()));
    let client =
        |sim: &SimCluster| kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    let (to_east, to_west) = (client(&east), client(&west));

    assert_eq!(put_fault(&east, r#"{"fault": "unreachable"}"#).await, 204);
    assert!(!answers(&to_east).await, "the faulted cluster is cut off");
    assert!(answers(&to_west).await, "its neighbour on the same control port is not");
    assert_eq!(
        common::control_request(control.addr(), "PUT", "/sim/idc-nowhere/fault", r#"{"fault": "none"}"#)
            .await
            .0,
        404
    );
    assert_eq!(put_fault(&east, r#"{"fault": "none"}"#).await, 204);
    assert!(soon(async || answers(&to_east).await).await);

    let east_fault = format!("/sim/{}/fault", east.name());
    east.shutdown().await.expect("shutdown");
    let after_stop =
        common::control_request(control.addr(), "PUT", &east_fault, r#"{"fault": "none"}"#).await.0;
    assert_eq!(after_stop, 404, "a stopped cluster leaves the port");
    assert_eq!(put_fault(&west, r#"{"fault": "none"}"#).await, 204, "the others stay");
    west.shutdown().await.expect("shutdown");
    control.shutdown().await.expect("control shutdown");
}
