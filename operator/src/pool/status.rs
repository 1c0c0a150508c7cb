//! A pool's status, from the workload the apply actually produced. Pure.

use k8s_openapi::jiff::Timestamp;

use crate::conditions::{ConditionType, Decided, merge};
use crate::crd::PoolStatus;

/// What the pool's workload reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadFigures {
    /// Replicas the pool asks for.
    pub desired: i32,
    /// Pods that exist.
    pub current: i32,
    /// Pods ready for traffic.
    pub ready: i32,
    /// Pods on the latest template.
    pub updated: i32,
}

/// The pool status these figures mean.
pub fn status(
    current: &PoolStatus,
    figures: WorkloadFigures,
    selector: String,
    generation: Option<i64>,
    now: Timestamp,
) -> PoolStatus {
    let WorkloadFigures {
        desired,
        current: pods,
        ready,
        updated,
    } = figures;
    let ready_condition = if ready >= desired {
        Decided::yes(
            ConditionType::Ready,
            "AllReplicasReady",
            format!("{ready}/{desired} pods ready"),
        )
    } else {
        Decided::no(
            ConditionType::Ready,
            "ReplicasNotReady",
            format!("{ready}/{desired} pods ready"),
        )
    };
    let progressing = if updated < desired || pods != desired {
        Decided::yes(
            ConditionType::Progressing,
            "RollingOut",
            format!("{updated}/{desired} pods updated, {pods} exist"),
        )
    } else {
        Decided::no(
            ConditionType::Progressing,
            "Stable",
            "every pod runs the current template",
        )
    };
    PoolStatus {
        observed_generation: generation,
        replicas: pods,
        ready_replicas: ready,
        selector: Some(selector),
        conditions: merge(
            &current.conditions,
            &[ready_condition, progressing],
            generation,
            now,
        ),
    }
}

/// The `Draining` condition of a MediaPool: `True` with what it waits for while pods are held for
/// their calls before a scale-down.
pub fn draining(waiting: Option<String>) -> Decided {
    match waiting {
        Some(message) => Decided::yes(ConditionType::Draining, "DrainingForScaleDown", message),
        None => Decided::no(
            ConditionType::Draining,
            "NotDraining",
            "no pod is held for a scale-down",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::is_true;

    fn figures(desired: i32, current: i32, ready: i32, updated: i32) -> WorkloadFigures {
        WorkloadFigures {
            desired,
            current,
            ready,
            updated,
        }
    }

    #[test]
    fn a_pool_with_every_pod_ready_is_ready_and_stable() {
        let s = status(
            &PoolStatus::default(),
            figures(2, 2, 2, 2),
            "a=b".into(),
            Some(1),
            Timestamp::UNIX_EPOCH,
        );
        assert!(is_true(&s.conditions, ConditionType::Ready));
        assert!(!is_true(&s.conditions, ConditionType::Progressing));
        assert_eq!(
            (s.replicas, s.ready_replicas, s.selector.as_deref()),
            (2, 2, Some("a=b"))
        );
    }

    #[test]
    fn a_scaling_pool_is_progressing_and_not_ready() {
        let s = status(
            &PoolStatus::default(),
            figures(4, 2, 2, 2),
            "a=b".into(),
            Some(2),
            Timestamp::UNIX_EPOCH,
        );
        assert!(!is_true(&s.conditions, ConditionType::Ready));
        assert!(is_true(&s.conditions, ConditionType::Progressing));
    }
}
