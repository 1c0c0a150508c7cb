//! A lease a process keeps for as long as it runs: what its lease-bound keys (call slots, rate
//! windows) hang on, so they vanish when the process dies and never leak.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::store::{LeaseId, Store, StoreError};

/// A lease granted on first use, kept alive in the background, and granted anew after it was
/// lost (the store was unreachable longer than the TTL; the keys under it are gone by then).
pub struct KeptLease {
    store: Arc<dyn Store>,
    ttl: Duration,
    current: Mutex<Option<LeaseId>>,
    /// The keep-alive task is started with the first grant.
    keeping: std::sync::Once,
}

impl KeptLease {
    /// A lease of `ttl` in `store`, granted (and then kept alive) on first use.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            ttl,
            current: Mutex::new(None),
            keeping: std::sync::Once::new(),
        })
    }

    /// The current lease, granted now if there is none.
    pub async fn get(self: &Arc<Self>) -> Result<LeaseId, StoreError> {
        let mut current = self.current.lock().await;
        if let Some(id) = *current {
            return Ok(id);
        }
        let id = self.store.grant_lease(self.ttl).await?;
        *current = Some(id);
        self.keeping
            .call_once(|| drop(tokio::spawn(Self::keep_alive(Arc::downgrade(self)))));
        Ok(id)
    }

    /// Revokes the lease now (its keys go at once), e.g. when the process stops; a later
    /// [`KeptLease::get`] grants a new one. Best effort: a lease that cannot be revoked expires.
    pub async fn revoke(&self) {
        let Some(id) = self.current.lock().await.take() else {
            return;
        };
        if let Err(error) = self.store.revoke_lease(id).await {
            tracing::warn!(%error, lease = id.0, "lease not revoked; it will expire");
        }
    }

    /// Refreshes the lease every third of its TTL until the `KeptLease` is dropped.
    async fn keep_alive(lease: std::sync::Weak<Self>) {
        let period = lease
            .upgrade()
            .map_or(Duration::from_secs(1), |l| l.ttl / 3);
        loop {
            tokio::time::sleep(period).await;
            let Some(lease) = lease.upgrade() else { return };
            let Some(id) = *lease.current.lock().await else {
                continue;
            };
            match lease.store.keep_alive(id).await {
                Ok(()) => {}
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!(lease = id.0, "lease lost; a new one is granted on next use");
                    let mut current = lease.current.lock().await;
                    if *current == Some(id) {
                        *current = None;
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot refresh the lease; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_lost_lease_is_granted_anew_on_next_use() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let kept = KeptLease::new(store.clone(), Duration::from_millis(300));
        let first = kept.get().await.unwrap();
        assert_eq!(kept.get().await.unwrap(), first, "kept while alive");
        store.revoke_lease(first).await.unwrap();
        crate::testing::eventually("a new lease", || async {
            let now = kept.get().await.unwrap();
            (now != first).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn the_lease_outlives_its_ttl_while_kept() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let kept = KeptLease::new(store.clone(), Duration::from_millis(300));
        let id = kept.get().await.unwrap();
        store.put("/k", b"v".to_vec(), Some(id)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(store.get("/k").await.unwrap().is_some());
    }
}
