//! The real controllers against an in-memory Kubernetes API (kube-fake) and store: what an SRE
//! sees after `kubectl apply`, edits, mistakes and deletions.

mod support;

use centrex_coord::snapshot::TenantSnapshot;
use centrex_coord::trunk::TrunkRegistrationState;
use centrex_coord::{Store, keys};
use centrex_operator::conditions::{ConditionType, is_true};
use centrex_operator::crd::{MediaPool, SignallingPool, Tenant, Trunk};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::{Harness, eventually};

fn condition(tenant: &Tenant, type_: ConditionType) -> Option<(String, String, String)> {
    let status = tenant.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn ready_tenant(h: &Harness, name: &str) -> Tenant {
    eventually("tenant Ready", || async {
        let tenant = h.fake.get::<Tenant>("default", name)?;
        let status = tenant.status.as_ref()?;
        (is_true(&status.conditions, ConditionType::Ready)
            && status.observed_generation == tenant.metadata.generation)
            .then_some(tenant)
    })
    .await
}

async fn snapshot(h: &Harness, name: &str) -> Option<(TenantSnapshot, i64)> {
    let kv = h.store.get(&keys::tenant("default", name)).await.unwrap()?;
    Some((serde_json::from_slice(&kv.value).unwrap(), kv.mod_revision))
}

#[tokio::test]
async fn applying_the_examples_creates_the_pools_and_serves_the_tenant() {
    let h = Harness::start().await;
    h.apply_examples().await;

    let tenant = ready_tenant(&h, "acme").await;
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.users, 3);
    assert_eq!(condition(&tenant, ConditionType::Valid).unwrap().0, "True");
    let (snap, revision) = snapshot(&h, "acme").await.expect("snapshot published");
    assert_eq!(status.snapshot_revision, Some(revision));
    assert_eq!(snap.domain, "acme.example.com");
    assert_eq!(snap.numbers[0].trunk, "carrier");
    assert!(
        tenant
            .finalizers()
            .contains(&"centrex.dev/snapshot".to_string())
    );

    let sts: StatefulSet = eventually("media StatefulSet", || async {
        h.fake.get("default", "default-media")
    })
    .await;
    let media_pool = h.fake.get::<MediaPool>("default", "default").unwrap();
    assert_eq!(
        sts.metadata.owner_references.unwrap()[0].uid,
        media_pool.metadata.uid.unwrap()
    );
    let pod = sts.spec.template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(3600 + 10));
    assert!(
        pod.containers[0]
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .is_some()
    );
    assert!(h.fake.get::<Service>("default", "default-media").is_some());
    assert!(
        h.fake
            .get::<PodDisruptionBudget>("default", "default-media")
            .is_some()
    );

    let deployment: Deployment = eventually("signalling Deployment", || async {
        h.fake.get("default", "default-signalling")
    })
    .await;
    assert_eq!(deployment.spec.replicas, Some(2));
    let signalling_pod = deployment.spec.template.spec.unwrap();
    let pre_stop = signalling_pod.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    assert_eq!(
        pre_stop,
        Some(vec!["centrex".into(), "signalling".into(), "drain".into()]),
        "signalling pods drain their calls before SIGTERM"
    );
    let args = signalling_pod.containers[0].args.clone().unwrap();
    assert!(
        args.contains(&"--digest-algorithms=SHA-256,MD5".to_string()),
        "{args:?}"
    );
    let sip: Service = eventually("SIP Service", || async {
        h.fake.get("default", "default-sip")
    })
    .await;
    let protocols: Vec<_> = sip
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| p.protocol.unwrap())
        .collect();
    assert_eq!(protocols, ["UDP", "TCP"]);
    assert!(
        h.fake
            .get::<PodDisruptionBudget>("default", "default-signalling")
            .is_some()
    );

    let trunk = eventually("trunk Ready", || async {
        let trunk = h.fake.get::<Trunk>("default", "carrier")?;
        is_true(&trunk.status.as_ref()?.conditions, ConditionType::Ready).then_some(trunk)
    })
    .await;
    assert!(trunk.status.unwrap().snapshot_revision.is_some());
}

