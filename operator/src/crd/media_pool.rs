//! `MediaPool`: the RTP relay nodes.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Placement, PoolStatus};

/// A pool of RTP media-relay pods (a StatefulSet), scalable with `kubectl scale` or an HPA. A
/// scale-down first marks the pods that go draining (no new calls) and removes each once its
/// calls have ended or `drainTimeoutSeconds` has passed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "centrex.dev",
    version = "v1alpha1",
    kind = "MediaPool",
    namespaced,
    status = "MediaPoolStatus",
    shortname = "mp",
    category = "centrex",
    doc = "A pool of RTP media-relay pods.",
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
#[x_kube(validation = Rule::new("self.rtpPorts.max - self.rtpPorts.min + 1 >= 4 * self.sessionsPerNode").message("rtpPorts must hold 4 ports per session (RTP and RTCP of two legs): widen the range or lower sessionsPerNode"))]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (self.replicas >= self.autoscaling.minReplicas && self.replicas <= self.autoscaling.maxReplicas)").message("replicas must lie between autoscaling.minReplicas and autoscaling.maxReplicas"))]
pub struct MediaPoolSpec {
    /// Media nodes to run (the scale subresource's `spec.replicas`).
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 1000").message("replicas must be between 0 and 1000"))]
    pub replicas: i32,
    /// Relay sessions one node accepts.
    #[serde(default = "default_sessions_per_node")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("sessionsPerNode must be between 1 and 100000"))]
    pub sessions_per_node: i32,
    /// Autoscaling on the sessions the nodes report; absent means a fixed `replicas`. While it is
    /// set the operator owns `replicas` (do not also point an HPA at the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<MediaAutoscaling>,
    /// UDP ports each node relays on.
    #[serde(default)]
    pub rtp_ports: PortRange,
    /// How nodes are reached from phones and carriers.
    #[serde(default)]
    pub network: MediaNetwork,
    /// Longest wait for a node's calls to end before a scale-down removes it, counted from when
    /// it was marked draining (also the pods' termination grace period).
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

fn default_sessions_per_node() -> i32 {
    2000
}

fn default_drain_timeout() -> i32 {
    3600
}

/// Autoscaling of a media pool on the sessions its nodes report: desired nodes =
/// ceil(active sessions / (node capacity × target utilisation)), within min and max; up at once,
/// down only once every recommendation of the stabilisation window allows it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
pub struct MediaAutoscaling {
    /// Fewest nodes.
    #[x_kube(validation = Rule::new("self >= 1").message("minReplicas must be at least 1"))]
    pub min_replicas: i32,
    /// Most nodes.
    #[x_kube(validation = Rule::new("self <= 1000").message("maxReplicas must be at most 1000"))]
    pub max_replicas: i32,
    /// Share of each node's capacity (`sessionsPerNode`, as the nodes report it) to aim for, in
    /// percent.
    #[serde(default = "default_target_utilization")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("targetUtilizationPercent must be between 1 and 100"))]
    pub target_utilization_percent: i32,
    /// How long load must stay low before nodes are removed: the pool shrinks only to the highest
    /// recommendation of this many past seconds.
    #[serde(default = "default_stabilization")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 3600").message("scaleDownStabilizationSeconds must be between 0 and 3600"))]
    pub scale_down_stabilization_seconds: i32,
}

fn default_target_utilization() -> i32 {
    70
}

fn default_stabilization() -> i32 {
    300
}

/// Status of a media pool: the workload's figures and, with autoscaling, its last decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaPoolStatus {
    /// The workload's figures and conditions (shared with SignallingPool).
    #[serde(flatten)]
    pub pool: PoolStatus,
    /// The autoscaler's last decision and what it was made from; absent without
    /// `spec.autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// Pods marked draining for a scale-down that the StatefulSet still keeps: they take no new
    /// call and go once their calls end or `drainTimeoutSeconds` passes. The `Draining` condition
    /// (besides Ready and Progressing) says how many sessions each holds and until when; Events
    /// `DrainingForScaleDown`, `DrainedForScaleDown` and `DrainTimeoutPassed` mark the steps.
    /// Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<String>,
}

/// The autoscaler's last decision, written every census period by the leading operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Replicas the autoscaler wants (written to `spec.replicas` when they differ).
    pub desired_replicas: i32,
    /// Replicas the current load alone asks for, before the stabilisation window and the bounds.
    pub recommended_replicas: i32,
    /// Sessions relayed across every registered node, draining ones included.
    pub active_sessions: i64,
    /// Sessions the registered nodes that are not draining accept together.
    pub capacity: i64,
    /// Media nodes registered in the store (draining ones included).
    pub nodes: i32,
    /// Registered nodes that are draining.
    pub draining_nodes: i32,
    /// When the autoscaler last changed `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// CamelCase reason of the decision: ScaledUp, ScaledDown, ScaleDownStabilizing, Steady,
    /// NoLoadReported.
    pub reason: String,
    /// The decision and its inputs in words.
    pub message: String,
}

/// An inclusive UDP port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min < self.max").message("rtpPorts.min must be lower than rtpPorts.max"))]
#[x_kube(validation = Rule::new("self.min >= 1024 && self.max <= 65535").message("rtpPorts must lie within 1024-65535"))]
pub struct PortRange {
    /// First port.
    pub min: i32,
    /// Last port.
    pub max: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            min: 20000,
            max: 29999,
        }
    }
}

/// Network exposure of media nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaNetwork {
    /// Host network (the node's address) or the pod's own IP.
    #[serde(default)]
    pub mode: MediaNetworkMode,
    /// Address written into SDP; defaults to the pod's or host's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("advertisedAddress must be an IP address"))]
    #[schemars(length(max = 45))]
    pub advertised_address: Option<String>,
}

/// How media pods are networked.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaNetworkMode {
    /// The pod's own IP (needs a routable pod network or a NAT'd advertised address).
    #[default]
    PodIP,
    /// The node's network namespace: RTP ports are the host's.
    HostNetwork,
}
