//! Validates and compiles a Trunk into the snapshot signalling serves. Pure.

use std::collections::BTreeMap;

use centrex_coord::snapshot::{self as snap, DigestCredentials, TrunkSnapshot};

use crate::crd::{SipTransport, Trunk};
use crate::validation::FieldError;

/// Compiles `trunk`, given the Secrets of its namespace that it references (name → key → bytes).
pub fn compile(
    trunk: &Trunk,
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> Result<TrunkSnapshot, Vec<FieldError>> {
    let spec = &trunk.spec;
    let registration = match &spec.registration {
        None => None,
        Some(r) => {
            let field = "spec.registration.passwordSecretRef";
            let secret = &r.password_secret_ref;
            let data = secrets.get(&secret.name).ok_or_else(|| {
                vec![FieldError::new(
                    field,
                    format!("Secret {:?} not found", secret.name),
                )]
            })?;
            let password = data
                .get(&secret.key)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    vec![FieldError::new(
                        field,
                        format!(
                            "Secret {:?} has no non-empty key {:?}",
                            secret.name, secret.key
                        ),
                    )]
                })?;
            let realm = r.realm.clone().unwrap_or_else(|| spec.host.clone());
            Some(snap::TrunkRegistration {
                credentials: DigestCredentials::derive(&r.username, &realm, password),
                expiry_seconds: r.expiry_seconds as u32,
            })
        }
    };
    let meta = &trunk.metadata;
    Ok(TrunkSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or_default(),
        },
        host: spec.host.clone(),
        port: spec.port.clamp(1, 65535) as u16,
        transport: match spec.transport {
            SipTransport::Udp => snap::Transport::Udp,
            SipTransport::Tcp => snap::Transport::Tcp,
            SipTransport::Tls => snap::Transport::Tls,
        },
        registration,
        inbound_sources: spec.inbound_sources.clone(),
        number_prefixes: spec.number_prefixes.clone(),
        max_channels: spec.max_channels.max(1) as u32,
        calls_per_second: spec.calls_per_second.max(1) as u32,
        country_code: spec.normalisation.country_code.clone(),
        national_prefix: spec.normalisation.national_prefix.clone(),
        international_prefix: spec.normalisation.international_prefix.clone(),
    })
}
