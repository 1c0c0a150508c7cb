//! Decides the status of an object compiled into a snapshot (Tenant, Trunk) from what the
//! reconcile actually did. Pure.

use crate::conditions::{ConditionType, Decided};
use crate::validation::{FieldError, summarise};

/// What a reconcile achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The current generation is compiled and in the store at `revision`.
    Published { generation: i64, revision: i64 },
    /// The current generation was refused; `serving` describes the snapshot still in service.
    Invalid {
        errors: Vec<FieldError>,
        serving: Option<Serving>,
    },
}

/// The snapshot in service while a newer generation is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub generation: i64,
    pub revision: i64,
}

/// The conditions an outcome means.
pub fn conditions(outcome: &Outcome) -> Vec<Decided> {
    match outcome {
        Outcome::Published {
            generation,
            revision,
            ..
        } => vec![
            Decided::yes(
                ConditionType::Valid,
                "Accepted",
                "the spec passed every check",
            ),
            Decided::yes(
                ConditionType::Ready,
                "SnapshotPublished",
                format!("generation {generation} is in service (store revision {revision})"),
            ),
        ],
        Outcome::Invalid { errors, serving } => {
            let valid = Decided::no(ConditionType::Valid, "InvalidSpec", summarise(errors));
            let ready = match serving {
                Some(s) => Decided::yes(
                    ConditionType::Ready,
                    "ServingPreviousGeneration",
                    format!(
                        "generation {} stays in service until the errors in the Valid condition are fixed",
                        s.generation
                    ),
                ),
                None => Decided::no(
                    ConditionType::Ready,
                    "NothingToServe",
                    "no generation has been valid yet: see the Valid condition",
                ),
            };
            vec![valid, ready]
        }
    }
}

/// Store revision of the snapshot in service after an outcome.
pub fn revision_in_service(outcome: &Outcome) -> Option<i64> {
    match outcome {
        Outcome::Published { revision, .. } => Some(*revision),
        Outcome::Invalid { serving, .. } => serving.map(|s| s.revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_tenant_is_valid_and_ready() {
        let c = conditions(&Outcome::Published {
            generation: 2,
            revision: 17,
        });
        assert!(c.iter().all(|d| d.status));
        assert!(c[1].message.contains("generation 2"));
    }

    #[test]
    fn an_invalid_edit_keeps_the_previous_generation_ready() {
        let outcome = Outcome::Invalid {
            errors: vec![FieldError::new(
                "spec.mediaPoolRef",
                "MediaPool \"x\" not found",
            )],
            serving: Some(Serving {
                generation: 1,
                revision: 9,
            }),
        };
        let c = conditions(&outcome);
        assert!(!c[0].status && c[0].message.contains("spec.mediaPoolRef"));
        assert!(c[1].status && c[1].reason == "ServingPreviousGeneration");
        assert_eq!(revision_in_service(&outcome), Some(9));
    }

    #[test]
    fn an_invalid_new_tenant_is_not_ready() {
        let c = conditions(&Outcome::Invalid {
            errors: vec![],
            serving: None,
        });
        assert!(!c[1].status);
    }
}
