//! The registrar (RFC 3261 §10.3): authenticated REGISTERs become bindings in the coordination
//! store, each under a lease whose TTL is its expiry, so any signalling instance finds a user's
//! phones and a binding disappears by itself when the phone stops refreshing it.

pub mod bindings;
pub mod plan;
mod service;

pub use service::Registrar;
