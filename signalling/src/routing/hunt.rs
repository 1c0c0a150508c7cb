//! Hunt groups: which members ring, in which stages, for how long.

use std::time::Duration;

use centrex_coord::snapshot::{HuntGroupEntry, HuntStrategy};

/// Members rung together, for `ring` before the next stage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Extensions of the users rung.
    pub members: Vec<String>,
    /// How long they ring.
    pub ring: Duration,
}

/// The stages of a call to `group`: `simultaneous` rings every available member in one stage;
/// `sequential` rings them one after the other in order; `round-robin` does the same starting at
/// member `rotation % members` and wrapping around. Members for which `available` is false (busy,
/// at their call limit, unregistered: the caller decides) are skipped, so no stage is empty and
/// no stage at all means nobody can answer (the overflow applies at once).
pub fn stages(
    group: &HuntGroupEntry,
    rotation: usize,
    available: impl Fn(&str) -> bool,
) -> Vec<Stage> {
    let ring = Duration::from_secs(group.ring_seconds.into());
    let members = &group.members;
    let start = match group.strategy {
        HuntStrategy::RoundRobin if !members.is_empty() => rotation % members.len(),
        _ => 0,
    };
    let ordered = members[start..]
        .iter()
        .chain(&members[..start])
        .filter(|m| available(m))
        .cloned();
    match group.strategy {
        HuntStrategy::Simultaneous => {
            let members: Vec<String> = ordered.collect();
            if members.is_empty() {
                vec![]
            } else {
                vec![Stage { members, ring }]
            }
        }
        HuntStrategy::Sequential | HuntStrategy::RoundRobin => ordered
            .map(|member| Stage {
                members: vec![member],
                ring,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::target::tests::group;

    fn hunt(strategy: HuntStrategy) -> HuntGroupEntry {
        HuntGroupEntry {
            strategy,
            ring_seconds: 15,
            ..group("200", &["100", "101", "102"])
        }
    }

    fn everyone(_: &str) -> bool {
        true
    }

    fn single(members: &[&str]) -> Vec<Stage> {
        members
            .iter()
            .map(|m| Stage {
                members: vec![m.to_string()],
                ring: Duration::from_secs(15),
            })
            .collect()
    }

    #[test]
    fn simultaneous_rings_every_member_in_one_stage_for_the_group_ring_time() {
        assert_eq!(
            stages(&hunt(HuntStrategy::Simultaneous), 7, everyone),
            vec![Stage {
                members: vec!["100".into(), "101".into(), "102".into()],
                ring: Duration::from_secs(15),
            }]
        );
    }

    #[test]
    fn sequential_rings_members_one_by_one_in_order() {
        assert_eq!(
            stages(&hunt(HuntStrategy::Sequential), 7, everyone),
            single(&["100", "101", "102"])
        );
    }

    #[test]
    fn round_robin_starts_at_the_rotation_and_wraps() {
        let group = hunt(HuntStrategy::RoundRobin);
        assert_eq!(stages(&group, 0, everyone), single(&["100", "101", "102"]));
        assert_eq!(stages(&group, 1, everyone), single(&["101", "102", "100"]));
        assert_eq!(stages(&group, 5, everyone), single(&["102", "100", "101"]));
    }

    #[test]
    fn unavailable_members_are_skipped() {
        let not_101 = |m: &str| m != "101";
        assert_eq!(
            stages(&hunt(HuntStrategy::Sequential), 0, not_101),
            single(&["100", "102"])
        );
        assert_eq!(
            stages(&hunt(HuntStrategy::RoundRobin), 1, not_101),
            single(&["102", "100"])
        );
        assert_eq!(
            stages(&hunt(HuntStrategy::Simultaneous), 0, not_101)[0].members,
            vec!["100", "102"]
        );
    }

    #[test]
    fn nobody_available_gives_no_stage() {
        for strategy in [
            HuntStrategy::Simultaneous,
            HuntStrategy::Sequential,
            HuntStrategy::RoundRobin,
        ] {
            assert_eq!(
                stages(&hunt(strategy), 0, |_| false),
                vec![],
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn a_group_without_members_gives_no_stage() {
        let mut group = hunt(HuntStrategy::RoundRobin);
        group.members.clear();
        assert_eq!(stages(&group, 3, everyone), vec![]);
    }
}
