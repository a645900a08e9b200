//! Just enough of `/openapi/v3` for `kubectl create -f` and `kubectl apply -f`. kubectl validates
//! what it sends (`--validate=strict` by default): it leaves that to the server when the server's
//! OpenAPI document says the resource's PATCH takes the `fieldValidation` parameter, and otherwise
//! downloads the whole `/openapi/v2` schema to validate by itself, refusing to go on without it.
//! edge-sim says so of every resource it serves, and accepts the parameter without checking fields:
//! a simulator stores what its clients send.
//!
//! The documents name no schemas or request bodies, so kubectl works out `kubectl apply`'s patches
//! from its own built-in types (a strategic merge patch for the built-in kinds, a merge patch for
//! KubeVirt's), as it does with any server whose OpenAPI offers no strategic merge patch.

use serde_json::{Map, Value, json};

use crate::resource::Resource;

/// `api/v1`, `apis/kubevirt.io/v1`: where a group version's document lives under `/openapi/v3/`.
fn group_version_path(resource: Resource) -> String {
    match resource.group() {
        "" => format!("api/{}", resource.version()),
        group => format!("apis/{group}/{}", resource.version()),
    }
}

/// The answer to `GET /openapi/v3`: where each group version's document is.
pub fn index() -> Value {
    let paths: Map<String, Value> = Resource::ALL
        .into_iter()
        .map(group_version_path)
        .map(|path| (path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}")})))
        .collect();
    json!({"paths": paths})
}

/// The answer to `GET /openapi/v3/{path}`, if `path` is a group version served: one PATCH operation
/// per resource, naming its kind and the `fieldValidation` parameter.
pub fn document(path: &str) -> Option<Value> {
    let mut paths = Map::new();
    for resource in Resource::ALL.into_iter().filter(|r| group_version_path(*r) == path) {
        let collection = match resource.namespaced() {
            true => format!("/{path}/namespaces/{{namespace}}/{}", resource.plural()),
            false => format!("/{path}/{}", resource.plural()),
        };
        let operation = json!({
            "operationId": format!("patch{}", resource.kind()),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind":
                {"group": resource.group(), "version": resource.version(), "kind": resource.kind()},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(format!("{collection}/{{name}}"), json!({"patch": operation}));
    }
    (!paths.is_empty()).then(|| {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": crate::discovery::version()["gitVersion"]},
            "paths": paths,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_served_has_a_patch_operation_per_kind_taking_field_validation() {
        let index = index();
        let mut paths: Vec<&String> = index["paths"].as_object().unwrap().keys().collect();
        paths.sort();
        assert_eq!(paths, ["api/v1", "apis/admissionregistration.k8s.io/v1", "apis/kubevirt.io/v1"]);
        let admission = document("apis/admissionregistration.k8s.io/v1").unwrap();
        let patch = &admission["paths"]["/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}"]
            ["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "ValidatingWebhookConfiguration");
        assert_eq!(patch["parameters"][0]["name"], "fieldValidation");
        let core = document("api/v1").unwrap();
        assert!(core["paths"].get("/api/v1/namespaces/{namespace}/pods/{name}").is_some());
        assert!(document("apis/apps/v1").is_none());
    }
}
