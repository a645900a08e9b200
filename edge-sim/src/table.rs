//! Server-side printing: `meta.k8s.io/v1` `Table` objects, as kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::resource::Resource;

/// Whether the request's Accept header asks for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
        },
    )
}

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

/// The column definitions of a resource's table.
pub fn columns(resource: Resource) -> Value {
    let name = column("Name", "string", "name", "Name must be unique within a namespace.");
    let age = column(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match resource {
        Resource::Pods => json!([
            name,
            column("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic."),
            column("Status", "string", "", "The aggregate status of the containers in this pod."),
            column(
                "Restarts",
                "integer",
                "",
                "The number of times the containers in this pod have been restarted."
            ),
            age,
            column("IP", "string", "", "IP address allocated to the pod."),
            column("Node", "string", "", "Name of the node this pod runs on."),
        ]),
        Resource::ValidatingWebhookConfigurations => json!([
            name,
            column(
                "Webhooks",
                "integer",
                "",
                "Webhooks indicates the number of webhooks in the configuration."
            ),
            age,
        ]),
        _ => json!([name, age]),
    }
}

/// Kubernetes' short human duration (`45s`, `3m20s`, `5h`, `12d`).
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age(object: &Value) -> String {
    object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_age((Utc::now() - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// What kubectl shows in a pod's STATUS column.
fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let waiting = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.pointer("/state/waiting/reason").or_else(|| c.pointer("/state/terminated/reason")))
        .and_then(Value::as_str);
    let reason = pod.pointer("/status/reason").and_then(Value::as_str);
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    reason.or(waiting).or(phase).unwrap_or("Unknown").to_string()
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let total = pod.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let ready = statuses.into_iter().flatten().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses.into_iter().flatten().filter_map(|c| c["restartCount"].as_i64()).sum();
    let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or("<none>").to_string();
    vec![
        json!(ready.to_string() + "/" + &total.to_string()),
        json!(pod_status(pod)),
        json!(restarts),
        json!(age(pod)),
        json!(text("/status/podIP")),
        json!(text("/spec/nodeName")),
    ]
}

/// One table row for an object, carrying the object itself.
pub fn row(resource: Resource, object: &Value) -> Value {
    let name = object.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let mut cells = vec![name];
    match resource {
        Resource::Pods => cells.extend(pod_cells(object)),
        Resource::ValidatingWebhookConfigurations => {
            let webhooks = object.get("webhooks").and_then(Value::as_array).map_or(0, Vec::len);
            cells.extend([json!(webhooks), json!(age(object))]);
        }
        _ => cells.push(json!(age(object))),
    }
    json!({"cells": cells, "object": object})
}

/// A Table of objects; `continue_token` pages like a list.
pub fn table(
    resource: Resource,
    objects: &[Value],
    resource_version: u64,
    continue_token: Option<&str>,
) -> Value {
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(resource),
        "rows": objects.iter().map(|o| row(resource, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn kubectls_accept_header_asks_for_a_table() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
        );
        assert!(wants_table(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_table(&headers));
    }

    #[test]
    fn a_pod_row_shows_readiness_status_restarts_ip_and_node() {
        let pod = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1}, {"name": "b", "ready": false, "restartCount": 2}
            ]}
        });
        let cells = row(Resource::Pods, &pod)["cells"].clone();
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], 3);
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells[6], "n1");
    }

    #[test]
    fn ages_read_like_kubectls() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(200), "3m20s");
        assert_eq!(human_age(3600 * 5), "5h");
        assert_eq!(human_age(86_400 * 20), "20d");
    }
}
