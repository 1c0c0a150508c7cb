//! The example manifests load, and pass the CRD schemas, as `kubectl apply` would take them.

use std::path::Path;

use centrex_operator::manifests::Manifests;

#[test]
fn quickstart_examples_hold_a_full_platform() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let manifests = Manifests::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(manifests.tenants.len(), 1);
    assert!(manifests.tenants[0].spec.users.len() >= 3);
    assert!(!manifests.tenants[0].spec.hunt_groups.is_empty());
    assert!(!manifests.tenants[0].spec.numbers.is_empty());
    assert_eq!(manifests.trunks.len(), 1);
    assert_eq!(manifests.media_pools.len(), 1);
    assert_eq!(manifests.signalling_pools.len(), 1);
    assert_eq!(manifests.secrets.len(), 2);
}

#[test]
fn an_invalid_manifest_names_the_file_the_object_and_the_field() {
    let mut manifests = Manifests::default();
    let yaml = "apiVersion: centrex.dev/v1alpha1\nkind: MediaPool\nmetadata: {name: broken}\nspec: {rtpPorts: {min: 3000, max: 2000}}\n";
    let error = manifests
        .add_yaml(Path::new("pools.yaml"), yaml)
        .unwrap_err()
        .to_string();
    assert!(error.contains("pools.yaml"), "{error}");
    assert!(error.contains("MediaPool \"broken\""), "{error}");
    assert!(
        error.contains("rtpPorts.min must be lower than rtpPorts.max"),
        "{error}"
    );
}

#[test]
fn an_unknown_kind_is_refused_by_name() {
    let mut manifests = Manifests::default();
    let error = manifests
        .add_yaml(
            Path::new("x.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("unsupported kind \"ConfigMap\""),
        "{error}"
    );
}

#[tokio::test]
async fn local_mode_publishes_the_examples_into_the_store() {
    use centrex_coord::store::MemoryStore;
    use centrex_coord::{Store, keys, snapshot::TenantSnapshot};

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    let manifests = Manifests::load(&dir).unwrap();
    let store = MemoryStore::new();
    let report = centrex_operator::local::publish_all(&manifests, &store)
        .await
        .unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.tenants, vec![("acme.example.com".to_string(), 3)]);

    let stored = store
        .get(&keys::tenant("default", "acme"))
        .await
        .unwrap()
        .expect("tenant snapshot");
    let snapshot: TenantSnapshot = serde_json::from_slice(&stored.value).unwrap();
    let alice = &snapshot.users[0];
    assert_eq!(alice.credentials.realm, "acme.example.com");
    assert_eq!(alice.credentials.ha1_md5.len(), 32);
    let text = String::from_utf8(stored.value).unwrap();
    assert!(
        !text.contains("alice-secret-100"),
        "a plaintext password reached the store"
    );
    assert!(
        store
            .get(&keys::trunk("default", "carrier"))
            .await
            .unwrap()
            .is_some()
    );
}
