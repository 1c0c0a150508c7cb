//! Types shared by several resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret in the resource's own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 253").message("secret name must be 1 to 253 characters"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_password_key")]
    #[schemars(length(max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// Where a pool's pods may run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Status fields every pool reports, including what the scale subresource reads.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods currently created for the pool (read by `kubectl scale` and HPAs).
    #[serde(default)]
    pub replicas: i32,
    /// Pods ready to take traffic.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pool's pods, serialised (read by HPAs through the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Standard conditions: Ready, Progressing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
