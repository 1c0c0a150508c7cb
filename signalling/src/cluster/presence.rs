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

/// Keeps `instance`'s presence key under `lease`, writing it again every `period` (so it comes
/// back by itself when the lease had to be granted anew after a store outage), until `left`.
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
    while !left.load(Ordering::SeqCst) {
        let written = match lease.get().await {
            Ok(lease) => store.put(&key, value.clone(), Some(lease)).await.map(drop),
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::warn!(%error, instance, "cannot publish this instance's presence");
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
