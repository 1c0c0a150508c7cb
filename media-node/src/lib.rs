//! The RTP media relay (issue #3): a data plane that forwards RTP/RTCP between the two legs of
//! each session with symmetric latching, the MediaControl gRPC service that signalling drives
//! it with, and the node's registration in the coordination store.
//!
//! - [`relay`]: worker threads, sockets, batching (the hot path).
//! - [`node`]: sessions, ports, drain and figures (the control plane), served by [`control`].
//! - [`sockets`]: media sockets kept bound between sessions.
//! - [`membership`]: the leased registration; [`drain_request`]: the operator's request to drain
//!   before a scale-down; [`http`]: metrics and probes.
//! - [`run()`] / [`run_with_store`] / [`MediaNode`]: wiring, for the `centrex` binary and tests.

pub mod args;
pub mod config;
pub mod control;
pub mod drain;
pub mod drain_request;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod relay;
mod run;
pub mod session;
pub mod sockets;

pub use args::{DrainArgs, MediaNodeAction, MediaNodeArgs};
pub use config::{Config, ConfigError, PortRange};
pub use membership::MediaNodeRegistration;
pub use run::{MediaNode, StartError, run, run_with_store};
