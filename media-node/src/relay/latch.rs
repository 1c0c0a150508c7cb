//! Symmetric latching: a leg sends to wherever its peer's packets come from (NAT makes the SDP
//! address unreliable), but only the first source is trusted, so a third party cannot take the
//! stream over by sending to the relay's port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the relay trusts about one port's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    /// Nothing received yet: the first packet of the expected address family latches.
    Open {
        /// IPv4 (`false`) or IPv6 (`true`), from the SDP address; `None` accepts either.
        ipv6: Option<bool>,
    },
    /// Bound to the first source.
    Latched {
        source: SocketAddr,
        /// SSRC of the last RTP packet from `source`, when one carried it.
        ssrc: Option<u32>,
        last_seen: Instant,
    },
}

/// What to do with a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source.
    Accept,
    /// The first packet: the port is now latched to its source.
    Latched,
    /// A new SSRC from a new source after the latched one fell silent (a re-INVITE the
    /// signalling has not told us about, or a roaming phone): latched to the new source.
    Relatched { previous: SocketAddr },
    /// From another source: dropped.
    Reject,
}

impl Latch {
    /// A latch waiting for a peer at `expected` (or anyone, when unknown).
    pub fn expecting(expected: Option<SocketAddr>) -> Self {
        Latch::Open {
            ipv6: expected.map(|a| a.is_ipv6()),
        }
    }

    /// The latched source, if any.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Latch::Open { .. } => None,
            Latch::Latched { source, .. } => Some(*source),
        }
    }

    /// Decides about a packet from `source`; `ssrc` is given for packets that may (re)latch
    /// (RTP on an RTP port, RTCP on a dedicated RTCP port). A packet from another source takes
    /// the latch only with a new SSRC after `silence` without a packet from the latched one.
    pub fn observe(
        &mut self,
        source: SocketAddr,
        ssrc: Option<u32>,
        now: Instant,
        silence: Duration,
    ) -> Verdict {
        match *self {
            Latch::Open { ipv6 } => {
                if ipv6.is_some_and(|v6| v6 != source.is_ipv6()) || ssrc.is_none() {
                    return Verdict::Reject;
                }
                *self = Latch::Latched {
                    source,
                    ssrc,
                    last_seen: now,
                };
                Verdict::Latched
            }
            Latch::Latched {
                source: latched,
                ssrc: latched_ssrc,
                last_seen,
            } => {
                if source == latched {
                    *self = Latch::Latched {
                        source,
                        ssrc: ssrc.or(latched_ssrc),
                        last_seen: now,
                    };
                    return Verdict::Accept;
                }
                let new_stream = ssrc.is_some() && ssrc != latched_ssrc;
                if new_stream && now.saturating_duration_since(last_seen) >= silence {
                    *self = Latch::Latched {
                        source,
                        ssrc,
                        last_seen: now,
                    };
                    return Verdict::Relatched { previous: latched };
                }
                Verdict::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_secs(2);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_packet_latches_its_source() {
        let mut latch = Latch::expecting(Some(addr("192.0.2.1:4000")));
        let now = Instant::now();
        // Behind NAT the source differs from the SDP address: that is what latching is for.
        let source = addr("198.51.100.7:61000");
        assert_eq!(
            latch.observe(source, Some(1), now, SILENCE),
            Verdict::Latched
        );
        assert_eq!(latch.source(), Some(source));
    }

    #[test]
    fn a_packet_of_the_other_address_family_does_not_latch() {
        let mut latch = Latch::expecting(Some(addr("192.0.2.1:4000")));
        let verdict = latch.observe(addr("[2001:db8::1]:4000"), Some(1), Instant::now(), SILENCE);
        assert_eq!(verdict, Verdict::Reject);
        assert_eq!(latch.source(), None);
    }

    #[test]
    fn an_rtcp_packet_on_a_muxed_port_does_not_latch() {
        let mut latch = Latch::expecting(None);
        let verdict = latch.observe(addr("192.0.2.1:4000"), None, Instant::now(), SILENCE);
        assert_eq!(verdict, Verdict::Reject);
    }

    #[test]
    fn another_source_is_rejected_while_the_latched_one_talks() {
        let mut latch = Latch::expecting(None);
        let start = Instant::now();
        latch.observe(addr("192.0.2.1:4000"), Some(1), start, SILENCE);
        let hijack = latch.observe(
            addr("203.0.113.9:4000"),
            Some(2),
            start + SILENCE / 2,
            SILENCE,
        );
        assert_eq!(hijack, Verdict::Reject);
        assert_eq!(latch.source(), Some(addr("192.0.2.1:4000")));
    }

    #[test]
    fn the_same_ssrc_from_another_source_never_relatches() {
        let mut latch = Latch::expecting(None);
        let start = Instant::now();
        latch.observe(addr("192.0.2.1:4000"), Some(1), start, SILENCE);
        let replay = latch.observe(
            addr("203.0.113.9:4000"),
            Some(1),
            start + SILENCE * 10,
            SILENCE,
        );
        assert_eq!(replay, Verdict::Reject);
    }

    #[test]
    fn a_new_ssrc_after_silence_relatches() {
        let mut latch = Latch::expecting(None);
        let start = Instant::now();
        let first = addr("192.0.2.1:4000");
        latch.observe(first, Some(1), start, SILENCE);
        let verdict = latch.observe(addr("192.0.2.1:4002"), Some(2), start + SILENCE, SILENCE);
        assert_eq!(verdict, Verdict::Relatched { previous: first });
        assert_eq!(latch.source(), Some(addr("192.0.2.1:4002")));
    }

    #[test]
    fn packets_from_the_latched_source_keep_it_alive() {
        let mut latch = Latch::expecting(None);
        let start = Instant::now();
        let first = addr("192.0.2.1:4000");
        latch.observe(first, Some(1), start, SILENCE);
        latch.observe(first, None, start + SILENCE, SILENCE);
        let verdict = latch.observe(
            addr("192.0.2.9:4000"),
            Some(2),
            start + SILENCE + SILENCE / 2,
            SILENCE,
        );
        assert_eq!(verdict, Verdict::Reject);
    }
}
