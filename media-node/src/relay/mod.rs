//! The data plane: worker threads that own the media sockets of their sessions and forward
//! packets between the legs; the control plane drives them with commands over bounded channels.
//!
//! Each session lives on one worker, which alone touches its state, so the per-packet path
//! takes no lock and allocates nothing. Two I/O backends move the datagrams, with the same
//! per-packet logic (`sessions.rs`):
//! - io_uring (`uring_worker.rs`, `uring.rs`): a multishot receive per socket into provided
//!   buffers, sends queued as submission entries, one `io_uring_enter` per loop;
//! - epoll (`epoll_worker.rs`, `sys.rs`): `epoll_wait` → `recvmmsg` on the ready socket →
//!   `sendmmsg` from the other leg's socket; the fallback where io_uring is not allowed.

mod counters;
mod epoll_worker;
mod latch;
mod rtp;
mod sequence;
mod sessions;
mod sys;
mod uring;
mod uring_worker;

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use counters::{DropReason, LegCounters, LegStats, RelayCounters};
pub use sys::set_receive_buffer;

use epoll_worker::EpollWorker;
use sys::EventFd;
use uring_worker::UringWorker;

/// Commands queued per worker before senders wait.
const COMMAND_QUEUE: usize = 256;
/// The shared counters are added to once this many packets are counted, or this long after
/// the last time: a few atomic additions per packet would cost more than the packet's logic.
const PUBLISH_PACKETS: u64 = 64;
const PUBLISH_INTERVAL: Duration = Duration::from_millis(10);

/// The system interface the workers move datagrams with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring where the kernel allows it (Linux 6.1 or later, not blocked by seccomp or
    /// `kernel.io_uring_disabled`), else epoll.
    #[default]
    Auto,
    /// `epoll_wait` with `recvmmsg`/`sendmmsg` per ready socket.
    Epoll,
    /// io_uring: multishot receives into provided buffers, batched sends. The relay does not
    /// start where it is unavailable.
    IoUring,
}

impl Backend {
    /// The name in flags and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Epoll => "epoll",
            Backend::IoUring => "io-uring",
        }
    }
}

/// Whether this kernel lets the io_uring backend start (tried by setting up, then dropping, the
/// ring a worker would use).
pub fn io_uring_available() -> bool {
    uring::Ring::new().is_ok()
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Backend::Auto),
            "epoll" => Ok(Backend::Epoll),
            "io-uring" | "io_uring" => Ok(Backend::IoUring),
            _ => Err(format!(
                "{text:?} is not a relay backend; use auto, epoll or io-uring"
            )),
        }
    }
}

/// Identifies a session between the control plane and its worker.
pub type SessionKey = u64;

/// The RTP payload types a leg's peer may send; empty allows any.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypes(u128);

impl PayloadTypes {
    /// Allows exactly `ids` (each below 128).
    pub fn only(ids: impl IntoIterator<Item = u8>) -> Self {
        Self(
            ids.into_iter()
                .fold(0, |mask, id| mask | 1u128 << (id & 0x7f)),
        )
    }

    /// Whether the peer may send `payload_type`.
    pub fn allows(self, payload_type: u8) -> bool {
        self.0 == 0 || self.0 & (1u128 << (payload_type & 0x7f)) != 0
    }
}

/// A leg handed to the data plane: its bound sockets and what SDP said about its peer.
#[derive(Debug)]
pub struct LegSetup {
    pub rtp: UdpSocket,
    /// `None` when RTCP is multiplexed on the RTP port.
    pub rtcp: Option<UdpSocket>,
    /// The peer's RTP address from SDP, until a packet latches the real one.
    pub remote: Option<SocketAddr>,
    pub payload_types: PayloadTypes,
}

/// A change to a leg from new SDP.
#[derive(Debug)]
pub struct LegChange {
    /// A new address reopens the latch (the peer moved); the same address keeps it.
    pub remote: Option<SocketAddr>,
    pub rtcp: RtcpSocket,
    pub payload_types: PayloadTypes,
}

