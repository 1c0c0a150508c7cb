//! Server-side apply of children with one field manager, and pruning of what is no longer wanted.

use std::fmt::Debug;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::labels::MANAGER;

/// Applies `object` (server-side, forced: the operator owns these fields) and returns it as stored.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let namespace = object
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(MANAGER).force();
    Ok(api
        .patch(&object.name_any(), &params, &Patch::Apply(object))
        .await?)
}

/// Deletes the objects of kind `K` that match `selector`, are controlled by `owner_uid`, and are
/// not named in `keep`; returns how many went.
pub async fn prune<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<usize>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let existing = api
        .list_metadata(&ListParams::default().labels(selector))
        .await?;
    let mut pruned = 0;
    for object in existing.items {
        let owned = object
            .owner_references()
            .iter()
            .any(|o| o.uid == owner_uid && o.controller == Some(true));
        if owned && !keep.contains(&object.name_any()) {
            api.delete(&object.name_any(), &DeleteParams::background())
                .await?;
            pruned += 1;
        }
    }
    Ok(pruned)
}
