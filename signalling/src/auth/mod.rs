//! SIP digest authentication (RFC 3261 §22, RFC 7616 with RFC 8760's SHA-256 for SIP) and the
//! throttling of sources that keep failing it. Pure logic: no IO, no clock reads (time is passed
//! in), so every rule is unit-tested.

pub mod authenticator;
pub mod client;
pub mod digest;
pub mod nonce;
pub mod throttle;
