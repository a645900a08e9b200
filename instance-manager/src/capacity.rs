//! What an IDC's cluster offers, read without I/O from its Nodes and the Pods the platform does not
//! own, and the trimming that keeps the reflectors' copies of them small.
//!
//! A Pod's request is what kube-scheduler counts: the larger of its containers' sum and its largest
//! init container, plus its runtime's overhead. Pods that finished (Succeeded, Failed) take nothing.

use std::collections::BTreeMap;

use eci_core::capacity::{ClusterReading, NodeReading};
use eci_core::{MiB, MilliCpu, Resources};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::manifest::{LABEL_MANAGED_BY, MANAGED_BY};

/// Whether a Pod is not the platform's: it lacks the platform's `managed-by` label (other tools
/// set that standard label to their own names, so its mere presence says nothing).
pub fn is_foreign(pod: &Pod) -> bool {
    pod.metadata.labels.as_ref().and_then(|l| l.get(LABEL_MANAGED_BY)).map(String::as_str) != Some(MANAGED_BY)
}

/// The extended resource a GPU is counted by (NVIDIA's device plugin).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Reads a cluster from its Nodes and the foreign Pods: per node, what it allocates, whether it
/// takes work and what foreign Pods bound to it request; and what foreign Pods not yet bound ask.
pub fn cluster_reading<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    foreign_pods: impl IntoIterator<Item = &'a Pod>,
) -> ClusterReading {
    let mut on_node: BTreeMap<&str, Resources> = BTreeMap::new();
    let mut unbound_foreign = Resources::ZERO;
    for pod in foreign_pods {
        if finished(pod) {
            continue;
        }
        let wanted = pod_request(pod);
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => {
                let sum = on_node.entry(node).or_default();
                *sum = *sum + wanted;
            }
            None => unbound_foreign = unbound_foreign + wanted,
        }
    }
    let nodes = nodes
        .into_iter()
        .map(|node| {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            NodeReading {
                allocatable: node_allocatable(node),
                schedulable: !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
                ready: node_ready(node),
                foreign: on_node.get(name).copied().unwrap_or_default(),
            }
        })
        .collect();
    ClusterReading { nodes, unbound_foreign }
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_allocatable(node: &Node) -> Resources {
    node.status.as_ref().and_then(|s| s.allocatable.as_ref()).map(resources).unwrap_or_default()
}

/// What kube-scheduler counts a Pod as taking.
pub fn pod_request(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else { return Resources::ZERO };
    let requests = |c: &Container| {
        c.resources.as_ref().and_then(|r| r.requests.as_ref()).map(resources).unwrap_or_default()
    };
    let containers = spec.containers.iter().map(requests).fold(Resources::ZERO, |sum, r| sum + r);
    let init =
        spec.init_containers.iter().flatten().map(requests).fold(Resources::ZERO, |a, b| a.each_max(&b));
    containers.each_max(&init) + spec.overhead.as_ref().map(resources).unwrap_or_default()
}

/// CPU, memory and GPUs of a resource list; a quantity the platform cannot read counts as none
/// (and is logged), which can only make the IDC look smaller than it is.
fn resources(list: &BTreeMap<String, Quantity>) -> Resources {
    let read = |name: &str| list.get(name).map(|q| q.0.as_str());
    let cpu = read("cpu").map(|q| MilliCpu::parse(q).map_err(|e| unreadable("cpu", q, e)));
    let memory = read("memory").map(|q| MiB::parse(q).map_err(|e| unreadable("memory", q, e)));
    let gpu = read(GPU_RESOURCE).map(|q| q.parse::<u32>().map_err(|e| unreadable(GPU_RESOURCE, q, e)));
    Resources::new(
        cpu.and_then(Result::ok).unwrap_or_default(),
        memory.and_then(Result::ok).unwrap_or_default(),
        gpu.and_then(Result::ok).unwrap_or_default(),
    )
}

fn unreadable(resource: &str, quantity: &str, error: impl std::fmt::Display) {
    tracing::warn!(resource, quantity, error = %error, "a quantity in the cluster cannot be read; counted as none");
}

/// Keeps of a watched Node only what a reading needs: its name, whether it is cordoned, its
/// allocatable and its Ready condition.
pub fn trim_node(node: &mut Node) {
    node.metadata = ObjectMeta {
        name: node.metadata.name.take(),
        resource_version: node.metadata.resource_version.take(),
        ..Default::default()
    };
    node.spec = Some(NodeSpec {
        unschedulable: node.spec.as_mut().and_then(|s| s.unschedulable),
        ..Default::default()
    });
    if let Some(status) = node.status.as_mut() {
        *status = NodeStatus {
            allocatable: status.allocatable.take(),
            conditions: status.conditions.take().map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| NodeCondition { type_: c.type_, status: c.status, ..Default::default() })
                    .collect()
            }),
            ..Default::default()
        };
    }
}

