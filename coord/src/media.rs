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

/// The node a new session should go to: of two nodes drawn at random among those neither draining
/// nor full, the less loaded (ties: the first drawn). Two random choices rather than the least
/// loaded of all because the load figures are seconds old: every instance sending each new call to
/// the one node that looked least loaded would herd a burst onto it until its next report.
pub fn choose_node(nodes: &[MediaNodeRegistration]) -> Option<&MediaNodeRegistration> {
    use crate::random;
    choose_node_with(nodes, [random::u64(), random::u64()])
}

/// [`choose_node`] with its two random draws given.
fn choose_node_with(
    nodes: &[MediaNodeRegistration],
    draws: [u64; 2],
) -> Option<&MediaNodeRegistration> {
    let open: Vec<&MediaNodeRegistration> = nodes
        .iter()
        .filter(|n| !n.draining && n.active_sessions < n.capacity)
        .collect();
    let count = open.len() as u64;
    let first = *open.get((draws[0] % count.max(1)) as usize)?;
    if count == 1 {
        return Some(first);
    }
    // The second draw skips the first node, so the two are always different.
    let mut second = (draws[1] % (count - 1)) as usize;
    if second >= (draws[0] % count) as usize {
        second += 1;
    }
    let second = open[second];
    Some(if second.load() < first.load() {
        second
    } else {
        first
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

    fn chosen(nodes: &[MediaNodeRegistration], draws: [u64; 2]) -> Option<&str> {
        choose_node_with(nodes, draws).map(|n| n.node_id.as_str())
    }

    #[test]
    fn of_two_open_nodes_the_less_loaded_always_wins() {
        let nodes = [
            node("a", 50, 100, false),
            node("b", 10, 100, true),
            node("c", 30, 100, false),
            node("d", 5, 5, false),
        ];
        for draws in [[0, 0], [1, 0], [7, 3], [u64::MAX, u64::MAX]] {
            assert_eq!(chosen(&nodes, draws), Some("c"), "{draws:?}");
        }
        assert_eq!(choose_node(&nodes).map(|n| n.node_id.as_str()), Some("c"));
    }

    #[test]
    fn load_is_relative_to_capacity() {
        let nodes = [node("small", 10, 20, false), node("big", 30, 1000, false)];
        assert_eq!(chosen(&nodes, [0, 0]), Some("big"));
        assert_eq!(chosen(&nodes, [1, 0]), Some("big"));
        assert_eq!(chosen(&[node("x", 0, 0, false)], [0, 0]), None);
        assert_eq!(chosen(&[], [3, 4]), None);
    }

    #[test]
    fn the_less_loaded_of_the_two_drawn_wins_and_equal_nodes_share_the_calls() {
        let nodes = [
            node("a", 10, 100, false),
            node("b", 20, 100, false),
            node("c", 30, 100, false),
        ];
        // Drawn a and c, c and b, b and c.
        assert_eq!(chosen(&nodes, [0, 1]), Some("a"));
        assert_eq!(chosen(&nodes, [2, 1]), Some("b"));
        assert_eq!(chosen(&nodes, [1, 1]), Some("b"));
        // Equal figures (a burst between two reports): every node gets its share.
        let equal = [
            node("a", 0, 100, false),
            node("b", 0, 100, false),
            node("c", 0, 100, false),
        ];
        let mut counts = std::collections::HashMap::new();
        for first in 0..3 {
            for second in 0..2 {
                *counts.entry(chosen(&equal, [first, second])).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 2), "{counts:?}");
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
