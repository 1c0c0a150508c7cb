//! The operator's configuration, parsed once at start-up. Defaults are documented here only.

use std::net::SocketAddr;
use std::time::Duration;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Image of the pods the operator creates when a pool does not name one (the operator's own).
    pub image: String,
    /// etcd client URLs handed to the pods and used to publish snapshots.
    pub etcd_endpoints: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity in the election (its pod name).
    pub identity: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// How long a leader holds the Lease without renewing it.
    pub lease_duration: Duration,
    /// How often the live figures are read from the store into status: registered devices and
    /// active calls of each Tenant, the `Registered` condition of each Trunk.
    pub census_period: Duration,
}

impl OperatorConfig {
    /// Port of the gRPC API on media and signalling pods.
    pub const GRPC_PORT: i32 = 9090;
    /// Port of `/metrics`, `/healthz`, `/readyz` on every pod.
    pub const HTTP_PORT: i32 = 8080;
    /// Time a pod gets past its drain timeout to exit cleanly before it is killed.
    pub const EXIT_MARGIN_SECONDS: i64 = 10;
}
