//! MediaControl over gRPC: idempotency, limits and the status codes of failures.

mod support;

use centrex_proto::media as pb;
use futures::StreamExt;
use support::*;
use tonic::Code;

#[tokio::test]
async fn creating_again_with_the_same_id_returns_the_same_session() {
    let node = TestNode::memory(config((22000, 22019))).await;
    let first = node.create("s1", None, None).await.unwrap();
    let retry = node.create("s1", None, None).await.unwrap();
    assert_eq!(retry.legs, first.legs);
    assert_eq!(node.node.stats().active_sessions, 1);
}

#[tokio::test]
async fn an_id_used_by_another_call_is_already_exists() {
    let mut node = TestNode::memory(config((22020, 22039))).await;
    node.create("s1", None, None).await.unwrap();
    let mut other = create_request("s1", [leg("a", None, true), leg("b", None, true)]);
    other.call_id = "another-call".into();
    let status = node.client.create_session(other).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn running_out_of_ports_is_resource_exhausted() {
    // Four pairs: two sessions of two legs.
    let node = TestNode::memory(config((22040, 22047))).await;
    node.create("s1", None, None).await.unwrap();
    node.create("s2", None, None).await.unwrap();
    let status = node.create("s3", None, None).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("22040-22047"), "{status:?}");
}

#[tokio::test]
async fn the_session_limit_is_resource_exhausted() {
    let mut config = config((22060, 22079));
    config.max_sessions = 1;
    let node = TestNode::memory(config).await;
    node.create("s1", None, None).await.unwrap();
    let status = node.create("s2", None, None).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("capacity of 1"), "{status:?}");
}

#[tokio::test]
async fn an_invalid_request_names_the_field() {
    let mut node = TestNode::memory(config((22080, 22099))).await;
    let mut request = create_request("s1", [leg("a", None, true), leg("b", None, true)]);
    request.legs[1].remote = Some(pb::Endpoint {
        address: "pbx.example.com".into(),
        port: 4000,
    });
    let status = node.client.create_session(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("legs[1].remote.address"),
        "{status:?}"
    );
}

#[tokio::test]
async fn unknown_sessions_are_not_found_and_deleting_them_is_harmless() {
    let mut node = TestNode::memory(config((22100, 22119))).await;
    assert_eq!(node.get("nope").await.unwrap_err().code(), Code::NotFound);
    let update = pb::UpdateLegRequest {
        session_id: "nope".into(),
        leg_id: "a".into(),
        ..Default::default()
    };
    let status = node.client.update_leg(update).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let deleted = node
        .client
        .delete_session(pb::DeleteSessionRequest {
            session_id: "nope".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.deleted);
}

#[tokio::test]
async fn deleting_a_session_returns_its_counters_and_frees_its_ports() {
    // Two pairs: exactly one session.
    let mut node = TestNode::memory(config((22120, 22123))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();
    alice.send_rtp(local_rtp(&session, 0), 1).await;
    bob.receive().await;
    let deleted = node
        .client
        .delete_session(pb::DeleteSessionRequest {
            session_id: "s1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.a.unwrap().packets_in, 1);
    node.create("s2", None, None).await.unwrap();
}

#[tokio::test]
async fn rtcp_mux_can_be_dropped_by_an_update() {
    let mut node = TestNode::memory(config((22140, 22159))).await;
    let session = node.create("s1", None, None).await.unwrap();
    assert_eq!(local_rtcp(&session, 0), local_rtp(&session, 0));
    let update = pb::UpdateLegRequest {
        session_id: "s1".into(),
        leg_id: "a".into(),
        rtcp_mux: false,
        ..Default::default()
    };
    let updated = node.client.update_leg(update).await.unwrap().into_inner();
    assert_eq!(
        local_rtcp(&updated, 0).port(),
        local_rtp(&session, 0).port() + 1
    );
}

#[tokio::test]
async fn node_stats_stream_the_session_count() {
    let mut node = TestNode::memory(config((22160, 22179))).await;
    node.create("s1", None, None).await.unwrap();
    let mut stats = node
        .client
        .watch_node_stats(pb::WatchNodeStatsRequest { interval_ms: 100 })
        .await
        .unwrap()
        .into_inner();
    let first = stats.next().await.unwrap().unwrap();
    assert_eq!(
        (first.node_id.as_str(), first.active_sessions),
        ("media-test-0", 1)
    );
}

#[tokio::test]
async fn metrics_and_probes_are_served() {
    let node = TestNode::memory(config((22180, 22199))).await;
    node.create("s1", None, None).await.unwrap();
    assert_eq!(node.http_status("/healthz").await, 200);
    assert_eq!(node.http_status("/readyz").await, 200);
    let metrics = node.http_body("/metrics").await;
    assert!(metrics.contains("centrex_media_sessions 1"), "{metrics}");
}
