//! Graceful MediaPool scale-down against an in-memory Kubernetes API (kube-fake) and store: the
//! pods that go are marked draining in the store, and the StatefulSet shrinks once their calls
//! end or the drain timeout passes. The tests play the media nodes' part by writing their
//! registrations (what a node publishes under its lease).

mod support;

use std::time::{Duration, Instant};

use centrex_coord::media::{MediaNodeRegistration, PortRange};
use centrex_coord::store::MemoryStore;
use centrex_coord::{Store, keys};
use centrex_operator::conditions::ConditionType;
use centrex_operator::crd::MediaPool;
use centrex_operator::pool::media;
use centrex_operator::pool::scale_down::DrainMark;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_fake::FakeApiServer;
use serde_json::{Value, json};
use support::{Harness, eventually};

/// A pool named `media` (StatefulSet `media-media`, pods `media-media-<n>`).
async fn create_pool(h: &Harness, replicas: i32, drain_timeout_seconds: i32) {
    let pool: MediaPool = serde_json::from_value(json!({
        "apiVersion": "centrex.dev/v1alpha1",
        "kind": "MediaPool",
        "metadata": {"name": "media", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "sessionsPerNode": 100,
            "drainTimeoutSeconds": drain_timeout_seconds,
        },
    }))
    .unwrap();
    Api::<MediaPool>::default_namespaced(h.fake.client())
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    statefulset_at(h, replicas).await;
}

/// `kubectl scale mediapool/media --replicas=<replicas>`.
async fn scale(h: &Harness, replicas: i32) {
    Api::<MediaPool>::default_namespaced(h.fake.client())
        .patch_scale(
            "media",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

fn pod(ordinal: u32) -> String {
    format!("media-media-{ordinal}")
}

/// What media node `ordinal` publishes.
async fn publish(store: &MemoryStore, ordinal: u32, sessions: u32, draining: bool) {
    let registration = MediaNodeRegistration {
        node_id: pod(ordinal),
        address: "127.0.0.1".parse().unwrap(),
        grpc_address: "127.0.0.1:9090".parse().unwrap(),
        rtp_ports: PortRange {
            min: 20000,
            max: 29999,
        },
        capacity: 100,
        active_sessions: sessions,
        packets_per_second: 0.0,
        draining,
    };
    store
        .put(
            &keys::media_node("default", "media", &pod(ordinal)),
            serde_json::to_vec(&registration).unwrap(),
            None,
        )
        .await
        .unwrap();
}

/// Media node `ordinal` exits (its lease is revoked).
async fn exit(h: &Harness, ordinal: u32) {
    h.store
        .delete(&keys::media_node("default", "media", &pod(ordinal)))
        .await
        .unwrap();
}

async fn drain_mark(h: &Harness, ordinal: u32) -> Option<DrainMark> {
    let kv = h
        .store
        .get(&keys::media_drain("default", "media", &pod(ordinal)))
        .await
        .unwrap()?;
    Some(serde_json::from_slice(&kv.value).expect("a drain mark"))
}

fn statefulset_replicas(h: &Harness) -> Option<i32> {
    h.fake
        .get::<StatefulSet>("default", "media-media")?
        .spec
        .replicas
}

async fn statefulset_at(h: &Harness, replicas: i32) {
    eventually(&format!("the StatefulSet at {replicas}"), || async {
        (statefulset_replicas(h) == Some(replicas)).then_some(())
    })
    .await;
}

/// `status.draining` and the `Draining` condition's (status, reason, message).
fn draining(h: &Harness) -> Option<(Vec<String>, (String, String, String))> {
    let status = h.fake.get::<MediaPool>("default", "media")?.status?;
    let condition = status
        .pool
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Draining.as_str())?;
    Some((
        status.draining,
        (
            condition.status.clone(),
            condition.reason.clone(),
            condition.message.clone(),
        ),
    ))
}

fn events(h: &Harness, reason: &str) -> Vec<Value> {
    h.fake
        .objects("events.k8s.io", "events")
        .into_iter()
        .filter(|e| e["reason"] == reason && e["regarding"]["name"] == "media")
        .collect()
}

#[tokio::test]
async fn a_scale_down_holds_the_statefulset_until_the_marked_pod_s_calls_end() {
    let h = Harness::start().await;
    create_pool(&h, 3, 3600).await;
    for ordinal in 0..2 {
        publish(&h.store, ordinal, 10, false).await;
    }
    publish(&h.store, 2, 5, false).await;

    let asked = Timestamp::now();
    scale(&h, 2).await;
    let mark = eventually("the drain mark of pod 2", || drain_mark(&h, 2)).await;
    assert!(
        mark.marked_at.0 >= asked.saturating_sub(SignedDuration::from_secs(1)).unwrap(),
        "{mark:?}"
    );
    let (pods, (status, reason, message)) = eventually("status.draining", || async {
        draining(&h).filter(|(pods, _)| !pods.is_empty())
    })
    .await;
    assert_eq!(pods, [pod(2)]);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "DrainingForScaleDown")
    );
    assert!(message.contains("media-media-2 (5 sessions"), "{message}");
    // The reconcile that wrote this status applied the StatefulSet: it kept pod 2.
    assert_eq!(statefulset_replicas(&h), Some(3));
    assert!(drain_mark(&h, 1).await.is_none(), "pod 1 stays");
    let event = eventually("a DrainingForScaleDown event", || async {
        events(&h, "DrainingForScaleDown").pop()
    })
    .await;
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("3 → 2 replicas: media-media-2 marked draining"),
        "{event}"
    );

    // The node sees its mark; its calls end one after the other.
    publish(&h.store, 2, 1, true).await;
    eventually("the condition to follow the calls", || async {
        draining(&h).filter(|(_, (_, _, message))| message.contains("(1 sessions"))
    })
    .await;
    assert_eq!(statefulset_replicas(&h), Some(3));
    publish(&h.store, 2, 0, true).await;
    statefulset_at(&h, 2).await;
    let event = eventually("a DrainedForScaleDown event", || async {
        events(&h, "DrainedForScaleDown").pop()
    })
    .await;
    assert_eq!(event["type"], "Normal");
    let (pods, _) = eventually("the drain over in status", || async {
        draining(&h).filter(|(_, (status, _, _))| status == "False")
    })
    .await;
    assert!(pods.is_empty());

    // The pod terminates, the node exits: its mark goes with it.
    assert!(
        drain_mark(&h, 2).await.is_some(),
        "a terminating pod keeps its mark"
    );
    exit(&h, 2).await;
    eventually("the drain mark removed", || async {
        drain_mark(&h, 2).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_drain_timeout_shrinks_the_statefulset_with_calls_left_and_warns() {
    let h = Harness::start().await;
    create_pool(&h, 2, 1).await;
    publish(&h.store, 0, 10, false).await;
    publish(&h.store, 1, 3, true).await;

    let asked = Instant::now();
    scale(&h, 1).await;
    eventually("the drain mark of pod 1", || drain_mark(&h, 1)).await;
    statefulset_at(&h, 1).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "released {:?} after the scale, before the 1 s drain timeout",
        asked.elapsed()
    );
    let event = eventually("a DrainTimeoutPassed event", || async {
        events(&h, "DrainTimeoutPassed").pop()
    })
    .await;
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("media-media-1 still had 3 sessions after 1 s")
            && note.contains("2 → 1 replicas"),
        "{note}"
    );
}

