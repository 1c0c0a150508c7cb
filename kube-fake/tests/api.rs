//! Request/response semantics through a real `kube::Client`: CRUD, selectors, subresources,
//! optimistic concurrency, patches, server-side apply, finalizers and garbage collection.

mod common;

use common::{api_error, config_map, deployment, owned_config_map};
use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResource, ResourceExt};
use kube_fake::FakeApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A custom resource with a status subresource, like the operator's CRDs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "test.example",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    size: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
struct WidgetStatus {
    ready: bool,
}

fn setup() -> (FakeApiServer, Client) {
    let fake = FakeApiServer::new();
    let client = fake.client();
    (fake, client)
}

fn names<K: ResourceExt>(items: impl IntoIterator<Item = K>) -> Vec<String> {
    items.into_iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn config_map_crud_and_selectors() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();

    let a = cms
        .create(
            &pp,
            &config_map(
                "a",
                json!({ "app": "web", "tier": "front" }),
                json!({ "k": "v" }),
            ),
        )
        .await?;
    cms.create(&pp, &config_map("b", json!({ "app": "db" }), json!({})))
        .await?;
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&pp, &config_map("c", json!({ "app": "web" }), json!({})))
        .await?;

    assert_eq!(a.namespace().as_deref(), Some("default"));
    assert!(a.uid().is_some() && a.creation_timestamp().is_some());
    assert_eq!(a.metadata.generation, Some(1));
    assert_eq!(cms.get("a").await?.data, a.data);
    assert_eq!(
        api_error(
            cms.create(&pp, &config_map("a", json!({}), json!({})))
                .await
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_error(cms.get("missing").await),
        (404, "NotFound".into())
    );

    let list = |selector: &str| {
        let cms = cms.clone();
        let lp = ListParams::default().labels(selector);
        async move { Ok::<_, kube::Error>(names(cms.list(&lp).await?)) }
    };
    assert_eq!(list("").await?, ["a", "b"]);
    assert_eq!(list("app=web,tier=front").await?, ["a"]);
    assert_eq!(list("app in (web, db)").await?, ["a", "b"]);
    assert_eq!(list("app!=web").await?, ["b"]);
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await?
        ),
        ["b"]
    );

    let all: Api<ConfigMap> = Api::all(client);
    let everything = all.list(&ListParams::default()).await?;
    assert_eq!(names(everything.items), ["a", "b", "c"]);
    assert_eq!(
        everything.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    let other = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await?;
    assert_eq!(names(other), ["c"]);

    // Pagination as the watcher's initial list does it.
    let page = cms.list(&ListParams::default().limit(1)).await?;
    assert_eq!(names(page.items), ["a"]);
    let token = page.metadata.continue_.expect("more pages");
    let rest = cms
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await?;
    assert_eq!(names(rest.items), ["b"]);
    assert_eq!(rest.metadata.continue_, None);

    let gone = cms.delete("a", &DeleteParams::default()).await?;
    assert!(gone.is_right(), "immediate deletion answers with a Status");
    assert_eq!(api_error(cms.get("a").await), (404, "NotFound".into()));
    assert_eq!(names(fake.list::<ConfigMap>()), ["b", "c"]);
    Ok(())
}

#[tokio::test]
async fn deployment_generation_tracks_spec_only() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let mut web = deployment("web", 1);
    web.status = Some(serde_json::from_value(json!({ "replicas": 5 }))?);
    let created = deploys.create(&PostParams::default(), &web).await?;
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.status, None,
        "status is a subresource: ignored on create"
    );

    let pp = PatchParams::default();
    let labelled = deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await?;
    assert_eq!(labelled.metadata.generation, Some(1));
    assert_ne!(labelled.resource_version(), created.resource_version());

    let scaled = deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await?;
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(
        fake.get::<Deployment>("default", "web")
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );
    Ok(())
}

