//! `metrics.k8s.io/v1beta1`: PodMetrics and NodeMetrics derived from the store (what `kubectl top` reads).
//!
//! Usage is simulated and deterministic: a running container uses half of what it requests (at least 1m
//! cpu and 8Mi memory); a node uses a base of 100m and 512Mi plus its running pods.

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::quantity;

/// The APIResourceList entries of the metrics group.
pub fn resources() -> Value {
    json!([
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
    ])
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// (milli-cpu, MiB) a running container uses.
fn container_usage(container: &Value) -> (u64, u64) {
    let request =
        |key: &str| container.pointer(&format!("/resources/requests/{key}")).and_then(Value::as_str);
    let cpu = request("cpu").and_then(quantity::cpu_millis).unwrap_or(0) / 2;
    let memory = request("memory").and_then(quantity::memory_mib).unwrap_or(0) / 2;
    (cpu.max(1), memory.max(8))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The PodMetrics of a pod, if it is running (the metrics server knows nothing of other pods).
pub fn pod_metrics(pod: &Value) -> Option<Value> {
    if text(pod, "/status/phase") != Some("Running") {
        return None;
    }
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let usage: Vec<Value> = containers
        .iter()
        .map(|c| {
            let (cpu, memory) = container_usage(c);
            json!({"name": c["name"], "usage": {"cpu": format!("{cpu}m"), "memory": format!("{memory}Mi")}})
        })
        .collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"].get("labels").cloned().unwrap_or(json!({})),
            "creationTimestamp": now(),
        },
        "timestamp": now(),
        "window": "30s",
        "containers": usage,
    }))
}

/// The NodeMetrics of a node given all pods.
pub fn node_metrics(node: &Value, pods: &[Value]) -> Value {
    let name = text(node, "/metadata/name").unwrap_or_default();
    let (mut cpu, mut memory) = (100, 512);
    for pod in pods.iter().filter(|p| text(p, "/spec/nodeName") == Some(name)) {
        if text(pod, "/status/phase") == Some("Running") {
            for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
                let (c, m) = container_usage(container);
                cpu += c;
                memory += m;
            }
        }
    }
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "labels": node["metadata"].get("labels").cloned().unwrap_or(json!({})), "creationTimestamp": now()},
        "timestamp": now(),
        "window": "30s",
        "usage": {"cpu": format!("{cpu}m"), "memory": format!("{memory}Mi")},
    })
}

/// A `PodMetricsList` or `NodeMetricsList`.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_pod_uses_half_its_requests_and_a_pending_one_has_no_metrics() {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Pending"},
        });
        assert!(pod_metrics(&pod).is_none());
        pod["status"]["phase"] = json!("Running");
        let metrics = pod_metrics(&pod).unwrap();
        assert_eq!(metrics["containers"][0]["usage"], json!({"cpu": "500m", "memory": "512Mi"}));
        let node = node_metrics(&json!({"metadata": {"name": "n1"}}), &[pod]);
        assert_eq!(node["usage"], json!({"cpu": "600m", "memory": "1024Mi"}));
    }
}
