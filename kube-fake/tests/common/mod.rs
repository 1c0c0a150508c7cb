//! Fixtures shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::fmt::Debug;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

/// Upper bound for anything the tests wait on.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A ConfigMap with the given labels and data.
pub fn config_map(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": labels },
        "data": data,
    }))
    .expect("valid ConfigMap")
}

/// A ConfigMap whose only owner is the object with `owner_uid`, optionally held by a finalizer.
pub fn owned_config_map(name: &str, owner_uids: &[&str], finalizers: &[&str]) -> ConfigMap {
    let refs: Vec<Value> = owner_uids
        .iter()
        .map(|uid| json!({ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid }))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "ownerReferences": refs, "finalizers": finalizers },
    }))
    .expect("valid ConfigMap")
}

/// A minimal Deployment of `replicas` nginx pods.
pub fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "web", "image": "nginx" }] },
            },
        },
    }))
    .expect("valid Deployment")
}

/// The HTTP code and reason of an API error; panics on success or other errors.
pub fn api_error<T: Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next item of `stream`, failing the test after [`DEADLINE`].
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("timed out waiting for the stream")
        .expect("stream ended")
}
