//! RFC 3261 §17 transactions, as sans-IO state machines driven by explicit time: the owner feeds
//! in messages and timer expiries and carries out the actions, so every timer is tested without
//! sleeping.
//!
//! - [`server`]: non-INVITE server transactions (retransmission absorption, Timer J), in use by
//!   the registrar.
//! - [`server_invite`]: the INVITE server transaction (Timers G, H, I).
//! - [`client`]: INVITE and non-INVITE client transactions (Timers A, B, D, E, F, K).

pub mod client;
pub mod server;
pub mod server_invite;
pub mod timers;
