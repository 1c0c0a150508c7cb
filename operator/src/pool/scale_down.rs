//! Graceful scale-down of a MediaPool: which pods to mark draining, and how far the StatefulSet
//! may shrink now. Pure: the marks and registrations read from the store, the replicas and the
//! time are passed in; no clock, no IO (that is [`super::drain_marks`]).
//!
//! When `spec.replicas` falls below the StatefulSet's replicas, the pods that will go (ordinals
//! ≥ `spec.replicas`; a StatefulSet removes the highest first) are marked with a drain key
//! (`/centrex/v1/media-drain/<namespace>/<pool>/<pod>`, valued with when they were marked). A
//! marked node takes no new session. The StatefulSet shrinks past a pod once that pod is
//! released:
//! - **idle**: its registration says it drains and holds no session (`draining` is required: a
//!   registration written before the node saw its mark could show no session while a new one is
//!   being created);
//! - **unregistered**: no registration (the pod is not running, or not yet);
//! - **timed out**: `drainTimeoutSeconds` passed since it was marked; its calls are cut.
//!
//! It shrinks only past a contiguous run of released pods from the top, so pod 4 can go while
//! pod 3 still has calls, but never the reverse. Marks go once their pod is wanted again (the
//! pool scaled back up) or gone (past the StatefulSet's replicas and no longer registered); a
//! released pod keeps its mark while it terminates, so it does not take calls again meanwhile.
//! The mark's timestamp lives in the store, so an operator restart or a new leader keeps the
//! deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Name of the pod (and media node) of `ordinal` in the StatefulSet `workload`.
pub fn pod_name(workload: &str, ordinal: u32) -> String {
    format!("{workload}-{ordinal}")
}

/// The ordinal of pod `pod` of the StatefulSet `workload`; `None` when it is not one of its
/// pods' names.
pub fn ordinal_of(workload: &str, pod: &str) -> Option<u32> {
    let digits = pod.strip_prefix(workload)?.strip_prefix('-')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// The value of a drain key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainMark {
    /// When the operator marked the node: the drain timeout counts from here.
    pub marked_at: MicroTime,
}

/// What a marked pod's registration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReport {
    pub active_sessions: u32,
    pub draining: bool,
}

/// What the plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `spec.replicas`.
    pub desired: u32,
    /// The StatefulSet's `spec.replicas`; `None` before it exists.
    pub current: Option<u32>,
    /// Drain marks by ordinal: when each was marked.
    pub marks: &'a BTreeMap<u32, Timestamp>,
    /// Registrations by ordinal.
    pub nodes: &'a BTreeMap<u32, NodeReport>,
    /// `drainTimeoutSeconds`.
    pub timeout: Duration,
    pub now: Timestamp,
}

/// A pod held for its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub ordinal: u32,
    pub active_sessions: u32,
    /// When it is released whatever its calls.
    pub deadline: Timestamp,
}

/// Why a pod may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// It drains and holds no session.
    Idle,
    /// It is not registered.
    Unregistered,
    /// The drain timeout passed with these sessions left.
    TimedOut { active_sessions: u32 },
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `spec.replicas`.
    pub desired: u32,
    /// The StatefulSet's replicas before this plan.
    pub current: u32,
    /// The StatefulSet's replicas to apply.
    pub replicas: u32,
    /// Ordinals to mark now.
    pub mark: Vec<u32>,
    /// Ordinals whose marks go.
    pub unmark: Vec<u32>,
    /// Pods held for their calls, lowest ordinal first.
    pub waiting: Vec<Waiting>,
    /// Pods the StatefulSet lets go now, highest ordinal first.
    pub released: Vec<(u32, Release)>,
    /// Marked pods past the StatefulSet's replicas that still run (they terminate): their marks
    /// stay until they are gone.
    pub terminating: Vec<u32>,
}

