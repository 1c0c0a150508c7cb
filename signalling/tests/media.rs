//! Anchoring media on real media nodes (in-process, on 127.0.0.1, registered in an in-memory
//! store): allocation on a lightly loaded node, moving on when a node is full, pointing legs,
//! releasing — and RTP actually relayed between the two parties.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::Store;
use centrex_coord::store::MemoryStore;
use centrex_coord::testing::eventually;
use centrex_media_node::{Config, MediaNode};
use centrex_signalling::media::{MediaPool, Remote};
use tokio::net::UdpSocket;

async fn node(store: &Arc<dyn Store>, id: &str, max_sessions: u32) {
    let mut config = Config::new(id, "default", "127.0.0.1".parse().unwrap());
    config.namespace = "default".into();
    config.bind = "127.0.0.1".parse().unwrap();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.max_sessions = max_sessions;
    config.registration_refresh = Duration::from_millis(100);
    let node = MediaNode::start(config, store.clone()).await.unwrap();
    tokio::spawn(node.run(std::future::pending()));
}

async fn pool_with(nodes: &[(&str, u32)]) -> MediaPool {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for (id, capacity) in nodes {
        node(&store, id, *capacity).await;
    }
    let pool = MediaPool::new(store, "default", "default");
    let expected = nodes.len();
    let registered = || async { (pool.nodes().await.unwrap().len() >= expected).then_some(()) };
    eventually("media nodes to register", registered).await;
    pool
}

/// A caller listening at 127.0.0.1:4000.
fn somewhere(rtcp_mux: bool) -> Remote {
    Remote {
        rtp: "127.0.0.1:4000".parse().unwrap(),
        rtcp_mux,
        payload_types: vec![],
    }
}

#[tokio::test]
async fn a_call_anchored_on_a_node_relays_rtp_between_the_parties() {
    let pool = pool_with(&[("media-0", 10)]).await;
    let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pcmu = [(0u8, "PCMU".to_string(), 8000u32)];
    // The caller's leg is pointed by the allocation itself; the callee's once it answers.
    let caller = Remote {
        rtp: alice.local_addr().unwrap(),
        rtcp_mux: false,
        payload_types: pcmu.to_vec(),
    };
    let anchor = pool
        .anchor("call-1", "call-1@test", "acme.example.com", &caller)
        .await
        .unwrap();
    assert_ne!(anchor.a.port, anchor.b.port);
    pool.point(&anchor, "b", bob.local_addr().unwrap(), false, &pcmu)
        .await
        .unwrap();

    // An RTP packet (version 2, PT 0) from Alice to her leg comes out at Bob from his leg.
    let mut packet = vec![0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x11, 0x22, 0x33, 0x44];
    packet.extend([0xff; 160]);
    let a_leg = SocketAddr::new(anchor.a.address, anchor.a.port);
    let b_leg = SocketAddr::new(anchor.b.address, anchor.b.port);
    alice.send_to(&packet, a_leg).await.unwrap();
    let mut buffer = [0u8; 2048];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), bob.recv_from(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&buffer[..len], from),
        (&packet[..], b_leg),
        "Bob gets Alice's packet from his leg of the relay"
    );

    pool.release(&anchor).await.unwrap();
    pool.release(&anchor).await.unwrap();
}

#[tokio::test]
async fn a_retried_allocation_returns_the_same_session() {
    let pool = pool_with(&[("media-0", 10)]).await;
    let first = pool
        .anchor(
            "call-2",
            "call-2@test",
            "acme.example.com",
            &somewhere(false),
        )
        .await
        .unwrap();
    let again = pool
        .anchor(
            "call-2",
            "call-2@test",
            "acme.example.com",
            &somewhere(false),
        )
        .await
        .unwrap();
    assert_eq!(first, again);
}

#[tokio::test]
async fn a_full_node_is_passed_over_for_the_next() {
    let pool = pool_with(&[("media-0", 1), ("media-1", 1)]).await;
    let first = pool
        .anchor("call-3", "c3", "t", &somewhere(true))
        .await
        .unwrap();
    let second = pool
        .anchor("call-4", "c4", "t", &somewhere(true))
        .await
        .unwrap();
    assert_ne!(
        first.node, second.node,
        "the second call goes to the other node"
    );
    // Both nodes full now (the registrations may lag: the node itself refuses and we move on).
    let third = pool.anchor("call-5", "c5", "t", &somewhere(true)).await;
    assert!(third.is_err(), "no capacity left anywhere");
}
