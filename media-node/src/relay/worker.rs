//! One data-plane worker: a thread with its own epoll set, buffers and sessions.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::counters::{DropReason, LegCounters, LegStats, RelayCounters, Tally};
use super::latch::{Latch, Verdict};
use super::rtp::{self, Packet};
use super::sequence::SequenceTracker;
use super::sys::{Datagrams, Epoll, EventFd, SockAddr};
use super::{
    Command, Ended, LegChange, LegSetup, PayloadTypes, RtcpSocket, SessionKey, WorkerSettings,
};

/// Ready sockets handled per `epoll_wait`.
const EVENTS: usize = 256;
/// Token of the wake-up eventfd; socket tokens are far below it.
const WAKE: u64 = u64::MAX;
/// The shared counters are added to once this many packets are counted, or this long after
/// the last time: a few atomic additions per packet would cost more than the packet's logic.
const PUBLISH_PACKETS: u64 = 64;
const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// Where a socket sits: session slot, leg (0: A, 1: B) and whether it is the RTCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    slot: u32,
    leg: usize,
    rtcp: bool,
}

impl Token {
    fn encode(self) -> u64 {
        u64::from(self.slot) << 2 | (self.leg as u64) << 1 | u64::from(self.rtcp)
    }

    fn decode(token: u64) -> Self {
        Self {
            slot: (token >> 2) as u32,
            leg: (token >> 1 & 1) as usize,
            rtcp: token & 1 == 1,
        }
    }
}

/// Which stream a packet belongs to, hence which socket of the other leg sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Rtp,
    Rtcp,
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

    /// The socket and address that send `stream` to this leg's peer.
    fn sender(&self, stream: Stream) -> Option<(RawFd, SockAddr)> {
        match (stream, &self.rtcp) {
            (Stream::Rtcp, Some(rtcp)) => Some((rtcp.as_raw_fd(), self.rtcp_destination?)),
            _ => Some((self.rtp.as_raw_fd(), self.rtp_destination?)),
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
    legs: [Leg; 2],
    last_activity: Instant,
}

impl Session {
    fn stats(&self, now: Instant) -> [LegStats; 2] {
        let wall = SystemTime::now();
        [self.legs[0].stats(now, wall), self.legs[1].stats(now, wall)]
    }
}

/// A worker thread's state.
pub(super) struct Worker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    inbox: mpsc::Receiver<Command>,
    settings: WorkerSettings,
    /// Sessions by slot; a socket's token names its slot, so a packet finds its session by
    /// index. Grows only with sessions, which the control plane bounds.
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    slots: HashMap<SessionKey, u32>,
    datagrams: Datagrams,
    tally: Tally,
    counters: RelayCounters,
}

impl Worker {
    pub(super) fn new(
        inbox: mpsc::Receiver<Command>,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        settings: WorkerSettings,
        counters: RelayCounters,
    ) -> io::Result<Self> {
        let epoll = Epoll::new(EVENTS)?;
        epoll.add(wake.raw(), WAKE)?;
        Ok(Self {
            epoll,
            wake,
            stop,
            inbox,
            settings,
            sessions: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            datagrams: Datagrams::new(),
            tally: Tally::default(),
            counters,
        })
    }

