//! The coordination model shared by every Centrex component.
//!
//! - [`store`]: the [`Store`](store::Store) trait with its etcd and in-memory implementations.
//! - [`keys`]: the versioned key layout, the one place that knows where things live.
//! - [`snapshot`]: the compiled tenant and trunk snapshots the operator publishes and signalling
//!   consumes.

pub mod keys;
pub mod media;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use store::{KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};
