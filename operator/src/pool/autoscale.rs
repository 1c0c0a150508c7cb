//! The MediaPool autoscaling decision. Pure: the registrations the media nodes publish, the
//! current replicas, the recommendation history and the time are passed in; no clock, no IO.
//!
//! - Recommendation: ceil(active sessions / (capacity per node × target utilisation)). Sessions
//!   of draining nodes count (they still hold calls); their capacity does not (they take no new
//!   session). Capacity per node is the mean of the serving nodes' reported capacity, or
//!   `spec.sessionsPerNode` when no serving node reports any.
//! - Up at once; down only to the highest recommendation of the stabilisation window (the
//!   Kubernetes HPA's scale-down stabilisation), never below `minReplicas`, never above
//!   `maxReplicas`.
//! - No registration at all keeps the current replicas: an empty prefix means the nodes are
//!   starting or the store lost them, not that the load is zero.
//! - A fresh history (operator start, new leader, autoscaling just enabled) counts the current
//!   replicas as a recommendation made now, so nothing is removed before one full window.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use centrex_coord::media::MediaNodeRegistration;

use crate::crd::MediaAutoscaling;

/// The bounds and targets of `spec.autoscaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// 1 to 100.
    pub target_utilization_percent: u32,
    pub scale_down_stabilization: Duration,
    /// `spec.sessionsPerNode`: the capacity per node when no serving node reports one.
    pub sessions_per_node: u32,
}

impl Policy {
    /// The policy of a pool's `spec.autoscaling` and `spec.sessionsPerNode`.
    pub fn of(autoscaling: &MediaAutoscaling, sessions_per_node: i32) -> Self {
        let positive = |v: i32| u32::try_from(v).unwrap_or(0).max(1);
        Self {
            min_replicas: autoscaling.min_replicas,
            max_replicas: autoscaling.max_replicas,
            target_utilization_percent: positive(autoscaling.target_utilization_percent).min(100),
            scale_down_stabilization: Duration::from_secs(
                u64::try_from(autoscaling.scale_down_stabilization_seconds).unwrap_or(0),
            ),
            sessions_per_node: positive(sessions_per_node),
        }
    }
}

/// The pool's load, summed over its registrations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Sessions on every node, draining ones included.
    pub active_sessions: u64,
    /// Capacity of the nodes that are not draining.
    pub capacity: u64,
    /// Nodes that are not draining.
    pub serving_nodes: u32,
    /// Nodes that are draining.
    pub draining_nodes: u32,
}

impl Load {
    /// Sums the registrations of one pool.
    pub fn of<'a>(nodes: impl IntoIterator<Item = &'a MediaNodeRegistration>) -> Self {
        nodes.into_iter().fold(Load::default(), |mut load, node| {
            load.active_sessions += u64::from(node.active_sessions);
            if node.draining {
                load.draining_nodes += 1;
            } else {
                load.capacity += u64::from(node.capacity);
                load.serving_nodes += 1;
            }
            load
        })
    }

    /// Registered nodes, draining ones included.
    pub fn nodes(&self) -> u32 {
        self.serving_nodes + self.draining_nodes
    }
}

/// Past recommendations of one pool within its stabilisation window; bounded by the window over
/// the period of the passes that record into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recommendations {
    entries: VecDeque<(Instant, i32)>,
}

