//! Per-source request-rate limit: a token bucket per source IP, in a table of bounded size.
//!
//! Sans-IO: the caller passes the time, so the behaviour is tested with explicit `Instant`s.
//! Sources are IPs, not IP:port pairs, so a flooder cannot get a fresh allowance per port.
//!
//! The table holds at most [`RateLimits::max_sources`] sources. A source whose bucket has
//! refilled completely is idle: forgetting it loses nothing (a new bucket starts full), so those
//! are evicted when the table is full. When every tracked source is active, a new source is
//! admitted untracked: that many sources each at their allowance is a distributed flood a
//! per-source limit cannot stop anyway, and refusing unknown sources would lock out the phones
//! instead (the in-flight cap of the server bounds the work either way).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The per-source allowance; the defaults are the documented ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests per second a source may send on average (default 200).
    pub per_second: f64,
    /// Requests a source may send at once after being quiet (default 400).
    pub burst: f64,
    /// Sources tracked at once (default 65,536).
    pub max_sources: usize,
    /// Whether the carriers of trunks (sources in a trunk's `inbound_sources`) skip the limit
    /// (default true): a carrier aggregates many callers behind few addresses, and trunk traffic
    /// is already bounded by the trunk's calls per second and channels.
    pub exempt_carriers: bool,
    /// Whether loopback sources skip the limit (default true): they cannot be remote peers (the
    /// kernel drops 127.0.0.0/8 arriving on other interfaces), and they are local mode's and the
    /// load benchmark's own tools.
    pub exempt_loopback: bool,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_second: 200.0,
            burst: 400.0,
            max_sources: 65_536,
            exempt_carriers: true,
            exempt_loopback: true,
        }
    }
}

impl RateLimits {
    /// No limit at all (every request admitted, nothing tracked).
    pub fn unlimited() -> Self {
        Self {
            per_second: f64::INFINITY,
            burst: f64::INFINITY,
            max_sources: 0,
            exempt_carriers: true,
            exempt_loopback: true,
        }
    }
}

/// One source's bucket: tokens left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Tokens at `now` after refilling at `per_second`, capped at `burst`.
    fn level(&self, now: Instant, limits: &RateLimits) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limits.per_second).min(limits.burst)
    }

    /// Takes one token at `now` if there is one.
    fn take(&mut self, now: Instant, limits: &RateLimits) -> bool {
        let level = self.level(now, limits);
        self.at = now.max(self.at);
        if level >= 1.0 {
            self.tokens = level - 1.0;
            true
        } else {
            self.tokens = level;
            false
        }
    }
}

/// Token buckets of the sources seen recently.
#[derive(Debug)]
pub struct SourceLimiter {
    limits: RateLimits,
    buckets: HashMap<IpAddr, Bucket>,
    /// The table was last swept for idle sources then; a full table is swept at most this often
    /// per [`SWEEP_INTERVAL`], so a flood of new sources cannot make every request scan it.
    swept_at: Option<Instant>,
}

/// Least time between two sweeps of a full table.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

