//! Compiles a validated Tenant into the snapshot signalling serves. Pure; the only secret input,
//! the passwords, leave as digest hashes.

use centrex_coord::snapshot::{self as snap, DigestCredentials, TenantSnapshot};

use super::validate::Resolved;
use crate::crd::{CallerIdPresentation, DestinationClass, HuntStrategy, Tenant};

/// The snapshot of a tenant that [`super::validate::validate`] accepted.
pub fn compile(tenant: &Tenant, resolved: &Resolved) -> TenantSnapshot {
    let spec = &tenant.spec;
    let meta = &tenant.metadata;
    TenantSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or_default(),
        },
        domain: spec.domain.clone(),
        main_number: spec.main_number.clone(),
        users: spec
            .users
            .iter()
            .zip(&resolved.passwords)
            .map(|(user, password)| snap::UserEntry {
                extension: user.extension.clone(),
                display_name: user.display_name.clone(),
                credentials: DigestCredentials::derive(&user.extension, &spec.domain, password),
                max_calls: user.max_calls.clamp(1, 8) as u8,
                caller_id: match user.caller_id {
                    CallerIdPresentation::Extension => snap::CallerId::Extension,
                    CallerIdPresentation::MainNumber => snap::CallerId::MainNumber,
                    CallerIdPresentation::DirectNumber => snap::CallerId::DirectNumber,
                    CallerIdPresentation::Hidden => snap::CallerId::Hidden,
                },
                direct_number: user.direct_number.clone(),
                mobile_number: user.mobile_number.clone(),
                forwarding: user
                    .forwarding
                    .as_ref()
                    .map(|f| snap::Forwarding {
                        always: f.always.clone(),
                        busy: f.busy.clone(),
                        no_answer: f
                            .no_answer
                            .as_ref()
                            .map(|n| (n.target.clone(), n.after_seconds as u32)),
                        unavailable: f.unavailable.clone(),
                    })
                    .unwrap_or_default(),
            })
            .collect(),
        hunt_groups: spec
            .hunt_groups
            .iter()
            .map(|g| snap::HuntGroupEntry {
                extension: g.extension.clone(),
                name: g.name.clone(),
                members: g.members.clone(),
                strategy: match g.strategy {
                    HuntStrategy::Simultaneous => snap::HuntStrategy::Simultaneous,
                    HuntStrategy::Sequential => snap::HuntStrategy::Sequential,
                    HuntStrategy::RoundRobin => snap::HuntStrategy::RoundRobin,
                },
                ring_seconds: g.ring_seconds as u32,
                overflow: g.overflow.clone(),
            })
            .collect(),
        numbers: spec
            .numbers
            .iter()
            .zip(&resolved.number_trunks)
            .map(|(n, trunk)| snap::NumberEntry {
                number: n.number.clone(),
                target: n.target.clone(),
                trunk: trunk.clone(),
            })
            .collect(),
        outbound: spec.outbound.as_ref().map(|o| snap::OutboundPolicy {
            trunks: o.trunk_refs.clone(),
            allowed: o
                .allowed_destinations
                .iter()
                .map(|d| destination(*d))
                .collect(),
        }),
        limits: snap::TenantLimits {
            concurrent_calls: spec.limits.concurrent_calls.max(1) as u32,
            calls_per_second: spec.limits.calls_per_second.max(1) as u32,
        },
        signalling_pool: spec.signalling_pool_ref.clone(),
        media_pool: spec.media_pool_ref.clone(),
    }
}

fn destination(class: DestinationClass) -> snap::DestinationClass {
    match class {
        DestinationClass::National => snap::DestinationClass::National,
        DestinationClass::Mobile => snap::DestinationClass::Mobile,
        DestinationClass::International => snap::DestinationClass::International,
        DestinationClass::Premium => snap::DestinationClass::Premium,
    }
}