/// Keeps of a watched foreign Pod only what its request and its node need (and the labels that
/// say it is foreign).
pub fn trim_foreign_pod(pod: &mut Pod) {
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        resource_version: pod.metadata.resource_version.take(),
        labels: pod.metadata.labels.take(),
        ..Default::default()
    };
    if let Some(spec) = pod.spec.as_mut() {
        let requests_only = |c: Container| Container {
            name: c.name,
            resources: c
                .resources
                .map(|r| ResourceRequirements { requests: r.requests, ..Default::default() }),
            ..Default::default()
        };
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            overhead: spec.overhead.take(),
            containers: std::mem::take(&mut spec.containers).into_iter().map(requests_only).collect(),
            init_containers: spec
                .init_containers
                .take()
                .map(|cs| cs.into_iter().map(requests_only).collect()),
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        *status = PodStatus { phase: status.phase.take(), ..Default::default() };
    }
}

#[cfg(test)]
mod tests {
    use eci_core::capacity::sellable;
    use serde_json::json;

    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).expect("a node")
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a pod")
    }

    fn res(cpu: u64, memory: u64, gpu: u32) -> Resources {
        Resources::new(MilliCpu(cpu), MiB(memory), gpu)
    }

    fn a_node(name: &str, cpu: &str, memory: &str, ready: &str, cordoned: bool) -> Node {
        node(json!({"metadata": {"name": name, "labels": {"a": "b"}, "annotations": {"x": "y"}},
            "spec": {"unschedulable": cordoned, "podCIDR": "10.0.0.0/24"},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110", GPU_RESOURCE: "2"},
                "capacity": {"cpu": "64"},
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}],
                "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}))
    }

    #[test]
    fn a_reading_counts_what_the_scheduler_counts() {
        let nodes = [
            a_node("n1", "7910m", "32780388Ki", "True", false),
            a_node("n2", "8", "32Gi", "True", true),
            a_node("n3", "8", "32Gi", "Unknown", false),
        ];
        let pods = [
            // Two containers (1.5 vCPU) beat the init container's 1 vCPU; the init's memory is larger.
            pod(json!({"metadata": {"name": "ds", "namespace": "kube-system"},
                "spec": {"nodeName": "n1", "overhead": {"cpu": "100m"},
                    "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "128Mi"}}},
                                   {"name": "b", "resources": {"requests": {"cpu": "500m"}}}],
                    "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
                "status": {"phase": "Running"}})),
            pod(json!({"metadata": {"name": "done"}, "spec": {"nodeName": "n1",
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "4"}}}]}, "status": {"phase": "Succeeded"}})),
            pod(json!({"metadata": {"name": "waiting"}, "spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]},
                "status": {"phase": "Pending"}})),
        ];
        assert!(pods.iter().all(is_foreign));
        let ours = pod(json!({"metadata": {"name": "i-1", "labels": {LABEL_MANAGED_BY: MANAGED_BY}}}));
        let helm = pod(json!({"metadata": {"name": "web", "labels": {LABEL_MANAGED_BY: "Helm"}}}));
        assert!(!is_foreign(&ours) && is_foreign(&helm), "another tool's managed-by label is foreign");
        let reading = cluster_reading(&nodes, &pods);
        assert_eq!(reading.nodes[0].foreign, res(1600, 1024, 0));
        assert_eq!(reading.unbound_foreign, res(250, 64, 0));
        let capacity = reading.capacity();
        assert_eq!(
            (capacity.nodes, capacity.schedulable_nodes),
            (3, 1),
            "cordoned and not-Ready nodes do not count"
        );
        assert_eq!(capacity.allocatable, res(7910, 32013, 2));
        assert_eq!(capacity.node_shapes, vec![res(6310, 30989, 2)]);
        assert_eq!(sellable(res(640_000, 2_621_440, 8), Some(&capacity), 0), res(6060, 30925, 2));
    }

    #[test]
    fn trimmed_nodes_and_pods_read_the_same() {
        let mut nodes =
            [a_node("n1", "16", "64Gi", "True", false), a_node("n2", "16", "64Gi", "False", true)];
        let mut pods = [pod(json!({"metadata": {"name": "p", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "nginx", "env": [{"name": "A", "value": "1"}],
                "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "4"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}))];
        let before = cluster_reading(&nodes, &pods);
        nodes.iter_mut().for_each(trim_node);
        pods.iter_mut().for_each(trim_foreign_pod);
        assert_eq!(cluster_reading(&nodes, &pods), before);
        assert!(nodes[0].metadata.labels.is_none() && nodes[0].status.as_ref().unwrap().addresses.is_none());
        assert!(pods[0].spec.as_ref().unwrap().containers[0].image.is_none());
    }
}
