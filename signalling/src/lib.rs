//! The SIP side (issues #4, #5): parser, transports, transactions, registrar, B2BUA, trunk
//! registration with carriers, and the edge's per-source rate limit.

pub mod auth;
pub mod b2bua;
pub mod cdr;
pub mod cluster;
pub mod directory;
pub mod edge;
pub mod http;
pub mod media;
pub mod metrics;
pub mod registrar;
pub mod routing;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod transaction;
pub mod transport;
pub mod trunk;
