//! The INVITE server transaction (RFC 3261 §17.2.1): timers G, H and I. Sans-IO.

use std::time::{Duration, Instant};

use super::timers::{Reliability, TimerValues};

/// States of §17.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Proceeding,
    Completed,
    Confirmed,
    Terminated,
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the last response again (a retransmitted INVITE, or Timer G).
    ResendLast,
    /// No ACK came for the non-2xx final (Timer H): tell the TU the transaction failed.
    AckTimedOut,
}

/// One INVITE server transaction.
#[derive(Debug)]
pub struct InviteServerTransaction {
    reliability: Reliability,
    timers: TimerValues,
    state: State,
    interval: Duration,
    resend_at: Option<Instant>,
    give_up_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl InviteServerTransaction {
    /// A transaction for an INVITE received at `now` (the TU answers 100 Trying at once).
    pub fn start(reliability: Reliability, timers: TimerValues) -> Self {
        Self {
            reliability,
            timers,
            state: State::Proceeding,
            interval: timers.t1,
            resend_at: None,
            give_up_at: None,
            end_at: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When [`on_timer`](Self::on_timer) must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.resend_at, self.give_up_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The INVITE arrived again: resend the last response (in Proceeding and Completed).
    pub fn on_retransmitted_invite(&self) -> Option<Action> {
        matches!(self.state, State::Proceeding | State::Completed).then_some(Action::ResendLast)
    }

    /// The TU sent a final response with `status` at `now`.
    pub fn on_final(&mut self, status: u16, now: Instant) {
        if self.state != State::Proceeding {
            return;
        }
        if status < 300 {
            // 2xx: the UAS core retransmits it until the ACK (§13.3.1.4); the transaction ends.
            self.state = State::Terminated;
            return;
        }
        self.state = State::Completed;
        if self.reliability == Reliability::Unreliable {
            self.resend_at = Some(now + self.interval);
        }
        self.give_up_at = Some(now + self.timers.timeout());
    }

    /// The ACK for the non-2xx final arrived at `now`.
    pub fn on_ack(&mut self, now: Instant) {
        if self.state != State::Completed {
            return;
        }
        self.state = State::Confirmed;
        self.resend_at = None;
        self.give_up_at = None;
        let linger = if self.reliability == Reliability::Reliable {
            Duration::ZERO
        } else {
            self.timers.t4
        };
        self.end_at = Some(now + linger);
    }

    /// Timers due at `now` fire.
    pub fn on_timer(&mut self, now: Instant) -> Option<Action> {
        if self.end_at.is_some_and(|at| at <= now) {
            self.state = State::Terminated;
            self.end_at = None;
            return None;
        }
        if self.give_up_at.is_some_and(|at| at <= now) {
            self.state = State::Terminated;
            self.resend_at = None;
            self.give_up_at = None;
            return Some(Action::AckTimedOut);
        }
        match self.resend_at {
            Some(at) if at <= now => {
                self.interval = self.timers.backoff(self.interval, true);
                self.resend_at = Some(now + self.interval);
                Some(Action::ResendLast)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_g_resends_a_failure_until_timer_h_gives_up() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::start(Reliability::Unreliable, TimerValues::default());
        tx.on_final(486, t0);
        let mut resends = Vec::new();
        let mut last = None;
        while let Some(at) = tx.next_deadline() {
            last = tx.on_timer(at);
            if last == Some(Action::ResendLast) {
                resends.push((at - t0).as_millis());
            }
        }
        assert_eq!(
            &resends[..5],
            [500, 1500, 3500, 7500, 11500],
            "doubling, capped at T2"
        );
        assert_eq!(last, Some(Action::AckTimedOut));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn the_ack_confirms_and_timer_i_absorbs_more_acks() {
        let t0 = Instant::now();
        let mut tx =
            InviteServerTransaction::start(Reliability::Unreliable, TimerValues::default());
        assert_eq!(tx.on_retransmitted_invite(), Some(Action::ResendLast));
        tx.on_final(603, t0);
        tx.on_ack(t0 + Duration::from_millis(100));
        assert_eq!(tx.state(), State::Confirmed);
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_millis(5100)));
        assert_eq!(tx.on_retransmitted_invite(), None);
        tx.on_timer(t0 + Duration::from_millis(5100));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn a_2xx_ends_the_transaction_at_once() {
        let mut tx =
            InviteServerTransaction::start(Reliability::Unreliable, TimerValues::default());
        tx.on_final(200, Instant::now());
        assert_eq!((tx.state(), tx.next_deadline()), (State::Terminated, None));
    }

    #[test]
    fn over_a_reliable_transport_nothing_is_resent() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::start(Reliability::Reliable, TimerValues::default());
        tx.on_final(480, t0);
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer H"
        );
    }
}
