//! Discovery documents: `/version`, `/api`, `/apis`, and the resource list of each group version.
//! Only the legacy (non-aggregated) forms are served; kubectl falls back to them.

use serde_json::{Value, json};

use crate::resource::Resource;

/// The group versions served, besides the core `v1`.
const GROUPS: [(&str, &str); 3] =
    [("admissionregistration.k8s.io", "v1"), ("kubevirt.io", "v1"), ("metrics.k8s.io", "v1beta1")];

/// The answer to `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-eci-edge-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The answer to `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv], "preferredVersion": gv})
}

/// The answer to `GET /apis/{group}`, if the group is served.
pub fn api_group(name: &str) -> Option<Value> {
    GROUPS.iter().find(|(g, _)| *g == name).map(|(g, v)| {
        let mut doc = group(g, v);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// The answer to `GET /apis`.
pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": GROUPS.iter().map(|(g, v)| group(g, v)).collect::<Vec<_>>(),
    })
}

fn resource_entry(resource: Resource) -> Value {
    let mut verbs = vec!["create", "delete", "get", "list", "patch", "update", "watch"];
    if resource.deletes_collections() {
        verbs.insert(2, "deletecollection");
    }
    let mut entry = json!({
        "name": resource.plural(),
        "singularName": resource.singular(),
        "namespaced": resource.namespaced(),
        "kind": resource.kind(),
        "verbs": verbs,
        "shortNames": resource.short_names(),
    });
    if resource == Resource::Pods {
        entry["categories"] = json!(["all"]);
    }
    entry
}

fn status_entry(resource: Resource) -> Value {
    json!({
        "name": format!("{}/status", resource.plural()),
        "singularName": "",
        "namespaced": resource.namespaced(),
        "kind": resource.kind(),
        "verbs": ["get", "patch", "update"],
    })
}

/// The APIResourceList of a group version (`""` is the core group), if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    let served = group.is_empty() && version == "v1" || GROUPS.contains(&(group, version));
    if !served {
        return None;
    }
    let mut resources = Vec::new();
    for resource in Resource::ALL.into_iter().filter(|r| r.group() == group) {
        resources.push(resource_entry(resource));
        if resource.has_status() {
            resources.push(status_entry(resource));
        }
    }
    if group == "metrics.k8s.io" {
        resources = crate::metrics::resources().as_array().cloned().unwrap_or_default();
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_resource_list_names_pods_with_their_short_name_and_verbs() {
        let list = resource_list("", "v1").unwrap();
        let pods = list["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
    }

    #[test]
    fn kubevirt_and_metrics_are_discoverable_groups() {
        let groups = api_group_list();
        let names: Vec<&str> =
            groups["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["admissionregistration.k8s.io", "kubevirt.io", "metrics.k8s.io"]);
        let vmis = resource_list("kubevirt.io", "v1").unwrap();
        assert_eq!(vmis["resources"][0]["kind"], "VirtualMachineInstance");
        let metrics = resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(metrics["resources"][1]["kind"], "PodMetrics");
        assert!(resource_list("apps", "v1").is_none());
    }
}
