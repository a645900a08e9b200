//! The ledger against the clusters, end to end: the API, the instance manager and two simulated IDCs
//! whose nodes are far smaller than the fleet claims (640 vCPU each).
//!
//! What an IDC sells follows its nodes (added, cordoned, NotReady, removed) and the Pods the
//! platform does not own; a batch beyond it is refused at the API, a spec bigger than every node of
//! an IDC goes elsewhere, an IDC left selling less than it promised says so and touches nothing
//! running, and instances made unschedulable after they were placed fail at their create timeout
//! with the cluster's reason, their Pods deleted and their capacity given back exactly once.

mod common;

use std::time::Duration as StdDuration;

use axum::http::StatusCode;
use common::{on_each_database, open, passes_until, settle};
use eci_api::testing::*;
use eci_edge_sim::{EngineConfig, NodeSpec, Resource, SimCluster, SimConfig};
use eci_instance_manager::{IdcReconciler, ManagerConfig};
use eci_store::testing;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Shenzhen, telecom: two 8-vCPU nodes at first.
const SZ: &str = "gd-sz-1";
/// Hangzhou, telecom: one 64-vCPU node.
const HZ: &str = "zj-hz-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_sells_what_the_clusters_offer() {
    on_each_database(|url| async move { ledger_against_clusters(&url).await }).await;
}

