//! The media node's configuration, parsed once at start-up. Every default is documented here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::time::Duration;

pub use centrex_coord::media::PortRange;

use crate::relay::Backend;

/// How a media node runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identity of this node (its pod name): the registration key and `NodeStats.node_id`.
    pub node_id: String,
    /// Namespace of the node's MediaPool (its pod's namespace).
    pub namespace: String,
    /// Name of the node's MediaPool.
    pub pool: String,
    /// Local address the RTP sockets bind to. Default: 0.0.0.0.
    pub bind: IpAddr,
    /// Address peers send media to, handed to signalling for SDP.
    pub advertise: IpAddr,
    /// Ports of the RTP/RTCP pairs. Default: 20000-29999 (the MediaPool default).
    pub rtp_ports: PortRange,
    /// Sessions accepted at once. Default: 2000 (the MediaPool default).
    pub max_sessions: u32,
    /// Data-plane threads. Default: one per core.
    pub workers: usize,
    /// Longest wait for sessions to end once draining. Default: 3600 s.
    pub drain_timeout: Duration,
    /// A session with no accepted packet for this long ends. Default: 60 s.
    pub idle_timeout: Duration,
    /// Silence of a latched source after which a new SSRC from elsewhere may take its place.
    /// Default: 2 s.
    pub relatch_silence: Duration,
    /// How long a data-plane worker keeps polling after a packet before it sleeps. Default: 0
    /// (sleep at once). Polling saves a wake-up per packet under heavy load (lower latency and
    /// CPU per packet) but shows the core as busy, and a pod with a CPU limit gets throttled.
    pub busy_poll: Duration,
    /// The data plane's I/O backend. Default: auto (io_uring where the kernel allows it, else
    /// epoll; see `docs/performance.md` for what each achieves).
    pub relay_backend: Backend,
    /// Where the MediaControl gRPC service listens. Default: 0.0.0.0:9090.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Default: 0.0.0.0:8080.
    pub http_addr: SocketAddr,
    /// Lease TTL of the registration: how long a dead node stays listed. Default: 10 s.
    pub registration_ttl: Duration,
    /// How often the registration's lease and load figures are refreshed. Default: 3 s.
    pub registration_refresh: Duration,
    /// Kernel receive buffer per media socket (the kernel doubles it). Default: 16 KiB, about
    /// half a second of a voice stream: older audio is useless to a jitter buffer, so an
    /// overloaded relay should drop rather than queue it, and a flooding peer holds little
    /// kernel memory.
    pub socket_receive_buffer: usize,
}

impl Config {
    /// The MediaControl port (the operator's `grpc` container port).
    pub const GRPC_PORT: u16 = 9090;
    /// The HTTP port (the operator's `http` container port).
    pub const HTTP_PORT: u16 = 8080;

    /// A configuration with every default.
    pub fn new(node_id: impl Into<String>, pool: impl Into<String>, advertise: IpAddr) -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            node_id: node_id.into(),
            namespace: "default".into(),
            pool: pool.into(),
            bind: any,
            advertise,
            rtp_ports: PortRange {
                min: 20000,
                max: 29999,
            },
            max_sessions: 2000,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            drain_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(60),
            relatch_silence: Duration::from_secs(2),
            busy_poll: Duration::ZERO,
            relay_backend: Backend::Auto,
            grpc_addr: SocketAddr::new(any, Self::GRPC_PORT),
            http_addr: SocketAddr::new(any, Self::HTTP_PORT),
            registration_ttl: Duration::from_secs(10),
            registration_refresh: Duration::from_secs(3),
            socket_receive_buffer: 16 << 10,
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field: name,
                reason: reason.to_string(),
            })
        };
        if self.node_id.is_empty() {
            return field("node-id", "must not be empty (set POD_NAME)");
        }
        if self.pool.is_empty() {
            return field("pool", "must not be empty");
        }
        if self.advertise.is_unspecified() {
            return field(
                "advertise",
                "must be an address peers can reach, not 0.0.0.0 or ::",
            );
        }
        if self.advertise.is_ipv4() != self.bind.is_ipv4() {
            return field("advertise", "must be of the same address family as --bind");
        }
        if self.max_sessions == 0 {
            return field("max-sessions", "must be at least 1");
        }
        if self.workers == 0 {
            return field("workers", "must be at least 1");
        }
        if self.registration_refresh * 2 > self.registration_ttl {
            return field(
                "registration refresh",
                "must be at most half the registration TTL, or the lease lapses between refreshes",
            );
        }
        Ok(())
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        Config::new("media-0", "default", "192.0.2.10".parse().unwrap())
            .validate()
            .unwrap();
    }

    #[test]
    fn an_unspecified_advertised_address_is_refused_naming_the_flag() {
        let config = Config::new("media-0", "default", "0.0.0.0".parse().unwrap());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("--advertise"), "{error}");
    }
}
