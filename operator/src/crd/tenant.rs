//! `Tenant`: one customer company — its users, hunt groups, numbers and limits.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A tenant of the hosted PBX: one SIP domain and everything dialable inside it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "centrex.dev",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    status = "TenantStatus",
    shortname = "tn",
    category = "centrex",
    doc = "A customer company of the hosted PBX: its SIP domain, users, hunt groups and numbers.",
    printcolumn(name = "Domain", type_ = "string", json_path = ".spec.domain"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.users"),
    printcolumn(
        name = "Devices",
        type_ = "integer",
        json_path = ".status.registeredDevices"
    ),
    printcolumn(name = "Calls", type_ = "integer", json_path = ".status.activeCalls"),
    printcolumn(
        name = "Ready",
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
#[x_kube(validation = Rule::new("self.huntGroups.all(g, !self.users.exists(u, u.extension == g.extension))").message("a hunt group uses an extension that a user already has: give every user and hunt group its own extension"))]
pub struct TenantSpec {
    /// SIP domain of the tenant; unique in the cluster.
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])+[a-z]{2,63}$')").message("domain must be a lowercase DNS name such as acme.example.com"))]
    #[schemars(length(max = 253))]
    pub domain: String,
    /// E.164 main number of the company, presented as caller ID by users set to `mainNumber`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(E164_RULE).message(E164_MESSAGE))]
    #[schemars(length(max = 16))]
    pub main_number: Option<String>,
    /// The people of the company; each has an extension unique in the tenant.
    #[serde(default)]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["extension"]))]
    pub users: Vec<User>,
    /// Extensions that ring several users.
    #[serde(default)]
    #[schemars(length(max = 100), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["extension"]))]
    pub hunt_groups: Vec<HuntGroup>,
    /// Direct inward dialling: numbers from a trunk and where each one rings.
    #[serde(default)]
    #[schemars(length(max = 1000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["number"]))]
    pub numbers: Vec<NumberRoute>,
    /// Outbound calling: the trunks used and the destinations allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    /// Licence limits of the whole tenant.
    #[serde(default)]
    pub limits: TenantLimits,
    /// SignallingPool (same namespace) that serves this tenant.
    #[serde(default = "default_pool")]
    pub signalling_pool_ref: String,
    /// MediaPool (same namespace) that relays this tenant's audio.
    #[serde(default = "default_pool")]
    pub media_pool_ref: String,
}

/// CEL rule for an E.164 number: `+`, a non-zero digit, 6 to 14 more digits.
const E164_RULE: &str = "self.matches('^[+][1-9][0-9]{6,14}$')";
const E164_MESSAGE: &str = "must be an E.164 number such as +33123456789";

fn default_pool() -> String {
    "default".into()
}

/// A user: one person with an extension and any number of phones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.callerId != 'directNumber' || has(self.directNumber)").message("callerId directNumber needs directNumber to be set"))]
pub struct User {
    /// Extension, 2 to 8 digits; also the SIP user name and digest user name.
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{2,8}$')").message("extension must be 2 to 8 digits"))]
    pub extension: String,
    /// Name shown to the people this user calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 64").message("displayName must be at most 64 characters"))]
    #[schemars(length(max = 64))]
    pub display_name: Option<String>,
    /// Secret key holding the SIP password; only its digest hashes leave the operator.
    pub password_secret_ref: SecretKeyRef,
    /// Concurrent calls the user may have, 1 to 8.
    #[serde(default = "default_max_calls")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 8").message("maxCalls must be between 1 and 8"))]
    pub max_calls: i32,
    /// What callees see as this user's number.
    #[serde(default)]
    pub caller_id: CallerIdPresentation,
    /// The user's own E.164 number (a DID of the tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(E164_RULE).message(E164_MESSAGE))]
    #[schemars(length(max = 16))]
    pub direct_number: Option<String>,
    /// Mobile phone rung together with the desk phones (fixed–mobile convergence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(E164_RULE).message(E164_MESSAGE))]
    #[schemars(length(max = 16))]
    pub mobile_number: Option<String>,
    /// Call forwarding rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<Forwarding>,
}

fn default_max_calls() -> i32 {
    2
}

/// What a callee sees as the caller's number.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CallerIdPresentation {
    /// The user's extension (inside the tenant) — the default.
    #[default]
    Extension,
    /// The company's main number.
    MainNumber,
    /// The user's direct number.
    DirectNumber,
    /// Withheld (RFC 3323 privacy).
    Hidden,
}

/// Call forwarding of one user. Targets are an extension or an E.164 number.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Forwarding {
    /// Forward every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TARGET_RULE).message(TARGET_MESSAGE))]
    #[schemars(length(max = 16))]
    pub always: Option<String>,
    /// Forward when the user is at their call limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TARGET_RULE).message(TARGET_MESSAGE))]
    #[schemars(length(max = 16))]
    pub busy: Option<String>,
    /// Forward when nobody answers in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_answer: Option<NoAnswerForward>,
    /// Forward when the user has no registered phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TARGET_RULE).message(TARGET_MESSAGE))]
    #[schemars(length(max = 16))]
    pub unavailable: Option<String>,
}

