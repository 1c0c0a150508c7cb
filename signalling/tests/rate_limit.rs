//! The edge's per-source request-rate limit, over real UDP: a flooding source is cut off while
//! another source still registers.

mod peers;

use std::net::SocketAddr;
use std::sync::Arc;

use centrex_coord::snapshot::{self as snap, TrunkSnapshot};

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

/// A server on 127.0.0.1 serving the test tenant (and `trunk`, if any) with a limit of 10
/// requests per second and a burst of 20 per source; its store and SIP address.
async fn start(trunk: Option<TrunkSnapshot>) -> (MemoryStore, Arc<Server>, SocketAddr) {
    let store = MemoryStore::new();
    if let Some(trunk) = &trunk {
        store
            .put(
                &keys::trunk(&trunk.source.namespace, &trunk.source.name),
                serde_json::to_vec(trunk).unwrap(),
                None,
            )
            .await
            .unwrap();
    }
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
    eventually("the tenant and trunk to reach the directory", || async {
        let trunk_in = trunk.is_none() || !directory.trunks().is_empty();
        directory.tenant(DOMAIN).filter(|_| trunk_in).map(|_| ())
    })
    .await;
    let limits = RateLimits {
        per_second: 10.0,
        burst: 20.0,
        // Both sources are loopback addresses here.
        exempt_loopback: false,
        ..RateLimits::default()
    };
    let auth = Authenticator::new().with_algorithms(vec![Algorithm::Md5]);
    let server = Arc::new(Server::new(shared, directory, auth).with_rate_limits(limits));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sip = socket.local_addr().unwrap();
    tokio::spawn(server.clone().serve_udp(socket, std::future::pending()));

    (store, server, sip)
}

/// Sends [`FLOOD`] OPTIONS from `flooder` to `sip` in bursts the server catches up with (so the
/// kernel's receive buffer never overflows); how many the server dropped as over the rate.
async fn flood(flooder: &UdpSocket, server: &Server, sip: SocketAddr) -> u64 {
    let mut limited = 0;
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
    limited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_source_is_cut_off_while_another_source_still_registers() {
    let (store, server, sip) = start(None).await;
    // Another loopback address: the limit is per source IP, and sipp registers from 127.0.0.1.
    let flooder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let started = std::time::Instant::now();
    let limited = flood(&flooder, &server, sip).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunks_carrier_is_not_limited() {
    let mut carrier = trunk();
    carrier.inbound_sources = vec!["127.0.0.2/32".into()];
    let (_store, server, sip) = start(Some(carrier)).await;
    let flooder = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    assert_eq!(flood(&flooder, &server, sip).await, 0);
}

/// A trunk without registration.
fn trunk() -> TrunkSnapshot {
    TrunkSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: "default".into(),
            name: "carrier".into(),
            uid: "t1".into(),
            generation: 1,
        },
        host: "127.0.0.2".into(),
        port: 5060,
        transport: snap::Transport::Udp,
        registration: None,
        inbound_sources: vec![],
        number_prefixes: vec![],
        max_channels: 10,
        calls_per_second: 5,
        country_code: "1".into(),
        national_prefix: "1".into(),
        international_prefix: "011".into(),
    }
}
