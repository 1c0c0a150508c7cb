//! `SignallingPool`: the SIP signalling pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Placement, PoolStatus};

/// A pool of SIP signalling pods (a Deployment behind a Service).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "centrex.dev",
    version = "v1alpha1",
    kind = "SignallingPool",
    namespaced,
    status = "PoolStatus",
    shortname = "sp",
    category = "centrex",
    doc = "A pool of SIP signalling pods.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.sip.tlsPort) || has(self.tlsSecretRef)").message("sip.tlsPort needs tlsSecretRef (the certificate to serve)"))]
pub struct SignallingPoolSpec {
    /// Signalling pods to run (the scale subresource's `spec.replicas`).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("replicas must be between 0 and 1000"))]
    pub replicas: i32,
    /// SIP listening ports.
    #[serde(default)]
    pub sip: SipPorts,
    /// How the SIP Service is exposed.
    #[serde(default)]
    pub service: SipService,
    /// Secret (kubernetes.io/tls) with the certificate for SIP over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<LocalObjectRef>,
    /// Digest algorithms offered in challenges, most preferred first. RFC 8760's SHA-256 then MD5
    /// by default; `[MD5]` for fleets of phones that fail on a SHA-256 challenge (sipp 3.6,
    /// baresip 1.0 and other libre 1.x based phones do).
    #[serde(default = "default_digest_algorithms")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.all(a, self.filter(b, b == a).size() == 1)").message("digestAlgorithms must not repeat an algorithm"))]
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// Longest wait for transactions and calls to move away before a pod is removed.
    #[serde(default = "default_drain_timeout")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 86400").message("drainTimeoutSeconds must be between 0 and 86400"))]
    pub drain_timeout_seconds: i32,
    /// Container image; defaults to the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Node placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_replicas() -> i32 {
    2
}

fn default_digest_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}

/// A digest authentication algorithm (RFC 8760).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

impl DigestAlgorithm {
    /// The token of `--digest-algorithms` and of the challenge.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "SHA-256",
            DigestAlgorithm::Md5 => "MD5",
        }
    }
}

fn default_drain_timeout() -> i32 {
    300
}

/// SIP ports of a signalling pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.tlsPort) || self.tlsPort != self.tcpPort").message("sip.tlsPort must differ from sip.tcpPort"))]
pub struct SipPorts {
    /// UDP port.
    #[serde(default = "default_sip_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("udpPort must be between 1 and 65535"))]
    pub udp_port: i32,
    /// TCP port.
    #[serde(default = "default_sip_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("tcpPort must be between 1 and 65535"))]
    pub tcp_port: i32,
    /// TLS port; absent disables SIP over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("tlsPort must be between 1 and 65535"))]
    pub tls_port: Option<i32>,
}

fn default_sip_port() -> i32 {
    5060
}

impl Default for SipPorts {
    fn default() -> Self {
        Self {
            udp_port: default_sip_port(),
            tcp_port: default_sip_port(),
            tls_port: None,
        }
    }
}

/// Exposure of the SIP Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SipService {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// IP address phones reach the pool at (the load balancer's or a node's), written with the
    /// SIP UDP port into every Contact, so that a call's requests reach whichever pod is alive
    /// and calls survive a pod's loss. Without it each pod writes its own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("service.advertisedAddress must be an IP address"))]
    #[schemars(length(max = 45))]
    pub advertised_address: Option<String>,
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The value of `Service.spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A reference to an object by name in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LocalObjectRef {
    /// Name of the object.
    pub name: String,
}
