//! The Trunk controller: the IO around [`super::compile`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centrex_coord::keys;
use centrex_coord::snapshot::TrunkSnapshot;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::compile::compile;
use crate::conditions::{ConditionType, merge};
use crate::context::{Context, key_of};
use crate::crd::{Trunk, TrunkStatus};
use crate::error::{Error, Result};
use crate::publish;
use crate::snapshot_status::{Outcome, Serving, conditions, revision_in_service};
use crate::tenant::controller::{FINALIZER, secret_data};
use crate::validation::summarise;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "trunk";
const RESYNC: Duration = Duration::from_secs(600);

/// Reconciles one trunk.
pub async fn reconcile(trunk: Arc<Trunk>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let namespace = trunk
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Trunk> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, trunk.clone(), |event| async {
        match event {
            Finalizer::Apply(trunk) => apply(&trunk, &ctx).await,
            Finalizer::Cleanup(trunk) => {
                publish::withdraw(
                    ctx.store.as_ref(),
                    &keys::trunk(&namespace, &trunk.name_any()),
                )
                .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await?;
    ctx.succeeded(&key_of(trunk.as_ref()));
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    Ok(action)
}

/// Error policy: a backoff that grows per trunk.
pub fn error_policy(trunk: Arc<Trunk>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(CONTROLLER, key_of(trunk.as_ref()), error)
}

async fn apply(trunk: &Trunk, ctx: &Context) -> Result<Action> {
    let namespace = trunk.namespace().unwrap_or_default();
    let key = keys::trunk(&namespace, &trunk.name_any());
    let mut secrets = BTreeMap::new();
    if let Some(registration) = &trunk.spec.registration {
        let name = &registration.password_secret_ref.name;
        if let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(name)
            .await?
        {
            secrets.insert(name.clone(), secret_data(&secret));
        }
    }
    let outcome = match compile(trunk, &secrets) {
        Ok(snapshot) => {
            let revision = publish::publish(ctx.store.as_ref(), &key, &snapshot).await?;
            Outcome::Published {
                generation: snapshot.source.generation,
                revision,
            }
        }
        Err(errors) => {
            let serving = publish::in_service::<TrunkSnapshot>(ctx.store.as_ref(), &key).await?;
            Outcome::Invalid {
                errors,
                serving: serving.map(|(s, revision)| Serving {
                    generation: s.source.generation,
                    revision,
                }),
            }
        }
    };
    let current = trunk.status.clone().unwrap_or_default();
    if let Outcome::Invalid { errors, .. } = &outcome {
        let reported = current.conditions.iter().any(|c| {
            c.type_ == ConditionType::Valid.as_str()
                && c.observed_generation == trunk.metadata.generation
                && c.status == "False"
        });
        if !reported {
            ctx.event(trunk, EventType::Warning, "InvalidSpec", summarise(errors))
                .await;
        }
    }
    let next = TrunkStatus {
        observed_generation: trunk.metadata.generation,
        snapshot_revision: revision_in_service(&outcome),
        conditions: merge(
            &current.conditions,
            &conditions(&outcome),
            trunk.metadata.generation,
            Timestamp::now(),
        ),
        ..current.clone()
    };
    if next != current {
        // Pinned to the version read, as the registration report writes the same conditions
        // list: a stale copy conflicts (and is retried) instead of dropping `Registered`.
        let patch = json!({
            "metadata": { "resourceVersion": trunk.resource_version() },
            "status": {
                "observedGeneration": next.observed_generation,
                "snapshotRevision": next.snapshot_revision,
                "conditions": next.conditions,
            },
        });
        Api::<Trunk>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &trunk.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}
