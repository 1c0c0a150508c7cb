//! Throttling of sources that keep failing authentication (password guessing, scanners).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures tolerated per source within the window before it is blocked.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    pub max_failures: u32,
    pub window: Duration,
    pub block: Duration,
    /// Sources remembered at most; beyond it the stalest are forgotten.
    pub capacity: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
            capacity: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
}

/// Per-source failure counts, bounded in memory.
pub struct AuthThrottle {
    policy: ThrottlePolicy,
    sources: HashMap<IpAddr, Record>,
}

impl AuthThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            sources: HashMap::new(),
        }
    }

    /// Whether requests from `source` are refused right now.
    pub fn is_blocked(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .and_then(|r| r.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failed authentication; returns true when it blocks the source.
    pub fn failed(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.policy.capacity {
            self.forget_stale(now);
        }
        let policy = self.policy;
        let record = self.sources.entry(source).or_insert(Record {
            failures: 0,
            window_start: now,
            blocked_until: None,
        });
        if now.duration_since(record.window_start) > policy.window {
            *record = Record {
                failures: 0,
                window_start: now,
                blocked_until: record.blocked_until,
            };
        }
        record.failures += 1;
        if record.failures >= policy.max_failures {
            record.blocked_until = Some(now + policy.block);
            return true;
        }
        false
    }

    /// Forgets a source after a success.
    pub fn succeeded(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }

    /// Drops records whose window and block are over; if none are, the oldest window goes.
    fn forget_stale(&mut self, now: Instant) {
        let policy = self.policy;
        self.sources.retain(|_, r| {
            now.duration_since(r.window_start) <= policy.window
                || r.blocked_until.is_some_and(|u| now < u)
        });
        if self.sources.len() >= policy.capacity
            && let Some(oldest) = self
                .sources
                .iter()
                .min_by_key(|(_, r)| r.window_start)
                .map(|(ip, _)| *ip)
        {
            self.sources.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures: 3,
            window: Duration::from_secs(10),
            block: Duration::from_secs(60),
            capacity: 2,
        }
    }

    #[test]
    fn a_source_is_blocked_after_repeated_failures_and_released_later() {
        let mut throttle = AuthThrottle::new(policy());
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!throttle.failed(source, t0));
        assert!(!throttle.failed(source, t0));
        assert!(throttle.failed(source, t0));
        assert!(throttle.is_blocked(source, t0 + Duration::from_secs(30)));
        assert!(!throttle.is_blocked(source, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn failures_spread_over_time_are_not_blocked() {
        let mut throttle = AuthThrottle::new(policy());
        let source: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(!throttle.failed(source, t0 + Duration::from_secs(11 * i)));
        }
    }

    #[test]
    fn a_success_clears_the_count_and_other_sources_are_unaffected() {
        let mut throttle = AuthThrottle::new(policy());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        throttle.failed(a, t0);
        throttle.failed(a, t0);
        throttle.succeeded(a);
        assert!(!throttle.failed(a, t0));
        assert!(!throttle.is_blocked(b, t0));
    }

    #[test]
    fn memory_is_bounded_whatever_sources_send() {
        let mut throttle = AuthThrottle::new(policy());
        let t0 = Instant::now();
        for i in 0..100u8 {
            throttle.failed(IpAddr::from([198, 51, 100, i]), t0);
        }
        assert!(throttle.sources.len() <= 2);
    }
}
