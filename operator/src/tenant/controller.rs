//! The Tenant controller: the IO around the pure steps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use centrex_coord::keys;
use centrex_coord::snapshot::TenantSnapshot;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::compile::compile;
use super::validate::{Inputs, rival_of, validate};
use crate::conditions::{ConditionType, merge};
use crate::context::{Context, key_of};
use crate::crd::{MediaPool, SignallingPool, Tenant, TenantStatus, Trunk};
use crate::error::{Error, Result};
use crate::publish;
use crate::snapshot_status::{Outcome, Serving, conditions, revision_in_service};
use crate::validation::summarise;

/// Finalizer that keeps a Tenant until its snapshot is withdrawn from the store.
pub const FINALIZER: &str = "centrex.dev/snapshot";
/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "tenant";
/// Re-check interval of a healthy tenant (catches drift in the store).
const RESYNC: Duration = Duration::from_secs(600);

/// The Tenant controller's state: the shared context and every tenant (for uniqueness rules).
pub struct TenantContext {
    pub base: Arc<Context>,
    pub tenants: Store<Tenant>,
}

/// Reconciles one tenant.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<TenantContext>) -> Result<Action> {
    let started = Instant::now();
    let namespace = tenant
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Tenant> = Api::namespaced(ctx.base.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, tenant.clone(), |event| async {
        match event {
            Finalizer::Apply(tenant) => apply(&tenant, &ctx).await,
            Finalizer::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await?;
    ctx.base.succeeded(&key_of(tenant.as_ref()));
    ctx.base.metrics.reconciled(CONTROLLER, started.elapsed());
    Ok(action)
}

/// Error policy: a backoff that grows per tenant.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<TenantContext>) -> Action {
    ctx.base
        .retry_after(CONTROLLER, key_of(tenant.as_ref()), error)
}

async fn apply(tenant: &Tenant, ctx: &TenantContext) -> Result<Action> {
    let store = ctx.base.store.as_ref();
    let key = keys::tenant(&tenant.namespace().unwrap_or_default(), &tenant.name_any());
    let inputs = dereference(tenant, ctx).await?;
    // `users` counts the users of the snapshot in service, whichever generation it is.
    let (outcome, users) = match validate(tenant, &inputs) {
        Ok(resolved) => {
            let snapshot = compile(tenant, &resolved);
            let revision = publish::publish(store, &key, &snapshot).await?;
            (
                Outcome::Published {
                    generation: snapshot.source.generation,
                    revision,
                },
                snapshot.users.len(),
            )
        }
        Err(errors) => {
            let serving = publish::in_service::<TenantSnapshot>(store, &key).await?;
            let users = serving.as_ref().map_or(0, |(s, _)| s.users.len());
            let serving = serving.map(|(s, revision)| Serving {
                generation: s.source.generation,
                revision,
            });
            (Outcome::Invalid { errors, serving }, users)
        }
    };
    report(tenant, &outcome, ctx).await;
    write_status(tenant, &outcome, users, ctx).await?;
    Ok(Action::requeue(RESYNC))
}

async fn cleanup(tenant: &Tenant, ctx: &TenantContext) -> Result<Action> {
    let key = keys::tenant(&tenant.namespace().unwrap_or_default(), &tenant.name_any());
    publish::withdraw(ctx.base.store.as_ref(), &key).await?;
    ctx.base
        .event(
            tenant,
            EventType::Normal,
            "SnapshotWithdrawn",
            format!("{} is no longer served", tenant.spec.domain),
        )
        .await;
    Ok(Action::await_change())
}

/// Fetches what the tenant references or competes with.
async fn dereference(tenant: &Tenant, ctx: &TenantContext) -> Result<Inputs> {
    let client = &ctx.base.client;
    let namespace = tenant.namespace().unwrap_or_default();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let names: BTreeSet<&str> = tenant
        .spec
        .users
        .iter()
        .map(|u| u.password_secret_ref.name.as_str())
        .collect();
    let mut secrets = BTreeMap::new();
    for name in names {
        if let Some(secret) = secrets_api.get_opt(name).await? {
            secrets.insert(name.to_string(), secret_data(&secret));
        }
    }
    let list = ListParams::default();
    let trunks = Api::<Trunk>::namespaced(client.clone(), &namespace)
        .list(&list)
        .await?;
    let signalling = Api::<SignallingPool>::namespaced(client.clone(), &namespace)
        .list_metadata(&list)
        .await?;
    let media = Api::<MediaPool>::namespaced(client.clone(), &namespace)
        .list_metadata(&list)
        .await?;
    Ok(Inputs {
        secrets,
        trunks: trunks
            .items
            .into_iter()
            .map(|t| (t.name_any(), t.spec))
            .collect(),
        signalling_pools: signalling.items.iter().map(|p| p.name_any()).collect(),
        media_pools: media.items.iter().map(|p| p.name_any()).collect(),
        rivals: ctx
            .tenants
            .state()
            .iter()
            .filter(|t| t.metadata.deletion_timestamp.is_none())
            .map(|t| rival_of(t))
            .collect(),
    })
}

/// A Secret's data, decoded (`data` wins over `stringData`, as the API server merges them).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    data.extend(
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    data
}