impl Plan {
    /// Whether pods are held for their calls.
    pub fn is_draining(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether the store needs another look soon: pods held, or marks waiting for their pods to
    /// go.
    pub fn in_progress(&self) -> bool {
        self.is_draining() || !self.terminating.is_empty()
    }

    /// Whether a released pod still had calls.
    pub fn cuts_calls(&self) -> bool {
        self.released
            .iter()
            .any(|(_, why)| matches!(why, Release::TimedOut { .. }))
    }
}

/// Decides the marks and the StatefulSet's replicas.
pub fn plan(inputs: &Inputs) -> Plan {
    let Inputs {
        desired,
        current,
        marks,
        nodes,
        timeout,
        now,
    } = *inputs;
    let current = current.unwrap_or(desired);
    let deadline = |ordinal: u32| {
        // A mark from a clock ahead of ours counts from now, never later.
        let marked_at = marks.get(&ordinal).map_or(now, |&at| at.min(now));
        marked_at.saturating_add(timeout).unwrap_or(Timestamp::MAX)
    };
    let release = |ordinal: u32| match nodes.get(&ordinal) {
        None => Some(Release::Unregistered),
        Some(node) if node.draining && node.active_sessions == 0 => Some(Release::Idle),
        Some(node) if now >= deadline(ordinal) => Some(Release::TimedOut {
            active_sessions: node.active_sessions,
        }),
        Some(_) => None,
    };

    let mut replicas = current.max(desired);
    let mut released = Vec::new();
    while replicas > desired {
        let Some(why) = release(replicas - 1) else {
            break;
        };
        replicas -= 1;
        released.push((replicas, why));
    }
    let waiting = (desired..replicas)
        .map(|ordinal| Waiting {
            ordinal,
            active_sessions: nodes.get(&ordinal).map_or(0, |n| n.active_sessions),
            deadline: deadline(ordinal),
        })
        .collect();
    // A pod keeps a mark while it is to go and either still counted or still running.
    let wanted =
        |ordinal: u32| ordinal >= desired && (ordinal < replicas || nodes.contains_key(&ordinal));
    let mark: Vec<u32> = (desired..current)
        .filter(|&o| wanted(o) && !marks.contains_key(&o))
        .collect();
    let terminating = marks
        .keys()
        .chain(&mark)
        .copied()
        .filter(|&o| o >= replicas && wanted(o))
        .collect();
    Plan {
        desired,
        current,
        replicas,
        unmark: marks.keys().copied().filter(|&o| !wanted(o)).collect(),
        mark,
        waiting,
        released,
        terminating,
    }
}

/// The plan when the store cannot be read: never shrink blind, grow as asked, touch no mark.
pub fn without_store(desired: u32, current: Option<u32>) -> Plan {
    let current = current.unwrap_or(desired);
    Plan {
        desired,
        current,
        replicas: current.max(desired),
        mark: Vec::new(),
        unmark: Vec::new(),
        waiting: Vec::new(),
        released: Vec::new(),
        terminating: Vec::new(),
    }
}

/// Pod names of `ordinals`, comma-separated.
fn names(workload: &str, ordinals: impl IntoIterator<Item = u32>) -> String {
    ordinals
        .into_iter()
        .map(|o| pod_name(workload, o))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pods a plan holds for their calls, as status shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The `Draining` condition's message; `None` when no pod is held.
    pub message: Option<String>,
    /// `status.draining`: the held pods' names.
    pub pods: Vec<String>,
}

/// `at` rounded up to a whole second, for people to read.
fn whole_seconds_up(at: Timestamp) -> Timestamp {
    let second = at.as_second() + i64::from(at.subsec_nanosecond() > 0);
    Timestamp::from_second(second).unwrap_or(at)
}

/// Words about a plan, naming the pods of the StatefulSet `workload`.
pub struct Describe<'a> {
    pub plan: &'a Plan,
    pub workload: &'a str,
    pub timeout: Duration,
}

