//! Drain and cluster membership: the node's life in the pool.

mod support;

use std::sync::Arc;
use std::time::Duration;

use centrex_coord::store::MemoryStore;
use centrex_coord::testing::Etcd;
use centrex_coord::{Store, keys};
use centrex_media_node::MediaNodeRegistration;
use centrex_proto::media as pb;
use support::*;
use tonic::Code;

fn registration_key() -> String {
    keys::media_node("centrex-test", "test", "media-test-0")
}

/// Where the operator asks the test node to drain before a scale-down.
fn drain_request_key() -> String {
    keys::media_drain("centrex-test", "test", "media-test-0")
}

/// What the operator writes (the node reads only whether the key exists).
fn drain_request() -> Vec<u8> {
    br#"{"markedAt":"2030-01-01T00:00:00Z"}"#.to_vec()
}

async fn registration(store: &dyn Store) -> Option<MediaNodeRegistration> {
    let kv = store.get(&registration_key()).await.unwrap()?;
    Some(serde_json::from_slice(&kv.value).expect("a registration"))
}

#[tokio::test]
async fn draining_refuses_new_sessions_and_lets_running_ones_finish() {
    let mut node = TestNode::memory(config((23000, 23019))).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();

    let drain = node
        .client
        .drain(pb::DrainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drain.sessions_remaining, 1);
    let refused = node.create("s2", None, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(node.http_status("/readyz").await, 503);
    alice.send_rtp(local_rtp(&session, 0), 1).await;
    assert_eq!(bob.receive().await.0, rtp(1, alice.ssrc));

    let delete = pb::DeleteSessionRequest {
        session_id: "s1".into(),
    };
    node.client.delete_session(delete).await.unwrap();
    node.stopped().await.unwrap();
}

#[tokio::test]
async fn the_drain_timeout_stops_a_node_with_sessions_left() {
    let mut config = config((23020, 23039));
    config.drain_timeout = Duration::from_millis(200);
    let mut node = TestNode::memory(config).await;
    node.create("s1", None, None).await.unwrap();
    node.terminate();
    node.stopped().await.unwrap();
}

#[tokio::test]
async fn at_the_drain_timeout_the_registration_goes_first_and_relaying_stops_when_the_calls_moved()
{
    let store = Arc::new(MemoryStore::new());
    let mut config = config((23300, 23319));
    config.drain_timeout = Duration::from_millis(200);
    let mut node = TestNode::start(config, store.clone()).await;
    node.create("s1", None, None).await.unwrap();
    node.terminate();
    // Signalling sees the registration go and moves the call while the session still relays…
    eventually("the registration to be withdrawn", || async {
        registration(&*store).await.is_none().then_some(())
    })
    .await;
    assert_eq!(node.node.stats().active_sessions, 1, "still relaying");
    // …then deletes the old session, and the node stops at once.
    let delete = pb::DeleteSessionRequest {
        session_id: "s1".into(),
    };
    node.client.delete_session(delete).await.unwrap();
    node.stopped().await.unwrap();
}

#[tokio::test]
async fn the_drain_action_returns_once_the_sessions_have_ended() {
    let mut node = TestNode::memory(config((23040, 23059))).await;
    node.create("s1", None, None).await.unwrap();
    let endpoint = format!("http://{}", node.grpc);
    let action = tokio::spawn(centrex_media_node::drain::drain_node(endpoint, None));
    eventually("the node to drain", || async {
        node.node.is_draining().then_some(())
    })
    .await;
    let delete = pb::DeleteSessionRequest {
        session_id: "s1".into(),
    };
    node.client.delete_session(delete).await.unwrap();
    action.await.unwrap().unwrap();
    node.stopped().await.unwrap();
}

#[tokio::test]
async fn draining_shows_in_the_registration() {
    let store = Arc::new(MemoryStore::new());
    let mut node = TestNode::start(config((23060, 23079)), store.clone()).await;
    node.create("s1", None, None).await.unwrap();
    node.client.drain(pb::DrainRequest {}).await.unwrap();
    let registration = eventually("the draining flag", || async {
        registration(&*store).await.filter(|r| r.draining)
    })
    .await;
    assert_eq!(registration.active_sessions, 1);
}

#[tokio::test]
async fn the_registration_comes_back_after_its_lease_is_lost() {
    let store = Arc::new(MemoryStore::new());
    let _node = TestNode::start(config((23080, 23099)), store.clone()).await;
    let first = eventually("the registration", || async {
        store.get(&registration_key()).await.unwrap()
    })
    .await;
    // What a store outage longer than the TTL leaves behind: the lease and the key are gone.
    store.revoke_lease(first.lease.unwrap()).await.unwrap();
    let again = eventually("the registration to come back", || async {
        store.get(&registration_key()).await.unwrap()
    })
    .await;
    assert_ne!(again.lease, first.lease);
}

#[tokio::test]
async fn the_registration_appears_in_etcd_and_disappears_when_the_node_stops() {
    let etcd = Etcd::start().await;
    let store: Arc<dyn Store> = Arc::new(etcd.store().await);
    let mut node = TestNode::start(config((23100, 23119)), store.clone()).await;
    let registered = eventually("the registration in etcd", || registration(&*store)).await;
    assert_eq!(registered.capacity, 100);
    assert_eq!(registered.address.to_string(), "127.0.0.1");
    assert!(!registered.draining);

    node.terminate();
    node.stopped().await.unwrap();
    assert_eq!(registration(&*store).await, None);
}

#[tokio::test]
async fn a_drain_request_in_the_store_refuses_new_sessions_and_keeps_relaying() {
    let store = Arc::new(MemoryStore::new());
    let node = TestNode::start(config((23120, 23139)), store.clone()).await;
    let (alice, bob) = (Peer::bind(1).await, Peer::bind(2).await);
    let session = node
        .create("s1", Some(alice.addr()), Some(bob.addr()))
        .await
        .unwrap();

    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    let registration = eventually("the draining flag", || async {
        registration(&*store).await.filter(|r| r.draining)
    })
    .await;
    assert_eq!(registration.active_sessions, 1);
    let refused = node.create("s2", None, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(node.http_status("/readyz").await, 503);
    alice.send_rtp(local_rtp(&session, 0), 1).await;
    assert_eq!(bob.receive().await.0, rtp(1, alice.ssrc));
}

#[tokio::test]
async fn a_requested_drain_outlives_the_last_session_and_ends_when_the_request_is_withdrawn() {
    let store = Arc::new(MemoryStore::new());
    let node = TestNode::start(config((23140, 23159)), store.clone()).await;
    node.create("s1", None, None).await.unwrap();
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    eventually("the node to drain", || async {
        node.node.is_draining().then_some(())
    })
    .await;
    let delete = pb::DeleteSessionRequest {
        session_id: "s1".into(),
    };
    node.client.clone().delete_session(delete).await.unwrap();
    // Idle and draining, the node stays up and registered: what the operator waits for.
    eventually("an idle draining registration", || async {
        registration(&*store)
            .await
            .filter(|r| r.draining && r.active_sessions == 0)
    })
    .await;

    store.delete(&drain_request_key()).await.unwrap();
    eventually("the draining flag to clear", || async {
        registration(&*store).await.filter(|r| !r.draining)
    })
    .await;
    assert_eq!(node.http_status("/readyz").await, 200);
    node.create("s2", None, None).await.unwrap();
}

#[tokio::test]
async fn a_node_marked_before_it_starts_drains_from_the_start() {
    let store = Arc::new(MemoryStore::new());
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    let node = TestNode::start(config((23160, 23179)), store.clone()).await;
    eventually("the draining registration", || async {
        registration(&*store).await.filter(|r| r.draining)
    })
    .await;
    let refused = node.create("s1", None, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn sigterm_stops_an_idle_node_the_operator_drained_at_once() {
    let store = Arc::new(MemoryStore::new());
    let mut config = config((23180, 23199));
    // Were the node to wait for its deadline, `stopped` would time out.
    config.drain_timeout = PATIENCE * 10;
    let mut node = TestNode::start(config, store.clone()).await;
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    eventually("the draining registration", || async {
        registration(&*store).await.filter(|r| r.draining)
    })
    .await;
    node.terminate();
    node.stopped().await.unwrap();
    assert_eq!(registration(&*store).await, None);
}

#[tokio::test]
async fn a_store_outage_keeps_the_drain_state_and_a_change_missed_during_it_is_caught_up() {
    let store = Arc::new(support::outage::OutageStore::new());
    let node = TestNode::start(config((23200, 23219)), store.clone()).await;
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    eventually("the node to drain", || async {
        node.node.is_draining().then_some(())
    })
    .await;

    store.set_down(true);
    // The request is withdrawn while the node cannot see the store.
    store.inner.delete(&drain_request_key()).await.unwrap();
    assert!(
        node.node.is_draining(),
        "an outage neither starts nor ends a drain"
    );
    store.set_down(false);
    eventually("the node to serve again", || async {
        (!node.node.is_draining()).then_some(())
    })
    .await;
    // And it follows the key again.
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    eventually("the node to drain again", || async {
        node.node.is_draining().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drain_request_is_followed_across_an_etcd_restart() {
    let mut etcd = Etcd::start().await;
    let store: Arc<dyn Store> = Arc::new(etcd.store().await);
    let node = TestNode::start(config((23220, 23239)), store.clone()).await;
    eventually("the registration in etcd", || registration(&*store)).await;

    etcd.stop();
    etcd.restart().await;
    store
        .put(&drain_request_key(), drain_request(), None)
        .await
        .unwrap();
    eventually("the draining registration", || async {
        registration(&*store).await.filter(|r| r.draining)
    })
    .await;
    store.delete(&drain_request_key()).await.unwrap();
    eventually("the node to serve again", || async {
        registration(&*store).await.filter(|r| !r.draining)
    })
    .await;
    node.create("s1", None, None).await.unwrap();
}
