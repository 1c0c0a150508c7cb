//! The sessions one worker owns, whatever its I/O backend: the slot table, each leg's latching
//! and counters, the verdict on every received datagram and the control commands. The backends
//! (`epoll_worker`, `uring_worker`) only move datagrams; everything a packet decides is here, so
//! both behave the same.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use super::counters::{DropReason, LegCounters, LegStats, Tally};
use super::latch::{Latch, Verdict};
use super::rtp::{self, Packet};
use super::sequence::SequenceTracker;
use super::sys::SockAddr;
use super::{
    Command, Ended, LegChange, LegSetup, PayloadTypes, Released, RtcpSocket, SessionKey,
    WorkerSettings,
};

/// Generations are this many bits wide in an encoded token.
const GENERATION_BITS: u32 = 24;

/// Names one socket of a worker: session slot, leg (0: A, 1: B), whether it is the RTCP port,
/// and the generation of the session in the slot, so that an event still in flight for a
/// removed session never reaches the session that took its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub slot: u32,
    pub leg: usize,
    pub rtcp: bool,
    pub generation: u32,
}

impl Token {
    /// Encoded tokens stay below this, leaving the top bits to the backends.
    pub const LIMIT: u64 = 1 << (2 + 32 + GENERATION_BITS);

    /// The token as a number (below [`Token::LIMIT`]).
    pub fn encode(self) -> u64 {
        u64::from(self.generation & ((1 << GENERATION_BITS) - 1)) << 34
            | u64::from(self.slot) << 2
            | (self.leg as u64) << 1
            | u64::from(self.rtcp)
    }

    /// The token of an encoded number.
    pub fn decode(token: u64) -> Self {
        Self {
            slot: (token >> 2) as u32,
            leg: (token >> 1 & 1) as usize,
            rtcp: token & 1 == 1,
            generation: ((token >> 34) & ((1 << GENERATION_BITS) - 1)) as u32,
        }
    }
}

/// Watches a worker's sockets for datagrams: the backend's half of adding and removing one.
pub(super) trait Watcher {
    /// Starts delivering the datagrams of `fd` under `token`.
    fn watch(&mut self, fd: RawFd, token: Token) -> io::Result<()>;
    /// Stops watching `fd` (watched under `token`) before it closes or serves another session:
    /// no event for it may follow. False when that could not be made sure of (the socket must
    /// then close, not serve again).
    fn unwatch(&mut self, fd: RawFd, token: Token) -> bool;
}

/// Which stream a packet belongs to, hence which socket of the other leg sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Rtp,
    Rtcp,
}

/// Where an accepted datagram goes: the socket that sends it, its destination, and the token
/// of the leg it goes out on (for its counters once sent).
#[derive(Clone, Copy)]
pub(super) struct Forward {
    pub fd: RawFd,
    pub destination: SockAddr,
    pub to: Token,
}

struct Leg {
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    remote: Option<SocketAddr>,
    rtp_latch: Latch,
    rtcp_latch: Latch,
    rtp_destination: Option<SockAddr>,
    rtcp_destination: Option<SockAddr>,
    payload_types: PayloadTypes,
    sequence: SequenceTracker,
    counters: LegCounters,
    last_in: Option<Instant>,
}

impl Leg {
    fn new(setup: LegSetup) -> Self {
        let mut leg = Self {
            rtp: setup.rtp,
            rtcp: setup.rtcp,
            remote: setup.remote,
            rtp_latch: Latch::expecting(setup.remote),
            rtcp_latch: Latch::expecting(setup.remote),
            rtp_destination: None,
            rtcp_destination: None,
            payload_types: setup.payload_types,
            sequence: SequenceTracker::default(),
            counters: LegCounters::default(),
            last_in: None,
        };
        leg.route();
        leg
    }