/// Events for what changed: an invalid generation (once), a newly published one.
async fn report(tenant: &Tenant, outcome: &Outcome, ctx: &TenantContext) {
    let status = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let reported = status.conditions.iter().any(|c| {
        c.type_ == ConditionType::Valid.as_str()
            && c.observed_generation == generation
            && c.status == "False"
    });
    match outcome {
        Outcome::Invalid { errors, .. } if !reported => {
            ctx.base
                .event(tenant, EventType::Warning, "InvalidSpec", summarise(errors))
                .await;
        }
        Outcome::Published {
            generation,
            revision,
            ..
        } if status.snapshot_revision != Some(*revision) => {
            let note = format!(
                "generation {generation} published for {} (store revision {revision})",
                tenant.spec.domain
            );
            ctx.base
                .event(tenant, EventType::Normal, "SnapshotPublished", note)
                .await;
        }
        _ => {}
    }
}

/// Writes the status the outcome means; skipped when nothing would change (no write, no watch event).
async fn write_status(
    tenant: &Tenant,
    outcome: &Outcome,
    users: usize,
    ctx: &TenantContext,
) -> Result<()> {
    let current = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let next = TenantStatus {
        observed_generation: generation,
        users: users as i32,
        snapshot_revision: revision_in_service(outcome),
        conditions: merge(
            &current.conditions,
            &conditions(outcome),
            generation,
            Timestamp::now(),
        ),
        ..current.clone()
    };
    if next == current {
        return Ok(());
    }
    let api: Api<Tenant> = Api::namespaced(
        ctx.base.client.clone(),
        &tenant.namespace().unwrap_or_default(),
    );
    let patch = json!({ "status": {
        "observedGeneration": next.observed_generation,
        "users": next.users,
        "snapshotRevision": next.snapshot_revision,
        "conditions": next.conditions,
    }});
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Tenants of `namespace` in the controller's store that `uses` selects (a change to what they
/// use may change their validity). Selective on purpose: mapping every change to every tenant
/// of a namespace makes a bulk apply quadratic.
pub fn tenants_using(
    store: &Store<Tenant>,
    namespace: Option<String>,
    uses: impl Fn(&Tenant) -> bool,
) -> Vec<ObjectRef<Tenant>> {
    store
        .state()
        .iter()
        .filter(|t| t.namespace() == namespace && uses(t))
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

/// Whether `tenant` reads the Secret `name`.
pub fn uses_secret(tenant: &Tenant, name: &str) -> bool {
    tenant
        .spec
        .users
        .iter()
        .any(|u| u.password_secret_ref.name == name)
}

/// Whether `tenant` depends on the Trunk `name`: an outbound route, or DIDs it may deliver.
pub fn uses_trunk(tenant: &Tenant, name: &str) -> bool {
    !tenant.spec.numbers.is_empty()
        || tenant
            .spec
            .outbound
            .as_ref()
            .is_some_and(|o| o.trunk_refs.iter().any(|t| t == name))
}

/// Tenants whose validity may depend on `changed`: those competing with it for a domain or a
/// number, and those refused so far (`changed` may have released what they claim).
pub fn rivals_of(store: &Store<Tenant>, changed: &Tenant) -> Vec<ObjectRef<Tenant>> {
    let numbers: BTreeSet<&str> = changed
        .spec
        .numbers
        .iter()
        .map(|n| n.number.as_str())
        .collect();
    // Explicitly refused only: a tenant not reconciled yet gets its own first reconcile.
    let refused = |t: &Tenant| {
        t.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == ConditionType::Valid.as_str() && c.status == "False")
        })
    };
    store
        .state()
        .iter()
        .filter(|t| t.uid() != changed.uid())
        .filter(|t| {
            t.spec.domain == changed.spec.domain
                || t.spec
                    .numbers
                    .iter()
                    .any(|n| numbers.contains(n.number.as_str()))
                || refused(t)
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}