impl Recommendations {
    /// Records `replicas` at `now` and forgets what is `window` old or older (as the HPA does:
    /// a zero window keeps only the recommendation just made).
    fn record(&mut self, now: Instant, replicas: i32, window: Duration) {
        self.entries.push_back((now, replicas));
        while self.entries.len() > 1 {
            match self.entries.front() {
                Some(&(at, _)) if now.saturating_duration_since(at) >= window => {
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The highest recommendation kept.
    fn highest(&self) -> Option<i32> {
        self.entries.iter().map(|&(_, r)| r).max()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Recommendations kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Why the autoscaler wants what it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The load asks for more nodes.
    ScaledUp,
    /// Every recommendation of the window allows fewer nodes.
    ScaledDown,
    /// The load asks for fewer nodes, but a recommendation of the window does not yet.
    ScaleDownStabilizing,
    /// The load asks for the nodes there are (or a bound holds them).
    Steady,
    /// No node is registered: the current replicas stay.
    NoLoadReported,
}

impl Reason {
    /// The CamelCase reason in status and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScaledUp => "ScaledUp",
            Reason::ScaledDown => "ScaledDown",
            Reason::ScaleDownStabilizing => "ScaleDownStabilizing",
            Reason::Steady => "Steady",
            Reason::NoLoadReported => "NoLoadReported",
        }
    }
}

/// A bound that changed the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Min,
    Max,
}

/// What the autoscaler decided, with its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Replicas before the decision (`spec.replicas`).
    pub current: i32,
    /// Replicas wanted.
    pub desired: i32,
    /// What the load alone asks for (before the window and the bounds).
    pub recommended: i32,
    pub reason: Reason,
    /// The bound that capped or raised `desired`, if any.
    pub limited_by: Option<Limit>,
    pub load: Load,
    pub target_utilization_percent: u32,
}

impl Decision {
    /// Whether `spec.replicas` has to change.
    pub fn changes_replicas(&self) -> bool {
        self.desired != self.current
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = &self.load;
        if self.reason == Reason::NoLoadReported {
            return write!(
                f,
                "no media node is registered: {} replicas kept",
                self.desired
            );
        }
        write!(
            f,
            "{} sessions on {} nodes ({} draining), capacity {} at {}% target: {} recommended",
            load.active_sessions,
            load.nodes(),
            load.draining_nodes,
            load.capacity,
            self.target_utilization_percent,
            self.recommended,
        )?;
        match self.reason {
            Reason::ScaledUp | Reason::ScaledDown => {
                write!(f, "; {} → {} replicas", self.current, self.desired)?
            }
            Reason::ScaleDownStabilizing => write!(
                f,
                "; {} replicas held by the scale-down stabilisation window",
                self.desired
            )?,
            Reason::Steady | Reason::NoLoadReported => write!(f, "; {} replicas", self.desired)?,
        }
        match self.limited_by {
            Some(Limit::Max) => write!(f, " (capped at maxReplicas)"),
            Some(Limit::Min) => write!(f, " (raised to minReplicas)"),
            None => Ok(()),
        }
    }
}

/// Replicas the load asks for, unbounded.
pub fn recommend(load: &Load, policy: &Policy) -> i32 {
    let target = u128::from(policy.target_utilization_percent);
    let sessions = u128::from(load.active_sessions) * 100;
    // Mean capacity of the serving nodes, kept as a fraction: capacity / serving_nodes.
    let (numerator, denominator) = if load.capacity > 0 && load.serving_nodes > 0 {
        (
            sessions * u128::from(load.serving_nodes),
            u128::from(load.capacity) * target,
        )
    } else {
        (sessions, u128::from(policy.sessions_per_node) * target)
    };
    i32::try_from(numerator.div_ceil(denominator.max(1))).unwrap_or(i32::MAX)
}

/// Decides the replicas of a pool whose nodes report `load` (`None`: none registered) at `now`,
/// recording the recommendation into `history`.
pub fn decide(
    policy: &Policy,
    load: Option<Load>,
    current: i32,
    history: &mut Recommendations,
    now: Instant,
) -> Decision {
    let window = policy.scale_down_stabilization;
    let bounded = |replicas: i32| {
        let desired = replicas.clamp(
            policy.min_replicas,
            policy.max_replicas.max(policy.min_replicas),
        );
        let limited_by = if replicas > desired {
            Some(Limit::Max)
        } else if replicas < desired {
            Some(Limit::Min)
        } else {
            None
        };
        (desired, limited_by)
    };
    let Some(load) = load.filter(|l| l.nodes() > 0) else {
        let (desired, limited_by) = bounded(current);
        return Decision {
            current,
            desired,
            recommended: current,
            reason: if desired > current {
                Reason::ScaledUp
            } else if desired < current {
                Reason::ScaledDown
            } else {
                Reason::NoLoadReported
            },
            limited_by,
            load: Load::default(),
            target_utilization_percent: policy.target_utilization_percent,
        };
    };

    let recommended = recommend(&load, policy);
    if history.is_empty() {
        history.record(now, current, window);
    }
    history.record(now, recommended, window);
    let stabilized = if recommended >= current {
        recommended
    } else {
        // Down only as far as every recommendation of the window allows; never up because of
        // an old one.
        history.highest().unwrap_or(recommended).min(current)
    };
    let (desired, limited_by) = bounded(stabilized);
    let reason = if desired > current {
        Reason::ScaledUp
    } else if desired < current {
        Reason::ScaledDown
    } else if bounded(recommended).0 < current {
        Reason::ScaleDownStabilizing
    } else {
        Reason::Steady
    };
    Decision {
        current,
        desired,
        recommended,
        reason,
        limited_by,
        load,
        target_utilization_percent: policy.target_utilization_percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn policy(min: i32, max: i32) -> Policy {
        Policy {
            min_replicas: min,
            max_replicas: max,
            target_utilization_percent: 50,
            scale_down_stabilization: WINDOW,
            sessions_per_node: 100,
        }
    }

    fn node(id: &str, active: u32, capacity: u32, draining: bool) -> MediaNodeRegistration {
        MediaNodeRegistration {
            node_id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            grpc_address: "127.0.0.1:9090".parse().unwrap(),
            rtp_ports: centrex_coord::media::PortRange {
                min: 20000,
                max: 29999,
            },
            capacity,
            active_sessions: active,
            packets_per_second: 0.0,
            draining,
        }
    }

    /// Load of `nodes` serving nodes of capacity 100 sharing `sessions`.
    fn serving(sessions: u64, nodes: u32) -> Option<Load> {
        Some(Load {
            active_sessions: sessions,
            capacity: u64::from(nodes) * 100,
            serving_nodes: nodes,
            draining_nodes: 0,
        })
    }

    fn at(t0: Instant, seconds: u64) -> Instant {
        t0 + Duration::from_secs(seconds)
    }

    #[test]
    fn the_recommendation_is_sessions_over_capacity_times_target_rounded_up() {
        let p = policy(1, 100);
        for (sessions, nodes, expected) in [
            (0, 2, 0),
            (1, 2, 1),
            (50, 2, 1),
            (51, 2, 2),
            (100, 2, 2),
            (101, 2, 3),
            (1000, 4, 20),
        ] {
            assert_eq!(
                recommend(&serving(sessions, nodes).unwrap(), &p),
                expected,
                "{sessions} sessions on {nodes} nodes"
            );
        }
    }

    #[test]
    fn capacity_per_node_is_the_mean_of_the_serving_nodes() {
        // 300 sessions, nodes of 100 and 300 (mean 200) at 50%: 300 / 100 = 3.
        let load = Load::of(&[node("a", 200, 100, false), node("b", 100, 300, false)]);
        assert_eq!(recommend(&load, &policy(1, 100)), 3);
    }

    #[test]
    fn without_serving_capacity_the_spec_sessions_per_node_is_used() {
        let load = Load::of(&[node("a", 120, 100, true)]);
        assert_eq!((load.capacity, load.draining_nodes), (0, 1));
        assert_eq!(recommend(&load, &policy(1, 100)), 3);
    }

    #[test]
    fn a_draining_node_counts_its_sessions_but_not_its_capacity() {
        let load = Load::of(&[
            node("a", 40, 100, false),
            node("b", 40, 100, false),
            node("c", 80, 100, true),
        ]);
        assert_eq!(
            load,
            Load {
                active_sessions: 160,
                capacity: 200,
                serving_nodes: 2,
                draining_nodes: 1,
            }
        );
        // 160 sessions at 50 per node: 4, though the three nodes hold only 53% of 300.
        let d = decide(
            &policy(1, 10),
            Some(load),
            3,
            &mut Recommendations::default(),
            Instant::now(),
        );
        assert_eq!((d.desired, d.reason), (4, Reason::ScaledUp));
    }

    #[test]
    fn high_load_scales_up_at_once() {
        let mut history = Recommendations::default();
        let d = decide(
            &policy(1, 10),
            serving(300, 2),
            2,
            &mut history,
            Instant::now(),
        );
        assert_eq!(
            (d.desired, d.recommended, d.reason, d.limited_by),
            (6, 6, Reason::ScaledUp, None)
        );
        assert!(d.changes_replicas());
    }

    #[test]
    fn scaling_up_is_capped_at_max_replicas() {
        let d = decide(
            &policy(1, 4),
            serving(1000, 2),
            2,
            &mut Recommendations::default(),
            Instant::now(),
        );
        assert_eq!(
            (d.desired, d.recommended, d.reason, d.limited_by),
            (4, 20, Reason::ScaledUp, Some(Limit::Max))
        );
    }

    #[test]
    fn at_max_replicas_more_load_changes_nothing() {
        let d = decide(
            &policy(1, 4),
            serving(1000, 4),
            4,
            &mut Recommendations::default(),
            Instant::now(),
        );
        assert_eq!(
            (d.desired, d.reason, d.limited_by),
            (4, Reason::Steady, Some(Limit::Max))
        );
        assert!(!d.changes_replicas());
    }

    #[test]
    fn no_load_is_raised_to_min_replicas() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = Policy {
            scale_down_stabilization: Duration::ZERO,
            ..policy(2, 10)
        };
        let d = decide(&p, serving(0, 5), 5, &mut history, t0);
        assert_eq!(
            (d.desired, d.recommended, d.reason, d.limited_by),
            (2, 0, Reason::ScaledDown, Some(Limit::Min))
        );
    }

    #[test]
    fn a_fresh_window_holds_the_current_replicas_for_one_full_window() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = policy(1, 10);
        let d = decide(&p, serving(10, 6), 6, &mut history, t0);
        assert_eq!((d.desired, d.reason), (6, Reason::ScaleDownStabilizing));
        let d = decide(&p, serving(10, 6), 6, &mut history, at(t0, 299));
        assert_eq!(d.desired, 6, "the seed is still within the window");
        let d = decide(&p, serving(10, 6), 6, &mut history, at(t0, 300));
        assert_eq!((d.desired, d.reason), (1, Reason::ScaledDown));
    }

