//! The stage engine: a kubelet-and-scheduler stand-in that moves pods and KubeVirt VMIs through their
//! lifecycle.
//!
//! Unbound pending pods (and VMIs) are bound to a schedulable Ready node whose allocatable cpu, memory and pod count still fit
//! their requests (the least-loaded one), or marked `PodScheduled=False` (reason `Unschedulable`). A bound
//! pending pod becomes `Running` — podIP, hostIP, conditions, container statuses — after the boot delay;
//! a VMI goes Scheduling/Scheduled (with `status.nodeName`) and then Running with an interface IP.
//! The engine is level-triggered: it reacts to the store's change feed, and every write is conditional on
//! the object still being in the state it decided on, so running a step twice does no harm.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::quantity;
use crate::resource::Resource;
use crate::store::{Change, EventType, ListOptions, Store, WatchFrom};

/// Tunables of the stage engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a bound pod stays Pending before it runs (image pull and container start).
    pub boot_delay: Duration,
    /// The first two octets of pod IPs (`[10, 244]` gives 10.244.x.y).
    pub pod_network: [u8; 2],
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { boot_delay: Duration::from_secs(1), pod_network: [10, 244] }
    }
}

impl EngineConfig {
    /// Run pods this long after they are bound.
    pub fn boot_delay(mut self, delay: Duration) -> Self {
        self.boot_delay = delay;
        self
    }
}

/// What a workload (pod or VMI) asks of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Requests {
    cpu_millis: u64,
    memory_mib: u64,
}

impl Requests {
    fn add(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_mib: self.memory_mib + other.memory_mib,
        }
    }

    fn from_map(requests: Option<&Value>) -> Requests {
        let get = |key: &str| requests.and_then(|r| r.get(key)).and_then(Value::as_str);
        Requests {
            cpu_millis: get("cpu").and_then(quantity::cpu_millis).unwrap_or(0),
            memory_mib: get("memory").and_then(quantity::memory_mib).unwrap_or(0),
        }
    }
}

/// The workloads the engine runs: pods, and KubeVirt VMIs (which a real cluster runs in a launcher pod).
const WORKLOADS: [Resource; 2] = [Resource::Pods, Resource::VirtualMachineInstances];

fn requests(resource: Resource, object: &Value) -> Requests {
    match resource {
        Resource::VirtualMachineInstances => {
            let domain = object.pointer("/spec/domain");
            let mut wanted = Requests::from_map(domain.and_then(|d| d.pointer("/resources/requests")));
            if wanted.cpu_millis == 0 {
                let cores = domain.and_then(|d| d.pointer("/cpu/cores")).and_then(Value::as_u64).unwrap_or(1);
                wanted.cpu_millis = cores * 1000;
            }
            if wanted.memory_mib == 0 {
                let guest = domain.and_then(|d| d.pointer("/memory/guest")).and_then(Value::as_str);
                wanted.memory_mib = guest.and_then(quantity::memory_mib).unwrap_or(0);
            }
            wanted
        }
        _ => {
            let containers = object.pointer("/spec/containers").and_then(Value::as_array);
            containers.into_iter().flatten().fold(Requests::default(), |sum, c| {
                sum.add(Requests::from_map(c.pointer("/resources/requests")))
            })
        }
    }
}

/// The node a workload is bound to: `spec.nodeName` for pods, `status.nodeName` for VMIs.
fn bound_node(resource: Resource, object: &Value) -> Option<&str> {
    let pointer = if resource == Resource::Pods { "/spec/nodeName" } else { "/status/nodeName" };
    text(object, pointer).filter(|n| !n.is_empty())
}

/// Whether a workload has yet to run (a pod Pending; a VMI with no phase, Pending, Scheduling, Scheduled).
fn waiting(resource: Resource, object: &Value) -> bool {
    let phase = text(object, "/status/phase").unwrap_or_default();
    let waiting = match resource {
        Resource::Pods => phase == "Pending",
        _ => matches!(phase, "" | "Pending" | "Scheduling" | "Scheduled"),
    };
    waiting && object.pointer("/metadata/deletionTimestamp").is_none()
}