/// What becomes of a leg's dedicated RTCP socket.
#[derive(Debug)]
pub enum RtcpSocket {
    Keep,
    /// rtcp-mux was dropped: RTCP gets its own port.
    Open(UdpSocket),
    /// rtcp-mux was negotiated: RTCP moves onto the RTP port.
    Close,
}

/// A session the data plane let go: its last figures, and its sockets for the ports' next
/// sessions (the data plane no longer watches them).
#[derive(Debug, Default)]
pub struct Released {
    pub legs: [LegStats; 2],
    pub sockets: Vec<UdpSocket>,
}

/// A session ended by the data plane (idle), released.
#[derive(Debug)]
pub struct Ended {
    pub key: SessionKey,
    pub released: Released,
}

/// Errors of the data plane's control interface.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay worker {0} has stopped")]
    Stopped(usize),
    #[error("cannot watch the sockets of session {key}: {source}")]
    Watch { key: SessionKey, source: io::Error },
}

/// Settings of every worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Silence after which a new SSRC from a new source may take a latch.
    pub relatch_silence: Duration,
    /// How long a worker polls for packets after the last one before it sleeps; zero sleeps at
    /// once.
    pub busy_poll: Duration,
    /// The I/O backend asked for.
    pub backend: Backend,
}

enum Command {
    Add {
        key: SessionKey,
        legs: Box<[LegSetup; 2]>,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Update {
        key: SessionKey,
        leg: usize,
        change: LegChange,
        reply: oneshot::Sender<io::Result<Option<[LegStats; 2]>>>,
    },
    Remove {
        key: SessionKey,
        reply: oneshot::Sender<Option<Released>>,
    },
    Stats {
        key: SessionKey,
        reply: oneshot::Sender<Option<[LegStats; 2]>>,
    },
    Reap {
        idle: Duration,
        reply: oneshot::Sender<Vec<Ended>>,
    },
}

struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

/// The running data plane: one thread per worker.
pub struct Relay {
    workers: Vec<WorkerHandle>,
    stop: Arc<AtomicBool>,
    backend: Backend,
}

/// A worker with its backend, built on the worker's own thread.
enum Worker {
    Epoll(Box<EpollWorker>),
    IoUring(Box<UringWorker>),
}

impl Worker {
    /// Builds the backend `asked` for; `Auto` tries io_uring, then epoll.
    fn new(
        asked: Backend,
        inbox: mpsc::Receiver<Command>,
        wake: Arc<EventFd>,
        stop: Arc<AtomicBool>,
        settings: WorkerSettings,
        counters: RelayCounters,
    ) -> io::Result<Self> {
        if asked == Backend::Epoll {
            return EpollWorker::new(inbox, wake, stop, settings, counters)
                .map(|w| Worker::Epoll(Box::new(w)));
        }
        match UringWorker::ring(&wake) {
            Ok(ring) => Ok(Worker::IoUring(Box::new(UringWorker::new(
                ring, inbox, wake, stop, settings, counters,
            )))),
            Err(error) if asked == Backend::Auto => {
                tracing::warn!(%error, "io_uring is not available; the relay uses epoll");
                EpollWorker::new(inbox, wake, stop, settings, counters)
                    .map(|w| Worker::Epoll(Box::new(w)))
            }
            Err(error) => Err(error),
        }
    }

    fn backend(&self) -> Backend {
        match self {
            Worker::Epoll(_) => Backend::Epoll,
            Worker::IoUring(_) => Backend::IoUring,
        }
    }

