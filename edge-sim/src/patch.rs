//! JSON merge patch (RFC 7386), which also stands in for strategic merge patch.

use serde_json::{Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_merges_objects_replaces_values_and_removes_nulls() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "x"});
        merge_patch(&mut doc, &json!({"a": {"b": 3, "c": null}, "d": [3], "f": {"g": true}}));
        assert_eq!(doc, json!({"a": {"b": 3}, "d": [3], "e": "x", "f": {"g": true}}));
    }
}