/// A node's room: what it offers and what its workloads already take.
#[derive(Debug, Clone)]
struct NodeRoom {
    name: String,
    /// Why nothing new lands on the node at all (cordoned, not Ready), in kube-scheduler's words.
    closed: Option<&'static str>,
    cpu_millis: u64,
    memory_mib: u64,
    pods: u64,
    used: Requests,
    used_pods: u64,
}

impl NodeRoom {
    /// Why `wanted` does not fit, or `None` if it does.
    fn misfit(&self, wanted: Requests) -> Option<&'static str> {
        if self.closed.is_some() {
            self.closed
        } else if self.used_pods + 1 > self.pods {
            Some("Too many pods")
        } else if self.used.cpu_millis + wanted.cpu_millis > self.cpu_millis {
            Some("Insufficient cpu")
        } else if self.used.memory_mib + wanted.memory_mib > self.memory_mib {
            Some("Insufficient memory")
        } else {
            None
        }
    }

    /// How full the node is (per-mille of cpu), to spread workloads across nodes.
    fn load(&self) -> u64 {
        (self.used.cpu_millis * 1000).checked_div(self.cpu_millis).unwrap_or(u64::MAX)
    }
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn is_terminal(object: &Value) -> bool {
    matches!(text(object, "/status/phase"), Some("Succeeded" | "Failed"))
}

/// Why kube-scheduler would put nothing new on `node`: a cordoned node is unschedulable, and one
/// not Ready carries the `not-ready` taint. `None` for a node that takes work.
fn node_closed(node: &Value) -> Option<&'static str> {
    let conditions = node.pointer("/status/conditions").and_then(Value::as_array);
    let ready = conditions.into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        Some("node(s) were unschedulable")
    } else if !ready {
        Some("node(s) had untolerated taint {node.kubernetes.io/not-ready: }")
    } else {
        None
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn condition(kind: &str, status: &str, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut c = json!({"type": kind, "status": status, "lastTransitionTime": now(), "lastProbeTime": null});
    if let Some(reason) = reason {
        c["reason"] = json!(reason);
    }
    if let Some(message) = message {
        c["message"] = json!(message);
    }
    c
}

/// A workload identified for a later step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WorkloadRef {
    resource: Resource,
    namespace: String,
    name: String,
    uid: String,
}

fn workload_ref(resource: Resource, object: &Value) -> Option<WorkloadRef> {
    Some(WorkloadRef {
        resource,
        namespace: text(object, "/metadata/namespace")?.to_string(),
        name: text(object, "/metadata/name")?.to_string(),
        uid: text(object, "/metadata/uid")?.to_string(),
    })
}

/// The running stage engine of one cluster.
#[derive(Debug)]
pub struct StageEngine {
    /// The cluster's objects.
    store: Arc<Store>,
    /// Its tunables.
    config: EngineConfig,
    /// Workloads waiting to boot, soonest first.
    boots: BinaryHeap<Reverse<(Instant, WorkloadRef)>>,
    /// The uids in `boots`, so a workload is queued once.
    booting: HashSet<String>,
    /// How many IPs were handed out.
    next_ip: u32,
    /// Every Ready node's room, kept up to date by the engine's own bindings and rebuilt after
    /// anything else changes what nodes hold. Rebuilding it for every pod made scheduling a
    /// 1,000-pod batch quadratic in copies of every object.
    rooms: Option<Vec<NodeRoom>>,
}

