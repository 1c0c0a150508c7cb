//! The tenant directory: every compiled TenantSnapshot, found by SIP domain, kept current by a
//! watch on the store and swapped in whole so a lookup never sees half an update (and calls in
//! progress keep the snapshot they started with).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use centrex_coord::snapshot::TenantSnapshot;
use centrex_coord::{Store, StoreError, WatchEvent, keys};
use futures::StreamExt;

/// Tenants by domain, as of one store revision.
#[derive(Debug, Default)]
struct Index {
    by_key: HashMap<String, Arc<TenantSnapshot>>,
    by_domain: HashMap<String, Arc<TenantSnapshot>>,
}

impl Index {
    fn put(&mut self, key: String, snapshot: TenantSnapshot) {
        self.remove(&key);
        let snapshot = Arc::new(snapshot);
        self.by_domain
            .insert(snapshot.domain.clone(), snapshot.clone());
        self.by_key.insert(key, snapshot);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            // Only drop the domain entry if it still points at this tenant.
            if self
                .by_domain
                .get(&old.domain)
                .is_some_and(|s| Arc::ptr_eq(s, &old))
            {
                self.by_domain.remove(&old.domain);
            }
        }
    }
}

/// Shared, always-current view of the tenants.
#[derive(Clone, Default)]
pub struct Directory {
    index: Arc<RwLock<Arc<Index>>>,
}

impl Directory {
    /// The tenant whose SIP domain is `domain` (case-insensitive, as DNS names are).
    pub fn tenant(&self, domain: &str) -> Option<Arc<TenantSnapshot>> {
        let index = self.index.read().expect("directory lock").clone();
        index.by_domain.get(&domain.to_ascii_lowercase()).cloned()
    }

    /// Number of tenants served.
    pub fn len(&self) -> usize {
        self.index.read().expect("directory lock").by_key.len()
    }

    /// Whether no tenant is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update(&self, change: impl FnOnce(&mut Index)) {
        let mut guard = self.index.write().expect("directory lock");
        let mut next = Index {
            by_key: guard.by_key.clone(),
            by_domain: guard.by_domain.clone(),
        };
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Loads every tenant, then follows changes until the store stream ends for good; re-lists
    /// after a compaction or an error, so the directory always converges on the store.
    pub async fn follow(&self, store: Arc<dyn Store>) {
        loop {
            match self.sync(store.as_ref()).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "tenant directory out of sync; re-listing");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn sync(&self, store: &dyn Store) -> Result<(), StoreError> {
        let (items, revision) = store.list(&keys::tenants()).await?;
        let mut index = Index::default();
        for kv in items {
            if let Some(snapshot) = decode(&kv.key, &kv.value) {
                index.put(kv.key, snapshot);
            }
        }
        *self.index.write().expect("directory lock") = Arc::new(index);
        let mut changes = store.watch(&keys::tenants(), revision + 1).await?;
        while let Some(change) = changes.next().await {
            match change? {
                WatchEvent::Put(kv) => {
                    if let Some(snapshot) = decode(&kv.key, &kv.value) {
                        self.update(|index| index.put(kv.key, snapshot));
                    }
                }
                WatchEvent::Delete { key, .. } => self.update(|index| index.remove(&key)),
            }
        }
        Ok(())
    }
}

/// A snapshot from the store, or None (logged) when it is not one this version can read.
fn decode(key: &str, value: &[u8]) -> Option<TenantSnapshot> {
    match serde_json::from_slice::<TenantSnapshot>(value) {
        Ok(snapshot) if snapshot.schema == centrex_coord::snapshot::SCHEMA_VERSION => {
            Some(snapshot)
        }
        Ok(snapshot) => {
            tracing::warn!(
                key,
                schema = snapshot.schema,
                "tenant snapshot of another schema version ignored"
            );
            None
        }
        Err(error) => {
            tracing::warn!(key, %error, "unreadable tenant snapshot ignored");
            None
        }
    }
}