#[tokio::test]
async fn status_subresource_is_isolated() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let created = deploys
        .create(&PostParams::default(), &deployment("web", 1))
        .await?;
    let pp = PatchParams::default();

    // Status through the main resource is ignored: a no-op that bumps nothing.
    let ignored = deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({ "status": { "replicas": 7 } })),
        )
        .await?;
    assert_eq!(ignored.status, None);
    assert_eq!(ignored.resource_version(), created.resource_version());

    // Spec through the status subresource is ignored; status lands; generation stays.
    fake.clear_requests();
    let patch = json!({ "spec": { "replicas": 9 }, "status": { "readyReplicas": 2 } });
    let updated = deploys
        .patch_status("web", &pp, &Patch::Merge(patch))
        .await?;
    assert_eq!(
        updated.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2)
    );
    assert_eq!(updated.spec.replicas, Some(1));
    assert_eq!(updated.metadata.generation, Some(1));
    assert_ne!(updated.resource_version(), created.resource_version());

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::PATCH);
    assert_eq!(
        requests[0].path,
        "/apis/apps/v1/namespaces/default/deployments/web/status"
    );
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );

    // PUT /status with a stale object only carries its status over.
    let mut replaced = updated.clone();
    replaced.status.as_mut().unwrap().ready_replicas = Some(3);
    replaced.spec.replicas = Some(4);
    let replaced = deploys
        .replace_status("web", &PostParams::default(), &replaced)
        .await?;
    assert_eq!(replaced.status.and_then(|s| s.ready_replicas), Some(3));
    assert_eq!(replaced.spec.replicas, Some(1));
    Ok(())
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    deploys
        .create(&PostParams::default(), &deployment("web", 2))
        .await?;
    let scale = deploys.get_scale("web").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );

    let patch = Patch::Merge(json!({ "spec": { "replicas": 5 } }));
    let scaled = deploys
        .patch_scale("web", &PatchParams::default(), &patch)
        .await?;
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(5));
    let web = deploys.get("web").await?;
    assert_eq!(web.spec.replicas, Some(5));
    assert_eq!(web.metadata.generation, Some(2));
    Ok(())
}

#[tokio::test]
async fn stale_replace_conflicts() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let original = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({}), json!({ "k": "1" })),
        )
        .await?;
    let pp = PostParams::default();

    let mut fresh = original.clone();
    fresh.data = Some([("k".to_owned(), "2".to_owned())].into());
    let fresh = cms.replace("a", &pp, &fresh).await?;

    let mut stale = original.clone();
    stale.data = Some([("k".to_owned(), "3".to_owned())].into());
    assert_eq!(
        api_error(cms.replace("a", &pp, &stale).await),
        (409, "Conflict".into())
    );

    // A patch pinning a stale resourceVersion conflicts too; an unpinned replace does not.
    let pinned = json!({ "metadata": { "resourceVersion": original.resource_version() }, "data": { "k": "4" } });
    assert_eq!(
        api_error(
            cms.patch("a", &PatchParams::default(), &Patch::Merge(pinned))
                .await
        )
        .0,
        409
    );
    stale.metadata.resource_version = None;
    let unconditional = cms.replace("a", &pp, &stale).await?;
    assert_eq!(unconditional.data, stale.data);
    assert!(
        unconditional.resource_version().unwrap().parse::<u64>()?
            > fresh.resource_version().unwrap().parse()?
    );
    Ok(())
}

#[tokio::test]
async fn json_patches_and_no_op_writes() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({}), json!({ "k": "1" })),
    )
    .await?;
    let pp = PatchParams::default();

    let ops: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": "/data/k", "value": "1" },
        { "op": "add", "path": "/data/n", "value": "2" },
    ]))?;
    let patched = cms.patch("a", &pp, &Patch::Json::<()>(ops)).await?;
    assert_eq!(patched.data.as_ref().unwrap()["n"], "2");

    let failing: json_patch::Patch =
        serde_json::from_value(json!([{ "op": "test", "path": "/data/k", "value": "0" }]))?;
    assert_eq!(
        api_error(cms.patch("a", &pp, &Patch::Json::<()>(failing)).await),
        (422, "Invalid".into())
    );

    let merge = Patch::Merge(json!({ "data": { "k": "2" } }));
    let first = cms.patch("a", &pp, &merge).await?;
    let again = cms.patch("a", &pp, &merge).await?;
    assert_eq!(
        again.resource_version(),
        first.resource_version(),
        "an unchanged object is not rewritten"
    );
    Ok(())
}

#[tokio::test]
async fn injected_failures_hit_the_next_matching_request_only() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let created = cms
        .create(
            &PostParams::default(),
            &config_map("a", json!({}), json!({})),
        )
        .await?;

    fake.fail_next(Method::PUT, "/api/v1/namespaces/default/configmaps/a", 409);
    fake.fail_next(Method::GET, "/api/v1/namespaces/default/configmaps/a", 500);
    assert_eq!(
        api_error(cms.replace("a", &PostParams::default(), &created).await),
        (409, "Conflict".into())
    );
    assert_eq!(api_error(cms.get("a").await), (500, "InternalError".into()));
    cms.replace("a", &PostParams::default(), &created).await?;
    cms.get("a").await?;
    Ok(())
}