async fn ledger_against_clusters(url: &str) {
    let app = App::without_fleet(open(url).await).await;
    for (id, city) in [(SZ, "shenzhen"), (HZ, "hangzhou")] {
        let province = if city == "shenzhen" { "guangdong" } else { "zhejiang" };
        let region = if city == "shenzhen" { "south-china" } else { "east-china" };
        let body = json!({"region": region, "province": province, "city": city, "carriers": ["telecom"],
            "capacity": {"cpu": "640", "memory": "2560Gi"}});
        app.put(&format!("/v1/admin/idcs/{id}"), ADMIN, body).await.expect_status(StatusCode::OK);
    }
    // Never read, an IDC sells nothing, whatever the fleet says.
    let unread = idc(&app, SZ).await;
    assert_eq!((unread["cluster"].clone(), unread["sellable"]["cpu"].clone()), (Value::Null, json!("0")));
    assert_eq!(unread["capacity"]["cpu"], "640", "the fleet's figure stays, as a bound");
    let acme = app.tenant("acme").await;
    let t = acme.token.as_str();
    let refused = app.post("/v1/batches", t, shenzhen(1, "1")).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");

    let sz = start_sim(SZ, &[NodeSpec::new("sz-1"), NodeSpec::new("sz-2")]).await;
    let hz = start_sim(HZ, &[NodeSpec::new("hz-1").cpu_millis(64_000).memory_mib(256 * 1024)]).await;
    let reconcilers = [reconciler(&app, SZ, &sz), reconciler(&app, HZ, &hz)];
    let seen = settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "16").await;
    assert_eq!(seen["sellable"], json!({"cpu": "16", "memory": "64Gi", "gpu": 0}));
    assert_eq!(
        (seen["cluster"]["nodes"].clone(), seen["cluster"]["schedulable_nodes"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(seen["cluster"]["allocatable"]["cpu"], "16");
    assert_eq!(seen["cluster"]["node_shapes"], json!([{"cpu": "8", "memory": "32Gi", "gpu": 0}]));
    assert!(seen["cluster"]["read_at"].is_string());
    settle_idc(&app, &reconcilers, HZ, |v| v["sellable"]["cpu"] == "64").await;

    // Beyond what Shenzhen's nodes offer: refused at the API, not left pending in the IDC.
    let too_many = app.post("/v1/batches", t, shenzhen(9, "2")).await;
    assert_error(&too_many, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
    // 12 vCPU fit Shenzhen's total but none of its 8-vCPU nodes.
    let too_big = app.post("/v1/batches", t, shenzhen(1, "12")).await;
    assert_error(&too_big, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
    let anywhere = json!({"count": 1, "spec": {"cpu": "32", "memory": "64Gi"}, "image": "nginx:1.27",
        "placement": {"areas": ["shenzhen", "hangzhou"], "carriers": ["telecom"]}});
    let big = app.create_batch(t, anywhere).await["id"].as_str().unwrap().to_string();
    let big_instances = app.all_pages(&format!("/v1/batches/{big}/instances"), t).await;
    assert_eq!(big_instances[0]["idc"], HZ, "a 32-vCPU instance goes where a node can hold it");

    let steady = app.create_batch(t, shenzhen(4, "2")).await;
    let steady = steady["id"].as_str().unwrap().to_string();
    settle(&app, t, &reconcilers, |i| states(i, &steady) == ["running"; 4] && states(i, &big) == ["running"])
        .await;

    // Nodes come and go behind the platform's back; what Shenzhen sells follows them.
    let nodes: Api<Node> = Api::all(kube_client(&sz));
    sz.add_node(&NodeSpec::new("sz-3")).expect("add a node");
    settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "24").await;
    let cordon = json!({"spec": {"unschedulable": true}});
    nodes.patch("sz-1", &PatchParams::default(), &Patch::Merge(&cordon)).await.expect("cordon");
    let cordoned = settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "16").await;
    assert_eq!(cordoned["cluster"]["schedulable_nodes"], 2);
    sz.store()
        .modify(Resource::Nodes, None, "sz-2", |n| {
            n["status"]["conditions"] =
                json!([{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}]);
        })
        .expect("sz-2 stops reporting");
    settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "8").await;
    // A foreign workload takes part of the last node.
    let foreign: Api<Pod> = Api::namespaced(kube_client(&sz), "default");
    let daemon = serde_json::from_value(json!({"metadata": {"name": "log-agent"}, "spec": {"containers": [
        {"name": "agent", "image": "fluent-bit", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}))
    .unwrap();
    foreign.create(&PostParams::default(), &daemon).await.expect("a foreign pod");
    let shared = settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "7").await;
    assert_eq!(shared["cluster"]["foreign"]["cpu"], "1");
    assert_eq!(shared["conditions"][0]["short_by"]["cpu"], "1", "8 vCPU promised, 7 sold: {shared:#}");
    nodes.delete("sz-3", &DeleteParams::default()).await.expect("remove a node");
    let short = settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "0").await;
    assert_eq!(short["conditions"][0]["type"], "capacity_short");
    assert_eq!(short["conditions"][0]["short_by"]["cpu"], "8");
    assert!(short["conditions"][0]["message"].as_str().unwrap().contains("short by cpu 8"), "{short}");
    let refused = app.post("/v1/batches", t, shenzhen(1, "1")).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_capacity");
    let instances = app.all_pages("/v1/instances", t).await;
    assert_eq!(states(&instances, &steady), ["running"; 4], "nothing running is touched");
    let (_, metrics, _) = app.send(axum::http::Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().expect("the exposition format").to_string();
    assert!(metrics.contains(&format!("eci_idc_capacity_short{{idc=\"{SZ}\"}} 1")), "{metrics}");
    nodes
        .patch("sz-1", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"unschedulable": false}})))
        .await
        .expect("uncordon");
    let back = settle_idc(&app, &reconcilers, SZ, |v| v["sellable"]["cpu"] == "8").await;
    assert_eq!(back["conditions"], json!([]));

    // Placed while Hangzhou's node looked fine, then cordoned before the Pods were scheduled.
    let late =
        app.create_batch(t, with(&hangzhou(2, "4"), |b| b["create_timeout_seconds"] = json!(30))).await;
    let late = late["id"].as_str().unwrap().to_string();
    nodes_of(&hz).patch("hz-1", &PatchParams::default(), &Patch::Merge(&cordon)).await.expect("cordon");
    let reason = "Unschedulable: 0/1 nodes are available: 1 node(s) were unschedulable.";
    settle_pods(&reconcilers, &hz, &late, 2, |pod| pod_reason(pod).as_deref() == Some(reason)).await;
    assert_eq!(idc(&app, HZ).await["allocated"]["cpu"], "40", "the 32-vCPU instance and the two late ones");
    app.advance(29);
    for reconciler in &reconcilers {
        reconciler.pass().await.expect("pass");
    }
    let instances = app.all_pages("/v1/instances", t).await;
    assert_eq!(states(&instances, &late), ["creating"; 2], "not before the batch's create timeout");
    app.advance(2);
    settle(&app, t, &reconcilers, |i| states(i, &late) == ["failed"; 2]).await;
    for instance in app.all_pages(&format!("/v1/batches/{late}/instances"), t).await {
        assert_eq!(instance["failure_reason"], reason);
        assert_eq!(instance["started_at"], Value::Null, "never billed");
    }
    let batch = app.get(&format!("/v1/batches/{late}"), t).await.expect_status(StatusCode::OK);
    assert_eq!(batch["counts"]["failed"], 2);
    assert_eq!(batch["failures"], json!([{"reason": reason, "count": 2}]));
    settle_pods(&reconcilers, &hz, &late, 0, |_| true).await;
    for _ in 0..3 {
        for reconciler in &reconcilers {
            reconciler.pass().await.expect("pass");
        }
    }
    let hangzhou = idc(&app, HZ).await;
    assert_eq!(hangzhou["allocated"]["cpu"], "32", "given back exactly once");
    assert_eq!(app.admin_tenant(&acme.id).await["used_instances"], 5, "4 steady and the big one");
    testing::assert_ledger_matches_records(&app.store).await;
    foreign.get("log-agent").await.expect("a foreign Pod is counted, never touched");
    for sim in [sz, hz] {
        sim.shutdown().await.expect("stop sim");
    }
}

