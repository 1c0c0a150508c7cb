//! The digest nonce key the instances of a pool share, so that a nonce one instance issued is
//! accepted by the others: a phone's 401 and its retried request may reach different pods.

use centrex_coord::store::CasOutcome;
use centrex_coord::{Store, StoreError, keys};

/// Attempts to create or read the key while others race to create it.
const ATTEMPTS: usize = 3;

/// The nonce key of signalling pool `pool`, created (random) by the first instance that asks.
pub async fn shared(store: &dyn Store, pool: &str) -> Result<[u8; 32], StoreError> {
    let key = keys::nonce_key(pool);
    for _ in 0..ATTEMPTS {
        let current = store.get(&key).await?;
        if let Some(stored) = current.as_ref().and_then(|kv| decode(&kv.value)) {
            return Ok(stored);
        }
        // Absent, or unreadable (replaced: nonces issued with it are simply challenged again).
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).expect("the OS random source is available");
        let expected = current.map_or(0, |kv| kv.mod_revision);
        let value = Some(hex::encode(fresh).into_bytes());
        if let CasOutcome::Written(_) = store.compare_and_swap(&key, expected, value, None).await? {
            return Ok(fresh);
        }
    }
    Err(StoreError::Unavailable(format!(
        "{key}: still contended after {ATTEMPTS} attempts"
    )))
}

fn decode(value: &[u8]) -> Option<[u8; 32]> {
    hex::decode(value).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use centrex_coord::store::MemoryStore;

    #[tokio::test]
    async fn every_instance_of_a_pool_gets_the_same_key_and_other_pools_another() {
        let store = MemoryStore::new();
        let first = shared(&store, "default").await.unwrap();
        assert_eq!(shared(&store, "default").await.unwrap(), first);
        assert_ne!(shared(&store, "other").await.unwrap(), first);
    }

    #[tokio::test]
    async fn an_unreadable_key_is_replaced() {
        let store = MemoryStore::new();
        store
            .put(&keys::nonce_key("default"), b"not hex".to_vec(), None)
            .await
            .unwrap();
        let key = shared(&store, "default").await.unwrap();
        assert_eq!(shared(&store, "default").await.unwrap(), key);
    }
}
