//! The edge's per-source request-rate limit, over real UDP: a flooding source is cut off while
//! another source still registers.

mod peers;

use std::sync::Arc;

use centrex_coord::store::MemoryStore;
use centrex_coord::testing::eventually;
use centrex_coord::{Store, keys};
use centrex_signalling::auth::authenticator::Authenticator;
use centrex_signalling::auth::digest::Algorithm;
use centrex_signalling::directory::Directory;
use centrex_signalling::edge::rate::RateLimits;
use centrex_signalling::server::Server;
use peers::{DOMAIN, credentials, register_scenario, sipp, tenant};
use tokio::net::UdpSocket;

/// Requests the flooder sends, far above its allowance.
const FLOOD: usize = 500;

fn options(branch: usize) -> String {
    format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5999;branch=z9hG4bKflood{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:flood@{DOMAIN}>;tag=f\r\nTo: <sip:{DOMAIN}>\r\n\
         Call-ID: flood-{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The value of counter `name` in the Prometheus text `metrics`.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_source_is_cut_off_while_another_source_still_registers() {
    let store = MemoryStore::new();
    store
        .put(
            &keys::tenant("default", "acme"),
            serde_json::to_vec(&tenant()).unwrap(),
            None,
        )
        .await
        .unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let directory = Directory::default();
    tokio::spawn({
        let (directory, shared) = (directory.clone(), shared.clone());
        async move { directory.follow(shared).await }
    });
    eventually("the tenant to reach the directory", || async {
        directory.tenant(DOMAIN).map(|_| ())
    })
    .await;
    let limits = RateLimits {
        per_second: 10.0,
        burst: 20.0,
        ..RateLimits::default()
    };
    let auth = Authenticator::new().with_algorithms(vec![Algorithm::Md5]);
    let server = Arc::new(Server::new(shared, directory, auth).with_rate_limits(limits));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sip = socket.local_addr().unwrap();
    tokio::spawn(server.clone().serve_udp(socket, std::future::pending()));

    // Another loopback address: the limit is per source IP, and sipp registers from 127.0.0.1.
    let flooder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let started = std::time::Instant::now();
    let mut limited = 0;
    // In bursts the server catches up with, so the kernel's receive buffer never overflows.
    for burst in 0..FLOOD / 50 {
        for branch in burst * 50..(burst + 1) * 50 {
            flooder
                .send_to(options(branch).as_bytes(), sip)
                .await
                .unwrap();
        }
        let sent = (burst as u64 + 1) * 50;
        limited = eventually("the server to see the burst", || async {
            let metrics = server.render_metrics();
            let limited = counter(&metrics, "centrex_sip_rate_limited_total");
            let answered = counter(&metrics, "centrex_sip_requests_total{method=\"OPTIONS\"}");
            (limited + answered == sent).then_some(limited)
        })
        .await;
    }
    let allowance = 20 + (10.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        limited >= FLOOD as u64 - allowance,
        "{limited} of {FLOOD} dropped; at most {allowance} may pass"
    );

    let output = tokio::task::spawn_blocking(move || {
        sipp(
            sip,
            &register_scenario("100", 200),
            &credentials("100", "secret-100"),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the other source's REGISTER did not get 200"
    );
    let (bindings, _) = store
        .list(&keys::registrations(DOMAIN, "100"))
        .await
        .unwrap();
    assert_eq!(bindings.len(), 1);
}
