//! Standard status conditions: typed, carrying `observedGeneration`, and with a
//! `lastTransitionTime` that moves only when the status itself changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition types Centrex reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// The spec passed every check.
    Valid,
    /// The object is in service.
    Ready,
    /// A rollout is under way.
    Progressing,
    /// The trunk is registered with its carrier (only for a Trunk with `spec.registration`).
    Registered,
    /// Pods of a MediaPool drain before a scale-down removes them.
    Draining,
}

impl ConditionType {
    /// The `type` string of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Valid => "Valid",
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Registered => "Registered",
            ConditionType::Draining => "Draining",
        }
    }
}

/// A condition as a reconciler decides it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub type_: ConditionType,
    pub status: bool,
    /// CamelCase reason, e.g. `SnapshotPublished`.
    pub reason: &'static str,
    pub message: String,
}

impl Decided {
    /// A `True` condition.
    pub fn yes(type_: ConditionType, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// A `False` condition.
    pub fn no(type_: ConditionType, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// Merges decided conditions into the current ones: a condition keeps its `lastTransitionTime`
/// unless its status flips; conditions of other types are kept as they are.
pub fn merge(
    current: &[Condition],
    decided: &[Decided],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = current
        .iter()
        .filter(|c| !decided.iter().any(|d| d.type_.as_str() == c.type_))
        .cloned()
        .collect();
    for d in decided {
        let status = if d.status { "True" } else { "False" };
        let previous = current.iter().find(|c| c.type_ == d.type_.as_str());
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        merged.push(Condition {
            type_: d.type_.as_str().into(),
            status: status.into(),
            reason: d.reason.into(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_.as_str() && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_new_condition_transitions_now() {
        let merged = merge(
            &[],
            &[Decided::yes(ConditionType::Ready, "Up", "")],
            Some(3),
            at(10),
        );
        assert_eq!(merged[0].last_transition_time, Time(at(10)));
        assert_eq!(merged[0].observed_generation, Some(3));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_but_updates_the_rest() {
        let first = merge(
            &[],
            &[Decided::yes(ConditionType::Ready, "Up", "a")],
            Some(1),
            at(10),
        );
        let second = merge(
            &first,
            &[Decided::yes(ConditionType::Ready, "StillUp", "b")],
            Some(2),
            at(20),
        );
        assert_eq!(second[0].last_transition_time, Time(at(10)));
        assert_eq!(
            (second[0].reason.as_str(), second[0].message.as_str()),
            ("StillUp", "b")
        );
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flipped_status_moves_the_transition_time() {
        let first = merge(
            &[],
            &[Decided::yes(ConditionType::Valid, "Ok", "")],
            Some(1),
            at(10),
        );
        let second = merge(
            &first,
            &[Decided::no(ConditionType::Valid, "Bad", "")],
            Some(2),
            at(20),
        );
        assert_eq!(second[0].last_transition_time, Time(at(20)));
        assert_eq!(second[0].status, "False");
    }

    #[test]
    fn conditions_not_decided_are_kept() {
        let first = merge(
            &[],
            &[Decided::yes(ConditionType::Valid, "Ok", "")],
            Some(1),
            at(10),
        );
        let second = merge(
            &first,
            &[Decided::yes(ConditionType::Ready, "Up", "")],
            Some(1),
            at(20),
        );
        assert_eq!(second.len(), 2);
        assert!(is_true(&second, ConditionType::Valid) && is_true(&second, ConditionType::Ready));
    }
}
