//! Watches, kube's watcher (including 410 recovery) and a full `Controller` over the fake.

mod common;

use std::sync::Arc;

use common::{DEADLINE, config_map, next};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use kube_fake::FakeApiServer;
use serde_json::json;
use tokio::sync::mpsc;

fn setup() -> (FakeApiServer, Api<ConfigMap>) {
    let fake = FakeApiServer::new();
    let cms = Api::default_namespaced(fake.client());
    (fake, cms)
}

fn labels_patch(labels: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "metadata": { "labels": labels } }))
}

/// The event type and object name of a raw watch event.
fn describe(event: WatchEvent<ConfigMap>) -> (&'static str, String) {
    match event {
        WatchEvent::Added(o) => ("ADDED", o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED", o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED", o.name_any()),
        WatchEvent::Bookmark(_) => ("BOOKMARK", String::new()),
        WatchEvent::Error(e) => ("ERROR", e.reason),
    }
}

#[tokio::test]
async fn raw_watch_replays_and_follows_a_label_selection() -> anyhow::Result<()> {
    let (_fake, cms) = setup();
    let pp = PostParams::default();
    let rv = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap();
    cms.create(&pp, &config_map("a", json!({ "app": "web" }), json!({})))
        .await?;
    cms.create(&pp, &config_map("other", json!({ "app": "db" }), json!({})))
        .await?;

    // Started after the writes, from an older version: the backlog is replayed first.
    let mut events = cms
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await?
        .boxed();
    assert_eq!(describe(next(&mut events).await?), ("ADDED", "a".into()));

    let patch = PatchParams::default();
    cms.patch("a", &patch, &labels_patch(json!({ "v": "2" })))
        .await?;
    assert_eq!(describe(next(&mut events).await?), ("MODIFIED", "a".into()));
    // Leaving and entering the selection look like deletion and creation.
    cms.patch("a", &patch, &labels_patch(json!({ "app": "db" })))
        .await?;
    assert_eq!(describe(next(&mut events).await?), ("DELETED", "a".into()));
    cms.patch("other", &patch, &labels_patch(json!({ "app": "web" })))
        .await?;
    assert_eq!(
        describe(next(&mut events).await?),
        ("ADDED", "other".into())
    );
    cms.delete("other", &DeleteParams::default()).await?;
    assert_eq!(
        describe(next(&mut events).await?),
        ("DELETED", "other".into())
    );
    Ok(())
}

#[tokio::test]
async fn watch_ends_after_its_timeout() -> anyhow::Result<()> {
    let (fake, cms) = setup();
    let rv = fake.resource_version().to_string();
    let events = cms.watch(&WatchParams::default().timeout(1), &rv).await?;
    let drained: Vec<_> = tokio::time::timeout(DEADLINE, events.collect()).await?;
    assert!(drained.is_empty());
    Ok(())
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() -> anyhow::Result<()> {
    let (_fake, cms) = setup();
    cms.create(
        &PostParams::default(),
        &config_map("before", json!({}), json!({})),
    )
    .await?;
    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await?, Event::Init));
    assert!(matches!(next(&mut events).await?, Event::InitApply(cm) if cm.name_any() == "before"));
    assert!(matches!(next(&mut events).await?, Event::InitDone));

    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({ "k": "1" })),
    )
    .await?;
    let Event::Apply(added) = next(&mut events).await? else {
        panic!("expected Apply for ADDED")
    };
    assert_eq!(added.name_any(), "a");

    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "2" } })),
    )
    .await?;
    let Event::Apply(modified) = next(&mut events).await? else {
        panic!("expected Apply for MODIFIED")
    };
    assert_eq!(modified.data.unwrap()["k"], "2");

    cms.delete("a", &DeleteParams::default()).await?;
    let Event::Delete(deleted) = next(&mut events).await? else {
        panic!("expected Delete")
    };
    assert_eq!(deleted.name_any(), "a");
    Ok(())
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410_and_watcher_relists() -> anyhow::Result<()> {
    let (fake, cms) = setup();
    let old = fake.resource_version().to_string();
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({})),
    )
    .await?;

    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await?, Event::Init));
    assert!(matches!(next(&mut events).await?, Event::InitApply(_)));
    assert!(matches!(next(&mut events).await?, Event::InitDone));

    // The watcher starts its watch on the next poll, from the listed version: change and
    // compact in between so that version is gone.
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({}), json!({})),
    )
    .await?;
    fake.compact();

    let mut raw = cms.watch(&WatchParams::default(), &old).await?.boxed();
    let WatchEvent::Error(status) = next(&mut raw).await? else {
        panic!("expected an ERROR event")
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));

    let error = next(&mut events)
        .await
        .expect_err("the watch from a compacted version fails");
    assert!(
        matches!(error, watcher::Error::WatchError(ref s) if s.code == 410),
        "{error:?}"
    );
    assert!(matches!(next(&mut events).await?, Event::Init));
    let mut relisted = Vec::new();
    while let Event::InitApply(cm) = next(&mut events).await? {
        relisted.push(cm.name_any());
    }
    assert_eq!(relisted, ["a", "b"]);

    // Back to normal watching.
    cms.delete("a", &DeleteParams::default()).await?;
    assert!(matches!(next(&mut events).await?, Event::Delete(cm) if cm.name_any() == "a"));
    Ok(())
}