impl SourceLimiter {
    /// A limiter with `limits` and no source tracked yet.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
            swept_at: None,
        }
    }

    /// The allowance applied.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a request from `source` at `now` is within its allowance (and counts it).
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        let limits = self.limits;
        if limits.exempt_loopback && source.is_loopback() {
            return true;
        }
        if let Some(bucket) = self.buckets.get_mut(&source) {
            return bucket.take(now, &limits);
        }
        if self.buckets.len() >= limits.max_sources {
            self.sweep(now);
            if self.buckets.len() >= limits.max_sources {
                return true;
            }
        }
        let mut bucket = Bucket {
            tokens: limits.burst,
            at: now,
        };
        let admitted = bucket.take(now, &limits);
        self.buckets.insert(source, bucket);
        admitted
    }

    /// Forgets the sources whose bucket is full again (at most once per [`SWEEP_INTERVAL`]).
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_INTERVAL)
        {
            return;
        }
        self.swept_at = Some(now);
        let limits = self.limits;
        self.buckets
            .retain(|_, bucket| bucket.level(now, &limits) < limits.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: f64, burst: f64, max_sources: usize) -> RateLimits {
        RateLimits {
            per_second,
            burst,
            max_sources,
            exempt_carriers: true,
            exempt_loopback: false,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn admitted(limiter: &mut SourceLimiter, source: IpAddr, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| limiter.admit(source, now)).count()
    }

    #[test]
    fn a_source_gets_its_burst_at_once_and_nothing_more() {
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 100));
        let t0 = Instant::now();
        assert_eq!(admitted(&mut limiter, ip(1), t0, 50), 20);
    }

    #[test]
    fn a_drained_source_is_refilled_at_its_rate() {
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 100));
        let t0 = Instant::now();
        admitted(&mut limiter, ip(1), t0, 20);
        let half_second = t0 + Duration::from_millis(500);
        assert_eq!(admitted(&mut limiter, ip(1), half_second, 50), 5);
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(
            admitted(&mut limiter, ip(1), much_later, 50),
            20,
            "refill is capped at the burst"
        );
    }

    #[test]
    fn a_flooding_source_does_not_affect_another() {
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 100));
        let t0 = Instant::now();
        admitted(&mut limiter, ip(1), t0, 1000);
        assert!(limiter.admit(ip(2), t0));
    }

    #[test]
    fn idle_sources_are_evicted_when_the_table_is_full() {
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 2));
        let t0 = Instant::now();
        limiter.admit(ip(1), t0);
        limiter.admit(ip(2), t0);
        // A tenth of a second refills one token: both buckets are full again.
        let later = t0 + Duration::from_millis(200);
        assert!(limiter.admit(ip(3), later));
        assert_eq!(limiter.tracked(), 1, "the idle sources were forgotten");
    }

    #[test]
    fn a_table_full_of_active_sources_admits_new_ones_untracked() {
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 2));
        let t0 = Instant::now();
        admitted(&mut limiter, ip(1), t0, 30);
        admitted(&mut limiter, ip(2), t0, 30);
        assert_eq!(admitted(&mut limiter, ip(3), t0, 30), 30);
        assert_eq!(limiter.tracked(), 2, "the table never grows past its bound");
        assert!(
            !limiter.admit(ip(1), t0),
            "the tracked flooders stay limited"
        );
    }

    #[test]
    fn time_going_backwards_never_mints_tokens() {
        let mut limiter = SourceLimiter::new(limits(10.0, 2.0, 10));
        let t0 = Instant::now() + Duration::from_secs(10);
        admitted(&mut limiter, ip(1), t0, 2);
        assert!(!limiter.admit(ip(1), t0 - Duration::from_secs(5)));
        assert!(!limiter.admit(ip(1), t0));
    }

    #[test]
    fn loopback_sources_are_exempt_unless_configured_otherwise() {
        let t0 = Instant::now();
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let exempt = RateLimits {
            exempt_loopback: true,
            ..limits(10.0, 20.0, 100)
        };
        let mut limiter = SourceLimiter::new(exempt);
        assert_eq!(admitted(&mut limiter, loopback, t0, 1000), 1000);
        assert_eq!(limiter.tracked(), 0);
        let mut limiter = SourceLimiter::new(limits(10.0, 20.0, 100));
        assert_eq!(admitted(&mut limiter, loopback, t0, 1000), 20);
    }

    #[test]
    fn unlimited_admits_everything_and_tracks_nothing() {
        let mut limiter = SourceLimiter::new(RateLimits::unlimited());
        let t0 = Instant::now();
        assert_eq!(admitted(&mut limiter, ip(1), t0, 10_000), 10_000);
        assert_eq!(limiter.tracked(), 0);
    }
}
