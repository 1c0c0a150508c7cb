//! Publishing compiled snapshots to the coordination store.

use centrex_coord::{Revision, Store, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes `snapshot` under `key` unless the same bytes are already there (so an unchanged
/// tenant does not wake every signalling pod); returns the revision in service.
pub async fn publish<T: Serialize>(
    store: &dyn Store,
    key: &str,
    snapshot: &T,
) -> Result<Revision, StoreError> {
    let value =
        serde_json::to_vec(snapshot).map_err(|e| StoreError::Invalid(format!("{key}: {e}")))?;
    if let Some(current) = store.get(key).await?
        && current.value == value
    {
        return Ok(current.mod_revision);
    }
    store.put(key, value, None).await
}

/// The snapshot in service under `key` and its revision, if any (an unreadable one counts as none).
pub async fn in_service<T: DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(T, Revision)>, StoreError> {
    Ok(store.get(key).await?.and_then(|kv| {
        serde_json::from_slice(&kv.value)
            .ok()
            .map(|s| (s, kv.mod_revision))
    }))
}

/// Removes the snapshot under `key`.
pub async fn withdraw(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    store.delete(key).await.map(|_| ())
}
