//! The HTTP endpoints every replica serves: metrics, liveness, readiness.

use std::sync::Arc;
use std::time::Duration;

use centrex_operator::metrics::Metrics;
use centrex_operator::run::{Health, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    metrics.reconciled("tenant", Duration::from_millis(3));
    metrics.failed("tenant", "store");
    let health = Health::default();
    tokio::spawn(serve_http(
        listener,
        metrics,
        health.clone(),
        std::future::pending(),
    ));

    let page = get(addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("centrex_operator_reconciles_total{controller=\"tenant\"} 1"),
        "{page}"
    );
    assert!(
        page.contains(
            "centrex_operator_reconcile_errors_total{controller=\"tenant\",category=\"store\"} 1"
        ),
        "{page}"
    );
    assert!(
        page.contains("centrex_operator_reconcile_duration_seconds_bucket"),
        "{page}"
    );

    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(
        get(addr, "/readyz").await.starts_with("HTTP/1.1 503"),
        "not ready before start-up completes"
    );
    health.set_ready(true);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
}
