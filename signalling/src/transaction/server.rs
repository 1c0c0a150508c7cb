//! Non-INVITE server transactions (RFC 3261 §17.2.2): Trying → Completed → Terminated, with the
//! retransmission of the final response for every retransmitted request. Pure: time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// RFC 3261 T1: the round-trip estimate every timer derives from.
pub const T1: Duration = Duration::from_millis(500);
/// Timer J for unreliable transports: how long a completed transaction absorbs retransmissions.
pub const TIMER_J_UDP: Duration = Duration::from_millis(64 * 500);

/// Identifies a server transaction (§17.2.3): top Via branch and sent-by, and the method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub branch: String,
    pub sent_by: String,
    pub method: String,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A new transaction: process the request.
    New,
    /// A retransmission while the request is being processed: nothing to send yet.
    InProgress,
    /// A retransmission of a completed transaction: send this response again.
    Retransmit(Bytes),
}

#[derive(Debug)]
enum State {
    Trying,
    Completed(Bytes),
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
}

/// The server transactions of one transport, bounded in number.
pub struct ServerTransactions {
    entries: HashMap<TransactionKey, Entry>,
    order: VecDeque<(Instant, TransactionKey)>,
    capacity: usize,
    linger: Duration,
}

impl ServerTransactions {
    /// A table holding at most `capacity` transactions, each kept `linger` after completing
    /// (Timer J: 32 s over UDP, zero over TCP).
    pub fn new(capacity: usize, linger: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            linger,
        }
    }

    /// Registers the arrival of a request at `now`.
    pub fn arrive(&mut self, key: TransactionKey, now: Instant) -> Arrival {
        self.expire(now);
        if let Some(entry) = self.entries.get(&key) {
            return match &entry.state {
                State::Trying => Arrival::InProgress,
                State::Completed(response) => Arrival::Retransmit(response.clone()),
            };
        }
        if self.entries.len() >= self.capacity {
            // Full of live transactions: shed the oldest rather than grow without bound.
            if let Some((_, oldest)) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        // A transaction that never completes (a handler that dropped it) still goes, after 64·T1.
        let expires = now + 64 * T1;
        self.entries.insert(
            key.clone(),
            Entry {
                state: State::Trying,
                expires,
            },
        );
        self.order.push_back((expires, key));
        Arrival::New
    }

    /// Records the final response sent for `key` at `now`.
    pub fn complete(&mut self, key: &TransactionKey, response: Bytes, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.state = State::Completed(response);
            entry.expires = now + self.linger;
        }
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((deadline, key)) = self.order.front() {
            if *deadline > now {
                break;
            }
            let key = key.clone();
            self.order.pop_front();
            match self.entries.get(&key) {
                // Completed later than first scheduled: keep it until its own expiry.
                Some(entry) if entry.expires > now => self.order.push_back((entry.expires, key)),
                Some(_) => {
                    self.entries.remove(&key);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> TransactionKey {
        TransactionKey {
            branch: branch.into(),
            sent_by: "192.0.2.1:5060".into(),
            method: "REGISTER".into(),
        }
    }

    #[test]
    fn a_retransmission_gets_the_same_final_response() {
        let mut table = ServerTransactions::new(10, TIMER_J_UDP);
        let t0 = Instant::now();
        assert_eq!(table.arrive(key("z9hG4bK1"), t0), Arrival::New);
        assert_eq!(table.arrive(key("z9hG4bK1"), t0), Arrival::InProgress);
        table.complete(&key("z9hG4bK1"), Bytes::from_static(b"SIP/2.0 200 OK"), t0);
        assert_eq!(
            table.arrive(key("z9hG4bK1"), t0 + T1),
            Arrival::Retransmit(Bytes::from_static(b"SIP/2.0 200 OK"))
        );
        assert_eq!(table.arrive(key("z9hG4bK2"), t0 + T1), Arrival::New);
    }

    #[test]
    fn a_completed_transaction_ends_after_timer_j() {
        let mut table = ServerTransactions::new(10, TIMER_J_UDP);
        let t0 = Instant::now();
        table.arrive(key("a"), t0);
        table.complete(
            &key("a"),
            Bytes::from_static(b"r"),
            t0 + Duration::from_secs(1),
        );
        assert!(matches!(
            table.arrive(key("a"), t0 + Duration::from_secs(32)),
            Arrival::Retransmit(_)
        ));
        assert_eq!(
            table.arrive(key("a"), t0 + Duration::from_secs(34)),
            Arrival::New
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = ServerTransactions::new(3, TIMER_J_UDP);
        let t0 = Instant::now();
        for i in 0..10 {
            table.arrive(key(&i.to_string()), t0);
        }
        assert_eq!(table.len(), 3);
    }
}
