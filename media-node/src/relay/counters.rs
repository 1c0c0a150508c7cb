//! Packet accounting: per leg (kept by the worker that owns the session) and per node (shared
//! Prometheus counters, added to once per worker loop, not per packet).

use std::net::SocketAddr;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

/// Why the relay refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither RTP nor RTCP, or longer than the relay forwards.
    Malformed,
    /// Not from the latched source (a hijack attempt or a stale peer).
    WrongSource,
    /// An RTP payload type the leg's SDP did not offer.
    PayloadType,
    /// The other leg's peer is not known yet.
    NoDestination,
    /// The kernel refused to send it.
    SendFailed,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Malformed,
        DropReason::WrongSource,
        DropReason::PayloadType,
        DropReason::NoDestination,
        DropReason::SendFailed,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::WrongSource => "wrong_source",
            DropReason::PayloadType => "payload_type",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
        }
    }
}

/// Counters of one leg (in: from this leg's peer; out: sent to it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegCounters {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    /// Sequence-number gaps in the RTP received from the peer.
    pub lost: u64,
}

/// A leg as the data plane sees it now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegStats {
    pub counters: LegCounters,
    /// The RTP source the leg is latched to.
    pub latched: Option<SocketAddr>,
    /// Where RTP for this leg's peer goes (the latched source, else the SDP address).
    pub destination: Option<SocketAddr>,
    /// When the last packet from the peer was accepted.
    pub last_activity: Option<SystemTime>,
}

/// The node-wide packet counters the workers add to.
#[derive(Clone, Default)]
pub struct RelayCounters {
    pub received_packets: Counter,
    pub received_bytes: Counter,
    pub relayed_packets: Counter,
    pub relayed_bytes: Counter,
    pub lost_packets: Counter,
    /// Indexed like [`DropReason::ALL`].
    pub dropped: [Counter; DropReason::ALL.len()],
}

impl RelayCounters {
    /// Packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }
}

/// What one worker loop counted, published to [`RelayCounters`] at its end.
#[derive(Debug, Default)]
pub struct Tally {
    pub received_packets: u64,
    pub received_bytes: u64,
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    pub lost_packets: u64,
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Tally {
    /// Counts one dropped packet.
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped[reason as usize] += 1;
    }

    /// Adds the tally to the shared counters and starts over.
    pub fn publish(&mut self, counters: &RelayCounters) {
        let add = |counter: &Counter, value: u64| {
            if value > 0 {
                counter.inc_by(value);
            }
        };
        add(&counters.received_packets, self.received_packets);
        add(&counters.received_bytes, self.received_bytes);
        add(&counters.relayed_packets, self.relayed_packets);
        add(&counters.relayed_bytes, self.relayed_bytes);
        add(&counters.lost_packets, self.lost_packets);
        for (counter, value) in counters.dropped.iter().zip(self.dropped) {
            add(counter, value);
        }
        *self = Tally::default();
    }
}