impl StageEngine {
    /// Start the engine on a store; it stops when `shutdown` turns `true`.
    pub fn spawn(store: Arc<Store>, config: EngineConfig, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let engine = StageEngine {
            store,
            config,
            boots: BinaryHeap::new(),
            booting: HashSet::new(),
            next_ip: 0,
            rooms: None,
        };
        tokio::spawn(engine.run(shutdown))
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut live = self.resync();
        debug!("stage engine started");
        loop {
            let next_boot = self.boots.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|stopped| *stopped) => break,
                received = live.recv() => match received {
                    Ok(change) => self.on_change(&change),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "stage engine fell behind the change feed; resyncing");
                        live = self.resync();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep_until(next_boot.unwrap_or_else(Instant::now)), if next_boot.is_some() => {
                    self.boot_due();
                }
            }
        }
        debug!("stage engine stopped");
    }

    /// Look at every workload afresh (at start, or after falling behind) and return the live feed.
    fn resync(&mut self) -> broadcast::Receiver<Arc<Change>> {
        let subscription = self
            .store
            .subscribe(Resource::Pods, None, WatchFrom::Now)
            .expect("a watch from now never expires");
        // Taken after subscribing: a change in between is seen twice, which every step tolerates.
        self.rooms = None;
        self.retry_unscheduled();
        for resource in WORKLOADS {
            let all =
                self.store.list(resource, None, &ListOptions::default()).map(|l| l.items).unwrap_or_default();
            // A cluster that kept its objects across a restart has handed addresses out already.
            let handed_out = all.iter().filter_map(|o| workload_ip(resource, o));
            if let Some(last) = handed_out.filter_map(|ip| pod_ip_index(self.config.pod_network, ip)).max() {
                self.next_ip = self.next_ip.max(last + 1);
            }
            for object in all.iter().filter(|o| bound_node(resource, o).is_some()) {
                self.on_workload(resource, object);
            }
        }
        subscription.live
    }

    fn on_change(&mut self, change: &Change) {
        match (change.resource, change.event) {
            (resource, EventType::Added | EventType::Modified) if WORKLOADS.contains(&resource) => {
                let freed =
                    is_terminal(&change.object) && !change.previous.as_deref().is_some_and(is_terminal);
                // A workload that arrives already bound was placed by someone else.
                let bound_elsewhere =
                    change.event == EventType::Added && bound_node(resource, &change.object).is_some();
                if freed || bound_elsewhere {
                    self.rooms = None;
                }
                self.on_workload(resource, &change.object);
                if freed {
                    self.retry_unscheduled();
                }
            }
            (resource, EventType::Deleted) if WORKLOADS.contains(&resource) => {
                if let Some(uid) = text(&change.object, "/metadata/uid") {
                    self.booting.remove(uid);
                }
                if bound_node(resource, &change.object).is_some() {
                    self.rooms = None;
                    self.retry_unscheduled();
                }
            }
            (Resource::Nodes, EventType::Added | EventType::Modified) => {
                self.rooms = None;
                self.retry_unscheduled();
            }
            _ => {}
        }
    }

    fn on_workload(&mut self, resource: Resource, object: &Value) {
        if !waiting(resource, object) {
            return;
        }
        let Some(workload) = workload_ref(resource, object) else { return };
        if bound_node(resource, object).is_none() {
            self.schedule(object, &workload);
        } else if self.booting.insert(workload.uid.clone()) {
            self.boots.push(Reverse((Instant::now() + self.config.boot_delay, workload)));
        }
    }

    fn retry_unscheduled(&mut self) {
        for resource in WORKLOADS {
            let Ok(all) = self.store.list(resource, None, &ListOptions::default()) else { continue };
            for object in all.items.iter().filter(|o| bound_node(resource, o).is_none()) {
                self.on_workload(resource, object);
            }
        }
    }

    /// Every node with what its live workloads already take, and whether it takes anything new.
    fn rooms(&self) -> Vec<NodeRoom> {
        let nodes = self
            .store
            .list(Resource::Nodes, None, &ListOptions::default())
            .map(|l| l.items)
            .unwrap_or_default();
        let mut used: BTreeMap<String, (Requests, u64)> = BTreeMap::new();
        for resource in WORKLOADS {
            let all =
                self.store.list(resource, None, &ListOptions::default()).map(|l| l.items).unwrap_or_default();
            for object in all.iter().filter(|o| !is_terminal(o)) {
                if let Some(node) = bound_node(resource, object) {
                    let entry = used.entry(node.to_string()).or_default();
                    entry.0 = entry.0.add(requests(resource, object));
                    entry.1 += 1;
                }
            }
        }
        nodes
            .iter()
            .filter_map(|node| {
                let name = text(node, "/metadata/name")?;
                let allocatable = |key: &str| text(node, &format!("/status/allocatable/{key}"));
                let (taken, count) = used.get(name).copied().unwrap_or_default();
                Some(NodeRoom {
                    name: name.to_string(),
                    closed: node_closed(node),
                    cpu_millis: allocatable("cpu").and_then(quantity::cpu_millis).unwrap_or(0),
                    memory_mib: allocatable("memory").and_then(quantity::memory_mib).unwrap_or(0),
                    pods: allocatable("pods").and_then(|p| p.parse().ok()).unwrap_or(110),
                    used: taken,
                    used_pods: count,
                })
            })
            .collect()
    }

    fn schedule(&mut self, object: &Value, workload: &WorkloadRef) {
        let WorkloadRef { resource, namespace, name, uid } = workload;
        let resource = *resource;
        let wanted = requests(resource, object);
        if self.rooms.is_none() {
            self.rooms = Some(self.rooms());
        }
        let rooms = self.rooms.as_mut().expect("rooms were just built");
        let chosen = rooms
            .iter_mut()
            .filter(|r| r.misfit(wanted).is_none())
            .min_by(|a, b| (a.load(), &a.name).cmp(&(b.load(), &b.name)));
        let binding = chosen.is_some();
        let result = match chosen {
            Some(room) => {
                debug!(%resource, %name, node = %room.name, "binding");
                room.used = room.used.add(wanted);
                room.used_pods += 1;
                let room = room.clone();
                self.store.modify_if(resource, Some(namespace), name, |o| {
                    if text(o, "/metadata/uid") != Some(uid) || bound_node(resource, o).is_some() {
                        return false;
                    }
                    if resource == Resource::Pods {
                        o["spec"]["nodeName"] = json!(room.name);
                    } else {
                        o["status"]["nodeName"] = json!(room.name);
                        o["status"]["phase"] = json!("Scheduled");
                    }
                    set_condition(o, condition("PodScheduled", "True", None, None));
                    true
                })
            }
            None => {
                let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
                for room in rooms.iter() {
                    *reasons.entry(room.misfit(wanted).unwrap_or("unknown")).or_default() += 1;
                }
                let detail: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
                let mut message = format!("0/{} nodes are available", rooms.len());
                if !detail.is_empty() {
                    message = format!("{message}: {}.", detail.join(", "));
                }
                self.store.modify_if(resource, Some(namespace), name, |o| {
                    let already =
                        o.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
                            cs.iter().any(|c| c["type"] == "PodScheduled" && c["message"] == json!(message))
                        });
                    if already || text(o, "/metadata/uid") != Some(uid) {
                        return false;
                    }
                    if resource == Resource::VirtualMachineInstances {
                        o["status"]["phase"] = json!("Scheduling");
                    }
                    set_condition(
                        o,
                        condition("PodScheduled", "False", Some("Unschedulable"), Some(&message)),
                    );
                    true
                })
            }
        };
        // A binding that did not happen leaves the room counted above untaken: count afresh.
        match result {
            Ok(Some(_)) => {}
            Ok(None) => {
                if binding {
                    self.rooms = None;
                }
            }
            Err(error) => {
                if binding {
                    self.rooms = None;
                }
                debug!(%error, %name, "workload went away while scheduling");
            }
        }
    }

    fn boot_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.boots.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, workload))) = self.boots.pop() else { break };
            self.booting.remove(&workload.uid);
            self.boot(&workload);
        }
    }

    fn boot(&mut self, workload: &WorkloadRef) {
        let WorkloadRef { resource, namespace, name, uid } = workload;
        let resource = *resource;
        let Ok(object) = self.store.get(resource, Some(namespace), name) else { return };
        let Some(node_name) = bound_node(resource, &object).map(str::to_string) else { return };
        let host_ip = self
            .store
            .get(Resource::Nodes, None, &node_name)
            .ok()
            .and_then(|node| {
                let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned();
                let internal = addresses.into_iter().flatten().find(|a| a["type"] == "InternalIP");
                internal.and_then(|a| a["address"].as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "10.0.0.1".into());
        let n = self.next_ip;
        let [a, b] = self.config.pod_network;
        let ip = pod_ip([a, b], n);
        let booted = self.store.modify_if(resource, Some(namespace), name, |o| {
            let still_waiting = text(o, "/metadata/uid") == Some(uid) && waiting(resource, o);
            if !still_waiting {
                return false;
            }
            match resource {
                Resource::Pods => run_pod(o, uid, &ip, &host_ip),
                _ => run_vmi(o, n, &ip),
            }
            true
        });
        match booted {
            Ok(Some(_)) => {
                self.next_ip += 1;
                debug!(%resource, %name, node = %node_name, %ip, "running");
            }
            Ok(None) => {}
            Err(error) => debug!(%error, %name, "workload went away before it booted"),
        }
    }
}

/// The `n`th address handed out in `network`.
fn pod_ip([a, b]: [u8; 2], n: u32) -> String {
    format!("{a}.{b}.{}.{}", (n / 250) % 256, n % 250 + 2)
}

/// Which `n` handed out `ip` in `network`, if it is one of its addresses.
fn pod_ip_index([a, b]: [u8; 2], ip: &str) -> Option<u32> {
    let mut octets = ip.split('.').map(|o| o.parse::<u32>().ok());
    let (Some(Some(first)), Some(Some(second)), Some(Some(third)), Some(Some(fourth)), None) =
        (octets.next(), octets.next(), octets.next(), octets.next(), octets.next())
    else {
        return None;
    };
    (first == u32::from(a) && second == u32::from(b) && (2..252).contains(&fourth))
        .then(|| third * 250 + fourth - 2)
}

/// The address a running workload was given.
fn workload_ip(resource: Resource, object: &Value) -> Option<&str> {
    match resource {
        Resource::Pods => text(object, "/status/podIP"),
        _ => text(object, "/status/interfaces/0/ipAddress"),
    }
}

/// A pod's status once its containers run.
fn run_pod(pod: &mut Value, uid: &str, ip: &str, host_ip: &str) {
    let started = now();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": format!("{}@sha256:{:064x}", c["image"].as_str().unwrap_or("image"), i),
                "containerID": format!("containerd://{}{:032x}", uid.replace('-', ""), i),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    let status = &mut pod["status"];
    status["phase"] = json!("Running");
    status["podIP"] = json!(ip);
    status["podIPs"] = json!([{"ip": ip}]);
    status["hostIP"] = json!(host_ip);
    status["hostIPs"] = json!([{"ip": host_ip}]);
    status["startTime"] = json!(started);
    status["containerStatuses"] = json!(statuses);
    for kind in ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"] {
        set_condition(pod, condition(kind, "True", None, None));
    }
}