    /// Recomputes where this leg's peer is sent to: the latched source, else the SDP address
    /// (RTCP on the next port, RFC 3550 §11, unless multiplexed).
    fn route(&mut self) {
        let rtp = self.rtp_latch.source().or(self.remote);
        self.rtp_destination = rtp.map(SockAddr::from);
        self.rtcp_destination = match &self.rtcp {
            None => self.rtp_destination,
            Some(_) => self
                .rtcp_latch
                .source()
                .or_else(|| {
                    self.remote
                        .map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1)))
                })
                .map(SockAddr::from),
        };
    }

    /// The socket and address that send `stream` to this leg's peer, and whether that socket
    /// is the RTCP port.
    fn sender(&self, stream: Stream) -> Option<(RawFd, SockAddr, bool)> {
        match (stream, &self.rtcp) {
            (Stream::Rtcp, Some(rtcp)) => Some((rtcp.as_raw_fd(), self.rtcp_destination?, true)),
            _ => Some((self.rtp.as_raw_fd(), self.rtp_destination?, false)),
        }
    }

    /// The socket `rtcp` names, if the leg has it.
    fn socket(&self, rtcp: bool) -> Option<&UdpSocket> {
        if rtcp {
            self.rtcp.as_ref()
        } else {
            Some(&self.rtp)
        }
    }

    /// Decides about a datagram from this leg's peer and counts it.
    fn admit(
        &mut self,
        data: &[u8],
        source: SocketAddr,
        on_rtcp_port: bool,
        now: Instant,
        silence: Duration,
        tally: &mut Tally,
    ) -> Result<Stream, DropReason> {
        let packet = rtp::parse(data).ok_or(DropReason::Malformed)?;
        if let Packet::Rtp { payload_type, .. } = packet
            && !on_rtcp_port
            && !self.payload_types.allows(payload_type)
        {
            return Err(DropReason::PayloadType);
        }
        // Only RTP may take the RTP port's latch; RTCP on a multiplexed port follows it.
        let (latch, ssrc) = match packet {
            _ if on_rtcp_port => (&mut self.rtcp_latch, Some(packet.ssrc())),
            Packet::Rtp { ssrc, .. } => (&mut self.rtp_latch, Some(ssrc)),
            Packet::Rtcp { .. } => (&mut self.rtp_latch, None),
        };
        match latch.observe(source, ssrc, now, silence) {
            Verdict::Accept => {}
            Verdict::Latched => {
                tracing::debug!(%source, rtcp = on_rtcp_port, "leg latched");
                self.route();
            }
            Verdict::Relatched { previous } => {
                tracing::info!(%source, %previous, rtcp = on_rtcp_port, "leg re-latched to a new stream");
                self.route();
            }
            Verdict::Reject => return Err(DropReason::WrongSource),
        }
        if let Packet::Rtp { ssrc, seq, .. } = packet
            && !on_rtcp_port
        {
            let lost = self.sequence.observe(ssrc, seq);
            self.counters.lost += lost;
            tally.lost_packets += lost;
        }
        self.counters.packets_in += 1;
        self.counters.bytes_in += data.len() as u64;
        self.last_in = Some(now);
        Ok(match packet {
            Packet::Rtcp { .. } => Stream::Rtcp,
            Packet::Rtp { .. } if on_rtcp_port => Stream::Rtcp,
            Packet::Rtp { .. } => Stream::Rtp,
        })
    }

    fn stats(&self, now: Instant, wall: SystemTime) -> LegStats {
        LegStats {
            counters: self.counters,
            latched: self.rtp_latch.source(),
            destination: self.rtp_latch.source().or(self.remote),
            last_activity: self
                .last_in
                .map(|t| wall - now.saturating_duration_since(t)),
        }
    }
}

struct Session {
    key: SessionKey,
    generation: u32,
    legs: [Leg; 2],
    last_activity: Instant,
    /// Whether its sockets may serve another session: every one was unwatched for sure.
    reusable: bool,
}

impl Session {
    fn stats(&self, now: Instant) -> [LegStats; 2] {
        let wall = SystemTime::now();
        [self.legs[0].stats(now, wall), self.legs[1].stats(now, wall)]
    }

    /// Lets the session go: its last figures, and its sockets unless one may still be
    /// watched (those close here).
    fn release(self, now: Instant) -> Released {
        let legs = self.stats(now);
        let sockets = match self.reusable {
            true => self
                .legs
                .into_iter()
                .flat_map(|leg| std::iter::once(leg.rtp).chain(leg.rtcp))
                .collect(),
            false => Vec::new(),
        };
        Released { legs, sockets }
    }

    fn token(&self, slot: u32, leg: usize, rtcp: bool) -> Token {
        Token {
            slot,
            leg,
            rtcp,
            generation: self.generation,
        }
    }
}

/// A worker's sessions and the figures it has not published yet.
pub(super) struct Sessions {
    settings: WorkerSettings,
    /// Sessions by slot; a socket's token names its slot, so a packet finds its session by
    /// index. Grows only with sessions, which the control plane bounds.
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    slots: HashMap<SessionKey, u32>,
    next_generation: u32,
    /// Counted since the last publication to the node's counters.
    pub tally: Tally,
}

impl Sessions {
    pub fn new(settings: WorkerSettings) -> Self {
        Self {
            settings,
            sessions: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            next_generation: 0,
            tally: Tally::default(),
        }
    }

