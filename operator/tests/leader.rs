//! Leader election on a Lease: one replica reconciles; when it stops, the other takes over.

mod support;

use std::sync::Arc;
use std::time::Duration;

use centrex_coord::store::MemoryStore;
use centrex_operator::context::Context;
use centrex_operator::crd::MediaPool;
use centrex_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use kube_fake::FakeApiServer;
use support::{config, eventually};
use tokio::sync::oneshot;

struct Replica {
    metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn replica(fake: &FakeApiServer, store: &MemoryStore, identity: &str) -> Replica {
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        fake.client(),
        Arc::new(store.clone()),
        config(identity),
        metrics.clone(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(centrex_operator::run::lead(
        ctx,
        fake.client(),
        async move {
            let _ = stopped.await;
        },
    ));
    Replica {
        metrics,
        stop,
        task,
    }
}

fn leads(replica: &Replica) -> bool {
    replica
        .metrics
        .render()
        .lines()
        .any(|line| line == "centrex_operator_leader 1")
}

fn media_pool(name: &str) -> MediaPool {
    let yaml = format!(
        "apiVersion: centrex.dev/v1alpha1\nkind: MediaPool\nmetadata: {{name: {name}, namespace: default}}\nspec: {{}}\n"
    );
    let mut manifests = centrex_operator::manifests::Manifests::default();
    manifests
        .add_yaml(std::path::Path::new("pool.yaml"), &yaml)
        .unwrap();
    manifests.media_pools.remove(0)
}

#[tokio::test]
async fn the_second_replica_takes_over_when_the_leader_stops() {
    let fake = FakeApiServer::new();
    let store = MemoryStore::new();
    let first = replica(&fake, &store, "operator-a");
    eventually("operator-a leads", || async { leads(&first).then_some(()) }).await;
    let second = replica(&fake, &store, "operator-b");

    let pools: Api<MediaPool> = Api::default_namespaced(fake.client());
    pools
        .create(&PostParams::default(), &media_pool("one"))
        .await
        .unwrap();
    eventually("the leader reconciles", || async {
        fake.get::<StatefulSet>("default", "one-media")
    })
    .await;
    assert!(!leads(&second), "only one replica may lead");

    let _ = first.stop.send(());
    first.task.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        eventually("operator-b leads", || async {
            leads(&second).then_some(())
        })
        .await
    })
    .await
    .expect("take-over within the lease duration and its grace");
    let lease: Lease = fake.get("default", "centrex-operator").expect("the Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("operator-b")
    );

    pools
        .create(&PostParams::default(), &media_pool("two"))
        .await
        .unwrap();
    eventually("the new leader reconciles", || async {
        fake.get::<StatefulSet>("default", "two-media")
    })
    .await;
    let _ = second.stop.send(());
}
