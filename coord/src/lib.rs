//! The coordination model shared by every Centrex component.
//!
//! - [`store`]: the [`Store`](store::Store) trait with its etcd and in-memory implementations.
//! - [`calls`]: cluster-wide call counters (concurrent-call slots, calls-per-second windows).
//! - [`random`]: OS randomness drawn a block at a time, for tags, nonces and draws.
//! - [`keys`]: the versioned key layout, the one place that knows where things live.
//! - [`snapshot`]: the compiled tenant and trunk snapshots the operator publishes and signalling
//!   consumes.

pub mod calls;
pub mod keys;
pub mod lease;
pub mod media;
pub mod random;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trunk;

pub use store::{KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};
