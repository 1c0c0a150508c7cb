//! The control-plane core of a media node: the session table, ports, drain state and figures,
//! on top of the data plane. The gRPC service only translates to and from it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::watch;

use crate::config::{Config, PortRange};
use crate::drain::{Drain, DrainState};
use crate::metrics::{EndReason, Metrics};
use crate::ports::{PortAllocator, PortPair};
use crate::relay::{
    Backend, LegChange, LegSetup, LegStats, Relay, RelayError, Released, RtcpSocket, WorkerSettings,
};
use crate::session::{
    LegId, LegRecord, LegUpdate, LegView, SessionId, SessionRecord, SessionRequest, SessionTable,
    SessionView,
};
use crate::sockets::{self, SocketPool};

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the media node is draining and takes no new sessions; use another node")]
    Draining,
    #[error("the media node is at its capacity of {capacity} sessions; use another node")]
    AtCapacity { capacity: u32 },
    #[error("no free RTP port pair left in {range}; use another node")]
    PortsExhausted { range: PortRange },
    #[error("session {0:?} not found")]
    NotFound(SessionId),
    #[error("session_id {id:?} is already used by call {existing:?}")]
    Conflict { id: SessionId, existing: String },
    #[error("cannot bind the media port {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// The node's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeStats {
    pub active_sessions: u32,
    pub capacity: u32,
    pub draining: bool,
    pub packets_relayed: u64,
    pub packets_dropped: u64,
    pub packets_lost: u64,
    pub packets_per_second: f64,
}

/// A CreateSession admitted by the table.
enum Reserved {
    /// A retry: the session made by the first attempt.
    Existing(SessionRecord),
    /// A new session with its bound sockets, to hand to the data plane.
    New(SessionRecord, Box<[LegSetup; 2]>),
}

/// Packet rate over the last sampling interval.
#[derive(Debug)]
struct Rate {
    at: Instant,
    relayed: u64,
    per_second: f64,
}

/// A deleted session's ports, freed when dropped before the data plane has answered.
struct PendingRelease<'a> {
    node: &'a Node,
    record: Option<SessionRecord>,
}

impl PendingRelease<'_> {
    /// The record, for the release that follows the data plane's answer.
    fn disarm(mut self) -> SessionRecord {
        self.record.take().expect("set until disarmed or dropped")
    }
}

impl Drop for PendingRelease<'_> {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            self.node.release(&record, None);
            self.node.metrics.session_ended(EndReason::Deleted);
        }
    }
}

/// A media node's sessions and state.
pub struct Node {
    config: Config,
    table: Mutex<SessionTable>,
    /// Locked after the table when both are.
    sockets: Mutex<SocketPool>,
    relay: Relay,
    metrics: Arc<Metrics>,
    drain: DrainState,
    /// Sessions now, watched by the drain.
    active: watch::Sender<usize>,
    rate: Mutex<Rate>,
}

impl Node {
    /// Starts the data plane of `config`.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> io::Result<Self> {
        let settings = WorkerSettings {
            relatch_silence: config.relatch_silence,
            busy_poll: config.busy_poll,
            backend: config.relay_backend,
        };
        let relay = Relay::start(config.workers, settings, metrics.relay.clone())?;
        let ports = PortAllocator::new(config.rtp_ports);
        let resting =
            sockets::resting_limit(2 * ports.capacity(), 4 * config.max_sessions as usize);
        let pool = SocketPool::new(config.bind, config.socket_receive_buffer, resting);
        let table = SessionTable::new(config.max_sessions as usize, relay.workers(), ports);
        Ok(Self {
            drain: DrainState::new(config.drain_timeout),
            config,
            table: Mutex::new(table),
            sockets: Mutex::new(pool),
            relay,
            metrics,
            active: watch::Sender::new(0),
            rate: Mutex::new(Rate {
                at: Instant::now(),
                relayed: 0,
                per_second: 0.0,
            }),
        })
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The I/O backend the data plane runs.
    pub fn relay_backend(&self) -> Backend {
        self.relay.backend()
    }

