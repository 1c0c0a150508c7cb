//! Live figures per Tenant: registered devices and active calls. Signalling pods keep each
//! phone's binding and each call's concurrent-call slot in the store; every period the leader
//! counts both by domain and writes `status.registeredDevices` and `status.activeCalls` of each
//! Tenant that serves its domain, when a figure changed. Reconciles stay untouched: they run on
//! spec changes, and a count of phones or calls is not one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::keys;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store as Reflector;
use serde_json::json;

use crate::context::Context;
use crate::crd::Tenant;

/// How often devices and calls are counted.
pub const PERIOD: Duration = Duration::from_secs(15);

/// Counts every `period` until the future is dropped.
pub async fn run(ctx: Arc<Context>, tenants: Reflector<Tenant>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = count_once(&ctx, &tenants).await {
            tracing::warn!(%error, "census failed; next period retries");
        }
    }
}

/// The live figures of one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Figures {
    /// SIP bindings under the domain.
    devices: i32,
    /// Tenant-level concurrent-call slots held under the domain.
    calls: i32,
}

async fn count_once(ctx: &Context, tenants: &Reflector<Tenant>) -> anyhow::Result<()> {
    let tenants = tenants.state();
    // Only the domains of Tenants in service are counted: the map holds one entry per Tenant,
    // whatever the store holds, and each list is dropped once counted.
    let mut by_domain: HashMap<String, Figures> = tenants
        .iter()
        .filter(|t| in_service(t))
        .map(|t| (t.spec.domain.to_ascii_lowercase(), Figures::default()))
        .collect();
    {
        let (bindings, _) = ctx.store.list(&keys::all_registrations()).await?;
        count_devices(&mut by_domain, bindings.iter().map(|kv| kv.key.as_str()));
    }
    {
        let (slots, _) = ctx.store.list(&keys::all_calls()).await?;
        count_calls(&mut by_domain, slots.iter().map(|kv| kv.key.as_str()));
    }
    for tenant in &tenants {
        let Some(figures) = figures_of(tenant, &by_domain) else {
            continue;
        };
        let api: Api<Tenant> =
            Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
        let patch = json!({ "status": {
            "registeredDevices": figures.devices,
            "activeCalls": figures.calls,
        }});
        api.patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

/// Only a Tenant in service owns its domain's phones and calls (a rival claiming it does not).
fn in_service(tenant: &Tenant) -> bool {
    tenant
        .status
        .as_ref()
        .is_some_and(|s| s.snapshot_revision.is_some())
}

/// The figures to write for `tenant`, when it serves its domain and its status says otherwise.
fn figures_of(tenant: &Tenant, by_domain: &HashMap<String, Figures>) -> Option<Figures> {
    if !in_service(tenant) {
        return None;
    }
    let status = tenant.status.as_ref()?;
    let figures = by_domain
        .get(&tenant.spec.domain.to_ascii_lowercase())
        .copied()
        .unwrap_or_default();
    let shown = Figures {
        devices: status.registered_devices,
        calls: status.active_calls,
    };
    (shown != figures).then_some(figures)
}

/// Adds the bindings (`…/registrations/<domain>/<user>/<binding>`) of the domains in `counts`.
fn count_devices<'k>(counts: &mut HashMap<String, Figures>, keys: impl Iterator<Item = &'k str>) {
    let prefix = keys::all_registrations();
    for key in keys {
        let domain = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next());
        if let Some(figures) = domain.and_then(|d| counts.get_mut(d)) {
            figures.devices += 1;
        }
    }
}

/// Adds the tenant slots (`…/calls/<domain>/tenant/<slot>`) of the domains in `counts`. A call
/// also holds a user slot (`…/calls/<domain>/users/<user>/<slot>`): the same call, not counted
/// twice.
fn count_calls<'k>(counts: &mut HashMap<String, Figures>, keys: impl Iterator<Item = &'k str>) {
    let prefix = keys::all_calls();
    for key in keys {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let mut parts = rest.split('/');
        let (Some(domain), Some("tenant"), Some(slot), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if slot.is_empty() {
            continue;
        }
        if let Some(figures) = counts.get_mut(domain) {
            figures.calls += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(domains: &[&str]) -> HashMap<String, Figures> {
        domains
            .iter()
            .map(|d| (d.to_string(), Figures::default()))
            .collect()
    }

    #[test]
    fn bindings_are_counted_by_served_domain() {
        let keys = [
            keys::registration("acme.example.com", "100", "a"),
            keys::registration("acme.example.com", "100", "b"),
            keys::registration("acme.example.com", "101", "c"),
            keys::registration("globex.example.com", "200", "d"),
            keys::registration("unserved.example.com", "300", "e"),
        ];
        let mut counts = served(&["acme.example.com", "globex.example.com"]);
        count_devices(&mut counts, keys.iter().map(String::as_str));
        assert_eq!(counts["acme.example.com"].devices, 3);
        assert_eq!(counts["globex.example.com"].devices, 1);
        assert_eq!(counts.len(), 2, "an unserved domain takes no entry");
    }

    #[test]
    fn tenant_call_slots_are_counted_and_user_slots_are_not_counted_again() {
        let slot = |domain: &str, n: u32| format!("{}{n}", keys::tenant_calls(domain));
        let keys = [
            slot("acme.example.com", 0),
            slot("acme.example.com", 7),
            format!("{}0", keys::user_calls("acme.example.com", "100")),
            format!("{}1", keys::user_calls("acme.example.com", "101")),
            slot("globex.example.com", 3),
            slot("unserved.example.com", 0),
        ];
        let mut counts = served(&["acme.example.com", "globex.example.com"]);
        count_calls(&mut counts, keys.iter().map(String::as_str));
        assert_eq!(counts["acme.example.com"].calls, 2);
        assert_eq!(counts["globex.example.com"].calls, 1);
        assert_eq!(counts.len(), 2);
    }
}
