//! JSON merge patch (RFC 7386), and strategic merge patch: what kubectl sends for the built-in kinds
//! (`kubectl apply` a second time, `kubectl edit`, `kubectl label`).

use serde_json::{Map, Value};

use crate::resource::Resource;

/// Apply `patch` to `target` as a JSON merge patch: objects merge key by key, `null` removes a key,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { unreachable!("target was just made an object") };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// How a list merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// The patch's list replaces the object's, as in a merge patch.
    Replace,
    /// Items merge on this key: a patch item changes the object's item with the same key, or is added.
    OnKey(&'static str),
    /// Plain values, which the patch's are added to.
    Union,
}

/// How the list at `path` (field names from the object's root; list items add none) of a `resource`
/// object merges, as the `patchStrategy` of the Kubernetes types says. Only the lists whose
/// strategy a client of edge-sim relies on are named; every other list is replaced.
pub fn list_merge(resource: Resource, path: &[&str]) -> ListMerge {
    match (resource, path) {
        (_, ["metadata", "finalizers"]) => ListMerge::Union,
        (_, ["metadata", "ownerReferences"]) => ListMerge::OnKey("uid"),
        // A second `kubectl apply` of a configuration sends only the webhooks' changed fields.
        (Resource::ValidatingWebhookConfigurations, ["webhooks"]) => ListMerge::OnKey("name"),
        _ => ListMerge::Replace,
    }
}

/// Apply `patch` to `target`, a `resource` object, as a strategic merge patch: a merge patch whose
/// lists merge as [`list_merge`] says, obeying (and never storing) the directives kubectl writes:
/// `$patch: replace|delete`, `$setElementOrder/<list>` (items it does not name keep their order,
/// after those it does), `$deleteFromPrimitiveList/<list>` and `$retainKeys`.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, resource: Resource) {
    let Value::Object(patch) = patch else {
        *target = fresh(patch);
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { unreachable!("target was just made an object") };
    merge_map(map, patch, &mut Vec::new(), resource);
}

/// The `$patch` directive of a patch map, if it has one.
fn directive(value: &Value) -> Option<&str> {
    value.get("$patch").and_then(Value::as_str)
}

/// A patch value the object has nothing to merge with, as it is stored: no directives, no nulls.
fn fresh(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, value)| !key.starts_with('$') && !value.is_null())
                .map(|(key, value)| (key.clone(), fresh(value)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().filter(|i| directive(i).is_none()).map(fresh).collect())
        }
        other => other.clone(),
    }
}

fn merge_map<'p>(
    target: &mut Map<String, Value>,
    patch: &'p Map<String, Value>,
    path: &mut Vec<&'p str>,
    resource: Resource,
) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let Value::Object(replacement) = fresh(&Value::Object(patch.clone())) else { unreachable!("a map") };
        *target = replacement;
        return;
    }
    for (key, value) in patch.iter().filter(|(key, _)| !key.starts_with('$')) {
        if value.is_null() || directive(value) == Some("delete") {
            target.remove(key);
            continue;
        }
        path.push(key);
        let slot = target.entry(key.clone()).or_insert(Value::Null);
        *slot = match (slot.take(), value) {
            (Value::Object(mut current), Value::Object(change)) => {
                merge_map(&mut current, change, path, resource);
                Value::Object(current)
            }
            (Value::Array(mut current), Value::Array(change)) => {
                merge_list(&mut current, change, list_merge(resource, path), path, resource);
                Value::Array(current)
            }
            (_, change) => fresh(change),
        };
        path.pop();
    }
    for (key, value) in patch {
        let (Some(field), Some(values)) = (key.strip_prefix("$deleteFromPrimitiveList/"), value.as_array())
        else {
            continue;
        };
        if let Some(Value::Array(list)) = target.get_mut(field) {
            list.retain(|item| !values.contains(item));
        }
    }
    for (key, value) in patch {
        let (Some(field), Some(order)) = (key.strip_prefix("$setElementOrder/"), value.as_array()) else {
            continue;
        };
        path.push(field);
        let how = list_merge(resource, path);
        path.pop();
        if let Some(Value::Array(list)) = target.get_mut(field) {
            let position = |item: &Value| {
                order.iter().position(|named| match how {
                    ListMerge::OnKey(on) => named.get(on).is_some() && named.get(on) == item.get(on),
                    ListMerge::Replace | ListMerge::Union => named == item,
                })
            };
            list.sort_by_key(|item| position(item).unwrap_or(usize::MAX));
        }
    }
    if let Some(kept) = patch.get("$retainKeys").and_then(Value::as_array) {
        target.retain(|key, _| kept.iter().any(|k| k == key));
    }
}