#[tokio::test]
async fn metadata_only_requests() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(
        &PostParams::default(),
        &config_map("a", json!({ "app": "web" }), json!({ "k": "v" })),
    )
    .await?;
    let meta = cms.get_metadata("a").await?;
    assert_eq!(meta.labels()["app"], "web");
    let list = cms.list_metadata(&ListParams::default()).await?;
    assert_eq!(names(list.items), ["a"]);
    Ok(())
}

#[tokio::test]
async fn server_side_apply_prunes_merges_and_detects_conflicts() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let apply = |manager: &str, force: bool, data: serde_json::Value| {
        let cms = cms.clone();
        let mut params = PatchParams::apply(manager);
        params.force = force;
        let config = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a" }, "data": data });
        async move { cms.patch("a", &params, &Patch::Apply(config)).await }
    };
    let data = |cm: &ConfigMap| serde_json::to_value(&cm.data).unwrap();

    let created = apply("op", false, json!({ "a": "1", "b": "2" })).await?;
    assert_eq!(data(&created), json!({ "a": "1", "b": "2" }));
    let managed = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(
        (
            managed[0].manager.as_deref(),
            managed[0].operation.as_deref()
        ),
        (Some("op"), Some("Apply"))
    );

    // Re-applying without a field removes it.
    let pruned = apply("op", false, json!({ "a": "1" })).await?;
    assert_eq!(data(&pruned), json!({ "a": "1" }));

    // Another manager's fields merge in and survive the first manager's applies.
    apply("other", false, json!({ "c": "3" })).await?;
    let merged = apply("op", false, json!({ "a": "10" })).await?;
    assert_eq!(data(&merged), json!({ "a": "10", "c": "3" }));
    assert_eq!(merged.metadata.managed_fields.map(|m| m.len()), Some(2));

    // Taking over another manager's field with a different value needs force.
    assert_eq!(
        api_error(apply("op", false, json!({ "a": "10", "c": "x" })).await),
        (409, "Conflict".into())
    );
    let forced = apply("op", true, json!({ "a": "10", "c": "x" })).await?;
    assert_eq!(data(&forced), json!({ "a": "10", "c": "x" }));
    // ... after which the loser no longer prunes it.
    let after = apply("other", false, json!({})).await?;
    assert_eq!(data(&after), json!({ "a": "10", "c": "x" }));

    // Same config again: nothing changes, not even the resourceVersion.
    let before = fake.resource_version();
    apply("op", false, json!({ "a": "10", "c": "x" })).await?;
    assert_eq!(fake.resource_version(), before);

    let no_manager = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Apply(json!({ "data": {} })),
        )
        .await;
    assert_eq!(api_error(no_manager).0, 400);
    Ok(())
}

#[tokio::test]
async fn a_field_removed_by_an_update_is_no_longer_owned_by_its_applier() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let config = |value: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a" }, "data": { "holder": value } });
    cms.patch(
        "a",
        &PatchParams::apply("first"),
        &Patch::Apply(config("first")),
    )
    .await?;

    // An update (not an apply) by the first manager clears the field, as a lease release does.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "holder": null } })),
    )
    .await?;

    // The second manager may now apply the field without force: nobody owns it any more.
    let taken = cms
        .patch(
            "a",
            &PatchParams::apply("second"),
            &Patch::Apply(config("second")),
        )
        .await?;
    assert_eq!(taken.data.unwrap()["holder"], "second");
    Ok(())
}