impl Describe<'_> {
    /// The note of the `DrainingForScaleDown` Event, when pods were marked.
    pub fn marked(&self) -> Option<String> {
        let plan = self.plan;
        (!plan.mark.is_empty()).then(|| {
            format!(
                "{} → {} replicas: {} marked draining (no new calls); the StatefulSet keeps {} until {} calls end or {} s pass",
                plan.current,
                plan.desired,
                names(self.workload, plan.mark.iter().copied()),
                if plan.mark.len() == 1 { "it" } else { "them" },
                if plan.mark.len() == 1 { "its" } else { "their" },
                self.timeout.as_secs(),
            )
        })
    }

    /// The reason and note of the Event when the StatefulSet shrinks.
    pub fn released(&self) -> Option<(&'static str, String)> {
        let plan = self.plan;
        if plan.released.is_empty() {
            return None;
        }
        let why = plan
            .released
            .iter()
            .map(|&(ordinal, why)| {
                let pod = pod_name(self.workload, ordinal);
                match why {
                    Release::Idle => format!("{pod} has no call left"),
                    Release::Unregistered => format!("{pod} is not registered"),
                    Release::TimedOut { active_sessions } => format!(
                        "{pod} still had {active_sessions} sessions after {} s",
                        self.timeout.as_secs()
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        let (reason, outcome) = if plan.cuts_calls() {
            ("DrainTimeoutPassed", "; their calls are cut")
        } else {
            ("DrainedForScaleDown", "")
        };
        Some((
            reason,
            format!(
                "{why}: StatefulSet {} → {} replicas{outcome}",
                plan.current, plan.replicas
            ),
        ))
    }

    /// What status shows of the held pods.
    pub fn held(&self) -> Held {
        Held {
            message: self.waiting(),
            pods: self
                .plan
                .waiting
                .iter()
                .map(|w| pod_name(self.workload, w.ordinal))
                .collect(),
        }
    }

    /// The message of the `Draining` condition while pods are held.
    fn waiting(&self) -> Option<String> {
        let plan = self.plan;
        (!plan.waiting.is_empty()).then(|| {
            let pods = plan
                .waiting
                .iter()
                .map(|w| {
                    format!(
                        "{} ({} sessions, until {} at the latest)",
                        pod_name(self.workload, w.ordinal),
                        w.active_sessions,
                        whole_seconds_up(w.deadline)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{} → {} replicas: waiting for the calls on {pods} to end",
                plan.current, plan.desired
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn serving(sessions: u32) -> NodeReport {
        NodeReport {
            active_sessions: sessions,
            draining: false,
        }
    }

    fn draining(sessions: u32) -> NodeReport {
        NodeReport {
            active_sessions: sessions,
            draining: true,
        }
    }

    struct Case {
        desired: u32,
        current: Option<u32>,
        marks: BTreeMap<u32, Timestamp>,
        nodes: BTreeMap<u32, NodeReport>,
        now: Timestamp,
    }

    impl Case {
        fn new(desired: u32, current: u32) -> Self {
            Self {
                desired,
                current: Some(current),
                marks: BTreeMap::new(),
                nodes: BTreeMap::new(),
                now: at(10_000),
            }
        }

        fn node(mut self, ordinal: u32, report: NodeReport) -> Self {
            self.nodes.insert(ordinal, report);
            self
        }

        fn marked(mut self, ordinal: u32, at: Timestamp) -> Self {
            self.marks.insert(ordinal, at);
            self
        }

        fn plan(&self) -> Plan {
            plan(&Inputs {
                desired: self.desired,
                current: self.current,
                marks: &self.marks,
                nodes: &self.nodes,
                timeout: HOUR,
                now: self.now,
            })
        }
    }

    #[test]
    fn a_scale_down_marks_the_pods_that_go_and_holds_the_statefulset_while_they_have_calls() {
        let plan = Case::new(2, 3)
            .node(0, serving(5))
            .node(1, serving(5))
            .node(2, serving(4))
            .plan();
        assert_eq!((plan.replicas, plan.mark.clone()), (3, vec![2]));
        assert_eq!(
            plan.waiting,
            [Waiting {
                ordinal: 2,
                active_sessions: 4,
                deadline: at(10_000 + 3600),
            }]
        );
        assert!(plan.unmark.is_empty() && plan.released.is_empty());
    }

    #[test]
    fn a_marked_pod_that_drains_without_calls_is_released_and_keeps_its_mark_while_it_runs() {
        let plan = Case::new(2, 3)
            .node(2, draining(0))
            .marked(2, at(9_000))
            .plan();
        assert_eq!(plan.replicas, 2);
        assert_eq!(plan.released, [(2, Release::Idle)]);
        assert_eq!(plan.terminating, [2]);
        assert!(plan.mark.is_empty() && plan.unmark.is_empty() && !plan.is_draining());
        assert!(plan.in_progress(), "its mark goes once the pod is gone");
    }

    #[test]
    fn no_session_before_the_node_shows_it_drains_does_not_release_it() {
        let plan = Case::new(2, 3)
            .node(2, serving(0))
            .marked(2, at(9_000))
            .plan();
        assert_eq!(plan.replicas, 3);
    }

    #[test]
    fn the_drain_timeout_releases_a_pod_with_calls_counted_from_its_mark() {
        let held = Case::new(2, 3)
            .node(2, draining(7))
            .marked(2, at(10_000 - 3599))
            .plan();
        assert_eq!(held.replicas, 3);
        let released = Case::new(2, 3)
            .node(2, draining(7))
            .marked(2, at(10_000 - 3600))
            .plan();
        assert_eq!(released.replicas, 2);
        assert_eq!(
            released.released,
            [(2, Release::TimedOut { active_sessions: 7 })]
        );
        assert!(released.cuts_calls());
    }

    #[test]
    fn an_unregistered_pod_goes_at_once_and_its_mark_with_it() {
        let plan = Case::new(1, 3).node(1, draining(2)).plan();
        assert_eq!(plan.replicas, 2, "pod 2 is not registered; pod 1 has calls");
        assert_eq!(plan.released, [(2, Release::Unregistered)]);
        assert_eq!(plan.mark, [1], "no mark for a pod that goes unregistered");
    }

    #[test]
    fn the_statefulset_shrinks_past_released_pods_from_the_top_only() {
        let plan = Case::new(1, 4)
            .node(1, draining(0))
            .node(2, draining(3))
            .node(3, draining(0))
            .marked(1, at(9_000))
            .marked(2, at(9_000))
            .marked(3, at(9_000))
            .plan();
        assert_eq!(plan.replicas, 3);
        assert_eq!(plan.released, [(3, Release::Idle)]);
        let held: Vec<u32> = plan.waiting.iter().map(|w| w.ordinal).collect();
        assert_eq!(held, [1, 2]);
    }

    #[test]
    fn scaling_back_up_unmarks_the_pods_wanted_again() {
        let plan = Case::new(3, 3)
            .node(2, draining(4))
            .marked(2, at(9_000))
            .plan();
        assert_eq!((plan.replicas, plan.unmark.clone()), (3, vec![2]));
        assert!(!plan.is_draining());
    }

    #[test]
    fn the_mark_of_a_pod_that_is_gone_is_removed() {
        let terminating = Case::new(2, 2)
            .node(2, draining(0))
            .marked(2, at(9_000))
            .plan();
        assert!(
            terminating.unmark.is_empty(),
            "still running: keep its mark"
        );
        let gone = Case::new(2, 2).marked(2, at(9_000)).plan();
        assert_eq!(gone.unmark, [2]);
        assert!(!gone.in_progress());
    }

    #[test]
    fn a_new_statefulset_and_a_scale_up_take_the_desired_replicas() {
        let mut new = Case::new(3, 0);
        new.current = None;
        assert_eq!(new.plan().replicas, 3);
        let up = Case::new(5, 3).plan();
        assert_eq!((up.replicas, up.mark.len()), (5, 0));
    }

    #[test]
    fn a_zero_timeout_releases_at_once() {
        let plan = plan(&Inputs {
            desired: 2,
            current: Some(3),
            marks: &BTreeMap::new(),
            nodes: &BTreeMap::from([(2, serving(9))]),
            timeout: Duration::ZERO,
            now: at(10_000),
        });
        assert_eq!(plan.replicas, 2);
        assert_eq!(
            plan.mark,
            [2],
            "the node stops taking calls until it is gone"
        );
    }

    #[test]
    fn a_mark_from_the_future_counts_from_now() {
        let plan = Case::new(2, 3)
            .node(2, draining(1))
            .marked(2, at(99_999))
            .plan();
        assert_eq!(plan.waiting[0].deadline, at(10_000 + 3600));
    }

    #[test]
    fn without_the_store_nothing_shrinks_and_growth_goes_ahead() {
        assert_eq!(without_store(2, Some(3)).replicas, 3);
        assert_eq!(without_store(4, Some(3)).replicas, 4);
        assert_eq!(without_store(2, None).replicas, 2);
    }

    #[test]
    fn pod_names_and_ordinals_round_trip() {
        assert_eq!(pod_name("default-media", 2), "default-media-2");
        assert_eq!(ordinal_of("default-media", "default-media-12"), Some(12));
        assert_eq!(ordinal_of("default-media", "default-media-0"), Some(0));
        for other in [
            "default-media",
            "default-media-",
            "default-media-01",
            "default-media-x",
            "default-media-1-1",
            "other-media-1",
            "default-media-+1",
        ] {
            assert_eq!(ordinal_of("default-media", other), None, "{other}");
        }
    }

    #[test]
    fn deadlines_are_shown_rounded_up_to_the_second() {
        assert_eq!(
            whole_seconds_up(Timestamp::from_millisecond(1_500).unwrap()),
            at(2)
        );
        assert_eq!(whole_seconds_up(at(2)), at(2));
    }

    #[test]
    fn the_words_name_the_pods_and_the_outcome() {
        let plan = Case::new(2, 3).node(2, serving(4)).plan();
        let describe = Describe {
            plan: &plan,
            workload: "default-media",
            timeout: HOUR,
        };
        let marked = describe.marked().unwrap();
        assert!(
            marked.starts_with("3 → 2 replicas: default-media-2 marked draining"),
            "{marked}"
        );
        let held = describe.held();
        assert_eq!(held.pods, ["default-media-2"]);
        let message = held.message.unwrap();
        assert!(
            message
                .contains("default-media-2 (4 sessions, until 1970-01-01T03:46:40Z at the latest)"),
            "{message}"
        );

        let cut = Case::new(2, 3).node(2, draining(7)).marked(2, at(0)).plan();
        let (reason, note) = Describe {
            plan: &cut,
            workload: "default-media",
            timeout: HOUR,
        }
        .released()
        .unwrap();
        assert_eq!(reason, "DrainTimeoutPassed");
        assert!(
            note.contains("default-media-2 still had 7 sessions after 3600 s"),
            "{note}"
        );
    }
}