    /// Relays until the relay stops.
    pub(super) fn run(mut self) {
        let busy_poll = self.settings.busy_poll;
        let mut last_packet = Instant::now();
        let mut last_publish = last_packet;
        loop {
            // Right after traffic, poll instead of sleeping (when configured): it saves a sleep
            // and a wake-up between packets under heavy load.
            let spin = !busy_poll.is_zero() && last_packet.elapsed() < busy_poll;
            let ready = match self.epoll.wait(spin.then_some(Duration::ZERO)) {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::error!(%error, "epoll_wait failed; relay worker stops");
                    return;
                }
            };
            let now = Instant::now();
            if ready > 0 {
                last_packet = now;
            }
            let mut woken = false;
            for i in 0..ready {
                match self.epoll.token(i) {
                    WAKE => woken = true,
                    token => self.forward(Token::decode(token), now),
                }
            }
            if self.tally.received_packets >= PUBLISH_PACKETS
                || now - last_publish >= PUBLISH_INTERVAL
            {
                self.tally.publish(&self.counters);
                last_publish = now;
            }
            if woken {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                self.wake.clear();
                while let Ok(command) = self.inbox.try_recv() {
                    self.handle(command);
                }
            }
        }
    }

    /// Relays what waits on one socket: one `recvmmsg`, then `sendmmsg` per destination socket.
    fn forward(&mut self, token: Token, now: Instant) {
        let silence = self.settings.relatch_silence;
        let Some(session) = self
            .sessions
            .get_mut(token.slot as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let [a, b] = &mut session.legs;
        let (input, output) = if token.leg == 0 { (a, b) } else { (b, a) };
        let fd = match (&input.rtcp, token.rtcp) {
            (Some(rtcp), true) => rtcp.as_raw_fd(),
            (None, true) => return,
            (_, false) => input.rtp.as_raw_fd(),
        };
        let received = match self.datagrams.receive(fd) {
            Ok(n) => n,
            // Level-triggered: anything left is reported again.
            Err(_) => return,
        };
        let (mut accepted, mut sending_fd) = (false, -1);
        for i in 0..received {
            let datagram = self.datagrams.datagram(i);
            let verdict = match datagram.source {
                _ if datagram.truncated => Err(DropReason::Malformed),
                None => Err(DropReason::Malformed),
                Some(source) => input.admit(
                    datagram.data,
                    source,
                    token.rtcp,
                    now,
                    silence,
                    &mut self.tally,
                ),
            };
            let stream = match verdict {
                Ok(stream) => stream,
                Err(reason) => {
                    input.counters.dropped += 1;
                    self.tally.drop(reason);
                    continue;
                }
            };
            accepted = true;
            self.tally.received_packets += 1;
            self.tally.received_bytes += datagram.data.len() as u64;
            let Some((fd, destination)) = output.sender(stream) else {
                input.counters.dropped += 1;
                self.tally.drop(DropReason::NoDestination);
                continue;
            };
            if fd != sending_fd && self.datagrams.has_queued() {
                flush(&mut self.datagrams, sending_fd, output, &mut self.tally);
            }
            sending_fd = fd;
            self.datagrams.queue(i, &destination);
        }
        if self.datagrams.has_queued() {
            flush(&mut self.datagrams, sending_fd, output, &mut self.tally);
        }
        if accepted {
            session.last_activity = now;
        }
    }

    fn handle(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Add { key, legs, reply } => {
                let _ = reply.send(self.add(key, *legs, now));
            }
            Command::Update {
                key,
                leg,
                change,
                reply,
            } => {
                let _ = reply.send(self.update(key, leg, change));
            }
            Command::Remove { key, reply } => {
                let _ = reply.send(self.remove(key).map(|s| s.stats(now)));
            }
            Command::Stats { key, reply } => {
                let stats = self
                    .slots
                    .get(&key)
                    .and_then(|&slot| self.sessions[slot as usize].as_ref())
                    .map(|s| s.stats(now));
                let _ = reply.send(stats);
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
                    .filter_map(|key| self.remove(key))
                    .map(|s| Ended {
                        key: s.key,
                        legs: s.stats(now),
                    })
                    .collect();
                let _ = reply.send(ended);
            }
        }
    }

    fn add(&mut self, key: SessionKey, legs: [LegSetup; 2], now: Instant) -> io::Result<()> {
        if self.slots.contains_key(&key) {
            return Ok(());
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            (self.sessions.len() - 1) as u32
        });
        let session = Session {
            key,
            legs: legs.map(Leg::new),
            last_activity: now,
        };
        let watched = session.legs.iter().enumerate().try_for_each(|(leg, l)| {
            self.epoll.add(
                l.rtp.as_raw_fd(),
                Token {
                    slot,
                    leg,
                    rtcp: false,
                }
                .encode(),
            )?;
            match &l.rtcp {
                Some(rtcp) => self.epoll.add(
                    rtcp.as_raw_fd(),
                    Token {
                        slot,
                        leg,
                        rtcp: true,
                    }
                    .encode(),
                ),
                None => Ok(()),
            }
        });
        if let Err(error) = watched {
            unwatch(&self.epoll, &session);
            self.free.push(slot);
            return Err(error);
        }
        self.sessions[slot as usize] = Some(session);
        self.slots.insert(key, slot);
        Ok(())
    }

    fn update(&mut self, key: SessionKey, leg: usize, change: LegChange) -> io::Result<bool> {
        let Some(&slot) = self.slots.get(&key) else {
            return Ok(false);
        };
        let Some(session) = self.sessions[slot as usize].as_mut() else {
            return Ok(false);
        };
        let target = &mut session.legs[leg];
        match change.rtcp {
            RtcpSocket::Keep => {}
            RtcpSocket::Open(socket) => {
                self.epoll.add(
                    socket.as_raw_fd(),
                    Token {
                        slot,
                        leg,
                        rtcp: true,
                    }
                    .encode(),
                )?;
                if let Some(old) = target.rtcp.replace(socket) {
                    self.epoll.remove(old.as_raw_fd());
                }
                target.rtcp_latch = Latch::expecting(change.remote.or(target.remote));
            }
            RtcpSocket::Close => {
                if let Some(old) = target.rtcp.take() {
                    self.epoll.remove(old.as_raw_fd());
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

    fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let slot = self.slots.remove(&key)?;
        let session = self.sessions[slot as usize].take()?;
        unwatch(&self.epoll, &session);
        self.free.push(slot);
        Some(session)
    }
}

/// Sends the queued datagrams from `fd` to `output`'s peer and counts them.
fn flush(datagrams: &mut Datagrams, fd: RawFd, output: &mut Leg, tally: &mut Tally) {
    let sent = datagrams.flush(fd);
    output.counters.packets_out += sent.packets;
    output.counters.bytes_out += sent.bytes;
    tally.relayed_packets += sent.packets;
    tally.relayed_bytes += sent.bytes;
    for _ in 0..sent.failed {
        tally.drop(DropReason::SendFailed);
    }
}

/// Stops watching a session's sockets before they close, so no event names a freed slot.
fn unwatch(epoll: &Epoll, session: &Session) {
    for leg in &session.legs {
        epoll.remove(leg.rtp.as_raw_fd());
        if let Some(rtcp) = &leg.rtcp {
            epoll.remove(rtcp.as_raw_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token {
                slot: 0,
                leg: 0,
                rtcp: false,
            },
            Token {
                slot: 7,
                leg: 1,
                rtcp: true,
            },
            Token {
                slot: u32::MAX,
                leg: 1,
                rtcp: false,
            },
        ] {
            assert_eq!(Token::decode(token.encode()), token);
            assert_ne!(token.encode(), WAKE);
        }
    }
}
