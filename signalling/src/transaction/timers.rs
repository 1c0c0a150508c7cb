//! RFC 3261 §17 timer values (Table 4 in §A).

use std::time::Duration;

/// The base timer values; every transaction timer derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    /// Round-trip estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmission interval of non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerValues {
    /// 64·T1: Timers B, F, H and J (on unreliable transports).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// The retransmission interval after `interval`: doubled, capped at T2 where `capped`.
    pub fn backoff(&self, interval: Duration, capped: bool) -> Duration {
        if capped {
            (interval * 2).min(self.t2)
        } else {
            interval * 2
        }
    }
}

/// Whether the transport retransmits by itself (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Unreliable,
    Reliable,
}
