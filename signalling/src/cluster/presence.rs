//! The live signalling instances: each keeps a key under its lease naming where the others reach
//! it; the key vanishes when the instance stops renewing the lease (it died, or lost the store).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use centrex_coord::lease::KeptLease;
use centrex_coord::{Store, StoreError, keys};
use serde::{Deserialize, Serialize};

/// What a live instance publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Its `SignallingPeer` gRPC address.
    pub peer: SocketAddr,
}

/// Keeps `instance`'s presence key under `lease`, checking every `period` that the lease is
/// still the one it was written under (after a store outage longer than the TTL the lease is
/// granted anew, and the key written again), until `left`.
pub async fn keep(
    store: Arc<dyn Store>,
    lease: Arc<KeptLease>,
    instance: String,
    presence: Presence,
    period: Duration,
    left: Arc<AtomicBool>,
) {
    let key = keys::signalling_instance(&instance);
    let value = serde_json::to_vec(&presence).expect("presence serialises");
    // The lease keeps the key alive: it is written again only under a new lease.
    let mut published = None;
    while !left.load(Ordering::SeqCst) {
        match lease.get().await {
            Ok(current) if published == Some(current) => {}
            Ok(current) => match store.put(&key, value.clone(), Some(current)).await {
                Ok(_) => published = Some(current),
                Err(error) => {
                    tracing::warn!(%error, instance, "cannot publish this instance's presence")
                }
            },
            Err(error) => {
                tracing::warn!(%error, instance, "cannot publish this instance's presence")
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// The presence of `instance`, if it is alive.
pub async fn find(store: &dyn Store, instance: &str) -> Result<Option<Presence>, StoreError> {
    let kv = store.get(&keys::signalling_instance(instance)).await?;
    Ok(kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()))
}

/// Every live instance, by id.
pub async fn live(store: &dyn Store) -> Result<HashMap<String, Presence>, StoreError> {
    let prefix = keys::signalling_instances();
    let (items, _) = store.list(&prefix).await?;
    Ok(items
        .iter()
        .filter_map(|kv| {
            let id = kv.key.strip_prefix(&prefix)?.to_string();
            Some((id, serde_json::from_slice(&kv.value).ok()?))
        })
        .collect())
}