    #[test]
    fn scale_down_follows_the_highest_recommendation_of_the_window() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = policy(1, 10);
        // Load for 8 at t0, then falling: 6 at 100 s, 2 from 200 s on.
        assert_eq!(decide(&p, serving(400, 8), 8, &mut history, t0).desired, 8);
        let steps = [
            (100, 300, 8, Reason::ScaleDownStabilizing),
            (200, 100, 8, Reason::ScaleDownStabilizing),
            (299, 100, 8, Reason::ScaleDownStabilizing),
            // The 8 of t0 leaves the window; the 6 of 100 s still holds.
            (300, 100, 6, Reason::ScaledDown),
            (399, 100, 6, Reason::ScaleDownStabilizing),
            // The 6 of 100 s leaves too: only 2s remain.
            (400, 100, 2, Reason::ScaledDown),
        ];
        let mut current = 8;
        for (seconds, sessions, desired, reason) in steps {
            let d = decide(
                &p,
                serving(sessions, 8),
                current,
                &mut history,
                at(t0, seconds),
            );
            assert_eq!((d.desired, d.reason), (desired, reason), "at {seconds} s");
            current = d.desired;
        }
    }

    #[test]
    fn a_spike_within_the_window_scales_up_and_restarts_the_wait() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = policy(1, 10);
        decide(&p, serving(100, 2), 2, &mut history, t0);
        let up = decide(&p, serving(250, 2), 2, &mut history, at(t0, 100));
        assert_eq!((up.desired, up.reason), (5, Reason::ScaledUp));
        let d = decide(&p, serving(100, 5), 5, &mut history, at(t0, 350));
        assert_eq!((d.desired, d.reason), (5, Reason::ScaleDownStabilizing));
        let d = decide(&p, serving(100, 5), 5, &mut history, at(t0, 400));
        assert_eq!((d.desired, d.reason), (2, Reason::ScaledDown));
    }

    #[test]
    fn an_old_high_recommendation_never_scales_up() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = policy(1, 10);
        decide(&p, serving(400, 8), 8, &mut history, t0);
        // Someone scaled to 3 by hand; the load asks for 2: the 8 in the window must not win.
        let d = decide(&p, serving(100, 3), 3, &mut history, at(t0, 10));
        assert_eq!((d.desired, d.reason), (3, Reason::ScaleDownStabilizing));
    }

    #[test]
    fn a_zero_window_scales_down_at_once() {
        let p = Policy {
            scale_down_stabilization: Duration::ZERO,
            ..policy(1, 10)
        };
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let d = decide(&p, serving(100, 8), 8, &mut history, t0);
        assert_eq!((d.desired, d.reason), (2, Reason::ScaledDown));
    }

    #[test]
    fn no_registration_keeps_the_current_replicas_and_records_nothing() {
        let mut history = Recommendations::default();
        for load in [None, Some(Load::default())] {
            let d = decide(&policy(1, 10), load, 4, &mut history, Instant::now());
            assert_eq!((d.desired, d.reason), (4, Reason::NoLoadReported));
            assert!(!d.changes_replicas());
        }
        assert!(history.is_empty());
    }

    #[test]
    fn no_registration_still_brings_replicas_within_the_bounds() {
        let d = decide(
            &policy(3, 10),
            None,
            1,
            &mut Recommendations::default(),
            Instant::now(),
        );
        assert_eq!(
            (d.desired, d.reason, d.limited_by),
            (3, Reason::ScaledUp, Some(Limit::Min))
        );
    }

    #[test]
    fn the_history_keeps_only_the_window() {
        let t0 = Instant::now();
        let mut history = Recommendations::default();
        let p = policy(1, 10);
        for second in (0..=3000).step_by(15) {
            decide(&p, serving(100, 2), 2, &mut history, at(t0, second));
        }
        assert_eq!(history.len(), 20, "the passes of the last 300 s");
    }

    #[test]
    fn the_message_names_the_inputs_and_the_change() {
        let d = decide(
            &policy(1, 4),
            Some(Load::of(&[
                node("a", 150, 100, false),
                node("b", 100, 100, true),
            ])),
            2,
            &mut Recommendations::default(),
            Instant::now(),
        );
        assert_eq!(
            d.to_string(),
            "250 sessions on 2 nodes (1 draining), capacity 100 at 50% target: 5 recommended; \
             2 → 4 replicas (capped at maxReplicas)"
        );
    }
}
