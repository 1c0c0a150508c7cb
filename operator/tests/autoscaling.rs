//! MediaPool autoscaling against an in-memory Kubernetes API (kube-fake) and store: media nodes
//! publish their load, the leading operator scales the pool's `spec.replicas`.

mod support;

use std::time::{Duration, Instant};

use centrex_coord::media::{MediaNodeRegistration, PortRange};
use centrex_coord::{Store, keys};
use centrex_operator::crd::{AutoscalingStatus, MediaPool};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{Harness, eventually};

/// A pool of nodes of 100 sessions, aiming at 50% of each (50 sessions per node).
async fn create_pool(h: &Harness, name: &str, replicas: i32, autoscaling: Option<Value>) {
    let mut spec = json!({"replicas": replicas, "sessionsPerNode": 100});
    if let Some(autoscaling) = autoscaling {
        spec["autoscaling"] = autoscaling;
    }
    let pool: MediaPool = serde_json::from_value(json!({
        "apiVersion": "centrex.dev/v1alpha1",
        "kind": "MediaPool",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .unwrap();
    Api::<MediaPool>::default_namespaced(h.fake.client())
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
}

fn autoscaling(min: i32, max: i32, window_seconds: i32) -> Value {
    json!({
        "minReplicas": min,
        "maxReplicas": max,
        "targetUtilizationPercent": 50,
        "scaleDownStabilizationSeconds": window_seconds,
    })
}

/// What media node `node` of `pool` publishes (the media node writes it under its lease).
async fn publish_load(h: &Harness, pool: &str, node: &str, sessions: u32, draining: bool) {
    let registration = MediaNodeRegistration {
        node_id: node.into(),
        address: "127.0.0.1".parse().unwrap(),
        grpc_address: "127.0.0.1:9090".parse().unwrap(),
        rtp_ports: PortRange {
            min: 20000,
            max: 29999,
        },
        capacity: 100,
        active_sessions: sessions,
        packets_per_second: 50.0 * f64::from(sessions),
        draining,
    };
    h.store
        .put(
            &keys::media_node("default", pool, node),
            serde_json::to_vec(&registration).unwrap(),
            None,
        )
        .await
        .unwrap();
}

fn replicas(h: &Harness, pool: &str) -> i32 {
    h.fake
        .get::<MediaPool>("default", pool)
        .unwrap()
        .spec
        .replicas
}

fn autoscaling_status(h: &Harness, pool: &str) -> Option<AutoscalingStatus> {
    h.fake
        .get::<MediaPool>("default", pool)?
        .status?
        .autoscaling
}

/// Events of `reason` on MediaPool `pool`.
fn events(h: &Harness, pool: &str, reason: &str) -> Vec<Value> {
    h.fake
        .objects("events.k8s.io", "events")
        .into_iter()
        .filter(|e| e["reason"] == reason && e["regarding"]["name"] == pool)
        .collect()
}

#[tokio::test]
async fn high_load_scales_the_pool_up_to_max_replicas_with_an_event() {
    let h = Harness::start().await;
    // 320 sessions at 50 per node ask for 7 nodes; the pool may have 5.
    publish_load(&h, "media", "media-0", 160, false).await;
    publish_load(&h, "media", "media-1", 160, false).await;
    create_pool(&h, "media", 2, Some(autoscaling(1, 5, 300))).await;

    eventually("spec.replicas 5", || async {
        (replicas(&h, "media") == 5).then_some(())
    })
    .await;
    let status = eventually("status.autoscaling", || async {
        autoscaling_status(&h, "media").filter(|s| s.desired_replicas == 5)
    })
    .await;
    assert_eq!(
        (
            status.recommended_replicas,
            status.active_sessions,
            status.capacity,
            status.nodes
        ),
        (7, 320, 200, 2)
    );
    assert!(status.last_scale_time.is_some());
    let event = eventually("a ScaledUp event", || async {
        events(&h, "media", "ScaledUp").pop()
    })
    .await;
    assert_eq!(event["type"], "Normal");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("320 sessions on 2 nodes") && note.contains("2 → 5 replicas"),
        "{note}"
    );
    eventually("the StatefulSet follows", || async {
        let sts = h.fake.get::<StatefulSet>("default", "media-media")?;
        (sts.spec.replicas == Some(5)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replicas_are_written_once_by_the_operator_s_field_manager() {
    let h = Harness::start().await;
    publish_load(&h, "media", "media-0", 90, false).await;
    create_pool(&h, "media", 1, Some(autoscaling(1, 5, 300))).await;
    eventually("spec.replicas 2", || async {
        (replicas(&h, "media") == 2).then_some(())
    })
    .await;
    let patch = h
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/mediapools/media") && r.method == http::Method::PATCH)
        .expect("a PATCH of the MediaPool");
    assert_eq!(
        patch.param("fieldManager").as_deref(),
        Some("centrex-operator")
    );
    eventually("the next pass finds the pool steady", || async {
        autoscaling_status(&h, "media").filter(|s| s.reason == "Steady")
    })
    .await;
    let pool = h.fake.get::<MediaPool>("default", "media").unwrap();
    assert_eq!(
        pool.metadata.generation,
        Some(2),
        "one write of spec.replicas"
    );
    assert_eq!(events(&h, "media", "ScaledUp").len(), 1);
}

#[tokio::test]
async fn low_load_keeps_the_replicas_for_the_stabilisation_window_then_scales_down() {
    let h = Harness::start().await;
    for node in ["media-0", "media-1"] {
        publish_load(&h, "media", node, 100, false).await;
    }
    create_pool(&h, "media", 2, Some(autoscaling(1, 6, 2))).await;
    eventually("scaled up to 4", || async {
        (replicas(&h, "media") == 4).then_some(())
    })
    .await;

    // Calls end: 60 sessions ask for 2 nodes, but 4 were recommended a moment ago.
    let dropped = Instant::now();
    for node in ["media-0", "media-1"] {
        publish_load(&h, "media", node, 30, false).await;
    }
    let held = eventually("the scale-down held by the window", || async {
        autoscaling_status(&h, "media").filter(|s| s.recommended_replicas == 2)
    })
    .await;
    assert_eq!(
        (held.reason.as_str(), held.desired_replicas),
        ("ScaleDownStabilizing", 4)
    );
    assert_eq!(replicas(&h, "media"), 4);

    eventually("scaled down to 2", || async {
        (replicas(&h, "media") == 2).then_some(())
    })
    .await;
    assert!(
        dropped.elapsed() >= Duration::from_millis(1500),
        "scaled down {:?} after the load dropped, within the 2 s window",
        dropped.elapsed()
    );
    let event = eventually("a ScaledDown event", || async {
        events(&h, "media", "ScaledDown").pop()
    })
    .await;
    assert!(
        event["note"].as_str().unwrap().contains("4 → 2 replicas"),
        "{event}"
    );
}

#[tokio::test]
async fn a_draining_node_counts_its_sessions_but_not_its_capacity() {
    let h = Harness::start().await;
    publish_load(&h, "media", "media-0", 50, false).await;
    publish_load(&h, "media", "media-1", 50, false).await;
    publish_load(&h, "media", "media-2", 100, true).await;
    create_pool(&h, "media", 3, Some(autoscaling(1, 6, 300))).await;
    eventually("scaled up to 4", || async {
        (replicas(&h, "media") == 4).then_some(())
    })
    .await;
    let status = autoscaling_status(&h, "media").unwrap();
    assert_eq!(
        (
            status.active_sessions,
            status.capacity,
            status.draining_nodes
        ),
        (200, 200, 1)
    );
}

/// Waits until the autoscaler has passed over every pool at least once from now: the witness
/// pool's load changes and its status follows, twice.
async fn two_passes(h: &Harness, witness: &str, round: u32) {
    for step in 0..2 {
        let sessions = 10 + round * 2 + step;
        publish_load(h, witness, "witness-0", sessions, false).await;
        eventually("the witness pool decided again", || async {
            autoscaling_status(h, witness).filter(|s| s.active_sessions == i64::from(sessions))
        })
        .await;
    }
}

#[tokio::test]
async fn without_autoscaling_the_replicas_are_left_alone() {
    let h = Harness::start().await;
    create_pool(&h, "fixed", 2, None).await;
    create_pool(&h, "witness", 1, Some(autoscaling(1, 1, 0))).await;
    publish_load(&h, "fixed", "fixed-0", 100, false).await;
    publish_load(&h, "fixed", "fixed-1", 100, false).await;

    two_passes(&h, "witness", 0).await;
    assert_eq!(replicas(&h, "fixed"), 2);
    assert!(autoscaling_status(&h, "fixed").is_none());
    assert!(events(&h, "fixed", "ScaledUp").is_empty());
}

#[tokio::test]
async fn switching_autoscaling_off_clears_its_status_and_keeps_the_replicas() {
    let h = Harness::start().await;
    create_pool(&h, "media", 1, Some(autoscaling(1, 5, 0))).await;
    create_pool(&h, "witness", 1, Some(autoscaling(1, 1, 0))).await;
    publish_load(&h, "media", "media-0", 100, false).await;
    eventually("scaled up to 2", || async {
        (replicas(&h, "media") == 2).then_some(())
    })
    .await;

    Api::<MediaPool>::default_namespaced(h.fake.client())
        .patch(
            "media",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null}})),
        )
        .await
        .unwrap();
    eventually("status.autoscaling cleared", || async {
        autoscaling_status(&h, "media").is_none().then_some(())
    })
    .await;
    // The calls end; with a zero window an autoscaler would take the pool down to 1 at once.
    publish_load(&h, "media", "media-0", 0, false).await;
    two_passes(&h, "witness", 1).await;
    assert_eq!(replicas(&h, "media"), 2);
}
