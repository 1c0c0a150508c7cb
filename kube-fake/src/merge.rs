//! Pure JSON merge functions: merge patches and the server-side-apply approximation.

use serde_json::{Map, Value};

/// Applies an RFC 7386 JSON merge patch: maps merge recursively, `null` deletes, the rest replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.as_str()).or_insert(Value::Null), value);
        }
    }
}

/// Applies an RFC 6902 JSON patch the way the apiserver does: a `test` for `null` passes on a
/// missing path (kube's finalizer helper relies on this; the `json-patch` crate alone fails it).
pub(crate) fn apply_json_patch(
    doc: &mut Value,
    patch: &json_patch::Patch,
) -> Result<(), json_patch::PatchError> {
    for op in &patch.0 {
        if let json_patch::PatchOperation::Test(test) = op
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))?;
    }
    Ok(())
}

/// Merges an applied configuration into `target`: maps merge recursively, lists and scalars
/// replace (server-side apply treats lists as atomic here; see the README).
pub(crate) fn apply_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) => apply_merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Removes from `target` the fields a manager applied before (`previous`) but no longer applies
/// (`next`), unless another manager's applied config (`others`) still claims them.
pub(crate) fn prune(target: &mut Value, previous: &Value, next: Option<&Value>, others: &[&Value]) {
    let (Value::Object(target), Value::Object(previous)) = (target, previous) else {
        return;
    };
    for (key, prev) in previous {
        let next_value = next.and_then(|n| n.get(key));
        let claimed: Vec<&Value> = others.iter().filter_map(|o| o.get(key)).collect();
        let descend = prev.is_object()
            && target.get(key).is_some_and(Value::is_object)
            && (next_value.is_some_and(Value::is_object) || !claimed.is_empty());
        if descend {
            let target_child = target.get_mut(key).expect("checked above");
            let claimed_maps: Vec<&Value> = claimed.into_iter().filter(|c| c.is_object()).collect();
            prune(
                target_child,
                prev,
                next_value.filter(|n| n.is_object()),
                &claimed_maps,
            );
        } else if next_value.is_none() && claimed.is_empty() {
            target.remove(key);
        }
    }
}

/// A field path as a list of map keys.
pub(crate) type FieldPath = Vec<String>;

/// Every leaf path of `value`; lists and scalars are leaves.
pub(crate) fn leaf_paths(value: &Value) -> Vec<FieldPath> {
    fn walk(value: &Value, prefix: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    prefix.push(key.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The value at `path`, if present.
pub(crate) fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Removes the value at `path`, if present.
pub(crate) fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let parent = parents.iter().try_fold(value, |v, key| v.get_mut(key));
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

/// Renders a field path the way apply conflict messages do: `.spec.replicas`.
pub(crate) fn display_path(path: &[String]) -> String {
    path.iter().map(|key| format!(".{key}")).collect()
}

/// The `fieldsV1` tree of a managedFields entry describing the fields `owned` sets.
pub(crate) fn fields_v1(owned: &Value) -> Value {
    match owned {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, child)| (format!("f:{key}"), fields_v1(child)))
                .collect(),
        ),
        _ => Value::Object(Map::new()),
    }
}

/// The object without `metadata` and `status`: what `metadata.generation` tracks.
pub(crate) fn spec_view(object: &Value) -> Value {
    let mut view = object.clone();
    if let Value::Object(map) = &mut view {
        map.remove("metadata");
        map.remove("status");
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({ "a": { "b": 1, "c": 2 }, "l": [1, 2], "s": "x" });
        merge_patch(
            &mut doc,
            &json!({ "a": { "b": null, "d": 3 }, "l": [3], "n": { "m": 1 } }),
        );
        assert_eq!(
            doc,
            json!({ "a": { "c": 2, "d": 3 }, "l": [3], "s": "x", "n": { "m": 1 } })
        );
    }

    #[test]
    fn json_patch_tests_missing_paths_as_null() {
        let mut doc = json!({ "metadata": {} });
        let ops = serde_json::from_value(json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": ["f"] },
        ]))
        .unwrap();
        apply_json_patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({ "metadata": { "finalizers": ["f"] } }));
        let stale = serde_json::from_value(
            json!([{ "op": "test", "path": "/metadata/finalizers", "value": null }]),
        )
        .unwrap();
        assert!(apply_json_patch(&mut doc, &stale).is_err());
    }

    #[test]
    fn apply_merge_replaces_lists_and_keeps_unmentioned_fields() {
        let mut doc = json!({ "spec": { "a": 1, "l": [1, 2] }, "status": { "ok": true } });
        apply_merge(&mut doc, &json!({ "spec": { "l": [3], "b": 2 } }));
        assert_eq!(
            doc,
            json!({ "spec": { "a": 1, "b": 2, "l": [3] }, "status": { "ok": true } })
        );
    }

    #[test]
    fn prune_removes_only_fields_dropped_by_the_same_manager() {
        let mut doc = json!({ "data": { "a": "1", "b": "2", "c": "3" }, "spec": { "x": 1 } });
        let previous = json!({ "data": { "a": "1", "b": "2" }, "spec": { "x": 1 } });
        let next = json!({ "data": { "a": "1" } });
        let other = json!({ "data": { "b": "2" } });
        prune(&mut doc, &previous, Some(&next), &[]);
        assert_eq!(doc, json!({ "data": { "a": "1", "c": "3" } }));

        let mut doc = json!({ "data": { "a": "1", "b": "2" } });
        prune(&mut doc, &previous, Some(&json!({})), &[&other]);
        assert_eq!(doc, json!({ "data": { "b": "2" } }));
    }

    #[test]
    fn leaf_paths_and_fields_v1() {
        let v = json!({ "spec": { "a": 1, "l": [1], "e": {} } });
        let mut paths = leaf_paths(&v);
        paths.sort();
        assert_eq!(
            paths,
            vec![vec!["spec", "a"], vec!["spec", "e"], vec!["spec", "l"]]
        );
        assert_eq!(
            fields_v1(&v),
            json!({ "f:spec": { "f:a": {}, "f:l": {}, "f:e": {} } })
        );
        assert_eq!(display_path(&paths[0]), ".spec.a");
        let mut doc = v.clone();
        remove_path(&mut doc, &paths[0]);
        assert_eq!(get_path(&doc, &paths[0]), None);
        assert_eq!(get_path(&doc, &paths[1]), Some(&json!({})));
    }

    #[test]
    fn spec_view_ignores_metadata_and_status() {
        let a = json!({ "metadata": { "labels": { "x": "1" } }, "spec": 1, "status": 2 });
        let b = json!({ "metadata": {}, "spec": 1, "status": 3 });
        assert_eq!(spec_view(&a), spec_view(&b));
    }
}
