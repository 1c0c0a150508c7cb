//! The io_uring backend of a worker: a multishot receive on every socket into provided
//! buffers, the sessions' verdict on each completion, and the sends queued as submission
//! entries, all submitted with one `io_uring_enter` per loop that also waits for the next
//! completions. Completions are read from the shared ring without a system call.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::counters::RelayCounters;
use super::sessions::{Sessions, Token, Watcher};
use super::sys::EventFd;
use super::uring::{Completion, Ring, TOKEN_LIMIT};
use super::{Command, PUBLISH_INTERVAL, PUBLISH_PACKETS, WorkerSettings};

// Socket tokens are the receives' user data, which must leave the ring its kinds' bits.
const _: () = assert!(Token::LIMIT <= TOKEN_LIMIT);

impl Watcher for Ring {
    fn watch(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.receive_on(fd, token.encode())
    }

    fn unwatch(&mut self, _fd: RawFd, token: Token) -> bool {
        self.cancel(token.encode())
    }
}

/// A worker thread's state with the io_uring backend.
pub(super) struct UringWorker {
    ring: Ring,
    wake: Arc<EventFd>,
    stop: Arc<AtomicBool>,
    inbox: mpsc::Receiver<Command>,
    busy_poll: Duration,
    sessions: Sessions,
    /// The completions of one loop (capacity kept between loops).
    completions: Vec<Completion>,
    /// Sockets whose multishot receive ended and must be armed again.
    rearm: Vec<Token>,
    counters: RelayCounters,
}

impl UringWorker {
    /// Sets up a worker's ring, polling `wake`; fails where io_uring is unavailable or too
    /// old (then the relay may fall back to epoll). Must run on the worker's own thread: the
    /// ring accepts submissions from the thread that created it only.
    pub(super) fn ring(wake: &EventFd) -> io::Result<Ring> {
        let mut ring = Ring::new()?;
        ring.watch_wake(wake.raw())?;
        Ok(ring)
    }

    pub(super) fn new(
        ring: Ring,
        inbox: mpsc::Receiver<Command>,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        settings: WorkerSettings,
        counters: RelayCounters,
    ) -> Self {
        Self {
            ring,
            wake,
            stop,
            inbox,
            busy_poll: settings.busy_poll,
            sessions: Sessions::new(settings),
            completions: Vec::with_capacity(1024),
            rearm: Vec::new(),
            counters,
        }
    }

    /// Relays until the relay stops.
    pub(super) fn run(mut self) {
        let busy_poll = self.busy_poll;
        let mut last_packet = Instant::now();
        let mut last_publish = last_packet;
        loop {
            let spin = !busy_poll.is_zero() && last_packet.elapsed() < busy_poll;
            // Submits the sends and re-armed receives of the last loop, and waits.
            if let Err(error) = self.ring.submit_and_wait(!spin) {
                tracing::error!(%error, "io_uring_enter failed; relay worker stops");
                break;
            }
            let now = Instant::now();
            let mut completions = std::mem::take(&mut self.completions);
            self.ring.completions(&mut completions);
            if !completions.is_empty() {
                last_packet = now;
            }
            let mut woken = false;
            for completion in completions.drain(..) {
                match completion {
                    Completion::Wake { more } => {
                        woken = true;
                        if !more && let Err(error) = self.ring.watch_wake(self.wake.raw()) {
                            tracing::error!(%error, "cannot poll the wake-up descriptor; relay worker stops");
                            return;
                        }
                    }
                    Completion::Received {
                        token,
                        buffer,
                        error,
                        more,
                    } => {
                        let token = Token::decode(token);
                        if let Some(buffer) = buffer {
                            let datagram = self.ring.datagram(&buffer);
                            let forward = self.sessions.admit(
                                token,
                                datagram.data,
                                datagram.source,
                                datagram.truncated,
                                now,
                            );
                            match forward {
                                Some(f) => {
                                    let sent =
                                        self.ring.send(buffer, f.fd, &f.destination, f.to.encode());
                                    if sent.is_err() {
                                        self.sessions.send_failed(1);
                                    }
                                }
                                None => self.ring.recycle(buffer),
                            }
                        }
                        // A cancelled receive belongs to a socket that is gone (or replaced:
                        // its token may name the new one, already armed).
                        if !more && error != Some(libc::ECANCELED) {
                            if let Some(error) = error.filter(|&e| e != libc::ENOBUFS) {
                                tracing::debug!(
                                    error = %io::Error::from_raw_os_error(error),
                                    "a socket's multishot receive ended; arming it again"
                                );
                            }
                            self.rearm.push(token);
                        }
                    }
                    Completion::Sent {
                        buffer,
                        context,
                        result,
                    } => {
                        match result {
                            Ok(bytes) => {
                                self.sessions
                                    .sent(Token::decode(context), 1, u64::from(bytes))
                            }
                            Err(_) => self.sessions.send_failed(1),
                        }
                        self.ring.recycle(buffer);
                    }
                }
            }
            self.completions = completions;
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
                    self.sessions.handle(command, &mut self.ring);
                }
            }
            // After the commands: a socket removed meanwhile is not armed again.
            for token in self.rearm.drain(..) {
                if let Some(fd) = self.sessions.socket(token)
                    && let Err(error) = self.ring.rearm(fd, token.encode())
                {
                    tracing::warn!(%error, "cannot arm a socket's receive again");
                }
            }
        }
        self.sessions.clear(&mut self.ring);
    }
}
