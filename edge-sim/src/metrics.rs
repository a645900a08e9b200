//! `metrics.k8s.io/v1beta1`: PodMetrics and NodeMetrics derived from the store (what `kubectl top` reads).
//!
//! Usage is simulated and deterministic: a running Pod uses the cpu of its load curve (see
//! [`crate::load`]), split among its containers in proportion to their requests, or without one half of
//! what each container requests (at least 1m); a container uses half the memory it requests (at least
//! 8Mi); a node uses a base of 100m and 512Mi plus its running pods. Timestamps come from the cluster's
//! clock, the one its curves run on.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::load::LoadCurves;
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

fn request<'a>(container: &'a Value, key: &str) -> Option<&'a str> {
    container.pointer(&format!("/resources/requests/{key}")).and_then(Value::as_str)
}

/// The MiB a running container uses.
fn container_memory(container: &Value) -> u64 {
    (request(container, "memory").and_then(quantity::memory_mib).unwrap_or(0) / 2).max(8)
}

/// `total` in shares proportional to `weights` (equal ones when all are 0), the remainder of the
/// rounding down going to the first, so that the shares add up to `total` exactly.
fn split(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum = weights.iter().fold(0u64, |sum, weight| sum.saturating_add(*weight));
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|weight| match sum {
            0 => total / weights.len() as u64,
            // At most `total`, so it fits.
            _ => (u128::from(total) * u128::from(*weight) / u128::from(sum)) as u64,
        })
        .collect();
    let given = shares.iter().sum::<u64>();
    if let Some(first) = shares.first_mut() {
        *first += total - given;
    }
    shares
}

/// The milli-cpu each container of a running pod uses at `now`.
fn containers_cpu(pod: &Value, containers: &[Value], load: &LoadCurves, now: DateTime<Utc>) -> Vec<u64> {
    let requests: Vec<u64> =
        containers.iter().map(|c| request(c, "cpu").and_then(quantity::cpu_millis).unwrap_or(0)).collect();
    let requested = requests.iter().fold(0u64, |sum, request| sum.saturating_add(*request));
    match load.pod_cpu(pod, requested, now) {
        Some(used) => split(used, &requests),
        None => requests.iter().map(|request| (request / 2).max(1)).collect(),
    }
}

fn running_containers(pod: &Value) -> Option<&[Value]> {
    if text(pod, "/status/phase") != Some("Running") {
        return None;
    }
    pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice)
}

fn timestamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The PodMetrics of a pod at `now`, if it is running (the metrics server knows nothing of other pods).
pub fn pod_metrics(pod: &Value, load: &LoadCurves, now: DateTime<Utc>) -> Option<Value> {
    let containers = running_containers(pod)?;
    let usage: Vec<Value> = containers
        .iter()
        .zip(containers_cpu(pod, containers, load, now))
        .map(|(c, cpu)| {
            let memory = container_memory(c);
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
            "creationTimestamp": timestamp(now),
        },
        "timestamp": timestamp(now),
        "window": "30s",
        "containers": usage,
    }))
}

/// The NodeMetrics of a node at `now`, given all pods: what its running pods use, as their PodMetrics
/// say, over the node's own base.
pub fn node_metrics(node: &Value, pods: &[Value], load: &LoadCurves, now: DateTime<Utc>) -> Value {
    let name = text(node, "/metadata/name").unwrap_or_default();
    let (mut cpu, mut memory) = (100u64, 512u64);
    for pod in pods.iter().filter(|p| text(p, "/spec/nodeName") == Some(name)) {
        let Some(containers) = running_containers(pod) else { continue };
        for c in containers_cpu(pod, containers, load, now) {
            cpu = cpu.saturating_add(c);
        }
        for container in containers {
            memory = memory.saturating_add(container_memory(container));
        }
    }
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "labels": node["metadata"].get("labels").cloned().unwrap_or(json!({})), "creationTimestamp": timestamp(now)},
        "timestamp": timestamp(now),
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
    use crate::load::{LoadCurve, Shape};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").unwrap().to_utc()
    }

    #[test]
    fn a_running_pod_uses_half_its_requests_and_a_pending_one_has_no_metrics() {
        let load = LoadCurves::default();
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
            "status": {"phase": "Pending"},
        });
        assert!(pod_metrics(&pod, &load, now()).is_none());
        pod["status"]["phase"] = json!("Running");
        let metrics = pod_metrics(&pod, &load, now()).unwrap();
        assert_eq!(metrics["containers"][0]["usage"], json!({"cpu": "500m", "memory": "512Mi"}));
        assert_eq!(metrics["timestamp"], "2025-01-01T00:00:00Z");
        let node = node_metrics(&json!({"metadata": {"name": "n1"}}), &[pod], &load, now());
        assert_eq!(node["usage"], json!({"cpu": "600m", "memory": "1024Mi"}));
    }

    #[test]
    fn a_curve_is_shared_among_containers_by_their_requests_and_adds_up_on_the_node() {
        let load = LoadCurves::default();
        let curve = LoadCurve::millicores(Shape::Constant { value: 1_001.0 }).unwrap();
        load.set("app=web", curve).unwrap();
        let container =
            |name: &str, cpu: &str| json!({"name": name, "resources": {"requests": {"cpu": cpu}}});
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [container("a", "250m"), container("b", "750m")]},
            "status": {"phase": "Running"},
        });
        let metrics = pod_metrics(&pod, &load, now()).unwrap();
        let cpu: Vec<&Value> =
            metrics["containers"].as_array().unwrap().iter().map(|c| &c["usage"]["cpu"]).collect();
        assert_eq!(cpu, ["251m", "750m"], "the rounding's remainder goes to the first container");
        let node = node_metrics(&json!({"metadata": {"name": "n1"}}), &[pod], &load, now());
        assert_eq!(node["usage"]["cpu"], "1101m");
    }

    #[test]
    fn shares_add_up_to_the_whole_even_when_nothing_is_requested() {
        assert_eq!(split(10, &[0, 0, 0]), [4, 3, 3]);
        assert_eq!(split(10, &[1, 1]), [5, 5]);
        assert_eq!(split(7, &[]), Vec::<u64>::new());
    }
}
