//! Running the operator: the controllers (while this replica leads), leader election, and the
//! HTTP endpoints every replica serves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::context::Context;
use crate::crd::{MediaPool, SignallingPool, Tenant, Trunk};
use crate::pool::controller as pools;
use crate::tenant::controller::{self as tenants, TenantContext};
use crate::triggers::{changes_of, spec_or_lifecycle};
use crate::trunk::controller as trunks;
use crate::trunk::registration;

/// Runs every controller until `shutdown` resolves.
pub async fn controllers(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    let shutdown = future::Shared::clone(&futures::FutureExt::shared(Box::pin(shutdown)));

    // Tenants: a reflector of all tenants serves the uniqueness rules and the mappers.
    let (tenant_store, writer) = reflector::store::<Tenant>();
    let tenant_stream = watcher(Api::<Tenant>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    let tenant_ctx = Arc::new(TenantContext {
        base: ctx.clone(),
        tenants: tenant_store.clone(),
    });
    let (secrets_store, trunks_store, signalling_store, media_store) = (
        tenant_store.clone(),
        tenant_store.clone(),
        tenant_store.clone(),
        tenant_store.clone(),
    );
    let rivals_store = tenant_store.clone();
    let census = crate::census::run(ctx.clone(), tenant_store.clone(), ctx.config.census_period);
    let tenant_controller = Controller::for_stream(tenant_stream, tenant_store)
        .watches_stream(
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                config.clone(),
            )
            .default_backoff()
            .touched_objects(),
            move |secret| {
                tenants::tenants_using(&secrets_store, secret.namespace(), |t| {
                    tenants::uses_secret(t, &secret.name_any())
                })
            },
        )
        // Tenants read a Trunk's spec, never its status (registration state is written there).
        .watches_stream(
            changes_of(
                watcher(Api::<Trunk>::all(client.clone()), config.clone()).default_backoff(),
                spec_or_lifecycle,
            ),
            move |trunk| {
                tenants::tenants_using(&trunks_store, trunk.namespace(), |t| {
                    tenants::uses_trunk(t, &trunk.name_any())
                })
            },
        )
        .watches(
            Api::<SignallingPool>::all(client.clone()),
            config.clone(),
            move |pool| {
                tenants::tenants_using(&signalling_store, pool.namespace(), |t| {
                    t.spec.signalling_pool_ref == pool.name_any()
                })
            },
        )
        .watches(
            Api::<MediaPool>::all(client.clone()),
            config.clone(),
            move |pool| {
                tenants::tenants_using(&media_store, pool.namespace(), |t| {
                    t.spec.media_pool_ref == pool.name_any()
                })
            },
        )
        // A rival's claim is its spec and lifecycle; its live figures change every census.
        .watches_stream(
            changes_of(
                watcher(Api::<Tenant>::all(client.clone()), config.clone()).default_backoff(),
                spec_or_lifecycle,
            ),
            move |t| tenants::rivals_of(&rivals_store, &t),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(tenants::reconcile, tenants::error_policy, tenant_ctx)
        .for_each(|_| future::ready(()));

    // Trunks: a Secret change re-reconciles the trunks of its namespace.
    let (trunk_store, writer) = reflector::store::<Trunk>();
    let trunk_stream = watcher(Api::<Trunk>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    let secret_store = trunk_store.clone();
    let registrations =
        registration::run(ctx.clone(), trunk_store.clone(), ctx.config.census_period);
    let trunk_controller = Controller::for_stream(trunk_stream, trunk_store)
        .watches_stream(
            watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                config.clone(),
            )
            .default_backoff()
            .touched_objects(),
            move |secret| {
                let namespace = secret.namespace();
                secret_store
                    .state()
                    .iter()
                    .filter(|t| t.namespace() == namespace)
                    .filter(|t| {
                        let registration = t.spec.registration.as_ref();
                        registration
                            .is_some_and(|r| r.password_secret_ref.name == secret.name_any())
                    })
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(trunks::reconcile, trunks::error_policy, ctx.clone())
        .for_each(|_| future::ready(()));

    // MediaPools: status writes (workload figures, the autoscaler's decision) wake nothing; a
    // scale (spec.replicas) does.
    let (media_pool_store, writer) = reflector::store::<MediaPool>();
    let media_pool_stream = watcher(Api::<MediaPool>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    let autoscaler = crate::pool::scaler::run(
        ctx.clone(),
        media_pool_store.clone(),
        ctx.config.census_period,
    );
    let media_controller = Controller::for_stream(media_pool_stream, media_pool_store)
        .owns(Api::<StatefulSet>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            config.clone(),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            pools::reconcile_media,
            pools::media_error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));

    let signalling_controller =
        Controller::new(Api::<SignallingPool>::all(client.clone()), config.clone())
            .owns(Api::<Deployment>::all(client.clone()), config.clone())
            .owns(Api::<Service>::all(client.clone()), config.clone())
            .owns(
                Api::<PodDisruptionBudget>::all(client.clone()),
                config.clone(),
            )
            .graceful_shutdown_on(shutdown)
            .run(
                pools::reconcile_signalling,
                pools::signalling_error_policy,
                ctx,
            )
            .for_each(|_| future::ready(()));

    tokio::select! {
        _ = async {
            tokio::join!(
                tenant_controller,
                trunk_controller,
                media_controller,
                signalling_controller
            )
        } => {}
        _ = census => {}
        _ = registrations => {}
        _ = autoscaler => {}
    }
}

/// Readiness of this replica, shared with the HTTP endpoints.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the replica ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<crate::metrics::Metrics>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app =
        Router::new()
            .route(
                "/metrics",
                get(
                    |State((m, _)): State<(Arc<crate::metrics::Metrics>, Health)>| async move {
                        m.render()
                    },
                ),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(
                    |State((_, h)): State<(Arc<crate::metrics::Metrics>, Health)>| async move {
                        if h.ready.load(Ordering::Relaxed) {
                            (StatusCode::OK, "ready")
                        } else {
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                        }
                    },
                ),
            )
            .with_state((metrics, health));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the controllers whenever this replica holds the leader Lease, until `shutdown`.
pub async fn lead(
    ctx: Arc<Context>,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = &ctx.config;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_duration.as_secs().max(2))
        .with_grace((config.lease_duration.as_secs() / 3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Wait to lead (or to stop).
        tokio::select! {
            _ = &mut shutdown => break,
            changed = leading.wait_for(|l| *l) => { changed?; }
        }
        tracing::info!(identity = %config.identity, "leading: controllers start");
        ctx.metrics.set_leader(true);
        let mut lost = leading.clone();
        let mut stop = stop_rx.clone();
        let stopped = async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        };
        tokio::select! {
            _ = controllers(ctx.clone(), stopped) => {}
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                break;
            }
        }
        ctx.metrics.set_leader(false);
        tracing::warn!(identity = %config.identity, "leadership lost: controllers stopped");
    }
    // Dropping the receiver ends the lease task, which releases the Lease for a quick hand-over.
    drop(leading);
    if let Ok(Ok(manager)) = lease_task.await {
        let _ = manager.release().await;
    }
    ctx.metrics.set_leader(false);
    Ok(())
}
