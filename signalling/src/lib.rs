//! The SIP side (issue #4): parser, transports, transactions, registrar, B2BUA.

pub mod auth;
pub mod b2bua;
pub mod cdr;
pub mod directory;
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
