//! Simulated nodes: what a pre-created node offers (allocatable cpu, memory, pods).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A node to create when a cluster starts (or later through `SimCluster::add_node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node's name.
    pub name: String,
    /// Allocatable CPU in milli-cores.
    pub cpu_millis: u64,
    /// Allocatable memory in MiB.
    pub memory_mib: u64,
    /// How many pods the node accepts.
    pub pods: u32,
    /// GPUs its device plugin advertises (`nvidia.com/gpu`); none when zero.
    pub gpus: u32,
    /// The node's labels (zone, carrier, …).
    pub labels: BTreeMap<String, String>,
    /// The node's InternalIP address.
    pub internal_ip: String,
}

impl NodeSpec {
    /// A node with 8 cores, 32 GiB and 110 pods.
    pub fn new(name: impl Into<String>) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            cpu_millis: 8_000,
            memory_mib: 32 * 1024,
            pods: 110,
            gpus: 0,
            labels: BTreeMap::new(),
            internal_ip: "10.0.0.1".into(),
        }
    }

    /// Set the allocatable CPU in milli-cores.
    pub fn cpu_millis(mut self, millis: u64) -> Self {
        self.cpu_millis = millis;
        self
    }

    /// Set the allocatable memory in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Set how many pods the node accepts.
    pub fn pods(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }

    /// Set how many GPUs the node advertises.
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    /// Add a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Set the InternalIP address.
    pub fn internal_ip(mut self, ip: impl Into<String>) -> Self {
        self.internal_ip = ip.into();
        self
    }

    /// The `v1` Node object: Ready, with capacity = allocatable.
    pub fn to_object(&self) -> Value {
        let mut resources = json!({
            "cpu": format!("{}m", self.cpu_millis),
            "memory": format!("{}Mi", self.memory_mib),
            "pods": self.pods.to_string(),
        });
        if self.gpus > 0 {
            resources["nvidia.com/gpu"] = json!(self.gpus.to_string());
        }
        let mut labels = self.labels.clone();
        labels.entry("kubernetes.io/hostname".into()).or_insert_with(|| self.name.clone());
        labels.entry("type".into()).or_insert_with(|| "kwok".into());
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [
                    {"type": "InternalIP", "address": self.internal_ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "simulated kubelet is posting ready status",
                }],
                "phase": "Running",
                "nodeInfo": {"kubeletVersion": "v1.32.0-eci-edge-sim", "architecture": "amd64", "operatingSystem": "linux"},
            },
        })
    }
}
