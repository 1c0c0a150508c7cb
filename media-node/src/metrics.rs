//! The node's Prometheus metrics. Labels are bounded (drop and end reasons), never session ids
//! or peer addresses.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::relay::{DropReason, RelayCounters};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// DeleteSession.
    Deleted,
    /// No packet for the idle timeout.
    Idle,
    /// Still running when the node stopped (drain timeout passed).
    Shutdown,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::Deleted => "deleted",
            EndReason::Idle => "idle",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// The media node's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// Packet counters, shared with the data-plane workers.
    pub relay: RelayCounters,
    sessions: Gauge,
    draining: Gauge,
    created: Counter,
    ended: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Registers every metric; `capacity` is the node's session limit.
    pub fn new(capacity: u32) -> Self {
        let mut registry = Registry::with_prefix("centrex_media");
        let relay = RelayCounters::default();
        let sessions = Gauge::default();
        let draining = Gauge::default();
        let created = Counter::default();
        let ended = Family::<ReasonLabel, Counter>::default();
        let capacity_gauge = Gauge::<i64>::default();
        capacity_gauge.set(i64::from(capacity));
        registry.register("sessions", "Relay sessions now", sessions.clone());
        registry.register(
            "capacity",
            "Relay sessions accepted at most",
            capacity_gauge,
        );
        registry.register("draining", "1 while the node drains", draining.clone());
        registry.register(
            "sessions_created",
            "Relay sessions created",
            created.clone(),
        );
        registry.register(
            "sessions_ended",
            "Relay sessions ended, by reason",
            ended.clone(),
        );
        registry.register(
            "packets_received",
            "Packets accepted from peers",
            relay.received_packets.clone(),
        );
        registry.register(
            "received_bytes",
            "Bytes accepted from peers",
            relay.received_bytes.clone(),
        );
        registry.register(
            "packets_relayed",
            "Packets sent to peers",
            relay.relayed_packets.clone(),
        );
        registry.register(
            "relayed_bytes",
            "Bytes sent to peers",
            relay.relayed_bytes.clone(),
        );
        registry.register(
            "packets_lost",
            "RTP sequence-number gaps seen from peers",
            relay.lost_packets.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "packets_dropped",
            "Packets refused, by reason",
            dropped.clone(),
        );
        let mut relay = relay;
        // The family hands out the workers' counters, so scrapes read what they add.
        for (reason, counter) in DropReason::ALL.iter().zip(relay.dropped.iter_mut()) {
            *counter = dropped
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .clone();
        }
        Self {
            registry,
            relay,
            sessions,
            draining,
            created,
            ended,
        }
    }

    /// Records the number of sessions now.
    pub fn set_sessions(&self, sessions: usize) {
        self.sessions.set(sessions as i64);
    }

    /// Records the drain state.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// Counts a created session.
    pub fn session_created(&self) {
        self.created.inc();
    }

    /// Counts an ended session.
    pub fn session_ended(&self, reason: EndReason) {
        self.ended
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_drops_show_in_the_exposition_by_reason() {
        let metrics = Metrics::new(10);
        metrics.relay.dropped[DropReason::WrongSource as usize].inc_by(3);
        let text = metrics.render();
        assert!(
            text.contains("centrex_media_packets_dropped_total{reason=\"wrong_source\"} 3"),
            "{text}"
        );
    }
}