/// CEL rule for a dial target: an extension or an E.164 number.
const TARGET_RULE: &str = "self.matches('^([0-9]{2,8}|[+][1-9][0-9]{6,14})$')";
const TARGET_MESSAGE: &str =
    "forwarding target must be an extension (2 to 8 digits) or an E.164 number";

/// Forward after ringing for a while.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NoAnswerForward {
    /// Extension or E.164 number.
    #[x_kube(validation = Rule::new(TARGET_RULE).message(TARGET_MESSAGE))]
    #[schemars(length(max = 16))]
    pub target: String,
    /// Seconds of ringing before forwarding, 5 to 120.
    #[serde(default = "default_no_answer_seconds")]
    #[x_kube(validation = Rule::new("self >= 5 && self <= 120").message("afterSeconds must be between 5 and 120"))]
    pub after_seconds: i32,
}

fn default_no_answer_seconds() -> i32 {
    20
}

/// An extension that rings a group of users.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HuntGroup {
    /// Extension of the group, 2 to 8 digits.
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{2,8}$')").message("extension must be 2 to 8 digits"))]
    pub extension: String,
    /// Name shown as the called party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) <= 64").message("name must be at most 64 characters"))]
    #[schemars(length(max = 64))]
    pub name: Option<String>,
    /// Extensions of the users rung, in order for `sequential`.
    #[schemars(length(max = 64), inner(length(max = 8)))]
    #[x_kube(validation = Rule::new("size(self) >= 1").message("a hunt group needs at least one member"))]
    #[x_kube(validation = Rule::new("self.all(m, m.matches('^[0-9]{2,8}$'))").message("members must be extensions (2 to 8 digits)"))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))").message("members must not repeat an extension"))]
    pub members: Vec<String>,
    /// How members are rung.
    #[serde(default)]
    pub strategy: HuntStrategy,
    /// Seconds each member (sequential, round-robin) or the group (simultaneous) rings.
    #[serde(default = "default_ring_seconds")]
    #[x_kube(validation = Rule::new("self >= 5 && self <= 300").message("ringSeconds must be between 5 and 300"))]
    pub ring_seconds: i32,
    /// Where the call goes when nobody answers: an extension or an E.164 number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(TARGET_RULE).message("overflow must be an extension (2 to 8 digits) or an E.164 number"))]
    #[schemars(length(max = 16))]
    pub overflow: Option<String>,
}

fn default_ring_seconds() -> i32 {
    20
}

/// How a hunt group rings its members.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HuntStrategy {
    /// Every member at once; first answer wins.
    #[default]
    Simultaneous,
    /// One after another, in list order.
    Sequential,
    /// One after another, starting after the member who took the last call.
    RoundRobin,
}

/// A DID and the extension it rings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NumberRoute {
    /// The E.164 number, as the carrier delivers it.
    #[x_kube(validation = Rule::new(E164_RULE).message("number must be an E.164 number such as +33123456789"))]
    #[schemars(length(max = 16))]
    pub number: String,
    /// Extension of the user or hunt group it rings.
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{2,8}$')").message("target must be an extension of this tenant (2 to 8 digits)"))]
    pub target: String,
}

/// Outbound calling policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    /// Trunks (same namespace) tried in order.
    #[schemars(length(max = 8), inner(length(max = 253)))]
    #[x_kube(validation = Rule::new("size(self) >= 1").message("outbound needs at least one trunk in trunkRefs"))]
    pub trunk_refs: Vec<String>,
    /// Destination classes users may call; emergency numbers are always allowed.
    #[serde(default = "default_allowed_destinations")]
    #[schemars(length(max = 8))]
    pub allowed_destinations: Vec<DestinationClass>,
}

fn default_allowed_destinations() -> Vec<DestinationClass> {
    vec![DestinationClass::National, DestinationClass::Mobile]
}

/// Classes of external destinations.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum DestinationClass {
    National,
    Mobile,
    International,
    Premium,
}

/// Licence limits of a tenant, enforced cluster-wide.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// Concurrent calls of the whole tenant.
    #[serde(default = "default_concurrent_calls")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("concurrentCalls must be between 1 and 100000"))]
    pub concurrent_calls: i32,
    /// New calls per second of the whole tenant.
    #[serde(default = "default_calls_per_second")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("callsPerSecond must be between 1 and 10000"))]
    pub calls_per_second: i32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            concurrent_calls: default_concurrent_calls(),
            calls_per_second: default_calls_per_second(),
        }
    }
}

fn default_concurrent_calls() -> i32 {
    10
}

fn default_calls_per_second() -> i32 {
    5
}

/// What the operator and the signalling pods report about a tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Users in the snapshot in service.
    #[serde(default)]
    pub users: i32,
    /// Phones registered across the tenant's users (SIP bindings in the store), counted every
    /// census period by the leading operator.
    #[serde(default)]
    pub registered_devices: i32,
    /// Calls in progress (the tenant's concurrent-call slots held in the store), counted every
    /// census period by the leading operator.
    #[serde(default)]
    pub active_calls: i32,
    /// Store revision of the snapshot in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_revision: Option<i64>,
    /// Standard conditions: Valid, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
