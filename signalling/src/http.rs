//! The instance's HTTP side: `/metrics` (Prometheus text), `/healthz`, `/readyz` (not ready while
//! draining, so the pod leaves its Service while its calls finish), and `/drain` — `POST` starts
//! draining, `GET` reports progress — for the pod's preStop hook (`centrex signalling drain`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::server::Server;

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(server): State<Arc<Server>>| async move { server.render_metrics() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(server): State<Arc<Server>>| async move {
                if server.is_draining() {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else {
                    (StatusCode::OK, "ready")
                }
            }),
        )
        .route(
            "/drain",
            get(|State(server): State<Arc<Server>>| async move { drain_status(&server) }).post(
                |State(server): State<Arc<Server>>| async move {
                    server.drain();
                    drain_status(&server)
                },
            ),
        )
        .with_state(server);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `/drain` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainStatus {
    pub draining: bool,
    pub active_calls: usize,
    /// No call is left, or the drain timeout has passed.
    pub done: bool,
}

impl DrainStatus {
    /// Reads a `/drain` answer body.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

fn drain_status(server: &Server) -> String {
    let status = DrainStatus {
        draining: server.is_draining(),
        active_calls: server.active_calls(),
        done: server.is_drained(),
    };
    serde_json::to_string(&status).expect("a plain struct serialises")
}