/// A VMI's status once its guest runs.
fn run_vmi(vmi: &mut Value, n: u32, ip: &str) {
    let mac = format!("52:54:00:{:02x}:{:02x}:{:02x}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
    let status = &mut vmi["status"];
    status["phase"] = json!("Running");
    status["interfaces"] = json!([{"name": "default", "ipAddress": ip, "ipAddresses": [ip], "mac": mac}]);
    for kind in ["Ready", "LiveMigratable"] {
        set_condition(vmi, condition(kind, "True", None, None));
    }
}

/// Stops a running (or waiting) workload as its node would under pressure, at `at` by the node's
/// clock: a Pod fails with reason `Evicted` and its containers terminated, finished at `at`; a VMI
/// fails with the moment in its phase transitions. Those moments are what a control plane that lost
/// the link learns late, and must bill to. A workload that has already stopped is left as it was.
pub fn evict(
    store: &Store,
    resource: Resource,
    namespace: &str,
    name: &str,
    at: DateTime<Utc>,
) -> crate::Result<Value> {
    if !WORKLOADS.contains(&resource) {
        return Err(crate::Error::BadRequest(format!("only pods and VMIs can be evicted, not {resource}")));
    }
    let at = at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let evicted = store.modify_if(resource, Some(namespace), name, |o| {
        if is_terminal(o) {
            return false;
        }
        match resource {
            Resource::Pods => evict_pod(o, &at),
            _ => evict_vmi(o, &at),
        }
        true
    })?;
    match evicted {
        Some(object) => {
            info!(%resource, %namespace, %name, %at, "evicted");
            Ok(object)
        }
        None => store.get(resource, Some(namespace), name),
    }
}

/// A Pod's status once the kubelet has evicted it.
fn evict_pod(pod: &mut Value, at: &str) {
    let status = &mut pod["status"];
    status["phase"] = json!("Failed");
    status["reason"] = json!("Evicted");
    status["message"] = json!("The node was low on resource: memory.");
    let containers = status["containerStatuses"].as_array_mut().into_iter().flatten();
    for container in containers {
        let started = container.pointer("/state/running/startedAt").cloned().unwrap_or(Value::Null);
        container["state"] = json!({"terminated": {
            "exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": at}});
        container["ready"] = json!(false);
        container["started"] = json!(false);
    }
    for kind in ["ContainersReady", "Ready"] {
        set_condition(pod, condition(kind, "False", Some("PodFailed"), None));
    }
    set_condition(pod, condition("DisruptionTarget", "True", Some("TerminationByKubelet"), None));
}

/// A VMI's status once its node has stopped it.
fn evict_vmi(vmi: &mut Value, at: &str) {
    let status = &mut vmi["status"];
    status["phase"] = json!("Failed");
    status["reason"] = json!("Evicted");
    if !status["phaseTransitionTimestamps"].is_array() {
        status["phaseTransitionTimestamps"] = json!([]);
    }
    if let Some(transitions) = status["phaseTransitionTimestamps"].as_array_mut() {
        transitions.push(json!({"phase": "Failed", "phaseTransitionTimestamp": at}));
    }
    set_condition(vmi, condition("Ready", "False", Some("GuestNotRunning"), None));
}

/// Put a condition in `status.conditions`, replacing one of the same type.
fn set_condition(object: &mut Value, condition: Value) {
    if !object["status"]["conditions"].is_array() {
        object["status"]["conditions"] = json!([]);
    }
    let conditions =
        object["status"]["conditions"].as_array_mut().expect("conditions was just made an array");
    conditions.retain(|c| c["type"] != condition["type"]);
    conditions.push(condition);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeSpec;
    use crate::store::StoreConfig;

    fn store_with(nodes: &[NodeSpec]) -> Arc<Store> {
        let store = Arc::new(Store::new(StoreConfig::default()));
        store.create(Resource::Namespaces, None, json!({"metadata": {"name": "default"}})).unwrap();
        for node in nodes {
            store.create(Resource::Nodes, None, node.to_object()).unwrap();
        }
        store
    }

    fn pod(name: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"containers": [
            {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
        ]}})
    }

    /// Wait (in paused time) until the pod satisfies `wanted`; returns it.
    async fn until(store: &Store, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut sub = store.subscribe(Resource::Pods, Some("default"), WatchFrom::Now).unwrap();
        for change in sub.initial {
            if text(&change.object, "/metadata/name") == Some(name) && wanted(&change.object) {
                return (*change.object).clone();
            }
        }
        loop {
            let change = sub.live.recv().await.unwrap();
            if change.resource == Resource::Pods
                && text(&change.object, "/metadata/name") == Some(name)
                && wanted(&change.object)
            {
                return (*change.object).clone();
            }
        }
    }

    fn phase(pod: &Value) -> Option<&str> {
        text(pod, "/status/phase")
    }

    fn scheduled_condition(pod: &Value) -> Option<&Value> {
        pod.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "PodScheduled")
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_that_fits_is_bound_then_runs_after_the_boot_delay() {
        let store = store_with(&[NodeSpec::new("n1").cpu_millis(1000).internal_ip("192.168.1.10")]);
        let (stop, shutdown) = watch::channel(false);
        let delay = Duration::from_secs(5);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default().boot_delay(delay), shutdown);
        let start = Instant::now();
        store.create(Resource::Pods, Some("default"), pod("web", "500m")).unwrap();

        let bound = until(&store, "web", |p| text(p, "/spec/nodeName").is_some()).await;
        assert_eq!(phase(&bound), Some("Pending"));
        assert_eq!(text(&bound, "/spec/nodeName"), Some("n1"));

        let running = until(&store, "web", |p| phase(p) == Some("Running")).await;
        assert!(Instant::now() - start >= delay, "not before the boot delay (virtual time)");
        assert_eq!(text(&running, "/status/hostIP"), Some("192.168.1.10"));
        assert!(text(&running, "/status/podIP").is_some_and(|ip| ip.starts_with("10.244.")));
        assert_eq!(running["status"]["containerStatuses"][0]["ready"], true);
        let ready = running["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        stop.send_replace(true);
        engine.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_that_fits_nowhere_is_unschedulable_until_a_node_with_room_arrives() {
        let store = store_with(&[NodeSpec::new("small").cpu_millis(500)]);
        let (stop, shutdown) = watch::channel(false);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default(), shutdown);
        store.create(Resource::Pods, Some("default"), pod("big", "2")).unwrap();

        let refused = until(&store, "big", |p| scheduled_condition(p).is_some()).await;
        let condition = scheduled_condition(&refused).unwrap();
        assert_eq!(
            (condition["status"].as_str(), condition["reason"].as_str()),
            (Some("False"), Some("Unschedulable"))
        );
        assert_eq!(condition["message"], "0/1 nodes are available: 1 Insufficient cpu.");
        assert_eq!(phase(&refused), Some("Pending"));

        store.create(Resource::Nodes, None, NodeSpec::new("large").cpu_millis(4000).to_object()).unwrap();
        let running = until(&store, "big", |p| phase(p) == Some("Running")).await;
        assert_eq!(text(&running, "/spec/nodeName"), Some("large"));
        stop.send_replace(true);
        engine.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cordoned_and_not_ready_nodes_take_nothing_and_say_why() {
        let store = store_with(&[NodeSpec::new("cordoned"), NodeSpec::new("down")]);
        store
            .modify(Resource::Nodes, None, "cordoned", |n| n["spec"]["unschedulable"] = json!(true))
            .unwrap();
        store
            .modify(Resource::Nodes, None, "down", |n| {
                n["status"]["conditions"] = json!([{"type": "Ready", "status": "Unknown"}]);
            })
            .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default(), shutdown);
        store.create(Resource::Pods, Some("default"), pod("web", "1")).unwrap();
        let refused = until(&store, "web", |p| scheduled_condition(p).is_some()).await;
        assert_eq!(
            scheduled_condition(&refused).unwrap()["message"],
            "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, \
             1 node(s) were unschedulable."
        );
        store
            .modify(Resource::Nodes, None, "cordoned", |n| n["spec"]["unschedulable"] = json!(false))
            .unwrap();
        let bound = until(&store, "web", |p| text(p, "/spec/nodeName").is_some()).await;
        assert_eq!(text(&bound, "/spec/nodeName"), Some("cordoned"), "uncordoned, it takes work again");
        stop.send_replace(true);
        engine.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_freed_by_a_deleted_pod_lets_a_waiting_pod_in() {
        let store = store_with(&[NodeSpec::new("n1").cpu_millis(1000).pods(2)]);
        let (stop, shutdown) = watch::channel(false);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default(), shutdown);
        for name in ["a", "b", "c"] {
            store.create(Resource::Pods, Some("default"), pod(name, "400m")).unwrap();
        }
        until(&store, "a", |p| phase(p) == Some("Running")).await;
        until(&store, "b", |p| phase(p) == Some("Running")).await;
        let waiting = until(&store, "c", |p| scheduled_condition(p).is_some()).await;
        assert_eq!(scheduled_condition(&waiting).unwrap()["reason"], "Unschedulable");

        store.delete(Resource::Pods, Some("default"), "a", None).unwrap();
        let running = until(&store, "c", |p| phase(p) == Some("Running")).await;
        assert_eq!(text(&running, "/spec/nodeName"), Some("n1"));
        let ips: HashSet<String> = ["b", "c"]
            .iter()
            .map(|n| {
                text(&store.get(Resource::Pods, Some("default"), n).unwrap(), "/status/podIP")
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(ips.len(), 2, "every pod gets its own IP");
        stop.send_replace(true);
        engine.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn pods_spread_over_the_least_loaded_nodes() {
        let store = store_with(&[NodeSpec::new("n1"), NodeSpec::new("n2")]);
        let (stop, shutdown) = watch::channel(false);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default(), shutdown);
        store.create(Resource::Pods, Some("default"), pod("a", "1")).unwrap();
        let a = until(&store, "a", |p| text(p, "/spec/nodeName").is_some()).await;
        store.create(Resource::Pods, Some("default"), pod("b", "1")).unwrap();
        let b = until(&store, "b", |p| text(p, "/spec/nodeName").is_some()).await;
        assert_ne!(text(&a, "/spec/nodeName"), text(&b, "/spec/nodeName"));
        stop.send_replace(true);
        engine.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_vmi_is_scheduled_then_runs_with_an_interface_address() {
        let store = store_with(&[NodeSpec::new("n1").cpu_millis(4000).memory_mib(8192)]);
        let (stop, shutdown) = watch::channel(false);
        let engine = StageEngine::spawn(store.clone(), EngineConfig::default(), shutdown);
        let vmi = json!({"metadata": {"name": "vm"}, "spec": {"domain": {"cpu": {"cores": 2}, "memory": {"guest": "2Gi"}}}});
        store.create(Resource::VirtualMachineInstances, Some("default"), vmi).unwrap();
        let mut sub = store.subscribe(Resource::VirtualMachineInstances, None, WatchFrom::Now).unwrap();
        let mut phases = Vec::new();
        while phases.last().map(String::as_str) != Some("Running") {
            let change = sub.live.recv().await.unwrap();
            if change.resource == Resource::VirtualMachineInstances {
                phases.push(text(&change.object, "/status/phase").unwrap_or_default().to_string());
                if phases.last().map(String::as_str) == Some("Running") {
                    assert_eq!(text(&change.object, "/status/nodeName"), Some("n1"));
                    assert!(text(&change.object, "/status/interfaces/0/ipAddress").is_some());
                }
            }
        }
        assert_eq!(phases, ["Scheduled", "Running"]);

        let huge = json!({"metadata": {"name": "huge"}, "spec": {"domain": {"cpu": {"cores": 2}, "memory": {"guest": "64Gi"}}}});
        store.create(Resource::VirtualMachineInstances, Some("default"), huge).unwrap();
        loop {
            let change = sub.live.recv().await.unwrap();
            if text(&change.object, "/metadata/name") == Some("huge")
                && text(&change.object, "/status/phase") == Some("Scheduling")
            {
                assert!(change.object.to_string().contains("Insufficient memory"));
                break;
            }
        }
        stop.send_replace(true);
        engine.await.unwrap();
    }
}