// ---- The simulated IDCs and the test's moves --------------------------------------------------------

async fn start_sim(idc: &str, nodes: &[NodeSpec]) -> SimCluster {
    let mut config =
        SimConfig::default().name(idc).engine(EngineConfig::default().boot_delay(StdDuration::ZERO));
    for node in nodes {
        config = config.node(node.clone());
    }
    SimCluster::start(config).await.expect("start sim")
}

fn kube_client(sim: &SimCluster) -> kube::Client {
    kube::Client::try_from(kube::Config::new(sim.url().parse().expect("sim url"))).expect("kube client")
}

fn nodes_of(sim: &SimCluster) -> Api<Node> {
    Api::all(kube_client(sim))
}

/// A reconciler on the app's clock, driven by the test's passes.
fn reconciler(app: &App, idc: &str, sim: &SimCluster) -> IdcReconciler {
    common::reconciler(app, idc, sim, &ManagerConfig::default())
}

async fn idc(app: &App, id: &str) -> Value {
    app.get(&format!("/v1/admin/idcs/{id}"), ADMIN).await.expect_status(StatusCode::OK)
}

/// Runs passes until the admin view of `id` is as `done` wants; returns it. Bounded by rounds.
async fn settle_idc(
    app: &App,
    reconcilers: &[IdcReconciler],
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    passes_until(reconcilers, 500, id, || idc(app, id), done).await
}

/// Runs passes until the Pods of `batch` in `sim` not being deleted are `count`, each as `done` wants.
async fn settle_pods(
    reconcilers: &[IdcReconciler],
    sim: &SimCluster,
    batch: &str,
    count: usize,
    done: impl Fn(&Value) -> bool,
) {
    let pods = || async move {
        let listed = sim.store().list(Resource::Pods, None, &Default::default()).expect("list pods").items;
        let ours = listed.into_iter().filter(|p| p["metadata"]["labels"]["eci.io/batch"] == batch);
        ours.filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect::<Vec<Value>>()
    };
    passes_until(reconcilers, 500, "the pods", pods, |pods| pods.len() == count && pods.iter().all(&done))
        .await;
}

/// The scheduler's word on a Pod it has not placed.
fn pod_reason(pod: &Value) -> Option<String> {
    let condition = pod["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "PodScheduled")?;
    (condition["status"] == "False").then(|| {
        format!(
            "{}: {}",
            condition["reason"].as_str().unwrap_or(""),
            condition["message"].as_str().unwrap_or("")
        )
    })
}

/// The states of a batch's instances, in id order.
fn states<'a>(instances: &'a [Value], batch: &str) -> Vec<&'a str> {
    let mut of: Vec<&Value> = instances.iter().filter(|i| i["batch_id"] == batch).collect();
    of.sort_by_key(|i| i["id"].as_str());
    of.iter().map(|i| i["state"].as_str().unwrap()).collect()
}

fn sized(count: u64, cpu: &str, city: &str) -> Value {
    json!({"count": count, "spec": {"cpu": cpu, "memory": format!("{cpu}Gi")}, "image": "nginx:1.27",
        "placement": {"areas": [city], "carriers": ["telecom"]}})
}

fn shenzhen(count: u64, cpu: &str) -> Value {
    sized(count, cpu, "shenzhen")
}

fn hangzhou(count: u64, cpu: &str) -> Value {
    sized(count, cpu, "hangzhou")
}
