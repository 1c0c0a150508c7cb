//! Media-node registrations: what each relay publishes under its lease and signalling reads to
//! pick a node.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An inclusive UDP port range, written `min-max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A port range that is not `MIN-MAX` with `0 < MIN < MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected MIN-MAX with 0 < MIN < MAX ≤ 65535, e.g. 20000-29999")]
pub struct InvalidPortRange(pub String);

impl FromStr for PortRange {
    type Err = InvalidPortRange;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPortRange(text.to_string());
        let (min, max) = text.split_once('-').ok_or_else(invalid)?;
        let range = PortRange {
            min: min.trim().parse().map_err(|_| invalid())?,
            max: max.trim().parse().map_err(|_| invalid())?,
        };
        // One RTP/RTCP pair at least.
        if range.min == 0 || range.max <= range.min {
            return Err(invalid());
        }
        Ok(range)
    }
}

/// A media node's registration, under `keys::media_node(namespace, pool, node_id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodeRegistration {
    pub node_id: String,
    /// Where peers send media (the address written into SDP).
    pub address: IpAddr,
    /// Where signalling reaches MediaControl.
    pub grpc_address: SocketAddr,
    pub rtp_ports: PortRange,
    /// Sessions the node accepts at most.
    pub capacity: u32,
    pub active_sessions: u32,
    /// Packets relayed per second, over the last second.
    pub packets_per_second: f64,
    /// A draining node takes no new sessions.
    pub draining: bool,
}

impl MediaNodeRegistration {
    /// Share of the capacity in use, 0.0 to 1.0 (a node without capacity counts as full).
    pub fn load(&self) -> f64 {
        if self.capacity == 0 {
            1.0
        } else {
            f64::from(self.active_sessions) / f64::from(self.capacity)
        }
    }
}

/// The node a new session should go to: not draining, not full, least loaded (ties: node id).
pub fn least_loaded(nodes: &[MediaNodeRegistration]) -> Option<&MediaNodeRegistration> {
    nodes
        .iter()
        .filter(|n| !n.draining && n.active_sessions < n.capacity)
        .min_by(|a, b| {
            a.load()
                .total_cmp(&b.load())
                .then_with(|| a.node_id.cmp(&b.node_id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, active: u32, capacity: u32, draining: bool) -> MediaNodeRegistration {
        MediaNodeRegistration {
            node_id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            grpc_address: "127.0.0.1:9090".parse().unwrap(),
            rtp_ports: PortRange {
                min: 20000,
                max: 29999,
            },
            capacity,
            active_sessions: active,
            packets_per_second: 0.0,
            draining,
        }
    }

    #[test]
    fn the_least_loaded_node_that_is_not_draining_or_full_wins() {
        let nodes = [
            node("a", 50, 100, false),
            node("b", 10, 100, true),
            node("c", 30, 100, false),
            node("d", 5, 5, false),
        ];
        assert_eq!(least_loaded(&nodes).map(|n| n.node_id.as_str()), Some("c"));
    }

    #[test]
    fn load_is_relative_to_capacity() {
        let nodes = [node("small", 10, 20, false), node("big", 30, 1000, false)];
        assert_eq!(
            least_loaded(&nodes).map(|n| n.node_id.as_str()),
            Some("big")
        );
        assert!(least_loaded(&[node("x", 0, 0, false)]).is_none());
    }

    #[test]
    fn a_port_range_parses_from_min_dash_max() {
        assert_eq!(
            "20000-29999".parse::<PortRange>(),
            Ok(PortRange {
                min: 20000,
                max: 29999
            })
        );
        for text in ["", "20000", "0-10", "10-10", "30000-20000", "1-70000"] {
            assert!(text.parse::<PortRange>().is_err(), "{text}");
        }
    }
}
