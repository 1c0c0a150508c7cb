//! RFC 3261 §17 transactions. So far the server side of non-INVITE transactions (what REGISTER
//! and OPTIONS need): retransmitted requests are absorbed and answered with the response already
//! sent, for Timer J after the final response.

pub mod server;