#[tokio::test]
async fn editing_a_tenant_publishes_a_new_revision() {
    let h = Harness::start().await;
    h.apply_examples().await;
    let before = ready_tenant(&h, "acme")
        .await
        .status
        .unwrap()
        .snapshot_revision
        .unwrap();

    let api: Api<Tenant> = Api::default_namespaced(h.fake.client());
    let dave = json!({"extension": "103", "passwordSecretRef": {"name": "acme-sip-passwords", "key": "carol"}, "maxCalls": 2, "callerId": "extension"});
    let patch = json!([{"op": "add", "path": "/spec/users/-", "value": dave}]);
    api.patch(
        "acme",
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(patch).unwrap()),
    )
    .await
    .unwrap();

    let tenant = eventually("generation 2 served", || async {
        let t = ready_tenant(&h, "acme").await;
        (t.status.as_ref()?.users == 4).then_some(t)
    })
    .await;
    let (snap, revision) = snapshot(&h, "acme").await.unwrap();
    assert!(revision > before);
    assert_eq!(snap.source.generation, 2);
    assert_eq!(tenant.status.unwrap().snapshot_revision, Some(revision));
}

#[tokio::test]
async fn an_invalid_edit_is_reported_and_the_previous_snapshot_keeps_serving() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;
    let (_, served) = snapshot(&h, "acme").await.unwrap();

    let api: Api<Tenant> = Api::default_namespaced(h.fake.client());
    api.patch(
        "acme",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"mediaPoolRef": "missing"}})),
    )
    .await
    .unwrap();

    let tenant = eventually("Valid=False", || async {
        let t = h.fake.get::<Tenant>("default", "acme")?;
        (condition(&t, ConditionType::Valid)?.0 == "False").then_some(t)
    })
    .await;
    let (_, reason, message) = condition(&tenant, ConditionType::Valid).unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.mediaPoolRef: MediaPool \"missing\" not found"),
        "{message}"
    );
    let (ready, reason, _) = condition(&tenant, ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("True", "ServingPreviousGeneration")
    );

    let (snap, revision) = snapshot(&h, "acme").await.unwrap();
    assert_eq!(
        (snap.source.generation, revision),
        (1, served),
        "the last good snapshot must stay in service"
    );

    let events = eventually("a Warning event", || async {
        let events = h.fake.objects("events.k8s.io", "events");
        events
            .iter()
            .any(|e| e["reason"] == "InvalidSpec")
            .then_some(events)
    })
    .await;
    let warning = events
        .iter()
        .find(|e| e["reason"] == "InvalidSpec")
        .unwrap();
    assert_eq!(warning["type"], "Warning");
    assert!(
        warning["note"]
            .as_str()
            .unwrap()
            .contains("spec.mediaPoolRef")
    );
}

