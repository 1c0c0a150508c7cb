//! The coordination store: a small key-value contract that etcd provides in production and an
//! in-memory map provides in local mode and fast tests. Both pass `tests/contract.rs`.

mod etcd;
mod memory;

pub use etcd::EtcdStore;
pub use memory::MemoryStore;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A store-wide, strictly increasing revision (etcd's `mod_revision` semantics).
pub type Revision = i64;

/// A lease: keys attached to it disappear when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// One stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// A change seen by a prefix watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    /// The key was deleted (explicitly or by lease expiry) at `mod_revision`.
    Delete {
        key: String,
        mod_revision: Revision,
    },
}

impl WatchEvent {
    /// Revision at which this change happened.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Changes under a prefix, in revision order, each exactly once.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write happened at this revision.
    Written(Revision),
    /// The key's current state did not match; carries what is there now (None: absent).
    Conflict(Option<KeyValue>),
}

/// Errors at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    #[error("lease {0:?} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    #[error(
        "revision {requested} was compacted; the oldest available is {oldest}: re-list and watch again"
    )]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("invalid store request: {0}")]
    Invalid(String),
}

/// Most keys one [`Store::put_all`] or [`Store::delete_all`] takes: etcd refuses transactions of
/// more than 128 operations by default (`--max-txn-ops`).
pub const MAX_BATCH: usize = 128;

/// `Invalid` unless the keys fit in one batch and none is empty.
fn check_batch<'a>(keys: impl ExactSizeIterator<Item = &'a str>) -> Result<(), StoreError> {
    if keys.len() > MAX_BATCH {
        return Err(StoreError::Invalid(format!(
            "{} keys in one batch; at most {MAX_BATCH}",
            keys.len()
        )));
    }
    for key in keys {
        if key.is_empty() {
            return Err(StoreError::Invalid("empty key".into()));
        }
    }
    Ok(())
}

/// The key-value contract Centrex coordinates through.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Reads every key under `prefix`, sorted by key, with the store revision of the read
    /// (watch from `revision + 1` to follow on without a gap).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;

    /// Writes a key unconditionally, optionally attached to a lease; returns the write's revision.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Deletes a key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Writes every `(key, value)` of `entries` (no lease) in one atomic write: one revision,
    /// one round trip. At most [`MAX_BATCH`] entries.
    async fn put_all(&self, entries: &[(String, Vec<u8>)]) -> Result<Revision, StoreError>;
    /// Deletes every key of `keys` that exists, in one atomic write; returns how many existed.
    /// At most [`MAX_BATCH`] keys.
    async fn delete_all(&self, keys: &[String]) -> Result<usize, StoreError>;

    /// Writes (`Some`) or deletes (`None`) `key` only if its `mod_revision` is `expected`
    /// (`0` means "the key must not exist").
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refreshes a lease; `LeaseNotFound` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revokes a lease, deleting its keys now.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Streams every change under `prefix` with revision ≥ `from` (`0`: from now), in order,
    /// without loss or duplication, reconnecting by itself; ends with `Compacted` when `from` is
    /// older than the store keeps.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;
}
