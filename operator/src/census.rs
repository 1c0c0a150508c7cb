//! Registered devices per Tenant. Signalling pods keep each phone's binding in the store; every
//! period the leader counts them by domain and writes `status.registeredDevices` of each Tenant
//! that serves its domain, when the count changed. Reconciles stay untouched: they run on spec
//! changes, and a count of phones is not one.

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

/// How often devices are counted.
pub const PERIOD: Duration = Duration::from_secs(15);

/// Counts every `period` until the future is dropped.
pub async fn run(ctx: Arc<Context>, tenants: Reflector<Tenant>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = count_once(&ctx, &tenants).await {
            tracing::warn!(%error, "device census failed; next period retries");
        }
    }
}

async fn count_once(ctx: &Context, tenants: &Reflector<Tenant>) -> anyhow::Result<()> {
    let (bindings, _) = ctx.store.list(&keys::all_registrations()).await?;
    let by_domain = devices_by_domain(bindings.iter().map(|kv| kv.key.as_str()));
    for tenant in tenants.state() {
        let Some(count) = devices_of(&tenant, &by_domain) else {
            continue;
        };
        let api: Api<Tenant> =
            Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
        let patch = json!({ "status": { "registeredDevices": count } });
        api.patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

/// The count to write for `tenant`, when it serves its domain and its status says otherwise.
fn devices_of(tenant: &Tenant, by_domain: &HashMap<String, i32>) -> Option<i32> {
    let status = tenant.status.as_ref()?;
    // Only a Tenant in service owns its domain's phones (a rival claiming it does not).
    status.snapshot_revision?;
    let count = by_domain
        .get(&tenant.spec.domain.to_ascii_lowercase())
        .copied()
        .unwrap_or(0);
    (status.registered_devices != count).then_some(count)
}

/// Bindings per domain, from their store keys.
fn devices_by_domain<'k>(keys: impl Iterator<Item = &'k str>) -> HashMap<String, i32> {
    let prefix = keys::all_registrations();
    let mut counts = HashMap::new();
    for key in keys {
        if let Some(domain) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('/').next())
            .filter(|d| !d.is_empty())
        {
            *counts.entry(domain.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_counted_by_domain() {
        let keys = [
            keys::registration("acme.example.com", "100", "a"),
            keys::registration("acme.example.com", "100", "b"),
            keys::registration("acme.example.com", "101", "c"),
            keys::registration("globex.example.com", "200", "d"),
        ];
        let counts = devices_by_domain(keys.iter().map(String::as_str));
        assert_eq!(counts["acme.example.com"], 3);
        assert_eq!(counts["globex.example.com"], 1);
        assert_eq!(counts.len(), 2);
    }
}
