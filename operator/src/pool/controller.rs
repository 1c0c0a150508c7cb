//! The MediaPool and SignallingPool controllers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::apply::{apply, prune};
use super::status::{WorkloadFigures, status};
use super::{media, signalling};
use crate::context::{Context, key_of};
use crate::crd::{MediaPool, PoolStatus, SignallingPool};
use crate::error::{Error, Result};
use crate::labels::PoolLabels;

/// Controller names in metrics and logs.
pub const MEDIA: &str = "mediapool";
pub const SIGNALLING: &str = "signallingpool";
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one MediaPool: StatefulSet, headless Service, PDB, then status.
pub async fn reconcile_media(pool: Arc<MediaPool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = pool.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let objects = media::build(&pool, &ctx.config);
    let stateful_set = apply(&ctx.client, &objects.stateful_set).await?;
    apply(&ctx.client, &objects.service).await?;
    apply(&ctx.client, &objects.disruption_budget).await?;
    let labels = media::labels(&pool);
    let keep = [media::workload_name(&pool.name_any())];
    prune_children(&ctx.client, &namespace, &labels, &uid, &keep, &keep, &keep).await?;

    let workload = stateful_set.status.unwrap_or_default();
    let figures = WorkloadFigures {
        desired: pool.spec.replicas,
        current: workload.replicas,
        ready: workload.ready_replicas.unwrap_or(0),
        updated: workload.updated_replicas.unwrap_or(0),
    };
    write_status::<MediaPool>(
        &ctx.client,
        &namespace,
        &pool.name_any(),
        pool.status.as_ref().map(|s| &s.pool),
        figures,
        &labels,
        pool.metadata.generation,
    )
    .await?;
    ctx.succeeded(&key_of(pool.as_ref()));
    ctx.metrics.reconciled(MEDIA, started.elapsed());
    Ok(Action::requeue(RESYNC))
}

/// Reconciles one SignallingPool: Deployment, SIP Service, PDB, then status.
pub async fn reconcile_signalling(pool: Arc<SignallingPool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = pool.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let objects = signalling::build(&pool, &ctx.config);
    let deployment = apply(&ctx.client, &objects.deployment).await?;
    apply(&ctx.client, &objects.service).await?;
    apply(&ctx.client, &objects.disruption_budget).await?;
    let labels = signalling::labels(&pool);
    let workload_name = [signalling::workload_name(&pool.name_any())];
    let service_name = [signalling::service_name(&pool.name_any())];
    prune_children(
        &ctx.client,
        &namespace,
        &labels,
        &uid,
        &workload_name,
        &service_name,
        &workload_name,
    )
    .await?;

    let workload = deployment.status.unwrap_or_default();
    let figures = WorkloadFigures {
        desired: pool.spec.replicas,
        current: workload.replicas.unwrap_or(0),
        ready: workload.ready_replicas.unwrap_or(0),
        updated: workload.updated_replicas.unwrap_or(0),
    };
    write_status::<SignallingPool>(
        &ctx.client,
        &namespace,
        &pool.name_any(),
        pool.status.as_ref(),
        figures,
        &labels,
        pool.metadata.generation,
    )
    .await?;
    ctx.succeeded(&key_of(pool.as_ref()));
    ctx.metrics.reconciled(SIGNALLING, started.elapsed());
    Ok(Action::requeue(RESYNC))
}

/// Error policy of the MediaPool controller.
pub fn media_error_policy(pool: Arc<MediaPool>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(MEDIA, key_of(pool.as_ref()), error)
}

/// Error policy of the SignallingPool controller.
pub fn signalling_error_policy(
    pool: Arc<SignallingPool>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.retry_after(SIGNALLING, key_of(pool.as_ref()), error)
}

/// Removes children of the pool that the current build no longer produces.
async fn prune_children(
    client: &Client,
    namespace: &str,
    labels: &PoolLabels,
    owner_uid: &str,
    workloads: &[String],
    services: &[String],
    budgets: &[String],
) -> Result<()> {
    let selector = labels.managed_selector();
    match labels.component {
        crate::labels::Component::MediaNode => {
            prune::<StatefulSet>(client, namespace, &selector, owner_uid, workloads).await?
        }
        crate::labels::Component::Signalling => {
            prune::<Deployment>(client, namespace, &selector, owner_uid, workloads).await?
        }
    };
    prune::<Service>(client, namespace, &selector, owner_uid, services).await?;
    prune::<PodDisruptionBudget>(client, namespace, &selector, owner_uid, budgets).await?;
    Ok(())
}

/// Writes the pool's workload status when it changed (both pools share [`PoolStatus`]; a merge
/// patch, so a MediaPool's `status.autoscaling` is left to the autoscaler).
async fn write_status<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    current: Option<&PoolStatus>,
    figures: WorkloadFigures,
    labels: &PoolLabels,
    generation: Option<i64>,
) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let current = current.cloned().unwrap_or_default();
    let next = status(
        &current,
        figures,
        labels.selector_string(),
        generation,
        Timestamp::now(),
    );
    if next != current {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": next })),
        )
        .await?;
    }
    Ok(())
}
