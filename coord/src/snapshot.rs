//! Compiled snapshots: what the operator publishes for signalling to serve.
//!
//! A snapshot is self-contained and already validated: signalling never reads Kubernetes and
//! never sees a plaintext password, only digest HA1 hashes (RFC 8760 MD5 and SHA-256).

use serde::{Deserialize, Serialize};

/// Layout version of snapshot values; bumped on an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The Kubernetes object a snapshot was compiled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `metadata.generation` that was compiled.
    pub generation: i64,
}

/// One tenant, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSnapshot {
    pub schema: u32,
    pub source: Source,
    /// SIP domain, also the digest realm of its users.
    pub domain: String,
    pub main_number: Option<String>,
    pub users: Vec<UserEntry>,
    pub hunt_groups: Vec<HuntGroupEntry>,
    pub numbers: Vec<NumberEntry>,
    pub outbound: Option<OutboundPolicy>,
    pub limits: TenantLimits,
    pub signalling_pool: String,
    pub media_pool: String,
}

impl TenantSnapshot {
    /// The user with `extension`: a binary search when the users are sorted by extension (the
    /// operator publishes them so, and signalling sorts what it reads), a scan otherwise.
    pub fn user(&self, extension: &str) -> Option<&UserEntry> {
        self.users
            .binary_search_by(|u| u.extension.as_str().cmp(extension))
            .ok()
            .map(|i| &self.users[i])
            .or_else(|| self.users.iter().find(|u| u.extension == extension))
    }

    /// Sorts the users by extension, so that [`TenantSnapshot::user`] is a binary search.
    pub fn sort_users(&mut self) {
        self.users.sort_by(|a, b| a.extension.cmp(&b.extension));
    }
}

/// Digest credentials of one SIP identity: HA1 = H(username ":" realm ":" password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    /// HA1 with MD5, lowercase hex.
    pub ha1_md5: String,
    /// HA1 with SHA-256, lowercase hex.
    pub ha1_sha256: String,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub extension: String,
    pub display_name: Option<String>,
    pub credentials: DigestCredentials,
    pub max_calls: u8,
    pub caller_id: CallerId,
    pub direct_number: Option<String>,
    pub mobile_number: Option<String>,
    pub forwarding: Forwarding,
}

/// What a callee sees as the caller's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallerId {
    Extension,
    MainNumber,
    DirectNumber,
    Hidden,
}

/// Call forwarding of a user; targets are extensions or E.164 numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarding {
    pub always: Option<String>,
    pub busy: Option<String>,
    pub no_answer: Option<(String, u32)>,
    pub unavailable: Option<String>,
}

/// A hunt group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntGroupEntry {
    pub extension: String,
    pub name: Option<String>,
    pub members: Vec<String>,
    pub strategy: HuntStrategy,
    pub ring_seconds: u32,
    pub overflow: Option<String>,
}

/// How a hunt group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HuntStrategy {
    Simultaneous,
    Sequential,
    RoundRobin,
}

/// A DID and the extension it rings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberEntry {
    pub number: String,
    pub target: String,
    /// Trunk (name in the tenant's namespace) whose number range holds it.
    pub trunk: String,
}

/// Outbound calling rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundPolicy {
    pub trunks: Vec<String>,
    pub allowed: Vec<DestinationClass>,
}

/// Classes of external destinations (emergency numbers are always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DestinationClass {
    National,
    Mobile,
    International,
    Premium,
}

/// Licence limits of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    pub concurrent_calls: u32,
    pub calls_per_second: u32,
}

/// One trunk, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkSnapshot {
    pub schema: u32,
    pub source: Source,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub registration: Option<TrunkRegistration>,
    pub inbound_sources: Vec<String>,
    pub number_prefixes: Vec<String>,
    pub max_channels: u32,
    pub calls_per_second: u32,
    pub country_code: String,
    pub national_prefix: String,
    pub international_prefix: String,
}

/// SIP transport towards a carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Registration towards a carrier: digest hashes only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkRegistration {
    pub credentials: DigestCredentials,
    pub expiry_seconds: u32,
}

impl DigestCredentials {
    /// Derives both HA1 hashes from a password; the password itself is not kept.
    pub fn derive(username: &str, realm: &str, password: &[u8]) -> Self {
        Self {
            username: username.into(),
            realm: realm.into(),
            ha1_md5: ha1::<md5::Md5>(username, realm, password),
            ha1_sha256: ha1::<sha2::Sha256>(username, realm, password),
        }
    }
}

/// H(username ":" realm ":" password), lowercase hex (RFC 7616 §3.4.2).
fn ha1<D: sha2::Digest>(username: &str, realm: &str, password: &[u8]) -> String {
    let mut digest = D::new();
    for part in [username.as_bytes(), b":", realm.as_bytes(), b":", password] {
        digest.update(part);
    }
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc_2617_and_rfc_7616_vectors() {
        // RFC 2617 §3.5 and RFC 7616 §3.9.1 use Mufasa / "Circle Of Life".
        let md5 = DigestCredentials::derive("Mufasa", "testrealm@host.com", b"Circle Of Life");
        assert_eq!(md5.ha1_md5, "939e7578ed9e3c518a452acee763bce9");
        let sha = DigestCredentials::derive("Mufasa", "http-auth@example.org", b"Circle of Life");
        assert_eq!(
            sha.ha1_sha256,
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }
}
