//! Bindings in the coordination store: one key per contact under the address of record, each
//! attached to a lease with the binding's lifetime.

use std::time::Duration;

use centrex_coord::{LeaseId, Store, StoreError, keys};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One registered contact of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The contact URI the phone registered.
    pub contact: String,
    /// Unix time (seconds) the binding expires.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from (`ip:port`): where requests go behind NAT.
    pub source: String,
    /// Transport the REGISTER came over (`udp`, `tcp`).
    pub transport: String,
}

/// The key of `contact`'s binding (a hash: contact URIs can hold any character).
pub fn binding_id(contact: &str) -> String {
    hex::encode(&Sha256::digest(contact.as_bytes())[..12])
}

/// Every binding of `user@domain`, with the lease that holds it.
pub async fn list(
    store: &dyn Store,
    domain: &str,
    user: &str,
) -> Result<Vec<(Binding, Option<LeaseId>)>, StoreError> {
    let (items, _) = store.list(&keys::registrations(domain, user)).await?;
    Ok(items
        .into_iter()
        .filter_map(|kv| {
            serde_json::from_slice(&kv.value)
                .ok()
                .map(|b| (b, kv.lease))
        })
        .collect())
}

/// Writes `binding` under a fresh lease of `ttl`, then revokes `replaced`, the lease of the
/// binding it replaces (it holds nothing any more; an error there is harmless).
pub async fn put(
    store: &dyn Store,
    domain: &str,
    user: &str,
    binding: &Binding,
    ttl: Duration,
    replaced: Option<LeaseId>,
) -> Result<(), StoreError> {
    let key = keys::registration(domain, user, &binding_id(&binding.contact));
    let lease = store.grant_lease(ttl).await?;
    let value = serde_json::to_vec(binding).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.put(&key, value, Some(lease)).await?;
    if let Some(replaced) = replaced {
        let _ = store.revoke_lease(replaced).await;
    }
    Ok(())
}

/// Removes the binding of `contact`.
pub async fn remove(
    store: &dyn Store,
    domain: &str,
    user: &str,
    contact: &str,
) -> Result<(), StoreError> {
    store
        .delete(&keys::registration(domain, user, &binding_id(contact)))
        .await
        .map(|_| ())
}
