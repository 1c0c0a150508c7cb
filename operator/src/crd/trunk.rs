//! `Trunk`: a SIP trunk to a carrier.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretKeyRef;

/// A SIP trunk: where outbound calls leave and inbound DIDs arrive.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "centrex.dev",
    version = "v1alpha1",
    kind = "Trunk",
    namespaced,
    status = "TrunkStatus",
    shortname = "tk",
    category = "centrex",
    doc = "A SIP trunk to a carrier: outbound route, inbound DIDs, registration and limits.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "Transport", type_ = "string", json_path = ".spec.transport"),
    printcolumn(
        name = "Registered",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Registered\")].status"
    ),
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
pub struct TrunkSpec {
    /// Carrier's SIP host name or IP address.
    #[x_kube(validation = Rule::new("isIP(self) || self.matches('^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?[.])*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')").message("host must be a DNS name or an IP address"))]
    #[schemars(length(max = 253))]
    pub host: String,
    /// Carrier's SIP port.
    #[serde(default = "default_sip_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"))]
    pub port: i32,
    /// Transport towards the carrier.
    #[serde(default)]
    pub transport: SipTransport,
    /// Registration towards the carrier, when it requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<TrunkRegistration>,
    /// Source networks (CIDR) the carrier sends from; INVITEs from elsewhere are refused.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("inboundSources must be CIDRs such as 192.0.2.0/24"))]
    pub inbound_sources: Vec<String>,
    /// E.164 prefixes of the numbers this trunk delivers (a DID must fall in one).
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 16)))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[+][1-9][0-9]{0,14}$'))").message("numberPrefixes must be E.164 prefixes such as +3312345"))]
    pub number_prefixes: Vec<String>,
    /// Concurrent calls the carrier allows.
    #[serde(default = "default_max_channels")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000").message("maxChannels must be between 1 and 100000"))]
    pub max_channels: i32,
    /// New calls per second the carrier allows.
    #[serde(default = "default_calls_per_second")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000").message("callsPerSecond must be between 1 and 10000"))]
    pub calls_per_second: i32,
    /// How dialled numbers are turned into E.164.
    #[serde(default)]
    pub normalisation: NumberNormalisation,
}

fn default_sip_port() -> i32 {
    5060
}

fn default_max_channels() -> i32 {
    30
}

fn default_calls_per_second() -> i32 {
    10
}

/// SIP transport.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// Registration of the trunk towards the carrier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrunkRegistration {
    /// Digest user name given by the carrier.
    #[x_kube(validation = Rule::new("size(self) >= 1 && size(self) <= 128").message("username must be 1 to 128 characters"))]
    #[schemars(length(max = 128))]
    pub username: String,
    /// Digest realm of the carrier; defaults to `host`. Needed because only HA1 hashes (bound to
    /// a realm) leave the operator, never the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub realm: Option<String>,
    /// Secret key holding the carrier password.
    pub password_secret_ref: SecretKeyRef,
    /// Registration lifetime asked of the carrier, 60 to 86400 seconds.
    #[serde(default = "default_expiry_seconds")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 86400").message("expirySeconds must be between 60 and 86400"))]
    pub expiry_seconds: i32,
}

fn default_expiry_seconds() -> i32 {
    3600
}

/// Dial-plan conversion to E.164 for one country.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NumberNormalisation {
    /// Country calling code without `+`, e.g. `33`.
    #[serde(default = "default_country_code")]
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{0,2}$')").message("countryCode must be 1 to 3 digits without +, e.g. 33"))]
    #[schemars(length(max = 3))]
    pub country_code: String,
    /// Prefix of national numbers, e.g. `0`.
    #[serde(default = "default_national_prefix")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{0,4}$')").message("nationalPrefix must be up to 4 digits"))]
    #[schemars(length(max = 4))]
    pub national_prefix: String,
    /// Prefix of international numbers, e.g. `00`.
    #[serde(default = "default_international_prefix")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,4}$')").message("internationalPrefix must be 1 to 4 digits"))]
    #[schemars(length(max = 4))]
    pub international_prefix: String,
}

impl Default for NumberNormalisation {
    fn default() -> Self {
        Self {
            country_code: default_country_code(),
            national_prefix: default_national_prefix(),
            international_prefix: default_international_prefix(),
        }
    }
}

fn default_country_code() -> String {
    "1".into()
}

fn default_national_prefix() -> String {
    "1".into()
}

fn default_international_prefix() -> String {
    "011".into()
}

/// What the operator and the signalling pods report about a trunk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrunkStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Store revision of the snapshot in service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_revision: Option<i64>,
    /// Last registration error reported by the instance holding the registration (absent once
    /// it registers, or while no instance holds the registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_registration_error: Option<String>,
    /// Standard conditions: Valid, Ready, and Registered when `spec.registration` is set (True:
    /// Registered; False: Pending, RegistrationFailed, RegistrationExpired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
