//! An election in the coordination store: the candidate that creates the key (compare-and-swap
//! on "absent") under its lease holds it until it resigns or its lease ends; the others wait for
//! the key to disappear and compete again.

use std::sync::Arc;
use std::time::Duration;

use centrex_coord::lease::KeptLease;
use centrex_coord::store::CasOutcome;
use centrex_coord::{Store, StoreError, WatchEvent};
use futures::StreamExt;

/// One candidate in one election.
pub struct Election {
    store: Arc<dyn Store>,
    key: String,
    candidate: String,
    lease: Arc<KeptLease>,
}

impl Election {
    /// `candidate` (an instance id) competing for `key` under `lease`.
    pub fn new(
        store: Arc<dyn Store>,
        key: String,
        candidate: String,
        lease: Arc<KeptLease>,
    ) -> Self {
        Self {
            store,
            key,
            candidate,
            lease,
        }
    }

    /// The key competed for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Tries to become the holder; true when this candidate holds the key (now or already).
    pub async fn campaign(&self) -> Result<bool, StoreError> {
        let lease = self.lease.get().await?;
        let outcome = self
            .store
            .compare_and_swap(
                &self.key,
                0,
                Some(self.candidate.as_bytes().to_vec()),
                Some(lease),
            )
            .await?;
        Ok(match outcome {
            CasOutcome::Written(_) => true,
            CasOutcome::Conflict(Some(kv)) => {
                kv.value == self.candidate.as_bytes() && kv.lease == Some(lease)
            }
            CasOutcome::Conflict(None) => false,
        })
    }

    /// Whether this candidate still holds the key (its lease may have been lost meanwhile).
    pub async fn holds(&self) -> Result<bool, StoreError> {
        let lease = self.lease.get().await?;
        Ok(self
            .store
            .get(&self.key)
            .await?
            .is_some_and(|kv| kv.value == self.candidate.as_bytes() && kv.lease == Some(lease)))
    }

    /// The current holder, if any.
    pub async fn holder(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&self.key)
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Returns once the key is vacant, or after `patience` at most (the caller then competes
    /// again, so a missed event costs at most `patience`).
    pub async fn vacated(&self, patience: Duration) -> Result<(), StoreError> {
        let Some(current) = self.store.get(&self.key).await? else {
            return Ok(());
        };
        let mut changes = self
            .store
            .watch(&self.key, current.mod_revision + 1)
            .await?;
        let deleted = async {
            while let Some(change) = changes.next().await {
                // The watch is on a prefix: `…/trunk/ns/a` also sees `…/trunk/ns/ab`.
                if let WatchEvent::Delete { key, .. } = change?
                    && key == self.key
                {
                    return Ok(());
                }
            }
            Ok(())
        };
        tokio::time::timeout(patience, deleted)
            .await
            .unwrap_or(Ok(()))
    }

    /// Gives the key up if this candidate holds it, so another takes over at once.
    pub async fn resign(&self) -> Result<(), StoreError> {
        let Some(current) = self.store.get(&self.key).await? else {
            return Ok(());
        };
        if current.value == self.candidate.as_bytes() {
            self.store
                .compare_and_swap(&self.key, current.mod_revision, None, None)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centrex_coord::store::MemoryStore;

    fn candidates(store: &Arc<dyn Store>) -> (Election, Election) {
        let candidate = |name: &str| {
            Election::new(
                store.clone(),
                "/e/trunk/ns/a".into(),
                name.into(),
                KeptLease::new(store.clone(), Duration::from_secs(10)),
            )
        };
        (candidate("one"), candidate("two"))
    }

    #[tokio::test]
    async fn only_the_first_candidate_wins_and_it_keeps_winning() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (one, two) = candidates(&store);
        assert!(one.campaign().await.unwrap());
        assert!(!two.campaign().await.unwrap());
        assert!(one.campaign().await.unwrap(), "a holder confirms itself");
        assert_eq!(two.holder().await.unwrap().as_deref(), Some("one"));
    }

    #[tokio::test]
    async fn a_resignation_lets_the_waiting_candidate_win() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (one, two) = candidates(&store);
        one.campaign().await.unwrap();
        two.resign().await.unwrap();
        assert!(one.holds().await.unwrap(), "only the holder can resign");
        let waiting = tokio::spawn(async move {
            two.vacated(Duration::from_secs(30)).await.unwrap();
            two.campaign().await.unwrap()
        });
        one.resign().await.unwrap();
        assert!(waiting.await.unwrap());
        assert!(!one.holds().await.unwrap());
    }

    #[tokio::test]
    async fn a_key_with_a_longer_name_does_not_wake_the_waiters() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (one, two) = candidates(&store);
        one.campaign().await.unwrap();
        store
            .put("/e/trunk/ns/ab", b"x".to_vec(), None)
            .await
            .unwrap();
        store.delete("/e/trunk/ns/ab").await.unwrap();
        // The watch replays both writes (they follow the holder's); neither may end the wait.
        let waited = tokio::time::timeout(
            Duration::from_millis(200),
            two.vacated(Duration::from_secs(30)),
        )
        .await;
        assert!(waited.is_err(), "woken by another key");
    }
}
