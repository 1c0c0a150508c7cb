//! The MediaPool autoscaler: every census period the leader reads, for each pool with
//! `spec.autoscaling`, the registrations its media nodes keep under their leases
//! (`/centrex/v1/media-nodes/<namespace>/<pool>/`), decides the replicas ([`super::autoscale`]),
//! writes a changed decision to `spec.replicas` (the MediaPool reconcile then scales the
//! StatefulSet) with a `ScaledUp`/`ScaledDown` Event, and shows the decision and its inputs in
//! `status.autoscaling`.
//!
//! `spec.replicas` is written with a merge patch of the MediaPool (field manager
//! `centrex-operator`), which is what the `/scale` subresource writes too: the operator's RBAC
//! already allows patching MediaPools, and needs no `mediapools/scale` grant for it.
//!
//! The recommendation history lives in this pass's memory: it runs only while this replica leads,
//! so a new leader starts a fresh window, which holds the current replicas for one full window
//! before any scale-down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centrex_coord::keys;
use centrex_coord::media::MediaNodeRegistration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store as Reflector;
use serde_json::json;

use super::autoscale::{Decision, Load, Policy, Recommendations, decide};
use crate::context::{Context, key_of};
use crate::crd::{AutoscalingStatus, MediaAutoscaling, MediaPool};
use crate::error::{Error, Result};
use crate::labels::MANAGER;

/// Decides every `period` until the future is dropped.
pub async fn run(ctx: Arc<Context>, pools: Reflector<MediaPool>, period: Duration) {
    // One window per pool with autoscaling; entries go with their pool or its autoscaling.
    let mut windows: HashMap<String, Recommendations> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        scale_once(&ctx, &pools, &mut windows).await;
    }
}

async fn scale_once(
    ctx: &Context,
    pools: &Reflector<MediaPool>,
    windows: &mut HashMap<String, Recommendations>,
) {
    let pools = pools.state();
    windows.retain(|key, _| {
        pools
            .iter()
            .any(|p| p.spec.autoscaling.is_some() && key_of(p.as_ref()) == *key)
    });
    for pool in pools
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let result = match &pool.spec.autoscaling {
            Some(autoscaling) => {
                let history = windows.entry(key_of(pool.as_ref())).or_default();
                scale(ctx, pool, autoscaling, history).await
            }
            None => clear_status(ctx, pool).await,
        };
        match result {
            Ok(()) => {}
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 409 => {
                tracing::debug!(
                    pool = pool.name_any(),
                    "stale media pool; next period retries"
                );
            }
            Err(error) => {
                tracing::warn!(pool = pool.name_any(), %error, "autoscaling failed; next period retries");
            }
        }
    }
}

/// Decides one pool's replicas, writes them when they change, and shows the decision.
async fn scale(
    ctx: &Context,
    pool: &MediaPool,
    autoscaling: &MediaAutoscaling,
    history: &mut Recommendations,
) -> Result<()> {
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pool.name_any();
    let (listed, _) = ctx
        .store
        .list(&keys::media_nodes(&namespace, &name))
        .await?;
    let nodes: Vec<MediaNodeRegistration> = listed
        .iter()
        .filter_map(|kv| {
            serde_json::from_slice(&kv.value)
                .inspect_err(|error| {
                    tracing::warn!(key = kv.key, %error, "unreadable media node registration")
                })
                .ok()
        })
        .collect();
    let policy = Policy::of(autoscaling, pool.spec.sessions_per_node);
    let decision = decide(
        &policy,
        Some(Load::of(&nodes)),
        pool.spec.replicas,
        history,
        Instant::now(),
    );
    let api: Api<MediaPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = pool.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    let mut last_scale_time = previous.and_then(|s| s.last_scale_time.clone());
    if decision.changes_replicas() {
        // Pinned to the version read: a pool edited since (bounds lowered, autoscaling removed)
        // gets a conflict and is decided again on fresh data next period.
        let patch = json!({
            "metadata": { "resourceVersion": pool.resource_version() },
            "spec": { "replicas": decision.desired },
        });
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        api.patch(&name, &params, &Patch::Merge(&patch)).await?;
        last_scale_time = Some(Time(Timestamp::now()));
        tracing::info!(pool = name, %decision, "media pool scaled");
        ctx.event(
            pool,
            EventType::Normal,
            decision.reason.as_str(),
            decision.to_string(),
        )
        .await;
    }
    let next = status(&decision, last_scale_time);
    if previous != Some(&next) {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": { "autoscaling": next } })),
        )
        .await?;
    }
    Ok(())
}

/// Removes `status.autoscaling` of a pool whose autoscaling was switched off.
async fn clear_status(ctx: &Context, pool: &MediaPool) -> Result<()> {
    if pool.status.as_ref().is_none_or(|s| s.autoscaling.is_none()) {
        return Ok(());
    }
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MediaPool> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch_status(
        &pool.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": { "autoscaling": null } })),
    )
    .await?;
    Ok(())
}

/// `status.autoscaling` for a decision. Pure.
pub fn status(decision: &Decision, last_scale_time: Option<Time>) -> AutoscalingStatus {
    let load = &decision.load;
    let saturating = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    AutoscalingStatus {
        desired_replicas: decision.desired,
        recommended_replicas: decision.recommended,
        active_sessions: saturating(load.active_sessions),
        capacity: saturating(load.capacity),
        nodes: i32::try_from(load.nodes()).unwrap_or(i32::MAX),
        draining_nodes: i32::try_from(load.draining_nodes).unwrap_or(i32::MAX),
        last_scale_time,
        reason: decision.reason.as_str().into(),
        message: decision.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::{Limit, Reason};

    #[test]
    fn the_status_shows_the_decision_and_its_inputs() {
        let decision = Decision {
            current: 2,
            desired: 4,
            recommended: 5,
            reason: Reason::ScaledUp,
            limited_by: Some(Limit::Max),
            load: Load {
                active_sessions: 250,
                capacity: 100,
                serving_nodes: 1,
                draining_nodes: 1,
            },
            target_utilization_percent: 50,
        };
        let at = Time(Timestamp::UNIX_EPOCH);
        let s = status(&decision, Some(at.clone()));
        assert_eq!(
            (
                s.desired_replicas,
                s.recommended_replicas,
                s.active_sessions,
                s.capacity
            ),
            (4, 5, 250, 100)
        );
        assert_eq!((s.nodes, s.draining_nodes), (2, 1));
        assert_eq!(
            (s.reason.as_str(), s.last_scale_time),
            ("ScaledUp", Some(at))
        );
        assert_eq!(s.message, decision.to_string());
    }
}