#[tokio::test]
async fn a_deleted_statefulset_is_recreated() {
    let h = Harness::start().await;
    h.apply_examples().await;
    let original: StatefulSet = eventually("StatefulSet", || async {
        h.fake.get("default", "default-media")
    })
    .await;

    let api: Api<StatefulSet> = Api::default_namespaced(h.fake.client());
    api.delete("default-media", &DeleteParams::default())
        .await
        .unwrap();

    eventually("StatefulSet recreated", || async {
        let sts: StatefulSet = h.fake.get("default", "default-media")?;
        (sts.metadata.uid != original.metadata.uid).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_tenant_withdraws_its_snapshot() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;

    let api: Api<Tenant> = Api::default_namespaced(h.fake.client());
    api.delete("acme", &DeleteParams::default()).await.unwrap();

    eventually("tenant gone", || async {
        h.fake
            .get::<Tenant>("default", "acme")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        snapshot(&h, "acme").await.is_none(),
        "snapshot must be withdrawn before the finalizer is removed"
    );
}

#[tokio::test]
async fn a_changed_secret_republishes_the_digest_hashes() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;
    let (before, _) = snapshot(&h, "acme").await.unwrap();

    let api: Api<Secret> = Api::default_namespaced(h.fake.client());
    let data =
        json!({"data": {"alice": k8s_openapi::ByteString(b"a-brand-new-password".to_vec())}});
    api.patch(
        "acme-sip-passwords",
        &PatchParams::default(),
        &Patch::Merge(data),
    )
    .await
    .unwrap();

    let after = eventually("new HA1 for alice", || async {
        let (snap, _) = snapshot(&h, "acme").await?;
        (snap.users[0].credentials.ha1_md5 != before.users[0].credentials.ha1_md5).then_some(snap)
    })
    .await;
    assert_eq!(
        after.users[1].credentials, before.users[1].credentials,
        "other users keep their hashes"
    );
}

#[tokio::test]
async fn a_second_tenant_cannot_take_a_served_domain() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;

    let mut copycat = h.fake.get::<Tenant>("default", "acme").unwrap();
    copycat.metadata = kube::api::ObjectMeta {
        name: Some("copycat".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    copycat.spec.numbers.clear();
    copycat.status = None;
    Api::<Tenant>::default_namespaced(h.fake.client())
        .create(&PostParams::default(), &copycat)
        .await
        .unwrap();

    let tenant = eventually("copycat refused", || async {
        let t = h.fake.get::<Tenant>("default", "copycat")?;
        (condition(&t, ConditionType::Valid)?.0 == "False").then_some(t)
    })
    .await;
    let (_, _, message) = condition(&tenant, ConditionType::Valid).unwrap();
    assert!(
        message
            .contains("spec.domain: acme.example.com is already the domain of Tenant default/acme"),
        "{message}"
    );
    assert_eq!(condition(&tenant, ConditionType::Ready).unwrap().0, "False");
    assert!(snapshot(&h, "copycat").await.is_none());
}

#[tokio::test]
async fn pool_status_follows_its_workload_and_scale_reaches_the_statefulset() {
    let h = Harness::start().await;
    h.apply_examples().await;
    eventually("StatefulSet", || async {
        h.fake.get::<StatefulSet>("default", "default-media")
    })
    .await;

    // kube-fake runs no built-in controllers: play the StatefulSet controller's part.
    let sts_api: Api<StatefulSet> = Api::default_namespaced(h.fake.client());
    let workload = json!({"status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 2}});
    sts_api
        .patch_status(
            "default-media",
            &PatchParams::default(),
            &Patch::Merge(workload),
        )
        .await
        .unwrap();

    let pool = eventually("MediaPool Ready", || async {
        let pool = h.fake.get::<MediaPool>("default", "default")?;
        is_true(&pool.status.as_ref()?.pool.conditions, ConditionType::Ready).then_some(pool)
    })
    .await;
    let status = pool.status.unwrap().pool;
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    let selector = status.selector.unwrap();
    assert!(
        selector.contains("app.kubernetes.io/component=media-node"),
        "{selector}"
    );

    // `kubectl scale mediapool/default --replicas=4` goes through the scale subresource.
    let pools: Api<MediaPool> = Api::default_namespaced(h.fake.client());
    pools
        .patch_scale(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    eventually("StatefulSet scaled", || async {
        let sts = h.fake.get::<StatefulSet>("default", "default-media")?;
        (sts.spec.replicas == Some(4)).then_some(())
    })
    .await;
    let signalling: SignallingPool = eventually("SignallingPool status", || async {
        let pool = h.fake.get::<SignallingPool>("default", "default")?;
        pool.status.as_ref()?.selector.as_ref()?;
        Some(pool)
    })
    .await;
    assert!(
        signalling
            .status
            .unwrap()
            .selector
            .unwrap()
            .contains("component=signalling")
    );
}

#[tokio::test]
async fn a_failed_request_is_retried_and_counted() {
    let h = Harness::start().await;
    // The first apply of the media StatefulSet fails; the reconcile must retry and succeed.
    h.fake.fail_next(
        http::Method::PATCH,
        "/apis/apps/v1/namespaces/default/statefulsets/default-media",
        500,
    );
    h.apply_examples().await;
    eventually("StatefulSet after a retry", || async {
        h.fake.get::<StatefulSet>("default", "default-media")
    })
    .await;
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains("centrex_operator_reconcile_errors_total{controller=\"mediapool\",category=\"kubernetes\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_status_write_conflict_is_retried_until_the_tenant_is_ready() {
    let h = Harness::start().await;
    h.fake.fail_next(
        http::Method::PATCH,
        "/apis/centrex.dev/v1alpha1/namespaces/default/tenants/acme/status",
        409,
    );
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;
    let metrics = h.ctx.metrics.render();
    assert!(
        metrics.contains(
            "centrex_operator_reconcile_errors_total{controller=\"tenant\",category=\"conflict\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn deleting_a_pool_garbage_collects_what_it_owns() {
    let h = Harness::start().await;
    h.apply_examples().await;
    eventually("media objects", || async {
        h.fake
            .get::<PodDisruptionBudget>("default", "default-media")?;
        h.fake.get::<Service>("default", "default-media")
    })
    .await;

    let pools: Api<MediaPool> = Api::default_namespaced(h.fake.client());
    pools
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();

    eventually("owned objects collected", || async {
        let gone = h
            .fake
            .get::<StatefulSet>("default", "default-media")
            .is_none()
            && h.fake.get::<Service>("default", "default-media").is_none()
            && h.fake
                .get::<PodDisruptionBudget>("default", "default-media")
                .is_none();
        gone.then_some(())
    })
    .await;
    assert!(
        h.fake
            .get::<Deployment>("default", "default-signalling")
            .is_some(),
        "the other pool is untouched"
    );
}

#[tokio::test]
async fn registered_phones_are_counted_into_the_tenant_status() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;
    // Three phones of acme register (the signalling pods write these bindings), and one of
    // another domain that acme must not count.
    for (domain, user, binding) in [
        ("acme.example.com", "100", "desk"),
        ("acme.example.com", "100", "mobile"),
        ("acme.example.com", "101", "desk"),
        ("globex.example.com", "100", "desk"),
    ] {
        h.store
            .put(
                &keys::registration(domain, user, binding),
                b"{}".to_vec(),
                None,
            )
            .await
            .unwrap();
    }
    eventually("registeredDevices 3", || async {
        let tenant = h.fake.get::<Tenant>("default", "acme")?;
        (tenant.status?.registered_devices == 3).then_some(())
    })
    .await;
    h.store
        .delete(&keys::registration("acme.example.com", "100", "mobile"))
        .await
        .unwrap();
    eventually("registeredDevices 2 after one unregisters", || async {
        let tenant = h.fake.get::<Tenant>("default", "acme")?;
        (tenant.status?.registered_devices == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn active_calls_are_counted_into_the_tenant_status() {
    let h = Harness::start().await;
    h.apply_examples().await;
    ready_tenant(&h, "acme").await;
    // Two calls of acme hold tenant slots (and user slots, the same calls seen per user); one
    // call of another domain must not count.
    let slots = [
        format!("{}0", keys::tenant_calls("acme.example.com")),
        format!("{}5", keys::tenant_calls("acme.example.com")),
        format!("{}0", keys::user_calls("acme.example.com", "100")),
        format!("{}1", keys::user_calls("acme.example.com", "101")),
        format!("{}0", keys::tenant_calls("globex.example.com")),
    ];
    for slot in &slots {
        h.store.put(slot, b"call-id".to_vec(), None).await.unwrap();
    }
    eventually("activeCalls 2", || async {
        let tenant = h.fake.get::<Tenant>("default", "acme")?;
        (tenant.status?.active_calls == 2).then_some(())
    })
    .await;
    h.store.delete(&slots[1]).await.unwrap();
    eventually("activeCalls 1 after one hangs up", || async {
        let tenant = h.fake.get::<Tenant>("default", "acme")?;
        (tenant.status?.active_calls == 1).then_some(())
    })
    .await;
}

fn trunk_condition(h: &Harness, type_: ConditionType) -> Option<(String, String, String)> {
    let trunk = h.fake.get::<Trunk>("default", "carrier")?;
    trunk
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_.as_str())
        .map(|c| (c.status, c.reason, c.message))
}

async fn put_registration_state(h: &Harness, state: &TrunkRegistrationState) {
    h.store
        .put(
            &keys::trunk_registration("default", "carrier"),
            serde_json::to_vec(state).unwrap(),
            None,
        )
        .await
        .unwrap();
}

fn registration_state(registered: bool, last_error: Option<&str>) -> TrunkRegistrationState {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TrunkRegistrationState {
        owner: "default-signalling-0".into(),
        registered,
        last_error: last_error.map(str::to_string),
        expires_at: registered.then_some(now + 3600),
        attempted_at: now,
        generation: 1,
    }
}

#[tokio::test]
async fn a_trunk_nobody_registers_yet_is_pending() {
    let h = Harness::start().await;
    h.apply_examples().await;
    let (status, reason, _) = eventually("Registered condition", || async {
        trunk_condition(&h, ConditionType::Registered)
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Pending"));
}

#[tokio::test]
async fn an_accepted_trunk_registration_shows_registered_with_its_owner() {
    let h = Harness::start().await;
    h.apply_examples().await;
    put_registration_state(&h, &registration_state(true, None)).await;
    let message = eventually("Registered True", || async {
        let (status, reason, message) = trunk_condition(&h, ConditionType::Registered)?;
        (status == "True" && reason == "Registered").then_some(message)
    })
    .await;
    assert!(message.contains("default-signalling-0"), "{message}");
}

#[tokio::test]
async fn a_failed_trunk_registration_shows_the_carrier_error() {
    let h = Harness::start().await;
    h.apply_examples().await;
    put_registration_state(&h, &registration_state(false, Some("403 Forbidden"))).await;
    let message = eventually("Registered False with the error", || async {
        let (status, reason, message) = trunk_condition(&h, ConditionType::Registered)?;
        (status == "False" && reason == "RegistrationFailed").then_some(message)
    })
    .await;
    assert!(message.contains("403 Forbidden"), "{message}");
    let trunk = h.fake.get::<Trunk>("default", "carrier").unwrap();
    assert_eq!(
        trunk.status.unwrap().last_registration_error.as_deref(),
        Some("403 Forbidden")
    );
}

#[tokio::test]
async fn registration_status_writes_keep_the_trunk_ready_without_reconciling_it() {
    let h = Harness::start().await;
    h.apply_examples().await;
    eventually("trunk Ready and Registered reported", || async {
        let ready = trunk_condition(&h, ConditionType::Ready)?;
        trunk_condition(&h, ConditionType::Registered)?;
        (ready.0 == "True").then_some(())
    })
    .await;
    ready_tenant(&h, "acme").await;
    let reconciles = || {
        let metrics = h.ctx.metrics.render();
        metrics
            .lines()
            .filter(|l| l.starts_with("centrex_operator_reconciles_total{"))
            .filter(|l| l.contains("\"trunk\"") || l.contains("\"tenant\""))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = reconciles();
    put_registration_state(&h, &registration_state(true, None)).await;
    eventually("Registered True", || async {
        (trunk_condition(&h, ConditionType::Registered)?.0 == "True").then_some(())
    })
    .await;
    put_registration_state(&h, &registration_state(false, Some("408 Request Timeout"))).await;
    eventually("Registered False", || async {
        (trunk_condition(&h, ConditionType::Registered)?.1 == "RegistrationFailed").then_some(())
    })
    .await;
    assert_eq!(
        reconciles(),
        before,
        "no reconcile for a registration report"
    );
    assert_eq!(trunk_condition(&h, ConditionType::Ready).unwrap().0, "True");
}
