//! Checks an object against a CRD's structural schema and CEL rules, as the API server would on
//! `kubectl apply --validate=strict`: types, required fields, unknown fields, sizes, enums, then
//! every `x-kubernetes-validations` rule. Defaults from the schema are applied first.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;
use serde_json::{Map, Value};

/// Returns the defaulted object, or every violation with its field path.
pub fn check(crd: &CustomResourceDefinition, mut object: Value) -> Result<Value, Vec<String>> {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .map(|s| serde_json::to_value(s).expect("a schema serialises"))
        .unwrap_or(Value::Null);
    let mut errors = Vec::new();
    // metadata is checked by the API server itself, not by the CRD schema.
    let metadata = object.as_object_mut().and_then(|o| o.remove("metadata"));
    apply_defaults(&schema, &mut object);
    check_structure(&schema, &object, "", &mut errors);
    if let (Some(metadata), Some(o)) = (metadata, object.as_object_mut()) {
        o.insert("metadata".into(), metadata);
    }
    if errors.is_empty()
        && let Err(failures) = Validator::new().validate(&schema, &object, None)
    {
        errors.extend(failures.iter().map(|f| f.to_string()));
    }
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(errors)
    }
}

/// Fills absent properties that have a schema `default`, recursively.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema["properties"].as_object() else {
                return;
            };
            for (name, property) in properties {
                if !map.contains_key(name)
                    && let Some(default) = property.get("default")
                {
                    map.insert(name.clone(), default.clone());
                }
                if let Some(child) = map.get_mut(name) {
                    apply_defaults(property, child);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| apply_defaults(&schema["items"], item)),
        _ => {}
    }
}

fn check_structure(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    if value.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errors.push(format!("{}: must not be null", at(path)));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || schema.get("x-kubernetes-int-or-string").is_some()
    {
        return;
    }
    let expected = schema["type"].as_str().unwrap_or("");
    let matches = match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !matches {
        errors.push(format!("{}: must be of type {expected}", at(path)));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!(
            "{}: must be one of {}",
            at(path),
            Value::Array(allowed.clone())
        ));
    }
    match value {
        Value::Object(map) => check_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errors.push(format!("{}: must have at most {max} items", at(path)));
            }
            for (i, item) in items.iter().enumerate() {
                check_structure(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::String(s) => {
            if let Some(max) = schema["maxLength"].as_u64()
                && s.chars().count() as u64 > max
            {
                errors.push(format!("{}: must be at most {max} characters", at(path)));
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    let join = |name: &str| {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    for required in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(required) {
            errors.push(format!("{}: required field is missing", join(required)));
        }
    }
    let properties = schema["properties"].as_object();
    let additional = &schema["additionalProperties"];
    for (name, child) in map {
        if path.is_empty() && (name == "apiVersion" || name == "kind") {
            continue;
        }
        match properties.and_then(|p| p.get(name)) {
            Some(property) => check_structure(property, child, &join(name), errors),
            None if additional.is_object() => {
                check_structure(additional, child, &join(name), errors)
            }
            None => errors.push(format!("{}: unknown field", join(name))),
        }
    }
}
