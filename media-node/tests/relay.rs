//! The data plane over real UDP on 127.0.0.1: relaying, latching, counters, idle timeout;
//! every test on each I/O backend (`epoll::…`, `io_uring::…`).

mod support;

use std::time::Duration;

use centrex_media_node::relay::Backend;
use centrex_proto::media as pb;
use support::*;
use tokio::time::timeout;

/// Runs each named test on both backends, the io_uring one on ports 500 above the epoll one's
/// (the two may run at once).
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod epoll {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Epoll).await
            })*
        }
        mod io_uring {
            $(#[tokio::test]
            async fn $test() {
                // Where the kernel refuses io_uring (seccomp, io_uring_disabled) the relay
                // runs on epoll, which the `epoll` tests cover.
                if !centrex_media_node::relay::io_uring_available() {
                    eprintln!("io_uring is not available here; skipped");
                    return;
                }
                super::$test(super::Backend::IoUring).await
            })*
        }
    };
}

on_both_backends!(
    a_session_relays_rtp_both_ways_from_its_own_ports,
    counters_show_packets_bytes_and_sequence_gaps,
    rtcp_is_relayed_between_the_rtcp_ports_without_mux,
    a_peer_behind_nat_gets_media_at_its_real_source,
    a_hijacker_cannot_take_over_a_latched_leg,
    a_new_stream_from_a_new_source_takes_over_after_silence,
    rtp_of_a_payload_type_sdp_did_not_offer_is_dropped,
    an_idle_session_ends_and_frees_its_ports,
    a_removed_session_s_ports_serve_the_next_session_without_its_late_packets,
);

/// A configuration on `ports` (moved 500 up for io_uring) with `backend`.
fn config_on(backend: Backend, ports: (u16, u16)) -> centrex_media_node::Config {
    let offset = if backend == Backend::IoUring { 500 } else { 0 };
    let mut config = config((ports.0 + offset, ports.1 + offset));
    config.relay_backend = backend;
    config
}