#[tokio::test]
async fn watcher_resumes_after_disconnect() -> anyhow::Result<()> {
    let (fake, cms) = setup();
    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await?, Event::Init));
    assert!(matches!(next(&mut events).await?, Event::InitDone));
    // Polling after InitDone opens the watch; create while it is open.
    let (pp, a) = (PostParams::default(), config_map("a", json!({}), json!({})));
    let (event, created) = tokio::join!(next(&mut events), cms.create(&pp, &a));
    created?;
    assert!(matches!(event?, Event::Apply(cm) if cm.name_any() == "a"));

    fake.disconnect_watches();
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({}), json!({})),
    )
    .await?;
    assert!(matches!(next(&mut events).await?, Event::Apply(cm) if cm.name_any() == "b"));
    let gets: Vec<bool> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.is_watch())
        .collect();
    assert_eq!(gets, [false, true, true], "one list, then a resumed watch");
    Ok(())
}

#[tokio::test]
async fn streaming_list_and_metadata_watchers() -> anyhow::Result<()> {
    let (fake, cms) = setup();
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({})),
    )
    .await?;

    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher::watcher(cms.clone(), config).boxed();
    assert!(matches!(next(&mut events).await?, Event::Init));
    assert!(matches!(next(&mut events).await?, Event::InitApply(cm) if cm.name_any() == "a"));
    assert!(matches!(next(&mut events).await?, Event::InitDone));
    let gets = fake.requests().into_iter().filter(|r| r.method == "GET");
    assert!(
        gets.into_iter().all(|r| r.is_watch()),
        "streaming lists never list"
    );

    let metadata: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(fake.client());
    let mut metas = watcher::watcher(metadata, watcher::Config::default())
        .applied_objects()
        .boxed();
    assert_eq!(next(&mut metas).await?.name_any(), "a");
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({}), json!({})),
    )
    .await?;
    assert_eq!(next(&mut metas).await?.name_any(), "b");
    assert!(matches!(next(&mut events).await?, Event::Apply(cm) if cm.name_any() == "b"));
    Ok(())
}

#[tokio::test]
async fn controller_reconciles_once_per_change() -> anyhow::Result<()> {
    let fake = FakeApiServer::new();
    let client: Client = fake.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let (seen, mut reconciled) = mpsc::unbounded_channel::<(String, String)>();

    async fn reconcile(
        cm: Arc<ConfigMap>,
        seen: Arc<mpsc::UnboundedSender<(String, String)>>,
    ) -> Result<Action, kube::Error> {
        let _ = seen.send((cm.name_any(), cm.resource_version().unwrap_or_default()));
        Ok(Action::await_change())
    }
    fn error_policy(
        _: Arc<ConfigMap>,
        _: &kube::Error,
        _: Arc<mpsc::UnboundedSender<(String, String)>>,
    ) -> Action {
        Action::await_change()
    }
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(seen))
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let mut expect = async |name: &str, rv: Option<String>| {
        let (got, got_rv) = tokio::time::timeout(DEADLINE, reconciled.recv())
            .await
            .expect("reconciled in time")
            .unwrap();
        assert_eq!((got.as_str(), Some(got_rv)), (name, rv));
    };
    let created = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({}), json!({ "k": "1" })),
        )
        .await?;
    expect("a", created.resource_version()).await;

    let patch = Patch::Merge(json!({ "data": { "k": "2" } }));
    let changed = cms.patch("a", &PatchParams::default(), &patch).await?;
    expect("a", changed.resource_version()).await;

    // A no-op write emits no event, so the next reconcile is for the next real change.
    cms.patch("a", &PatchParams::default(), &patch).await?;
    let other = cms
        .create(
            &PostParams::default(),
            &config_map("b", json!({}), json!({})),
        )
        .await?;
    expect("b", other.resource_version()).await;
    assert!(reconciled.try_recv().is_err(), "no extra reconciles");
    controller.abort();
    Ok(())
}

#[tokio::test]
async fn controller_with_kube_finalizer_helper_cleans_up_before_deletion() -> anyhow::Result<()> {
    const FINALIZER: &str = "example.com/cleanup";
    struct Context {
        api: Api<ConfigMap>,
        seen: mpsc::UnboundedSender<String>,
    }
    async fn reconcile(
        cm: Arc<ConfigMap>,
        ctx: Arc<Context>,
    ) -> Result<Action, finalizer::Error<kube::Error>> {
        finalizer(&ctx.api, FINALIZER, cm, |event| async {
            let seen = match event {
                finalizer::Event::Apply(cm) => format!("apply {}", cm.name_any()),
                finalizer::Event::Cleanup(cm) => format!("cleanup {}", cm.name_any()),
            };
            let _ = ctx.seen.send(seen);
            Ok(Action::await_change())
        })
        .await
    }
    fn error_policy(
        _: Arc<ConfigMap>,
        _: &finalizer::Error<kube::Error>,
        _: Arc<Context>,
    ) -> Action {
        Action::await_change()
    }

    let fake = FakeApiServer::new();
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let (seen, mut reconciled) = mpsc::unbounded_channel();
    let context = Arc::new(Context {
        api: cms.clone(),
        seen,
    });
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);
    let mut expect = async |what: &str| {
        let got = tokio::time::timeout(DEADLINE, reconciled.recv())
            .await
            .expect("reconciled in time");
        assert_eq!(got.as_deref(), Some(what));
    };

    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({})),
    )
    .await?;
    expect("apply a").await;
    assert_eq!(
        fake.get::<ConfigMap>("default", "a").unwrap().finalizers(),
        [FINALIZER]
    );

    cms.delete("a", &DeleteParams::default()).await?;
    expect("cleanup a").await;
    tokio::time::timeout(DEADLINE, async {
        while fake.get::<ConfigMap>("default", "a").is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await?;
    controller.abort();
    Ok(())
}