fn merge_list<'p>(
    target: &mut Vec<Value>,
    patch: &'p [Value],
    how: ListMerge,
    path: &mut Vec<&'p str>,
    resource: Resource,
) {
    let key = match how {
        ListMerge::Replace => {
            *target = patch.iter().filter(|i| directive(i).is_none()).map(fresh).collect();
            return;
        }
        ListMerge::Union => {
            for value in patch {
                if !target.contains(value) {
                    target.push(value.clone());
                }
            }
            return;
        }
        ListMerge::OnKey(key) => key,
    };
    if patch.iter().any(|item| directive(item) == Some("replace")) {
        *target = patch.iter().filter(|i| directive(i).is_none()).map(fresh).collect();
        return;
    }
    for item in patch {
        let id = item.get(key).filter(|id| !id.is_null());
        let found = id.and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
        match (directive(item), found) {
            (Some("delete"), Some(at)) => {
                target.remove(at);
            }
            (Some("delete"), None) => {}
            (_, Some(at)) => match (&mut target[at], item) {
                (Value::Object(current), Value::Object(change)) => merge_map(current, change, path, resource),
                (current, change) => *current = fresh(change),
            },
            (_, None) => target.push(fresh(item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_strategic_patch_merges_webhooks_by_name_in_the_order_it_names() {
        let mut config = json!({"metadata": {"name": "guard"}, "webhooks": [
            {"name": "a.eci.io", "timeoutSeconds": 5, "rules": [{"operations": ["DELETE"]}]},
            {"name": "b.eci.io", "timeoutSeconds": 5},
        ]});
        let patch = json!({
            "$setElementOrder/webhooks": [{"name": "c.eci.io"}, {"name": "a.eci.io"}],
            "webhooks": [
                {"name": "a.eci.io", "timeoutSeconds": 7, "rules": [{"operations": ["*"]}]},
                {"name": "b.eci.io", "$patch": "delete"},
                {"name": "c.eci.io", "timeoutSeconds": 3, "failurePolicy": null},
            ],
        });
        strategic_merge_patch(&mut config, &patch, Resource::ValidatingWebhookConfigurations);
        assert_eq!(
            config,
            json!({"metadata": {"name": "guard"}, "webhooks": [
                {"name": "c.eci.io", "timeoutSeconds": 3},
                {"name": "a.eci.io", "timeoutSeconds": 7, "rules": [{"operations": ["*"]}]},
            ]})
        );
    }

    #[test]
    fn a_strategic_patch_obeys_its_directives_and_replaces_other_lists() {
        let mut pod = json!({
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}},
            "spec": {"containers": [{"name": "c", "image": "old"}], "strategy": {"kind": "k", "extra": 1}},
        });
        let patch = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"$patch": "replace", "y": "2"}},
            "spec": {"containers": [{"name": "d"}], "strategy": {"$retainKeys": ["kind"], "kind": "j"}},
        });
        strategic_merge_patch(&mut pod, &patch, Resource::Pods);
        assert_eq!(
            pod,
            json!({
                "metadata": {"finalizers": ["b", "c"], "labels": {"y": "2"}},
                "spec": {"containers": [{"name": "d"}], "strategy": {"kind": "j"}},
            })
        );
    }

    #[test]
    fn a_merge_patch_merges_objects_replaces_values_and_removes_nulls() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "x"});
        merge_patch(&mut doc, &json!({"a": {"b": 3, "c": null}, "d": [3], "f": {"g": true}}));
        assert_eq!(doc, json!({"a": {"b": 3}, "d": [3], "e": "x", "f": {"g": true}}));
    }
}
