//! Call forwarding: where a user's calls go under which condition, and the per-call chain that
//! stops forwarding loops (a → b → a) and runaway chains.

use std::time::Duration;

use centrex_coord::snapshot::UserEntry;

use super::target::Target;

/// Most forwards one call follows (RFC 3261's Max-Forwards guards the network, this the PBX).
pub const MAX_FORWARDS_HOPS: usize = 5;

/// When a user's forwarding rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Every call, before ringing.
    Always,
    /// The user is at their call limit.
    Busy,
    /// Nobody answered in time.
    NoAnswer,
    /// The user has no registered phone.
    Unavailable,
}

/// Where `user` forwards calls under `condition` (an extension or an E.164 number, see
/// [`super::target::parse_forward_target`]), if anywhere.
pub fn forward_target(user: &UserEntry, condition: Condition) -> Option<&str> {
    let forwarding = &user.forwarding;
    match condition {
        Condition::Always => forwarding.always.as_deref(),
        Condition::Busy => forwarding.busy.as_deref(),
        Condition::NoAnswer => forwarding.no_answer.as_ref().map(|(t, _)| t.as_str()),
        Condition::Unavailable => forwarding.unavailable.as_deref(),
    }
}

/// How long `user`'s phones ring before the no-answer forward, if they have one.
pub fn no_answer_after(user: &UserEntry) -> Option<Duration> {
    let (_, seconds) = user.forwarding.no_answer.as_ref()?;
    Some(Duration::from_secs((*seconds).into()))
}

/// Why a forward is not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardLoop {
    /// The target was already rung (or forwarded) in this call.
    #[error("forwarding to {target} is a loop: it was already reached in this call")]
    Revisits {
        /// The target reached again.
        target: Target,
    },
    /// The call has been forwarded too often already.
    #[error(
        "forwarding to {target} is refused: the call was already forwarded {MAX_FORWARDS_HOPS} times"
    )]
    TooManyHops {
        /// The target refused.
        target: Target,
    },
}

/// The targets one call has reached, the original callee first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardChain {
    visited: Vec<Target>,
}

impl ForwardChain {
    /// The chain of a call to `callee`, not yet forwarded.
    pub fn new(callee: Target) -> Self {
        Self {
            visited: vec![callee],
        }
    }

    /// Records a forward to `next`, unless it reaches a target again or makes more than
    /// [`MAX_FORWARDS_HOPS`] forwards.
    pub fn follow(&mut self, next: &Target) -> Result<(), ForwardLoop> {
        if self.visited.contains(next) {
            return Err(ForwardLoop::Revisits {
                target: next.clone(),
            });
        }
        if self.hops() >= MAX_FORWARDS_HOPS {
            return Err(ForwardLoop::TooManyHops {
                target: next.clone(),
            });
        }
        self.visited.push(next.clone());
        Ok(())
    }

    /// Forwards followed so far.
    pub fn hops(&self) -> usize {
        self.visited.len() - 1
    }

    /// Targets reached, the original callee first and the current one last.
    pub fn visited(&self) -> &[Target] {
        &self.visited
    }

    /// The target the call is at now.
    pub fn current(&self) -> &Target {
        self.visited.last().expect("a chain starts with its callee")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::target::tests::user;

    fn ext(e: &str) -> Target {
        Target::User(e.into())
    }

    fn forwarding_user() -> UserEntry {
        let mut u = user("100");
        u.forwarding.always = Some("101".into());
        u.forwarding.busy = Some("102".into());
        u.forwarding.no_answer = Some(("+33612345678".into(), 25));
        u.forwarding.unavailable = Some("200".into());
        u
    }

    #[test]
    fn forward_target_picks_the_rule_of_the_condition() {
        let u = forwarding_user();
        assert_eq!(forward_target(&u, Condition::Always), Some("101"));
        assert_eq!(forward_target(&u, Condition::Busy), Some("102"));
        assert_eq!(
            forward_target(&u, Condition::NoAnswer),
            Some("+33612345678")
        );
        assert_eq!(forward_target(&u, Condition::Unavailable), Some("200"));
    }

    #[test]
    fn a_user_without_forwarding_forwards_nowhere() {
        let u = user("100");
        for condition in [
            Condition::Always,
            Condition::Busy,
            Condition::NoAnswer,
            Condition::Unavailable,
        ] {
            assert_eq!(forward_target(&u, condition), None, "{condition:?}");
        }
        assert_eq!(no_answer_after(&u), None);
    }

    #[test]
    fn no_answer_after_is_the_configured_ringing_time() {
        assert_eq!(
            no_answer_after(&forwarding_user()),
            Some(Duration::from_secs(25))
        );
    }

    #[test]
    fn a_chain_follows_new_targets() {
        let mut chain = ForwardChain::new(ext("100"));
        assert_eq!(chain.follow(&ext("101")), Ok(()));
        assert_eq!(
            chain.follow(&Target::External("+33612345678".into())),
            Ok(())
        );
        assert_eq!(chain.hops(), 2);
        assert_eq!(chain.current(), &Target::External("+33612345678".into()));
    }

    #[test]
    fn a_chain_refuses_a_forward_back_to_the_original_callee() {
        let mut chain = ForwardChain::new(ext("100"));
        chain.follow(&ext("101")).unwrap();
        assert_eq!(
            chain.follow(&ext("100")),
            Err(ForwardLoop::Revisits { target: ext("100") })
        );
        assert_eq!(chain.current(), &ext("101"));
    }

    #[test]
    fn a_chain_refuses_a_forward_to_itself() {
        let mut chain = ForwardChain::new(ext("100"));
        assert_eq!(
            chain.follow(&ext("100")),
            Err(ForwardLoop::Revisits { target: ext("100") })
        );
    }

    #[test]
    fn a_chain_tells_users_and_groups_of_the_same_digits_apart() {
        let mut chain = ForwardChain::new(ext("100"));
        assert_eq!(chain.follow(&Target::Group("100".into())), Ok(()));
    }

    #[test]
    fn a_chain_stops_after_the_maximum_number_of_hops() {
        let mut chain = ForwardChain::new(ext("100"));
        for hop in 1..=MAX_FORWARDS_HOPS {
            chain.follow(&ext(&format!("{}", 100 + hop))).unwrap();
        }
        assert_eq!(
            chain.follow(&ext("199")),
            Err(ForwardLoop::TooManyHops { target: ext("199") })
        );
        assert_eq!(chain.hops(), MAX_FORWARDS_HOPS);
    }
}
