//! The MediaPool and SignallingPool controllers. A MediaPool's StatefulSet follows
//! `spec.replicas` up at once and down only as its pods finish draining ([`super::scale_down`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::apply::{apply, prune};
use super::drain_marks::{self, PoolKeys};
use super::scale_down::{self, Describe, Held, Inputs, Plan};
use super::status::{self, WorkloadFigures, status};
use super::{media, signalling};
use crate::conditions::merge;
use crate::context::{Context, key_of};
use crate::crd::{MediaPool, SignallingPool};
use crate::error::{Error, Result};
use crate::labels::PoolLabels;

/// Controller names in metrics and logs.
pub const MEDIA: &str = "mediapool";
pub const SIGNALLING: &str = "signallingpool";
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one MediaPool: the scale-down drain (marks first), StatefulSet, headless Service,
/// PDB, the marks no longer wanted, then status.
pub async fn reconcile_media(pool: Arc<MediaPool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = pool.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let name = pool.name_any();
    let workload = media::workload_name(&name);
    let drain = Drain {
        keys: PoolKeys {
            namespace: &namespace,
            pool: &name,
            workload: &workload,
        },
        timeout: Duration::from_secs(u64::try_from(pool.spec.drain_timeout_seconds).unwrap_or(0)),
    };
    let current = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&workload)
        .await?
        .and_then(|sts| sts.spec.replicas);
    let (plan, stray) = drain.begin(&ctx, &pool, current).await;

    let objects = media::build(
        &pool,
        &ctx.config,
        i32::try_from(plan.replicas).unwrap_or(i32::MAX),
    );
    let stateful_set = apply(&ctx.client, &objects.stateful_set).await?;
    apply(&ctx.client, &objects.service).await?;
    apply(&ctx.client, &objects.disruption_budget).await?;
    let labels = media::labels(&pool);
    let keep = [workload.clone()];
    prune_children(&ctx.client, &namespace, &labels, &uid, &keep, &keep, &keep).await?;
    let drained = drain.finish(&ctx, &pool, &plan, stray).await;

    let workload_status = stateful_set.status.unwrap_or_default();
    let figures = WorkloadFigures {
        desired: pool.spec.replicas,
        current: workload_status.replicas,
        ready: workload_status.ready_replicas.unwrap_or(0),
        updated: workload_status.updated_replicas.unwrap_or(0),
    };
    let held = drained.is_ok().then(|| drain.describe(&plan).held());
    write_media_status(&ctx.client, &pool, figures, &labels, held).await?;
    drained?;
    ctx.succeeded(&key_of(pool.as_ref()));
    ctx.metrics.reconciled(MEDIA, started.elapsed());
    // Calls ending and pods going are news from the store, not from Kubernetes: look again soon
    // while pods drain or their marks remain.
    Ok(Action::requeue(if plan.in_progress() {
        ctx.config.census_period
    } else {
        RESYNC
    }))
}

/// The graceful scale-down steps of one MediaPool reconcile, around the apply.
struct Drain<'a> {
    keys: PoolKeys<'a>,
    timeout: Duration,
}

impl Drain<'_> {
    fn describe<'p>(&'p self, plan: &'p Plan) -> Describe<'p> {
        Describe {
            plan,
            workload: self.keys.workload,
            timeout: self.timeout,
        }
    }

    /// Before the apply: reads the drain state, decides, writes the new marks (so no pod goes
    /// unmarked) with a `DrainingForScaleDown` Event. Without the store the plan never shrinks,
    /// and the error comes back with it, for [`Drain::finish`] to return.
    async fn begin(
        &self,
        ctx: &Context,
        pool: &MediaPool,
        current: Option<i32>,
    ) -> (Plan, Result<Vec<String>>) {
        let desired = u32::try_from(pool.spec.replicas).unwrap_or(0);
        let current = current.map(|replicas| u32::try_from(replicas).unwrap_or(0));
        let now = Timestamp::now();
        let decided = async {
            let observed = drain_marks::read(&*ctx.store, self.keys).await?;
            let plan = scale_down::plan(&Inputs {
                desired,
                current,
                marks: &observed.marks,
                nodes: &observed.nodes,
                timeout: self.timeout,
                now,
            });
            drain_marks::mark(&*ctx.store, self.keys, &plan, now).await?;
            Ok::<_, Error>((plan, observed.stray))
        };
        let (plan, stray) = match decided.await {
            Ok((plan, stray)) => (plan, Ok(stray)),
            Err(error) => {
                tracing::warn!(pool = self.keys.pool, %error, "cannot read the drain state; the pool does not shrink this time");
                (scale_down::without_store(desired, current), Err(error))
            }
        };
        if let Some(note) = self.describe(&plan).marked() {
            tracing::info!(pool = self.keys.pool, %note, "pods marked draining");
            ctx.event(pool, EventType::Normal, "DrainingForScaleDown", note)
                .await;
        }
        (plan, stray)
    }

    /// After the apply: an Event when the StatefulSet shrank (a Warning when calls were cut),
    /// and the marks no longer wanted removed.
    async fn finish(
        &self,
        ctx: &Context,
        pool: &MediaPool,
        plan: &Plan,
        stray: Result<Vec<String>>,
    ) -> Result<()> {
        let stray = stray?;
        if let Some((reason, note)) = self.describe(plan).released() {
            let type_ = if plan.cuts_calls() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            tracing::info!(pool = self.keys.pool, %note, "StatefulSet shrunk after the drain");
            ctx.event(pool, type_, reason, note).await;
        }
        drain_marks::unmark(&*ctx.store, self.keys, plan, &stray).await
    }
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
    write_signalling_status(&ctx.client, &pool, figures, &labels).await?;
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

/// Writes a SignallingPool's workload status when it changed.
async fn write_signalling_status(
    client: &Client,
    pool: &SignallingPool,
    figures: WorkloadFigures,
    labels: &PoolLabels,
) -> Result<()> {
    let current = pool.status.clone().unwrap_or_default();
    let next = status(
        &current,
        figures,
        labels.selector_string(),
        pool.metadata.generation,
        Timestamp::now(),
    );
    if next != current {
        patch_status(client, pool, json!({ "status": next })).await?;
    }
    Ok(())
}

/// Writes a MediaPool's workload figures and drain state when they changed (a merge patch, so
/// `status.autoscaling` is left to the autoscaler). `draining` is the `Draining` condition's
/// message and the held pods, or `None` to keep what status says (the store was unreadable).
async fn write_media_status(
    client: &Client,
    pool: &MediaPool,
    figures: WorkloadFigures,
    labels: &PoolLabels,
    held: Option<Held>,
) -> Result<()> {
    let current = pool.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let generation = pool.metadata.generation;
    let mut next = current.clone();
    next.pool = status(
        &current.pool,
        figures,
        labels.selector_string(),
        generation,
        now,
    );
    if let Some(held) = held {
        next.pool.conditions = merge(
            &next.pool.conditions,
            &[status::draining(held.message)],
            generation,
            now,
        );
        next.draining = held.pods;
    }
    if next != current {
        let mut value = serde_json::to_value(&next.pool).expect("a status always serialises");
        // Explicit null: a merge patch leaves out what it does not name.
        value["draining"] = if next.draining.is_empty() {
            serde_json::Value::Null
        } else {
            json!(next.draining)
        };
        patch_status(client, pool, json!({ "status": value })).await?;
    }
    Ok(())
}

/// Merge-patches the status of `object`.
async fn patch_status<K>(client: &Client, object: &K, patch: serde_json::Value) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let namespace = object
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
