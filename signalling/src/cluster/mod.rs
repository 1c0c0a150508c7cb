//! This instance among the other signalling instances of its pool: its presence in the store
//! (under its lease, so the others notice when it dies) and the requests handed between
//! instances over gRPC (a dialog's requests go to the instance that holds the call).

pub mod handoff;
pub mod nonce_key;
pub mod presence;

use std::net::SocketAddr;
use std::time::Duration;

/// How an instance takes part in a cluster of signalling instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// TTL of the instance's lease, which its presence and call counters hang on: a dead
    /// instance's calls are taken over this long after it died.
    pub lease_ttl: Duration,
    /// Where the other instances reach this one's `SignallingPeer` gRPC service.
    pub peer_address: SocketAddr,
    /// The address phones reach the pool at (its Service), written into our Contact so that
    /// in-dialog requests reach whichever instance is alive; `None`: this instance's own.
    pub service_address: Option<SocketAddr>,
}

impl ClusterConfig {
    /// The default lease TTL.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
}