async fn a_session_relays_rtp_both_ways_from_its_own_ports(backend: Backend) {
    let node = TestNode::memory(config_on(backend, (21000, 21019))).await;
    assert_eq!(node.node.relay_backend(), backend);
    let (alice, bob) = (Peer::bind(0xa11ce).await, Peer::bind(0xb0b).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    let (port_a, port_b) = (local_rtp(&session, 0), local_rtp(&session, 1));

    alice.send_rtp(port_a, 1).await;
    assert_eq!(bob.receive().await, (rtp(1, alice.ssrc), port_b));
    bob.send_rtp(port_b, 9).await;
    assert_eq!(alice.receive().await, (rtp(9, bob.ssrc), port_a));
}

async fn counters_show_packets_bytes_and_sequence_gaps(backend: Backend) {
    let node = TestNode::memory(config_on(backend, (21020, 21039))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    for seq in [1, 2, 5] {
        alice.send_rtp(local_rtp(&session, 0), seq).await;
        bob.receive().await;
    }
    let expected = |s: &pb::Session| {
        let (a, b) = (counters(s, 0), counters(s, 1));
        (
            a.packets_in,
            a.bytes_in,
            a.packets_lost,
            b.packets_out,
            b.bytes_out,
        )
    };
    let node = &node;
    let figures = eventually("the counters", || async move {
        let figures = expected(&node.get("s1").await.unwrap());
        (figures.3 == 3).then_some(figures)
    })
    .await;
    assert_eq!(figures, (3, 3 * 172, 2, 3, 3 * 172));
}

async fn rtcp_is_relayed_between_the_rtcp_ports_without_mux(backend: Backend) {
    let mut node = TestNode::memory(config_on(backend, (21040, 21059))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let request = create_request(
        "s1",
        [
            leg("a", Some(alice.addr()), false),
            leg("b", Some(bob.addr()), false),
        ],
    );
    let session = node
        .client
        .create_session(request)
        .await
        .unwrap()
        .into_inner();
    let (rtcp_a, rtcp_b) = (local_rtcp(&session, 0), local_rtcp(&session, 1));
    assert_eq!(rtcp_a.port(), local_rtp(&session, 0).port() + 1);

    // Bob's RTCP comes from a port SDP did not announce: it latches leg B's RTCP there.
    bob.send_rtcp(rtcp_b).await;
    alice.send_rtcp(rtcp_a).await;
    let (report, from) = bob.receive().await;
    assert_eq!((report[1], from), (201, rtcp_b));
}

async fn a_peer_behind_nat_gets_media_at_its_real_source(backend: Backend) {
    let node = TestNode::memory(config_on(backend, (21060, 21079))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    // SDP announced a private address that is not where Alice's packets come from.
    let announced = "127.0.0.1:9".parse().unwrap();
    let session = node
        .create("s1", Some(announced), Some(bob.addr()))
        .await
        .unwrap();
    alice.send_rtp(local_rtp(&session, 0), 1).await;
    bob.receive().await;

    bob.send_rtp(local_rtp(&session, 1), 1).await;
    assert_eq!(alice.receive().await.0, rtp(1, bob.ssrc));
}

async fn a_hijacker_cannot_take_over_a_latched_leg(backend: Backend) {
    let node = TestNode::memory(config_on(backend, (21080, 21099))).await;
    let (alice, bob, mallory) = (
        Peer::bind(1).await,
        Peer::bind(2).await,
        Peer::bind(666).await,
    );
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    let port_a = local_rtp(&session, 0);
    alice.send_rtp(port_a, 1).await;
    bob.receive().await;

    mallory.send_rtp(port_a, 100).await;
    alice.send_rtp(port_a, 2).await;
    // Both reached the same socket in this order: had Mallory's been relayed, it would be first.
    assert_eq!(seq_of(&bob.receive().await.0), 2);
    let node = &node;
    let dropped = eventually("the hijack attempt to be counted", || async move {
        let dropped = counters(&node.get("s1").await.unwrap(), 0).packets_dropped;
        (dropped > 0).then_some(dropped)
    })
    .await;
    assert_eq!(dropped, 1);
}

async fn a_new_stream_from_a_new_source_takes_over_after_silence(backend: Backend) {
    let mut config = config_on(backend, (21100, 21119));
    config.relatch_silence = Duration::from_millis(200);
    let node = TestNode::memory(config).await;
    let (old_phone, new_phone, bob) = (
        Peer::bind(1).await,
        Peer::bind(2).await,
        Peer::bind(3).await,
    );
    let session = node.create("s1", None, Some(bob.addr())).await.unwrap();
    let port_a = local_rtp(&session, 0);
    old_phone.send_rtp(port_a, 1).await;
    bob.receive().await;

    // The phone roamed: the same call continues from a new address with a new SSRC.
    let mut seq = 0;
    eventually("the new stream to be relayed", || {
        seq += 1;
        let (new_phone, bob) = (&new_phone, &bob);
        async move {
            new_phone.send_rtp(port_a, seq).await;
            let mut buf = [0; 2048];
            let received = timeout(Duration::from_millis(50), bob.socket.recv(&mut buf)).await;
            received.ok().map(|_| ())
        }
    })
    .await;
    bob.send_rtp(local_rtp(&session, 1), 1).await;
    assert_eq!(new_phone.receive().await.0, rtp(1, bob.ssrc));
}

async fn rtp_of_a_payload_type_sdp_did_not_offer_is_dropped(backend: Backend) {
    let mut node = TestNode::memory(config_on(backend, (21120, 21139))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    let pcmu = pb::PayloadType {
        id: 0,
        encoding: "PCMU".into(),
        clock_rate: 8000,
    };
    let update = pb::UpdateLegRequest {
        session_id: "s1".into(),
        leg_id: "a".into(),
        remote: Some(endpoint(alice.addr())),
        rtcp_mux: true,
        payload_types: vec![pcmu],
    };
    node.client.update_leg(update).await.unwrap();

    let mut g729 = rtp(1, alice.ssrc);
    g729[1] = 18;
    alice
        .socket
        .send_to(&g729, local_rtp(&session, 0))
        .await
        .unwrap();
    alice.send_rtp(local_rtp(&session, 0), 2).await;
    assert_eq!(seq_of(&bob.receive().await.0), 2);
}

async fn an_idle_session_ends_and_frees_its_ports(backend: Backend) {
    let mut config = config_on(backend, (21140, 21143));
    config.idle_timeout = Duration::from_millis(300);
    let node = TestNode::memory(config).await;
    node.create("s1", None, None).await.unwrap();

    let node = &node;
    // Only NotFound counts: under load a lookup may fail transiently before the session ends.
    eventually("the idle session to end", || async move {
        node.get("s1")
            .await
            .err()
            .filter(|status| status.code() == tonic::Code::NotFound)
    })
    .await;
    // The range holds one session's ports: a new session gets them back.
    node.create("s2", None, None).await.unwrap();
}

async fn a_removed_session_s_ports_serve_the_next_session_without_its_late_packets(
    backend: Backend,
) {
    // The range holds one session's ports: the next session gets the same sockets back.
    let node = TestNode::memory(config_on(backend, (21160, 21163))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let first = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    alice.send_rtp(local_rtp(&first, 0), 1).await;
    bob.receive().await;
    let mut client = node.client.clone();
    let delete = |id: &str| pb::DeleteSessionRequest {
        session_id: id.into(),
    };
    client.delete_session(delete("s1")).await.unwrap();
    // Late packets of the ended call reach the resting socket.
    alice.send_rtp(local_rtp(&first, 0), 2).await;
    alice.send_rtp(local_rtp(&first, 0), 3).await;

    let (carol, dave) = (Peer::bind(3).await, Peer::bind(4).await);
    let second = node
        .create("s2", Some(carol.addr()), Some(dave.addr()))
        .await
        .unwrap();
    assert_eq!(local_rtp(&second, 0), local_rtp(&first, 0));
    carol.send_rtp(local_rtp(&second, 0), 7).await;
    assert_eq!(
        dave.receive().await,
        (rtp(7, carol.ssrc), local_rtp(&second, 1))
    );
    dave.send_rtp(local_rtp(&second, 1), 8).await;
    assert_eq!(carol.receive().await.0, rtp(8, dave.ssrc));
    let ended = client
        .delete_session(delete("s2"))
        .await
        .unwrap()
        .into_inner();
    let leg_a = ended.a.expect("counters");
    assert_eq!(
        (leg_a.packets_in, leg_a.packets_dropped),
        (1, 0),
        "the late packets of the first call never reached the second"
    );
}