    fn run(self) {
        match self {
            Worker::Epoll(worker) => worker.run(),
            Worker::IoUring(worker) => worker.run(),
        }
    }
}

impl Relay {
    /// Starts `workers` threads (named `relay-N`) with the backend `settings` ask for.
    pub fn start(
        workers: usize,
        settings: WorkerSettings,
        counters: RelayCounters,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut relay = Self {
            workers: Vec::with_capacity(workers),
            stop: stop.clone(),
            backend: settings.backend,
        };
        for index in 0..workers.max(1) {
            let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
            let wake = Arc::new(EventFd::new()?);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (waker, stopping, counters) = (wake.clone(), stop.clone(), counters.clone());
            let thread = std::thread::Builder::new()
                .name(format!("relay-{index}"))
                .spawn(move || {
                    let built =
                        Worker::new(settings.backend, inbox, waker, stopping, settings, counters);
                    let worker = match built {
                        Ok(worker) => {
                            let _ = ready_tx.send(Ok(worker.backend()));
                            worker
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    worker.run();
                })?;
            relay.workers.push(WorkerHandle {
                commands,
                wake,
                thread: Some(thread),
            });
            // Dropping `relay` on an error stops the workers already running.
            relay.backend = ready_rx
                .recv()
                .map_err(|_| io::Error::other("a relay worker died while starting"))??;
        }
        tracing::info!(workers = relay.workers.len(), backend = %relay.backend, "relay started");
        Ok(relay)
    }

    /// How many workers run.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The backend the workers run (`Epoll` or `IoUring`, never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn ask<T>(
        &self,
        worker: usize,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RelayError> {
        let handle = &self.workers[worker];
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(command(reply))
            .await
            .map_err(|_| RelayError::Stopped(worker))?;
        handle.wake.notify();
        answer.await.map_err(|_| RelayError::Stopped(worker))
    }

    /// Hands a session's legs (A, B) to `worker`, which starts relaying them.
    pub async fn add(
        &self,
        worker: usize,
        key: SessionKey,
        legs: [LegSetup; 2],
    ) -> Result<(), RelayError> {
        let legs = Box::new(legs);
        self.ask(worker, |reply| Command::Add { key, legs, reply })
            .await?
            .map_err(|source| RelayError::Watch { key, source })
    }

    /// Applies new SDP to leg `leg` (0: A, 1: B); the session's figures after it, or `None`
    /// when the session is unknown.
    pub async fn update(
        &self,
        worker: usize,
        key: SessionKey,
        leg: usize,
        change: LegChange,
    ) -> Result<Option<[LegStats; 2]>, RelayError> {
        self.ask(worker, |reply| Command::Update {
            key,
            leg,
            change,
            reply,
        })
        .await?
        .map_err(|source| RelayError::Watch { key, source })
    }

    /// Ends a session; its last figures and sockets, if it was there.
    pub async fn remove(
        &self,
        worker: usize,
        key: SessionKey,
    ) -> Result<Option<Released>, RelayError> {
        self.ask(worker, |reply| Command::Remove { key, reply })
            .await
    }

    /// A session's figures now.
    pub async fn stats(
        &self,
        worker: usize,
        key: SessionKey,
    ) -> Result<Option<[LegStats; 2]>, RelayError> {
        self.ask(worker, |reply| Command::Stats { key, reply })
            .await
    }

    /// Ends, on every worker, the sessions without an accepted packet for `idle`.
    pub async fn reap(&self, idle: Duration) -> Result<Vec<Ended>, RelayError> {
        let mut ended = Vec::new();
        for worker in 0..self.workers.len() {
            ended.extend(
                self.ask(worker, |reply| Command::Reap { idle, reply })
                    .await?,
            );
        }
        Ok(ended)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in &self.workers {
            handle.wake.notify();
        }
        for handle in &mut self.workers {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_allow_only_what_sdp_offered() {
        let offered = PayloadTypes::only([0, 8, 101]);
        assert!(offered.allows(8) && offered.allows(101));
        assert!(!offered.allows(9));
    }

    #[test]
    fn no_payload_types_allow_any() {
        assert!(PayloadTypes::default().allows(96));
    }
}
