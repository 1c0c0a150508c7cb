//! Local mode: the same pure pipeline as the controllers, fed from manifest files instead of the
//! Kubernetes API, publishing into any store (the in-memory one in `centrex up`).

use std::collections::BTreeMap;

use centrex_coord::{Store, StoreError, keys};
use kube::ResourceExt;

use crate::manifests::Manifests;
use crate::tenant::compile::compile;
use crate::tenant::controller::secret_data;
use crate::tenant::validate::{Inputs, rival_of, validate};
use crate::validation::{FieldError, summarise};

/// What local mode put in service, and what it refused.
#[derive(Debug, Default)]
pub struct Report {
    /// `(domain, users)` of each tenant published.
    pub tenants: Vec<(String, usize)>,
    /// Names of the trunks published.
    pub trunks: Vec<String>,
    /// `kind namespace/name: errors` of each object refused.
    pub refused: Vec<String>,
}

/// Validates, compiles and publishes every Tenant and Trunk of `manifests` into `store`.
pub async fn publish_all(manifests: &Manifests, store: &dyn Store) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let namespace_of = |ns: Option<String>| ns.unwrap_or_else(|| "default".into());
    for trunk in &manifests.trunks {
        let namespace = namespace_of(trunk.namespace());
        match crate::trunk::compile::compile(trunk, &secrets_of(manifests, &namespace)) {
            Ok(snapshot) => {
                crate::publish::publish(
                    store,
                    &keys::trunk(&namespace, &trunk.name_any()),
                    &snapshot,
                )
                .await?;
                report.trunks.push(trunk.name_any());
            }
            Err(errors) => {
                report
                    .refused
                    .push(refusal("Trunk", &namespace, &trunk.name_any(), &errors))
            }
        }
    }
    for tenant in &manifests.tenants {
        let namespace = namespace_of(tenant.namespace());
        let in_namespace = |ns: Option<String>| namespace_of(ns) == namespace;
        let inputs = Inputs {
            secrets: secrets_of(manifests, &namespace),
            trunks: manifests
                .trunks
                .iter()
                .filter(|t| in_namespace(t.namespace()))
                .map(|t| (t.name_any(), t.spec.clone()))
                .collect(),
            signalling_pools: manifests
                .signalling_pools
                .iter()
                .filter(|p| in_namespace(p.namespace()))
                .map(|p| p.name_any())
                .collect(),
            media_pools: manifests
                .media_pools
                .iter()
                .filter(|p| in_namespace(p.namespace()))
                .map(|p| p.name_any())
                .collect(),
            rivals: manifests.tenants.iter().map(rival_of).collect(),
        };
        match validate(tenant, &inputs) {
            Ok(resolved) => {
                let snapshot = compile(tenant, &resolved);
                crate::publish::publish(
                    store,
                    &keys::tenant(&namespace, &tenant.name_any()),
                    &snapshot,
                )
                .await?;
                report.tenants.push((snapshot.domain, snapshot.users.len()));
            }
            Err(errors) => {
                report
                    .refused
                    .push(refusal("Tenant", &namespace, &tenant.name_any(), &errors))
            }
        }
    }
    Ok(report)
}

fn secrets_of(
    manifests: &Manifests,
    namespace: &str,
) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    manifests
        .secrets
        .iter()
        .filter(|s| s.namespace().unwrap_or_else(|| "default".into()) == namespace)
        .map(|s| (s.name_any(), secret_data(s)))
        .collect()
}

fn refusal(kind: &str, namespace: &str, name: &str, errors: &[FieldError]) -> String {
    format!("{kind} {namespace}/{name}: {}", summarise(errors))
}
