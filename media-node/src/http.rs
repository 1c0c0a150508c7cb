//! `/metrics` (Prometheus text), `/healthz` and `/readyz` (not ready while draining, so the
//! pod leaves its Services and pickers while calls finish).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::node::Node;

type Shared = (Arc<Node>, Arc<Metrics>);

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State((_, metrics)): State<Shared>| async move { metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((node, _)): State<Shared>| async move {
                if node.is_draining() {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else {
                    (StatusCode::OK, "ready")
                }
            }),
        )
        .with_state((node, metrics));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