#[tokio::test]
async fn a_new_leader_counts_the_drain_timeout_from_the_mark_a_previous_one_wrote() {
    // What a previous leader left: the pool scaled 2 → 1, the StatefulSet held at 2, pod 1
    // marked two hours ago (the drain timeout is one hour) and still holding calls.
    let (fake, store) = (FakeApiServer::new(), MemoryStore::new());
    let pool: MediaPool = serde_json::from_value(json!({
        "apiVersion": "centrex.dev/v1alpha1",
        "kind": "MediaPool",
        "metadata": {"name": "media", "namespace": "default"},
        "spec": {"replicas": 1, "sessionsPerNode": 100, "drainTimeoutSeconds": 3600},
    }))
    .unwrap();
    let pool = fake.seed(&pool);
    fake.seed(&media::build(&pool, &support::config("previous"), 2).stateful_set);
    let long_ago = Timestamp::from_second(Timestamp::now().as_second() - 7200).unwrap();
    let mark = DrainMark {
        marked_at: MicroTime(long_ago),
    };
    store
        .put(
            &keys::media_drain("default", "media", &pod(1)),
            serde_json::to_vec(&mark).unwrap(),
            None,
        )
        .await
        .unwrap();

    publish(&store, 1, 3, true).await;

    let h = Harness::start_on(fake, store).await;
    statefulset_at(&h, 1).await;
    let event = eventually("a DrainTimeoutPassed event", || async {
        events(&h, "DrainTimeoutPassed").pop()
    })
    .await;
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("media-media-1 still had 3 sessions"),
        "{event}"
    );
    assert_eq!(
        drain_mark(&h, 1).await,
        Some(mark),
        "the mark is kept as it was while the pod terminates"
    );
}

#[tokio::test]
async fn scaling_back_up_withdraws_the_mark_and_keeps_the_pod() {
    let h = Harness::start().await;
    create_pool(&h, 3, 3600).await;
    publish(&h.store, 2, 5, true).await;
    scale(&h, 2).await;
    eventually("the drain mark of pod 2", || drain_mark(&h, 2)).await;
    eventually("status.draining", || async {
        draining(&h).filter(|(pods, _)| !pods.is_empty())
    })
    .await;

    scale(&h, 3).await;
    eventually("the drain mark removed", || async {
        drain_mark(&h, 2).await.is_none().then_some(())
    })
    .await;
    let (pods, _) = eventually("the drain over in status", || async {
        draining(&h).filter(|(_, (status, _, _))| status == "False")
    })
    .await;
    assert!(pods.is_empty());
    assert_eq!(statefulset_replicas(&h), Some(3));
    assert!(events(&h, "DrainedForScaleDown").is_empty());
}

#[tokio::test]
async fn pods_that_are_not_registered_go_at_once_unmarked() {
    let h = Harness::start().await;
    create_pool(&h, 3, 3600).await;
    publish(&h.store, 0, 10, false).await;
    scale(&h, 1).await;
    statefulset_at(&h, 1).await;
    let event = eventually("a DrainedForScaleDown event", || async {
        events(&h, "DrainedForScaleDown").pop()
    })
    .await;
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("media-media-2 is not registered; media-media-1 is not registered"),
        "{note}"
    );
    assert!(events(&h, "DrainingForScaleDown").is_empty());
    assert!(drain_mark(&h, 1).await.is_none() && drain_mark(&h, 2).await.is_none());
}
