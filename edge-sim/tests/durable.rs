//! A simulated cluster that keeps its objects in a file comes back from a restart, clean or not, as
//! it was: the same Pods with their uids, IPs, phases and resourceVersions, its nodes' allocations,
//! NodePorts taken, and resourceVersions that go on growing; a watch from before the restart relists.

use std::sync::Arc;
use std::time::Duration;

use eci_edge_sim::{EngineConfig, NodeSpec, ObjectFile, Resource, SimCluster, SimConfig, StoreConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

fn config(name: &str, file: &Arc<ObjectFile>) -> SimConfig {
    SimConfig::default()
        .name(name)
        .objects(file.clone())
        .engine(EngineConfig::default().boot_delay(Duration::ZERO))
        .node(NodeSpec::new("node-1").cpu_millis(4000))
}

fn pods(sim: &SimCluster) -> Api<Pod> {
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
    Api::namespaced(client, "default")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c",
        "image": "nginx:1.27", "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]}}))
    .unwrap()
}

/// Waits (with a generous guard against a hang, not a speed bound) until `name` runs.
async fn running(pods: &Api<Pod>, name: &str) -> Pod {
    for _ in 0..400 {
        if let Ok(pod) = pods.get(name).await
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} never ran");
}

fn identity(pod: &Pod) -> (Option<String>, Option<String>, Option<String>, Option<String>) {
    let status = pod.status.clone().unwrap_or_default();
    (pod.metadata.uid.clone(), status.pod_ip, status.phase, pod.metadata.resource_version.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_started_again_on_its_file_finds_every_object_as_it_was() {
    let dir = tempfile_dir();
    let file = ObjectFile::open(&dir.join("clusters.db")).expect("open");
    let sim = SimCluster::start(config("idc-kept", &file)).await.expect("start");
    let api = pods(&sim);
    for name in ["web-1", "web-2", "web-3"] {
        api.create(&PostParams::default(), &pod(name)).await.expect("create");
    }
    let before: Vec<Pod> =
        futures::future::join_all(["web-1", "web-2", "web-3"].map(|n| running(&api, n))).await;
    api.delete("web-3", &DeleteParams::default()).await.expect("delete");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "ssh"},
        "spec": {"type": "NodePort", "ports": [{"port": 22}]}}))
    .unwrap();
    let service = Api::<Service>::namespaced(api.clone().into_client(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("service");
    let last_version = sim.store().resource_version();
    // Stopped without a shutdown, as a killed process would be: every write was kept as it was made.
    drop(sim);
    let other = SimCluster::start(config("idc-other", &file)).await.expect("a second cluster in the file");

    let again = SimCluster::start(config("idc-kept", &file)).await.expect("start again");
    let api = pods(&again);
    let after: Vec<Pod> = futures::future::join_all(["web-1", "web-2"].map(|n| api.get(n)))
        .await
        .into_iter()
        .map(|p| p.expect("kept"))
        .collect();
    assert_eq!(
        after.iter().map(identity).collect::<Vec<_>>(),
        before[..2].iter().map(identity).collect::<Vec<_>>()
    );
    assert!(api.get_opt("web-3").await.unwrap().is_none(), "a deleted Pod stays deleted");
    assert!(pods(&other).get_opt("web-1").await.unwrap().is_none(), "clusters keep apart in one file");
    assert_eq!(again.store().resource_version(), last_version, "the kept version, no write at start");
    let nodes = again.store().list(Resource::Nodes, None, &Default::default()).unwrap().items;
    assert_eq!(nodes.len(), 1, "the node is not seeded twice");

    // A watch from before the restart cannot be resumed (the history went with the process): it
    // gets a 410 in the stream and relists, as after an etcd compaction.
    let old = before[0].metadata.resource_version.clone().unwrap();
    let mut events = api.watch(&WatchParams::default(), &old).await.expect("watch").boxed();
    let first = events.try_next().await.expect("an event").expect("open");
    assert!(matches!(first, WatchEvent::Error(ref e) if e.code == 410), "{first:?}");

    // New work after the restart: a fresh IP (no address handed out twice), a higher version, the
    // room the kept Pods take still taken (4 vCPU, 2 kept, so 2 more fit and a third waits).
    for name in ["web-4", "web-5", "web-6"] {
        api.create(&PostParams::default(), &pod(name)).await.expect("create");
    }
    let new = futures::future::join_all(["web-4", "web-5"].map(|n| running(&api, n))).await;
    let ips: std::collections::BTreeSet<_> =
        before[..2].iter().chain(&new).map(|p| p.status.clone().unwrap().pod_ip.unwrap()).collect();
    assert_eq!(ips.len(), 4, "every live Pod has its own address: {ips:?}");
    assert!(new[0].metadata.resource_version.as_ref().unwrap().parse::<u64>().unwrap() > last_version);
    let waiting = api.get("web-6").await.unwrap();
    assert_eq!(waiting.status.and_then(|s| s.phase).as_deref(), Some("Pending"), "the node is full");

    let taken = Api::<Service>::namespaced(api.clone().into_client(), "default");
    let second: Service = serde_json::from_value(json!({"metadata": {"name": "ssh-2"},
        "spec": {"type": "NodePort", "ports": [{"port": 22}]}}))
    .unwrap();
    let second = taken.create(&PostParams::default(), &second).await.expect("second service");
    let port =
        |s: &Service| -> Value { json!(s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port) };
    assert_ne!(port(&second), port(&service), "a kept NodePort is not handed out again");

    again.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_a_cluster_forgets_at_restart() {
    let sim = SimCluster::start(SimConfig::default().name("idc-memory")).await.expect("start");
    pods(&sim).create(&PostParams::default(), &pod("web")).await.expect("create");
    sim.shutdown().await.expect("shutdown");
    let again = SimCluster::start(SimConfig::default().name("idc-memory")).await.expect("start");
    assert!(pods(&again).get_opt("web").await.unwrap().is_none());
    again.shutdown().await.expect("shutdown");
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edge-sim-durable-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Pod that was terminating (deleted with a grace period) when its cluster stopped is removed at
/// the end of its grace period by the cluster started again, not left terminating for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_running_at_a_stop_ends_after_the_restart() {
    let dir = tempfile_dir();
    let file = ObjectFile::open(&dir.join("clusters.db")).expect("open");
    let graceful = || config("idc-graceful", &file).store(StoreConfig::default().honour_grace_period(true));
    let sim = SimCluster::start(graceful()).await.expect("start");
    let api = pods(&sim);
    api.create(&PostParams::default(), &pod("web")).await.expect("create");
    running(&api, "web").await;
    api.delete("web", &DeleteParams::default().grace_period(1)).await.expect("delete");
    let terminating = api.get("web").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    drop(sim);

    let again = SimCluster::start(graceful()).await.expect("start again");
    let api = pods(&again);
    let mut gone = false;
    for _ in 0..400 {
        if api.get_opt("web").await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gone, "the terminating Pod was never removed after the restart");
    again.shutdown().await.expect("shutdown");
    std::fs::remove_dir_all(&dir).ok();
}
