//! Client transactions (RFC 3261 §17.1): INVITE (timers A, B, D) and non-INVITE (E, F, K).
//! Sans-IO: the owner feeds responses and timer expiries in and carries the actions out.

use std::time::{Duration, Instant};

use super::timers::{Reliability, TimerValues};

/// Which client transaction machine (§17.1.1 or §17.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

/// States of §17.1.1.2 and §17.1.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE sent, nothing back yet (non-INVITE: "Trying").
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// What the owner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the request again (Timers A, E).
    Retransmit,
    /// Pass this response (by status code) up to the transaction user.
    Deliver(u16),
    /// Send the ACK of a non-2xx final response (§17.1.1.3).
    SendAck,
    /// No final response in time (Timers B, F): report 408 to the transaction user.
    TimedOut,
}

/// One client transaction.
#[derive(Debug)]
pub struct ClientTransaction {
    kind: Kind,
    reliability: Reliability,
    timers: TimerValues,
    state: State,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl ClientTransaction {
    /// Starts a transaction whose request was just sent at `now`.
    pub fn start(kind: Kind, reliability: Reliability, timers: TimerValues, now: Instant) -> Self {
        let retransmit_at = (reliability == Reliability::Unreliable).then(|| now + timers.t1);
        Self {
            kind,
            reliability,
            timers,
            state: State::Calling,
            interval: timers.t1,
            retransmit_at,
            timeout_at: Some(now + timers.timeout()),
            end_at: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When [`on_timer`](Self::on_timer) must next be called, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A response with `status` arrived at `now`.
    pub fn on_response(&mut self, status: u16, now: Instant) -> Vec<Action> {
        let provisional = status < 200;
        match (self.kind, self.state) {
            (_, State::Terminated) => vec![],
            (_, State::Calling | State::Proceeding) if provisional => {
                self.state = State::Proceeding;
                if self.kind == Kind::Invite {
                    // Timer A stops; Timer B keeps running until a final response (§17.1.1.2).
                    self.retransmit_at = None;
                } else if let Some(at) = self.retransmit_at.as_mut() {
                    // Non-INVITE keeps retransmitting, at T2 (§17.1.2.2).
                    self.interval = self.timers.t2;
                    *at = now + self.interval;
                }
                vec![Action::Deliver(status)]
            }
            (Kind::Invite, State::Calling | State::Proceeding) if status < 300 => {
                // 2xx: the transaction ends; the TU acknowledges it end to end (§17.1.1.2).
                self.terminate();
                vec![Action::Deliver(status)]
            }
            (Kind::Invite, State::Calling | State::Proceeding) => {
                self.complete(now, Duration::from_secs(32));
                vec![Action::SendAck, Action::Deliver(status)]
            }
            (Kind::Invite, State::Completed) if !provisional && status >= 300 => {
                vec![Action::SendAck]
            }
            (Kind::NonInvite, State::Calling | State::Proceeding) => {
                self.complete(now, self.timers.t4);
                vec![Action::Deliver(status)]
            }
            _ => vec![],
        }
    }

    /// Timers due at `now` fire.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        if self.end_at.is_some_and(|at| at <= now) {
            self.terminate();
            return vec![];
        }
        if self.timeout_at.is_some_and(|at| at <= now) {
            self.terminate();
            return vec![Action::TimedOut];
        }
        match self.retransmit_at {
            Some(at) if at <= now => {
                self.interval = self
                    .timers
                    .backoff(self.interval, self.kind == Kind::NonInvite);
                self.retransmit_at = Some(now + self.interval);
                vec![Action::Retransmit]
            }
            _ => vec![],
        }
    }

    /// Completed: absorb retransmitted finals for `linger` (Timers D, K; zero when reliable).
    fn complete(&mut self, now: Instant, linger: Duration) {
        self.state = State::Completed;
        self.retransmit_at = None;
        self.timeout_at = None;
        let linger = if self.reliability == Reliability::Reliable {
            Duration::ZERO
        } else {
            linger
        };
        self.end_at = Some(now + linger);
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fires every timer due up to `until`, recording when each action happened (ms from `t0`).
    fn run(tx: &mut ClientTransaction, t0: Instant, until: Duration) -> Vec<(u64, Action)> {
        let mut log = Vec::new();
        while let Some(at) = tx.next_deadline() {
            if at > t0 + until {
                break;
            }
            for action in tx.on_timer(at) {
                log.push(((at - t0).as_millis() as u64, action));
            }
        }
        log
    }

    #[test]
    fn timer_a_doubles_without_cap_and_timer_b_ends_an_unanswered_invite() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        let log = run(&mut tx, t0, Duration::from_secs(40));
        let retransmits: Vec<u64> = log
            .iter()
            .filter(|(_, a)| *a == Action::Retransmit)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(retransmits, [500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(log.last(), Some(&(32000, Action::TimedOut)));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn a_provisional_stops_invite_retransmissions_but_not_timer_b() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        assert_eq!(tx.on_response(180, t0 + ms(100)), [Action::Deliver(180)]);
        let log = run(&mut tx, t0, Duration::from_secs(40));
        assert_eq!(log, [(32000, Action::TimedOut)]);
    }

    #[test]
    fn a_non_2xx_final_is_acked_and_its_retransmissions_absorbed_for_timer_d() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        assert_eq!(
            tx.on_response(486, t0 + ms(200)),
            [Action::SendAck, Action::Deliver(486)]
        );
        assert_eq!(
            tx.on_response(486, t0 + ms(700)),
            [Action::SendAck],
            "a retransmitted final is ACKed again, not delivered"
        );
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + ms(200) + Duration::from_secs(32))
        );
        run(&mut tx, t0, Duration::from_secs(40));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn a_2xx_ends_the_invite_transaction_at_once() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::Invite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        assert_eq!(tx.on_response(200, t0 + ms(50)), [Action::Deliver(200)]);
        assert_eq!((tx.state(), tx.next_deadline()), (State::Terminated, None));
    }

    #[test]
    fn timer_e_is_capped_at_t2_and_timer_f_ends_a_non_invite() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        let log = run(&mut tx, t0, Duration::from_secs(40));
        let retransmits: Vec<u64> = log
            .iter()
            .filter(|(_, a)| *a == Action::Retransmit)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(&retransmits[..6], [500, 1500, 3500, 7500, 11500, 15500]);
        assert_eq!(log.last(), Some(&(32000, Action::TimedOut)));
    }

    #[test]
    fn non_invite_retransmits_at_t2_after_a_provisional_then_lingers_timer_k() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            Reliability::Unreliable,
            TimerValues::default(),
            t0,
        );
        tx.on_response(100, t0 + ms(100));
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + ms(100) + Duration::from_secs(4))
        );
        assert_eq!(tx.on_response(200, t0 + ms(300)), [Action::Deliver(200)]);
        assert_eq!(tx.state(), State::Completed);
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + ms(300) + Duration::from_secs(5))
        );
    }

    #[test]
    fn reliable_transports_never_retransmit_and_complete_instantly() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::start(
            Kind::NonInvite,
            Reliability::Reliable,
            TimerValues::default(),
            t0,
        );
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + Duration::from_secs(32)),
            "only Timer F runs"
        );
        tx.on_response(200, t0 + ms(10));
        assert_eq!(tx.next_deadline(), Some(t0 + ms(10)), "Timer K is zero");
    }
}
