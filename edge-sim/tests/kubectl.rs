//! The real kubectl (v1.32 on this machine) against a simulated cluster.
//!
//! kubectl must be on the PATH: when it is missing these tests fail under `CI=true` and print a loud
//! SKIPPED line otherwise.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use eci_edge_sim::{EngineConfig, NodeSpec, Resource, SimCluster, SimConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A kubeconfig and discovery cache of one test's own, in a temp dir removed on drop.
struct Kubectl {
    dir: PathBuf,
}

impl Kubectl {
    /// `None` (after a loud SKIPPED line) when kubectl is missing outside CI; a failure inside CI.
    fn for_cluster(cluster: &SimCluster) -> Option<Kubectl> {
        if Command::new("kubectl").args(["version", "--client"]).output().is_err() {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("kubectl is not on the PATH: the kubectl tests need it (install the kubectl package)");
            }
            eprintln!("=== SKIPPED: kubectl is not on the PATH; the kubectl tests did not run ===");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique =
            format!("eci-edge-sim-kubectl-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(dir.join("cache")).expect("a temp dir");
        std::fs::write(dir.join("kubeconfig"), cluster.kubeconfig()).expect("a kubeconfig");
        Some(Kubectl { dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env("HOME", &self.dir)
            .env_remove("KUBECONFIG");
        command
    }

    /// Run kubectl to completion off the runtime's worker threads (the sim serves on them).
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        tokio::task::spawn_blocking(move || command.output().expect("kubectl runs")).await.expect("joined")
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "kubectl failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn pod(name: &str, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    })
}

async fn cluster_with_pods() -> SimCluster {
    let cluster = SimCluster::start(SimConfig::default().without_engine().node(NodeSpec::new("node-1")))
        .await
        .expect("started");
    for (name, app) in [("web-1", "x"), ("web-2", "x"), ("db-1", "y")] {
        cluster.store().create(Resource::Pods, Some("default"), pod(name, app)).expect("created");
    }
    cluster
        .store()
        .modify(Resource::Pods, Some("default"), "web-1", |p| {
            p["spec"]["nodeName"] = json!("node-1");
            p["status"] = json!({"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [
                {"name": "main", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "", "state": {"running": {}}}
            ]});
        })
        .expect("modified");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods_with_a_label_prints_the_table_columns() {
    let cluster = cluster_with_pods().await;
    let Some(kubectl) = Kubectl::for_cluster(&cluster) else { return };
    let out = stdout(&kubectl.run(&["get", "pods", "-l", "app=x"]).await);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], "{out}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "only app=x pods: {out}");
    assert_eq!(rows[0][..4], ["web-1", "1/1", "Running", "0"], "{out}");
    assert_eq!(rows[0][5..], ["10.244.0.5", "node-1"], "{out}");
    assert_eq!(rows[1][..3], ["web-2", "0/1", "Pending"], "{out}");

    let set_based = stdout(&kubectl.run(&["get", "pods", "-l", "app in (x,y),app!=x", "-o", "name"]).await);
    assert_eq!(set_based.trim(), "pod/db-1");
    let all = stdout(&kubectl.run(&["get", "pods", "-A", "--no-headers"]).await);
    assert_eq!(all.lines().count(), 3, "{all}");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pod_as_json_returns_the_pod_and_a_missing_pod_is_not_found() {
    let cluster = cluster_with_pods().await;
    let Some(kubectl) = Kubectl::for_cluster(&cluster) else { return };
    let out = stdout(&kubectl.run(&["get", "pod", "web-1", "-o", "json"]).await);
    let pod: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "web-1");
    assert_eq!(pod["status"]["podIP"], "10.244.0.5");

    let missing = kubectl.run(&["get", "pod", "nope"]).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("pods \"nope\" not found"), "{stderr}");

    let nodes = stdout(&kubectl.run(&["get", "nodes", "-o", "name"]).await);
    assert_eq!(nodes.trim(), "node/node-1");
    let namespaces = stdout(&kubectl.run(&["get", "ns", "--no-headers", "-o", "name"]).await);
    assert!(namespaces.lines().any(|l| l == "namespace/default"), "{namespaces}");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_pod_returns_and_the_pod_is_gone() {
    let cluster = cluster_with_pods().await;
    let Some(kubectl) = Kubectl::for_cluster(&cluster) else { return };
    let out = stdout(&kubectl.run(&["delete", "pod", "web-1"]).await);
    assert_eq!(out.trim(), "pod \"web-1\" deleted");
    assert!(cluster.store().get(Resource::Pods, Some("default"), "web-1").is_err());
    let left = stdout(&kubectl.run(&["get", "pods", "-o", "name"]).await);
    assert_eq!(left.lines().collect::<Vec<_>>(), ["pod/db-1", "pod/web-2"]);
    cluster.shutdown().await.expect("stopped");
}

/// Read lines until one satisfies `wanted`, for at most `max_lines` lines (a guard, not a clock).
async fn read_until(
    lines: &mut mpsc::UnboundedReceiver<String>,
    max_lines: usize,
    wanted: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < max_lines {
        // A generous net so a broken watch fails the test instead of hanging it.
        let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
            .await
            .unwrap_or_else(|_| panic!("kubectl printed nothing more; saw {seen:#?}"))
            .unwrap_or_else(|| panic!("kubectl's output ended; saw {seen:#?}"));
        let found = wanted(&line);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("no wanted line in {max_lines} lines: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_pods_watch_sees_a_pod_appear_and_its_status_change() {
    let cluster = cluster_with_pods().await;
    cluster.store().create(Resource::Pods, Some("default"), pod("early", "new")).expect("created");
    let Some(kubectl) = Kubectl::for_cluster(&cluster) else { return };
    let mut child = kubectl
        .command(&["get", "pods", "--watch", "-l", "app=new"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl starts");
    let (tx, mut lines) = mpsc::unbounded_channel();
    let out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // kubectl prints the pod it listed: from then on it watches from the list's resourceVersion, so
    // nothing created afterwards can slip between its list and its watch.
    let listed = read_until(&mut lines, 5, |l| l.starts_with("early")).await;
    assert!(
        listed[0].split_whitespace().eq(["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]),
        "{listed:#?}"
    );

    let store = cluster.store().clone();
    store.create(Resource::Pods, Some("default"), pod("fresh", "new")).expect("created");
    let seen = read_until(&mut lines, 5, |l| l.starts_with("fresh") && l.contains("Pending")).await;
    assert_eq!(seen.len(), 1, "only the new pod's line: {seen:#?}");

    store
        .modify(Resource::Pods, Some("default"), "fresh", |p| p["status"]["phase"] = json!("Running"))
        .expect("modified");
    read_until(&mut lines, 5, |l| l.starts_with("fresh") && l.contains("Running")).await;

    child.kill().expect("kubectl stops");
    child.wait().expect("reaped");
    reader.join().expect("reader ends");
    cluster.shutdown().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_finds_vmis_by_short_name_and_waits_for_a_pod_the_engine_runs() {
    let config = SimConfig::default()
        .engine(EngineConfig::default().boot_delay(Duration::from_millis(200)))
        .node(NodeSpec::new("edge-1").internal_ip("192.168.3.4"));
    let cluster = SimCluster::start(config).await.expect("started");
    let Some(kubectl) = Kubectl::for_cluster(&cluster) else { return };
    let vmi = json!({"metadata": {"name": "vm-1"}, "spec": {"domain": {"cpu": {"cores": 1}, "memory": {"guest": "1Gi"}}}});
    cluster.store().create(Resource::VirtualMachineInstances, Some("default"), vmi).expect("created");
    let vmis = stdout(&kubectl.run(&["get", "vmi"]).await);
    let header: Vec<&str> = vmis.lines().next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE"], "{vmis}");
    assert!(vmis.lines().nth(1).is_some_and(|l| l.starts_with("vm-1")), "{vmis}");

    cluster.store().create(Resource::Pods, Some("default"), pod("booting", "web")).expect("created");
    // kubectl wait watches the one pod by fieldSelector=metadata.name until the engine runs it.
    let waited = kubectl
        .run(&["wait", "--for=jsonpath={.status.phase}=Running", "pod/booting", "--timeout=60s"])
        .await;
    assert_eq!(stdout(&waited).trim(), "pod/booting condition met");
    let ip = stdout(&kubectl.run(&["get", "po", "booting", "-o", "jsonpath={.status.hostIP}"]).await);
    assert_eq!(ip, "192.168.3.4");
    let top = stdout(&kubectl.run(&["top", "pod", "booting", "--no-headers"]).await);
    assert!(top.starts_with("booting"), "kubectl top reads PodMetrics: {top}");
    cluster.shutdown().await.expect("stopped");
}
