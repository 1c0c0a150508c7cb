//! The committed CRD YAML matches the Rust types (regenerate with `centrex crdgen`).

use std::path::Path;

use centrex_operator::crdgen;

#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in crdgen::OUTPUT_DIRS {
        for (file, expected) in crdgen::render() {
            let path = root.join(dir).join(&file);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} missing ({e}): run `make crds`", path.display()));
            assert!(
                committed == expected,
                "{} is stale: run `make crds` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn committed_crd_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crdgen::REFERENCE_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crdgen::reference(),
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn pools_have_a_scale_subresource_an_hpa_can_use() {
    for crd in [
        centrex_operator::crd::all()[2].clone(),
        centrex_operator::crd::all()[3].clone(),
    ] {
        let scale = crd.spec.versions[0]
            .subresources
            .as_ref()
            .and_then(|s| s.scale.as_ref());
        let scale =
            scale.unwrap_or_else(|| panic!("{} has no scale subresource", crd.spec.names.kind));
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }
}

#[test]
fn every_kind_has_a_status_subresource_and_a_short_name() {
    for crd in centrex_operator::crd::all() {
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            "{}",
            crd.spec.names.kind
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{}",
            crd.spec.names.kind
        );
    }
}
