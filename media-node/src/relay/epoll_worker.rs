//! The epoll backend of a worker: `epoll_wait` → `recvmmsg` on each ready socket → the
//! sessions' verdict → `sendmmsg` from the other leg's socket. The fallback where io_uring is
//! not allowed (seccomp, old kernels) and the reference the io_uring backend is measured against.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::counters::RelayCounters;
use super::sessions::{Sessions, Token, Watcher};
use super::sys::{Datagrams, Epoll, EventFd};
use super::{Command, PUBLISH_INTERVAL, PUBLISH_PACKETS, WorkerSettings};

/// Ready sockets handled per `epoll_wait`.
const EVENTS: usize = 256;
/// Token of the wake-up eventfd; socket tokens are far below it.
const WAKE: u64 = u64::MAX;

impl Watcher for Epoll {
    fn watch(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.add(fd, token.encode())
    }

    fn unwatch(&mut self, fd: RawFd, _token: Token) -> bool {
        // Removal is immediate; a failure means it was not watched.
        self.remove(fd);
        true
    }
}

/// A worker thread's state with the epoll backend.
pub(super) struct EpollWorker {
    epoll: Epoll,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    inbox: mpsc::Receiver<Command>,
    busy_poll: Duration,
    sessions: Sessions,
    datagrams: Datagrams,
    counters: RelayCounters,
}

impl EpollWorker {
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
            busy_poll: settings.busy_poll,
            sessions: Sessions::new(settings),
            datagrams: Datagrams::new(),
            counters,
        })
    }

    /// Relays until the relay stops.
    pub(super) fn run(mut self) {
        let busy_poll = self.busy_poll;
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
                    break;
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
            let tally = &mut self.sessions.tally;
            if tally.received_packets >= PUBLISH_PACKETS || now - last_publish >= PUBLISH_INTERVAL {
                tally.publish(&self.counters);
                last_publish = now;
            }
            if woken {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                self.wake.clear();
                while let Ok(command) = self.inbox.try_recv() {
                    self.sessions.handle(command, &mut self.epoll);
                }
            }
        }
        self.sessions.clear(&mut self.epoll);
    }

    /// Relays what waits on one socket: one `recvmmsg`, then `sendmmsg` per destination socket.
    fn forward(&mut self, token: Token, now: Instant) {
        let Some(fd) = self.sessions.socket(token) else {
            return;
        };
        let received = match self.datagrams.receive(fd) {
            Ok(n) => n,
            // Level-triggered: anything left is reported again.
            Err(_) => return,
        };
        let mut sending: Option<(RawFd, Token)> = None;
        for i in 0..received {
            let datagram = self.datagrams.datagram(i);
            let Some(forward) = self.sessions.admit(
                token,
                datagram.data,
                datagram.source,
                datagram.truncated,
                now,
            ) else {
                continue;
            };
            if let Some((fd, to)) = sending
                && fd != forward.fd
            {
                flush(&mut self.datagrams, &mut self.sessions, fd, to);
            }
            sending = Some((forward.fd, forward.to));
            self.datagrams.queue(i, &forward.destination);
        }
        if let Some((fd, to)) = sending {
            flush(&mut self.datagrams, &mut self.sessions, fd, to);
        }
    }
}

/// Sends the queued datagrams from `fd` to the peer of the leg `to` names, and counts them.
fn flush(datagrams: &mut Datagrams, sessions: &mut Sessions, fd: RawFd, to: Token) {
    if !datagrams.has_queued() {
        return;
    }
    let sent = datagrams.flush(fd);
    sessions.sent(to, sent.packets, sent.bytes);
    sessions.send_failed(sent.failed);
}
