//! A store that can be taken down: the in-memory store behind a switch. While down, every call
//! fails `Unavailable` and the watch streams opened before break, as an etcd outage does to a
//! client; the keys stay reachable through [`OutageStore::inner`] to change what the nodes find
//! when it comes back.

use std::time::Duration;

use async_trait::async_trait;
use centrex_coord::store::MemoryStore;
use centrex_coord::{
    KeyValue, LeaseId, Revision, Store, StoreError, WatchStream, store::CasOutcome,
};
use futures::{StreamExt, stream};
use tokio::sync::watch;

/// The in-memory store behind an on/off switch.
#[derive(Clone)]
pub struct OutageStore {
    pub inner: MemoryStore,
    down: watch::Sender<bool>,
}

impl OutageStore {
    /// An empty store, up.
    pub fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            down: watch::Sender::new(false),
        }
    }

    /// Starts (`true`) or ends (`false`) the outage.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    fn check(&self) -> Result<(), StoreError> {
        if *self.down.borrow() {
            Err(StoreError::Unavailable("test outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for OutageStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.put(key, value, lease).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn put_all(&self, entries: &[(String, Vec<u8>)]) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.put_all(entries).await
    }

    async fn delete_all(&self, keys: &[String]) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.delete_all(keys).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        self.check()?;
        self.inner
            .compare_and_swap(key, expected, value, lease)
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.check()?;
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.revoke_lease(lease).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.check()?;
        let changes = self.inner.watch(prefix, from).await?;
        let mut down = self.down.subscribe();
        let outage = async move {
            let _ = down.wait_for(|&d| d).await;
        };
        let broken = stream::once(async { Err(StoreError::Unavailable("test outage".into())) });
        Ok(changes.take_until(outage).chain(broken).boxed())
    }
}
