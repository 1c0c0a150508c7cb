//! Session-border duties at the edge of the instance (issue #5): what is decided about a message
//! before it is parsed.
//!
//! - [`rate`]: a per-source token bucket that drops a flooding source's requests.

pub mod rate;