#[tokio::test]
async fn server_side_apply_of_status() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let deploys: Api<Deployment> = Api::default_namespaced(client);
    let params = PatchParams::apply("op");
    deploys
        .patch("web", &params, &Patch::Apply(deployment("web", 2)))
        .await?;
    let status = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "status": { "replicas": 2, "readyReplicas": 1 } });
    let updated = deploys
        .patch_status("web", &params, &Patch::Apply(status))
        .await?;
    assert_eq!(
        updated.status.as_ref().and_then(|s| s.ready_replicas),
        Some(1)
    );
    assert_eq!(updated.metadata.generation, Some(1));

    // The main-resource apply owns no status, so re-applying it leaves status alone.
    let reapplied = deploys
        .patch("web", &params, &Patch::Apply(deployment("web", 3)))
        .await?;
    assert_eq!(reapplied.status.and_then(|s| s.ready_replicas), Some(1));
    assert_eq!(reapplied.metadata.generation, Some(2));
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
    );
    assert_eq!(requests[1].param("fieldManager").as_deref(), Some("op"));
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() -> anyhow::Result<()> {
    let (_fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let held = cms
        .create(
            &PostParams::default(),
            &owned_config_map("a", &[], &["example.com/hold"]),
        )
        .await?;

    let pending = cms
        .delete("a", &DeleteParams::default())
        .await?
        .left()
        .expect("a finalizer holds the deletion");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = cms.get("a").await?;
    assert_eq!(
        still.metadata.deletion_timestamp,
        pending.metadata.deletion_timestamp
    );
    assert_eq!(still.uid(), held.uid());

    // Deleting again changes nothing; dropping the last finalizer completes the deletion.
    assert!(cms.delete("a", &DeleteParams::default()).await?.is_left());
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await?;
    assert_eq!(api_error(cms.get("a").await).0, 404);
    Ok(())
}

#[tokio::test]
async fn owner_references_are_garbage_collected() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pp = PostParams::default();
    let parent = cms
        .create(&pp, &config_map("parent", json!({}), json!({})))
        .await?;
    let keeper = cms
        .create(&pp, &config_map("keeper", json!({}), json!({})))
        .await?;
    let (parent_uid, keeper_uid) = (parent.uid().unwrap(), keeper.uid().unwrap());
    let child = cms
        .create(&pp, &owned_config_map("child", &[&parent_uid], &[]))
        .await?;
    cms.create(
        &pp,
        &owned_config_map("grandchild", &[&child.uid().unwrap()], &[]),
    )
    .await?;
    cms.create(
        &pp,
        &owned_config_map("held", &[&parent_uid], &["example.com/hold"]),
    )
    .await?;
    cms.create(
        &pp,
        &owned_config_map("shared", &[&parent_uid, &keeper_uid], &[]),
    )
    .await?;

    cms.delete("parent", &DeleteParams::background()).await?;
    assert_eq!(
        names(fake.list::<ConfigMap>()),
        ["held", "keeper", "shared"]
    );
    assert!(cms.get("held").await?.metadata.deletion_timestamp.is_some());
    let shared = cms.get("shared").await?;
    assert_eq!(
        shared
            .owner_references()
            .iter()
            .map(|r| r.uid.clone())
            .collect::<Vec<_>>(),
        [keeper_uid]
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": [] } })),
    )
    .await?;
    assert_eq!(names(fake.list::<ConfigMap>()), ["keeper", "shared"]);

    // Deleting a namespace takes its contents along.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &pp,
            &serde_json::from_value(json!({ "metadata": { "name": "tmp" } }))?,
        )
        .await?;
    Api::<ConfigMap>::namespaced(client, "tmp")
        .create(&pp, &config_map("x", json!({}), json!({})))
        .await?;
    namespaces.delete("tmp", &DeleteParams::default()).await?;
    assert_eq!(names(fake.list::<ConfigMap>()), ["keeper", "shared"]);
    Ok(())
}

#[tokio::test]
async fn delete_collection_and_seeding() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let mut seeded = config_map("seeded", json!({ "app": "web" }), json!({}));
    seeded.metadata.namespace = Some("default".into());
    let seeded = fake.seed(&seeded);
    assert_eq!(seeded.metadata.generation, Some(1));
    assert!(fake.requests().is_empty(), "seeding bypasses HTTP");

    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(
        &PostParams::default(),
        &config_map("db", json!({ "app": "db" }), json!({})),
    )
    .await?;
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await?;
    assert_eq!(
        deleted.left().map(|l| names(l.items)),
        Some(vec!["seeded".to_owned()])
    );
    assert_eq!(names(fake.list::<ConfigMap>()), ["db"]);
    assert_eq!(
        fake.object("", "configmaps", "default", "db").unwrap()["metadata"]["labels"]["app"],
        "db"
    );
    Ok(())
}

#[tokio::test]
async fn custom_resource_apply_with_status() -> anyhow::Result<()> {
    let (fake, client) = setup();
    let widgets: Api<Widget> = Api::default_namespaced(client);
    let params = PatchParams::apply("op");
    let apply = |size| Patch::Apply(Widget::new("w", WidgetSpec { size }));
    let created = widgets.patch("w", &params, &apply(1)).await?;
    assert_eq!(created.metadata.generation, Some(1));

    let status =
        json!({ "apiVersion": "test.example/v1", "kind": "Widget", "status": { "ready": true } });
    widgets
        .patch_status("w", &params, &Patch::Apply(status))
        .await?;
    let resized = widgets.patch("w", &params, &apply(2)).await?;
    assert_eq!(resized.spec.size, 2);
    assert_eq!(resized.status, Some(WidgetStatus { ready: true }));
    assert_eq!(resized.metadata.generation, Some(2));

    let paths: Vec<String> = fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths[1],
        "/apis/test.example/v1/namespaces/default/widgets/w/status"
    );
    assert_eq!(fake.list::<Widget>().len(), 1);
    Ok(())
}
