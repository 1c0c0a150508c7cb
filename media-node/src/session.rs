//! Relay sessions as the control plane knows them: validated requests, and the session table
//! that bounds them by capacity and holds their ports. Counters live in the data plane.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::ports::{PortAllocator, PortPair};
use crate::relay::{LegStats, PayloadTypes, SessionKey};

/// Longest session id, call id or tenant accepted, so a caller cannot grow the table's memory.
pub const MAX_ID_LEN: usize = 256;

/// A caller-chosen session id (e.g. derived from the Call-ID): 1–256 printable ASCII
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// Checks `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() {
            return Err("must not be empty");
        }
        if text.len() > MAX_ID_LEN {
            return Err("must be at most 256 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces");
        }
        Ok(Self(text.to_string()))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two legs of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegId {
    /// The caller's side.
    A,
    /// The callee's side.
    B,
}

impl LegId {
    /// Both legs, in index order.
    pub const BOTH: [LegId; 2] = [LegId::A, LegId::B];

    /// Reads `"a"` or `"b"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "a" => Some(LegId::A),
            "b" => Some(LegId::B),
            _ => None,
        }
    }

    /// The id on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LegId::A => "a",
            LegId::B => "b",
        }
    }

    /// Position in a session's legs.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A leg as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegRequest {
    pub rtcp_mux: bool,
    /// The peer's RTP address, when SDP already gave it.
    pub remote: Option<SocketAddr>,
    /// Payload types the peer's SDP offered.
    pub payload_types: PayloadTypes,
}

/// A validated CreateSession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub id: SessionId,
    pub call_id: String,
    pub tenant: String,
    /// Legs A and B.
    pub legs: [LegRequest; 2],
}

/// A validated UpdateLeg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegUpdate {
    pub id: SessionId,
    pub leg: LegId,
    pub remote: Option<SocketAddr>,
    pub rtcp_mux: bool,
    pub payload_types: PayloadTypes,
}

/// What the control plane keeps of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegRecord {
    pub ports: PortPair,
    pub rtcp_mux: bool,
    pub remote: Option<SocketAddr>,
}

/// What the control plane keeps of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub key: SessionKey,
    /// The data-plane worker that relays it.
    pub worker: usize,
    pub call_id: String,
    pub tenant: String,
    pub created: SystemTime,
    pub legs: [LegRecord; 2],
}

/// A leg as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegView {
    pub leg: LegId,
    pub local_rtp: SocketAddr,
    pub local_rtcp: SocketAddr,
    pub rtcp_mux: bool,
    /// Where the relay sends: the latched source, else the SDP address.
    pub remote: Option<SocketAddr>,
    pub stats: LegStats,
}

/// A session as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    pub call_id: String,
    pub created: SystemTime,
    pub legs: [LegView; 2],
}

/// The sessions of the node, bounded by its capacity, with the allocator of their ports.
#[derive(Debug)]
pub struct SessionTable {
    sessions: HashMap<SessionId, SessionRecord>,
    ids: HashMap<SessionKey, SessionId>,
    /// Sessions per data-plane worker, to place new ones on the least loaded.
    per_worker: Vec<usize>,
    pub ports: PortAllocator,
    capacity: usize,
    next_key: SessionKey,
}

impl SessionTable {
    /// An empty table of at most `capacity` sessions over `workers` workers.
    pub fn new(capacity: usize, workers: usize, ports: PortAllocator) -> Self {
        Self {
            sessions: HashMap::new(),
            ids: HashMap::new(),
            per_worker: vec![0; workers.max(1)],
            ports,
            capacity,
            next_key: 1,
        }
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether another session fits.
    pub fn has_room(&self) -> bool {
        self.sessions.len() < self.capacity
    }

    /// Looks a session up.
    pub fn get(&self, id: &SessionId) -> Option<&SessionRecord> {
        self.sessions.get(id)
    }

    /// Looks a leg up mutably.
    pub fn leg_mut(&mut self, id: &SessionId, leg: LegId) -> Option<&mut LegRecord> {
        Some(&mut self.sessions.get_mut(id)?.legs[leg.index()])
    }

    /// The least loaded worker and a fresh key, for a session about to be inserted.
    pub fn place(&mut self) -> (SessionKey, usize) {
        let key = self.next_key;
        self.next_key += 1;
        let worker = (0..self.per_worker.len())
            .min_by_key(|&w| self.per_worker[w])
            .unwrap_or(0);
        (key, worker)
    }

    /// Adds a session whose ports are reserved.
    pub fn insert(&mut self, id: SessionId, record: SessionRecord) {
        self.per_worker[record.worker] += 1;
        self.ids.insert(record.key, id.clone());
        self.sessions.insert(id, record);
    }

    /// The ids of every session.
    pub fn ids(&self) -> impl Iterator<Item = &SessionId> {
        self.sessions.keys()
    }

    /// Takes a session out; its ports stay reserved until [`SessionTable::release`].
    pub fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let record = self.sessions.remove(id)?;
        self.ids.remove(&record.key);
        self.per_worker[record.worker] -= 1;
        Some(record)
    }

    /// Takes out the session with data-plane key `key`.
    pub fn remove_key(&mut self, key: SessionKey) -> Option<(SessionId, SessionRecord)> {
        let id = self.ids.get(&key)?.clone();
        let record = self.remove(&id)?;
        Some((id, record))
    }

    /// Frees the ports of a removed session.
    pub fn release(&mut self, record: &SessionRecord) {
        for leg in &record.legs {
            self.ports.release(leg.ports);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRange;

    #[test]
    fn a_session_id_is_printable_ascii_of_bounded_length() {
        assert!(SessionId::parse("a84b4c76e66710@pc33.example.com").is_ok());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("with space").is_err());
        assert!(SessionId::parse(&"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn new_sessions_go_to_the_least_loaded_worker() {
        let ports = PortAllocator::new(PortRange {
            min: 20000,
            max: 20099,
        });
        let mut table = SessionTable::new(10, 2, ports);
        let mut workers = Vec::new();
        for n in 0..4 {
            let (key, worker) = table.place();
            workers.push(worker);
            let record = SessionRecord {
                key,
                worker,
                call_id: String::new(),
                tenant: String::new(),
                created: SystemTime::UNIX_EPOCH,
                legs: [LegRecord {
                    ports: PortPair { rtp: 20000 },
                    rtcp_mux: true,
                    remote: None,
                }; 2],
            };
            table.insert(SessionId::parse(&format!("s{n}")).unwrap(), record);
        }
        assert_eq!(workers, [0, 1, 0, 1]);
    }
}