    fn table(&self) -> MutexGuard<'_, SessionTable> {
        // Every table update completes before anything can panic, so a poisoned table is sound.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sockets(&self) -> MutexGuard<'_, SocketPool> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions_changed(&self, count: usize) {
        self.active.send_replace(count);
        self.metrics.set_sessions(count);
    }

    /// Creates a session, or returns the one already created under its id (retries are
    /// idempotent).
    pub async fn create(&self, request: SessionRequest) -> Result<SessionView, NodeError> {
        let (record, setups) = match self.reserve(&request)? {
            Reserved::Existing(record) => return self.view(request.id, &record).await,
            Reserved::New(record, setups) => (record, setups),
        };
        if let Err(error) = self.relay.add(record.worker, record.key, *setups).await {
            self.forget(&request.id);
            return Err(error.into());
        }
        self.metrics.session_created();
        tracing::debug!(
            session = %request.id,
            call_id = %request.call_id,
            tenant = %request.tenant,
            a = record.legs[0].ports.rtp,
            b = record.legs[1].ports.rtp,
            "session created"
        );
        Ok(self.view_with(request.id, &record, Default::default()))
    }

    /// Finds the session of `request`, or admits it: capacity, ports, sockets, table entry.
    fn reserve(&self, request: &SessionRequest) -> Result<Reserved, NodeError> {
        let mut table = self.table();
        if let Some(existing) = table.get(&request.id) {
            if existing.call_id != request.call_id {
                return Err(NodeError::Conflict {
                    id: request.id.clone(),
                    existing: existing.call_id.clone(),
                });
            }
            return Ok(Reserved::Existing(existing.clone()));
        }
        if self.drain.is_draining() {
            return Err(NodeError::Draining);
        }
        if !table.has_room() {
            return Err(NodeError::AtCapacity {
                capacity: self.config.max_sessions,
            });
        }
        let [leg_a, leg_b] = request.legs;
        let a = self.bind_leg(&mut table.ports, leg_a.rtcp_mux)?;
        let b = match self.bind_leg(&mut table.ports, leg_b.rtcp_mux) {
            Ok(b) => b,
            Err(error) => {
                table.ports.release(a.0);
                return Err(error);
            }
        };
        let (key, worker) = table.place();
        let record = SessionRecord {
            key,
            worker,
            call_id: request.call_id.clone(),
            tenant: request.tenant.clone(),
            created: SystemTime::now(),
            legs: [(a.0, leg_a), (b.0, leg_b)].map(|(ports, leg)| LegRecord {
                ports,
                rtcp_mux: leg.rtcp_mux,
                remote: leg.remote,
            }),
        };
        let setups = [(a, leg_a), (b, leg_b)].map(|((_, rtp, rtcp), leg)| LegSetup {
            rtp,
            rtcp,
            remote: leg.remote,
            payload_types: leg.payload_types,
        });
        table.insert(request.id.clone(), record.clone());
        self.sessions_changed(table.len());
        Ok(Reserved::New(record, Box::new(setups)))
    }

    /// Reserves a port pair and binds the leg's sockets, skipping pairs another process holds.
    fn bind_leg(
        &self,
        ports: &mut PortAllocator,
        rtcp_mux: bool,
    ) -> Result<(PortPair, UdpSocket, Option<UdpSocket>), NodeError> {
        for _ in 0..ports.capacity() {
            let pair = ports.allocate().ok_or(NodeError::PortsExhausted {
                range: self.config.rtp_ports,
            })?;
            let bound = self.bind(pair.rtp).and_then(|rtp| {
                let rtcp = (!rtcp_mux).then(|| self.bind(pair.rtcp())).transpose()?;
                Ok((rtp, rtcp))
            });
            match bound {
                Ok((rtp, rtcp)) => return Ok((pair, rtp, rtcp)),
                Err(NodeError::Bind { source, .. })
                    if source.kind() == io::ErrorKind::AddrInUse =>
                {
                    ports.release(pair);
                }
                Err(error) => {
                    ports.release(pair);
                    return Err(error);
                }
            }
        }
        Err(NodeError::PortsExhausted {
            range: self.config.rtp_ports,
        })
    }

    fn bind(&self, port: u16) -> Result<UdpSocket, NodeError> {
        self.sockets().take(port).map_err(|source| NodeError::Bind {
            address: SocketAddr::new(self.config.bind, port),
            source,
        })
    }

    /// Frees a session's ports once the data plane has let it go, keeping its sockets for the
    /// ports' next sessions; the session's last figures.
    fn release(&self, record: &SessionRecord, released: Option<Released>) -> [LegStats; 2] {
        let Released { legs, sockets } = released.unwrap_or_default();
        let mut table = self.table();
        self.rest(sockets);
        table.release(record);
        self.sessions_changed(table.len());
        legs
    }

    /// Keeps sockets the data plane let go for their ports' next sessions.
    fn rest(&self, released: Vec<UdpSocket>) {
        let mut sockets = self.sockets();
        for socket in released {
            sockets.put(socket);
        }
    }

    /// Takes a session out of the table and frees its ports (the data plane never had it).
    fn forget(&self, id: &SessionId) -> Option<SessionRecord> {
        let record = self.table().remove(id)?;
        self.release(&record, None);
        Some(record)
    }

    /// Applies new SDP to one leg.
    pub async fn update(&self, update: LegUpdate) -> Result<SessionView, NodeError> {
        let (record, change) = {
            let mut table = self.table();
            let Some(leg) = table.leg_mut(&update.id, update.leg).copied() else {
                return Err(NodeError::NotFound(update.id));
            };
            let rtcp = match (leg.rtcp_mux, update.rtcp_mux) {
                (true, false) => RtcpSocket::Open(self.bind(leg.ports.rtcp())?),
                (false, true) => RtcpSocket::Close,
                _ => RtcpSocket::Keep,
            };
            let stored = table
                .leg_mut(&update.id, update.leg)
                .expect("looked up above");
            stored.rtcp_mux = update.rtcp_mux;
            stored.remote = update.remote.or(stored.remote);
            let record = table.get(&update.id).expect("looked up above").clone();
            let change = LegChange {
                remote: update.remote,
                rtcp,
                payload_types: update.payload_types,
            };
            (record, change)
        };
        let stats = self
            .relay
            .update(record.worker, record.key, update.leg.index(), change)
            .await?
            .ok_or_else(|| NodeError::NotFound(update.id.clone()))?;
        tracing::debug!(session = %update.id, leg = update.leg.as_str(), remote = ?update.remote, rtcp_mux = update.rtcp_mux, "leg updated");
        Ok(self.view_with(update.id, &record, stats))
    }

    /// Ends a session; its last figures, or `None` when it did not exist.
    pub async fn delete(&self, id: &SessionId) -> Result<Option<[LegStats; 2]>, NodeError> {
        let Some(record) = self.table().remove(id) else {
            return Ok(None);
        };
        let (worker, key) = (record.worker, record.key);
        // The ports come back only once the worker has let their sockets go, or at once should
        // this future be dropped meanwhile (a caller's deadline passed).
        let pending = PendingRelease {
            node: self,
            record: Some(record),
        };
        let released = self.relay.remove(worker, key).await;
        let record = pending.disarm();
        let stats = match released {
            Ok(released) => self.release(&record, released),
            Err(error) => {
                self.release(&record, None);
                return Err(error.into());
            }
        };
        self.metrics.session_ended(EndReason::Deleted);
        tracing::debug!(session = %id, packets_a = stats[0].counters.packets_in, packets_b = stats[1].counters.packets_in, "session deleted");
        Ok(Some(stats))
    }

    /// One session with its figures.
    pub async fn get(&self, id: &SessionId) -> Result<SessionView, NodeError> {
        let record = self
            .table()
            .get(id)
            .cloned()
            .ok_or_else(|| NodeError::NotFound(id.clone()))?;
        self.view(id.clone(), &record).await
    }

    async fn view(&self, id: SessionId, record: &SessionRecord) -> Result<SessionView, NodeError> {
        let stats = self
            .relay
            .stats(record.worker, record.key)
            .await?
            .unwrap_or_default();
        Ok(self.view_with(id, record, stats))
    }

    /// A session as the control API shows it, with `stats`.
    fn view_with(
        &self,
        id: SessionId,
        record: &SessionRecord,
        stats: [LegStats; 2],
    ) -> SessionView {
        let local = |port| SocketAddr::new(self.config.advertise, port);
        let leg = |id: LegId| {
            let (leg, stats) = (record.legs[id.index()], stats[id.index()]);
            let rtcp = if leg.rtcp_mux {
                leg.ports.rtp
            } else {
                leg.ports.rtcp()
            };
            LegView {
                leg: id,
                local_rtp: local(leg.ports.rtp),
                local_rtcp: local(rtcp),
                rtcp_mux: leg.rtcp_mux,
                remote: stats.destination.or(leg.remote),
                stats,
            }
        };
        SessionView {
            id,
            call_id: record.call_id.clone(),
            created: record.created,
            legs: LegId::BOTH.map(leg),
        }
    }

    /// Ends the sessions idle for the configured timeout; returns how many.
    pub async fn reap_idle(&self) -> Result<usize, NodeError> {
        let ended = self.relay.reap(self.config.idle_timeout).await?;
        let count = ended.len();
        for session in ended {
            let Some((id, record)) = self.table().remove_key(session.key) else {
                // Deleted meanwhile: its ports are free already.
                self.rest(session.released.sockets);
                continue;
            };
            self.release(&record, Some(session.released));
            self.metrics.session_ended(EndReason::Idle);
            tracing::info!(session = %id, call_id = %record.call_id, "idle session ended");
        }
        Ok(count)
    }

    /// Ends every session (the node stops).
    pub async fn end_all(&self) {
        let ids: Vec<SessionId> = {
            let table = self.table();
            table.ids().cloned().collect()
        };
        for id in ids {
            let removed = self.table().remove(&id);
            if let Some(record) = removed {
                let _ = self.relay.remove(record.worker, record.key).await;
                self.metrics.session_ended(EndReason::Shutdown);
                tracing::warn!(session = %id, "session cut: the node stops");
                let mut table = self.table();
                table.release(&record);
                self.sessions_changed(table.len());
            }
        }
    }

    /// Starts draining to stop (a Drain call, SIGTERM); returns the sessions left and the
    /// deadline.
    pub fn drain(&self) -> (usize, Instant) {
        let (deadline, started) = self.drain.stop();
        let remaining = self.table().len();
        if started {
            self.metrics.set_draining(true);
            tracing::info!(sessions = remaining, timeout = ?self.config.drain_timeout, "draining: no new sessions");
        }
        (remaining, deadline)
    }

    /// Drains (`true`) or serves again (`false`) as the operator asks before a scale-down: no
    /// new session while requested, but the node keeps running either way.
    pub fn request_drain(&self, requested: bool) {
        if !self.drain.set_requested(requested) {
            return;
        }
        let draining = self.drain.is_draining();
        self.metrics.set_draining(draining);
        let sessions = self.table().len();
        match (requested, draining) {
            (true, _) => {
                tracing::info!(sessions, "the pool scales down: draining, no new sessions")
            }
            (false, false) => {
                tracing::info!(sessions, "scale-down withdrawn: taking new sessions again")
            }
            (false, true) => tracing::info!("scale-down withdrawn; still draining to stop"),
        }
    }

    /// Whether the node drains.
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Notified whenever the drain state changes.
    pub fn drain_changes(&self) -> watch::Receiver<Drain> {
        self.drain.subscribe()
    }

    /// Resolves once the node drains to stop and has no session left, or its drain deadline
    /// passed. A drain the operator requested alone never resolves it.
    pub async fn drained(&self) {
        let mut draining = self.drain.subscribe();
        if draining
            .wait_for(|drain| drain.stopping.is_some())
            .await
            .is_err()
        {
            return;
        }
        let deadline = self.drain.deadline().expect("draining");
        let mut active = self.active.subscribe();
        let emptied = async { active.wait_for(|&n| n == 0).await.map(drop) };
        if tokio::time::timeout_at(deadline.into(), emptied)
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = *self.active.borrow(),
                "drain timeout passed with sessions left"
            );
        }
    }

    /// Resolves once no session is left.
    pub async fn emptied(&self) {
        let mut active = self.active.subscribe();
        let _ = active.wait_for(|&n| n == 0).await;
    }

    /// Updates the packet rate; called at a steady interval.
    pub fn sample_rate(&self) {
        let relayed = self.metrics.relay.relayed_packets.get();
        let mut rate = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(rate.at).as_secs_f64();
        if elapsed > 0.0 {
            rate.per_second = relayed.saturating_sub(rate.relayed) as f64 / elapsed;
        }
        rate.at = now;
        rate.relayed = relayed;
    }

    /// The node's figures now.
    pub fn stats(&self) -> NodeStats {
        let relay = &self.metrics.relay;
        NodeStats {
            active_sessions: self.table().len() as u32,
            capacity: self.config.max_sessions,
            draining: self.is_draining(),
            packets_relayed: relay.relayed_packets.get(),
            packets_dropped: relay.dropped_total(),
            packets_lost: relay.lost_packets.get(),
            packets_per_second: self
                .rate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::PayloadTypes;
    use crate::session::LegRequest;
    use std::net::{IpAddr, Ipv4Addr};

    fn request(id: &str) -> SessionRequest {
        let leg = LegRequest {
            rtcp_mux: true,
            remote: None,
            payload_types: PayloadTypes::default(),
        };
        SessionRequest {
            id: SessionId::parse(id).unwrap(),
            call_id: id.into(),
            tenant: "acme".into(),
            legs: [leg, leg],
        }
    }

    #[tokio::test]
    async fn a_delete_dropped_before_the_worker_answers_still_frees_the_ports() {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut config = Config::new("node-0", "pool", loopback);
        config.bind = loopback;
        // Two port pairs: one session's legs.
        config.rtp_ports = PortRange {
            min: 21190,
            max: 21193,
        };
        let metrics = Arc::new(Metrics::new(config.max_sessions));
        let node = Node::new(config, metrics).unwrap();
        let created = node.create(request("s1")).await.unwrap();
        assert_eq!(node.table().ports.available(), 0);

        // What `delete` holds while it awaits the worker, dropped as a caller's deadline would.
        let record = node.table().remove(&created.id).unwrap();
        drop(PendingRelease {
            node: &node,
            record: Some(record),
        });
        assert_eq!(
            node.table().ports.available(),
            2,
            "both legs' pairs are free"
        );
        assert_eq!(node.stats().active_sessions, 0);
    }
}