    /// The live session `token` names, if it still is the one the token was made for.
    fn session(&mut self, token: Token) -> Option<&mut Session> {
        self.sessions
            .get_mut(token.slot as usize)?
            .as_mut()
            .filter(|s| s.generation == token.generation)
    }

    /// The socket `token` names while its session lives.
    pub fn socket(&self, token: Token) -> Option<RawFd> {
        let session = self.sessions.get(token.slot as usize)?.as_ref()?;
        (session.generation == token.generation)
            .then(|| session.legs[token.leg].socket(token.rtcp))?
            .map(AsRawFd::as_raw_fd)
    }

    /// Decides about a datagram received on the socket `token` names (`source` is `None` when
    /// unreadable; `truncated` when longer than the relay forwards) and counts it; where it
    /// goes when accepted.
    pub fn admit(
        &mut self,
        token: Token,
        data: &[u8],
        source: Option<SocketAddr>,
        truncated: bool,
        now: Instant,
    ) -> Option<Forward> {
        let silence = self.settings.relatch_silence;
        let slot = token.slot;
        let tally = &mut self.tally;
        let session = self
            .sessions
            .get_mut(slot as usize)?
            .as_mut()
            .filter(|s| s.generation == token.generation)?;
        let generation = session.generation;
        let [a, b] = &mut session.legs;
        let (input, output) = if token.leg == 0 { (a, b) } else { (b, a) };
        if token.rtcp && input.rtcp.is_none() {
            return None;
        }
        let verdict = match source {
            _ if truncated => Err(DropReason::Malformed),
            None => Err(DropReason::Malformed),
            Some(source) => input.admit(data, source, token.rtcp, now, silence, tally),
        };
        let stream = match verdict {
            Ok(stream) => stream,
            Err(reason) => {
                input.counters.dropped += 1;
                tally.drop(reason);
                return None;
            }
        };
        session.last_activity = now;
        tally.received_packets += 1;
        tally.received_bytes += data.len() as u64;
        let Some((fd, destination, rtcp)) = output.sender(stream) else {
            input.counters.dropped += 1;
            tally.drop(DropReason::NoDestination);
            return None;
        };
        Some(Forward {
            fd,
            destination,
            to: Token {
                slot,
                leg: token.leg ^ 1,
                rtcp,
                generation,
            },
        })
    }

    /// Counts `packets` datagrams of `bytes` in all sent to the peer of the leg `to` names.
    pub fn sent(&mut self, to: Token, packets: u64, bytes: u64) {
        self.tally.relayed_packets += packets;
        self.tally.relayed_bytes += bytes;
        if let Some(session) = self.session(to) {
            let counters = &mut session.legs[to.leg].counters;
            counters.packets_out += packets;
            counters.bytes_out += bytes;
        }
    }

    /// Counts datagrams the kernel refused to send.
    pub fn send_failed(&mut self, packets: u64) {
        for _ in 0..packets {
            self.tally.drop(DropReason::SendFailed);
        }
    }

    /// Carries out a control command.
    pub fn handle(&mut self, command: Command, watcher: &mut impl Watcher) {
        let now = Instant::now();
        match command {
            Command::Add { key, legs, reply } => {
                let _ = reply.send(self.add(key, *legs, now, watcher));
            }
            Command::Update {
                key,
                leg,
                change,
                reply,
            } => {
                // An unknown session has no figures either.
                let updated = self.update(key, leg, change, watcher);
                let _ = reply.send(updated.map(|_| self.stats(key, now)));
            }
            Command::Remove { key, reply } => {
                let _ = reply.send(self.remove(key, watcher).map(|s| s.release(now)));
            }
            Command::Stats { key, reply } => {
                let _ = reply.send(self.stats(key, now));
            }
            Command::Reap { idle, reply } => {
                let idle_keys: Vec<SessionKey> = self
                    .sessions
                    .iter()
                    .flatten()
                    .filter(|s| now.saturating_duration_since(s.last_activity) >= idle)
                    .map(|s| s.key)
                    .collect();
                let ended = idle_keys
                    .into_iter()
                    .filter_map(|key| self.remove(key, watcher))
                    .map(|s| Ended {
                        key: s.key,
                        released: s.release(now),
                    })
                    .collect();
                let _ = reply.send(ended);
            }
        }
    }

    /// A session's figures now.
    fn stats(&self, key: SessionKey, now: Instant) -> Option<[LegStats; 2]> {
        let &slot = self.slots.get(&key)?;
        Some(self.sessions[slot as usize].as_ref()?.stats(now))
    }

    /// Ends every session (the worker stops), unwatching their sockets first.
    pub fn clear(&mut self, watcher: &mut impl Watcher) {
        let keys: Vec<SessionKey> = self.slots.keys().copied().collect();
        for key in keys {
            self.remove(key, watcher);
        }
    }

    fn add(
        &mut self,
        key: SessionKey,
        legs: [LegSetup; 2],
        now: Instant,
        watcher: &mut impl Watcher,
    ) -> io::Result<()> {
        if self.slots.contains_key(&key) {
            return Ok(());
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            (self.sessions.len() - 1) as u32
        });
        self.next_generation = self.next_generation.wrapping_add(1) & ((1 << GENERATION_BITS) - 1);
        let session = Session {
            key,
            generation: self.next_generation,
            legs: legs.map(Leg::new),
            last_activity: now,
            reusable: true,
        };
        let mut watched = Vec::with_capacity(4);
        let result = session.legs.iter().enumerate().try_for_each(|(leg, l)| {
            let token = session.token(slot, leg, false);
            watcher.watch(l.rtp.as_raw_fd(), token)?;
            watched.push((l.rtp.as_raw_fd(), token));
            if let Some(rtcp) = &l.rtcp {
                let token = session.token(slot, leg, true);
                watcher.watch(rtcp.as_raw_fd(), token)?;
                watched.push((rtcp.as_raw_fd(), token));
            }
            Ok(())
        });
        if let Err(error) = result {
            for (fd, token) in watched {
                watcher.unwatch(fd, token);
            }
            self.free.push(slot);
            return Err(error);
        }
        self.sessions[slot as usize] = Some(session);
        self.slots.insert(key, slot);
        Ok(())
    }

    fn update(
        &mut self,
        key: SessionKey,
        leg: usize,
        change: LegChange,
        watcher: &mut impl Watcher,
    ) -> io::Result<bool> {
        let Some(&slot) = self.slots.get(&key) else {
            return Ok(false);
        };
        let Some(session) = self.sessions[slot as usize].as_mut() else {
            return Ok(false);
        };
        let token = session.token(slot, leg, true);
        let target = &mut session.legs[leg];
        match change.rtcp {
            RtcpSocket::Keep => {}
            RtcpSocket::Open(socket) => {
                // The new socket takes the old one's token: the old is unwatched first.
                if let Some(old) = target.rtcp.take() {
                    watcher.unwatch(old.as_raw_fd(), token);
                }
                watcher.watch(socket.as_raw_fd(), token)?;
                target.rtcp = Some(socket);
                target.rtcp_latch = Latch::expecting(change.remote.or(target.remote));
            }
            RtcpSocket::Close => {
                if let Some(old) = target.rtcp.take() {
                    watcher.unwatch(old.as_raw_fd(), token);
                }
            }
        }
        if change.remote.is_some() && change.remote != target.remote {
            target.remote = change.remote;
            target.rtp_latch = Latch::expecting(change.remote);
            target.rtcp_latch = Latch::expecting(change.remote);
            target.sequence = SequenceTracker::default();
        }
        target.payload_types = change.payload_types;
        target.route();
        Ok(true)
    }

    fn remove(&mut self, key: SessionKey, watcher: &mut impl Watcher) -> Option<Session> {
        let slot = self.slots.remove(&key)?;
        let mut session = self.sessions[slot as usize].take()?;
        // Unwatched before the sockets close or go back to the node, so no event names a freed
        // slot's sockets.
        let mut unwatched = true;
        for (index, leg) in session.legs.iter().enumerate() {
            unwatched &= watcher.unwatch(leg.rtp.as_raw_fd(), session.token(slot, index, false));
            if let Some(rtcp) = &leg.rtcp {
                unwatched &= watcher.unwatch(rtcp.as_raw_fd(), session.token(slot, index, true));
            }
        }
        session.reusable = unwatched;
        self.free.push(slot);
        Some(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_below_the_limit() {
        for token in [
            Token {
                slot: 0,
                leg: 0,
                rtcp: false,
                generation: 0,
            },
            Token {
                slot: 7,
                leg: 1,
                rtcp: true,
                generation: 3,
            },
            Token {
                slot: u32::MAX,
                leg: 1,
                rtcp: false,
                generation: (1 << GENERATION_BITS) - 1,
            },
        ] {
            assert_eq!(Token::decode(token.encode()), token);
            assert!(token.encode() < Token::LIMIT);
        }
    }
}
