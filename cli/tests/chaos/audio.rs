//! The calls' audio: RTP both ways from 127.0.0.1 sockets, a 172-byte packet (PCMU, 20 ms) with
//! its sequence number every 20 ms, all streams paced by one timer, and per stream when packets
//! arrived: the pauses between them are the run's figure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// One packet every 20 ms (50 per second).
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// 20 ms of PCMU at 8 kHz.
const PAYLOAD: usize = 160;
const HEADER: usize = 12;
/// A pause between two packets longer than this is recorded; shorter ones are jitter.
pub const GAP: Duration = Duration::from_millis(50);
/// Distinct synchronisation sources, one per stream.
static NEXT_SSRC: AtomicU32 = AtomicU32::new(0x0c4a_0000);
/// Gaps kept per stream; past it only longer ones replace the shortest kept.
const MAX_GAPS: usize = 1_000;

/// A pause in a stream: no packet arrived from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub start: Instant,
    pub end: Instant,
}

impl Gap {
    /// How long the pause lasted.
    pub fn length(&self) -> Duration {
        self.end - self.start
    }

    /// When the pause became a gap: [`GAP`] after the last packet.
    pub fn noticed(&self) -> Instant {
        self.start + GAP
    }
}

/// What one stream received.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    pub packets: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Pauses longer than [`GAP`], in the order they ended.
    pub gaps: Vec<Gap>,
}

impl Heard {
    fn arrived(&mut self, at: Instant) {
        self.packets += 1;
        self.first.get_or_insert(at);
        if let Some(last) = self.last.replace(at)
            && at - last > GAP
        {
            self.keep(Gap {
                start: last,
                end: at,
            });
        }
    }

    fn keep(&mut self, gap: Gap) {
        if self.gaps.len() < MAX_GAPS {
            self.gaps.push(gap);
        } else if let Some(shortest) = self.gaps.iter_mut().min_by_key(|g| g.length())
            && shortest.length() < gap.length()
        {
            *shortest = gap;
        }
    }

    /// Whether a packet arrived in the `window` before `at`.
    pub fn flowing(&self, at: Instant, window: Duration) -> bool {
        self.last
            .is_some_and(|last| at.saturating_duration_since(last) <= window)
    }

    /// Every pause heard, the one still open at `end` (the call's end) included.
    pub fn gaps_until(&self, end: Instant) -> Vec<Gap> {
        let mut gaps = self.gaps.clone();
        if let Some(last) = self.last
            && end.saturating_duration_since(last) > GAP
        {
            gaps.push(Gap { start: last, end });
        }
        gaps
    }
}

/// Where a stream sends and what it has sent.
#[derive(Debug)]
struct Sending {
    to: Option<SocketAddr>,
    seq: u16,
    timestamp: u32,
}

/// One direction of a call's audio as one party has it: the packets it sends from its socket and
/// those it receives there.
pub struct Stream {
    socket: UdpSocket,
    ssrc: u32,
    sending: Mutex<Sending>,
    heard: Mutex<Heard>,
}

impl Stream {
    /// The address in the party's SDP.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a bound socket")
    }

    /// Sends the audio to `to` from the next packet on (where an SDP of the platform points).
    pub fn send_to(&self, to: SocketAddr) {
        self.sending.lock().unwrap().to = Some(to);
    }

    /// Stops sending (the call is over).
    pub fn stop(&self) {
        self.sending.lock().unwrap().to = None;
    }

    /// What has arrived so far.
    pub fn heard(&self) -> Heard {
        self.heard.lock().unwrap().clone()
    }

    /// Whether a packet arrived in the `window` before `at`.
    pub fn flowing(&self, at: Instant, window: Duration) -> bool {
        self.heard.lock().unwrap().flowing(at, window)
    }

    /// Sends the next packet, if the stream has somewhere to send it. A full socket buffer
    /// drops it, as a real phone's would.
    fn send_next(&self, packet: &mut [u8; HEADER + PAYLOAD]) {
        let to = {
            let mut sending = self.sending.lock().unwrap();
            let Some(to) = sending.to else { return };
            packet[2..4].copy_from_slice(&sending.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&sending.timestamp.to_be_bytes());
            sending.seq = sending.seq.wrapping_add(1);
            sending.timestamp = sending.timestamp.wrapping_add(PAYLOAD as u32);
            to
        };
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let _ = self.socket.try_send_to(packet, to);
    }
}

/// Every stream of the run, sent by one pacing timer and each received by a task of its own,
/// until [`Audio::stop`].
pub struct Audio {
    streams: Mutex<Vec<Arc<Stream>>>,
    stop: watch::Sender<bool>,
}

impl Audio {
    /// Starts the pacing timer (streams are added with [`Audio::stream`]).
    pub fn start() -> Arc<Self> {
        let (stop, _) = watch::channel(false);
        let audio = Arc::new(Self {
            streams: Mutex::default(),
            stop,
        });
        tokio::spawn(pace(audio.clone(), audio.stop.subscribe()));
        audio
    }

    /// A new stream on a fresh 127.0.0.1 socket, received from now on, sending once it is
    /// pointed somewhere.
    pub fn stream(&self) -> Arc<Stream> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an RTP socket");
        socket.set_nonblocking(true).expect("a non-blocking socket");
        let stream = Arc::new(Stream {
            socket: UdpSocket::from_std(socket).expect("a tokio socket"),
            ssrc: NEXT_SSRC.fetch_add(1, Ordering::Relaxed),
            sending: Mutex::new(Sending {
                to: None,
                seq: 0,
                timestamp: 0,
            }),
            heard: Mutex::default(),
        });
        self.streams.lock().unwrap().push(stream.clone());
        tokio::spawn(listen(stream.clone(), self.stop.subscribe()));
        stream
    }

    /// Ends the timer and the receiving tasks.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Audio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one packet on every stream each [`PACKET_INTERVAL`] until `stop`.
async fn pace(audio: Arc<Audio>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(PACKET_INTERVAL);
    // A late tick is not made up with a burst: the lateness shows as a gap, as it would.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut packet = [0xffu8; HEADER + PAYLOAD];
    // Version 2, no padding, extension or CSRC; payload type 0 (PCMU).
    packet[0] = 0x80;
    packet[1] = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            _ = ticks.tick() => {}
        }
        let streams = audio.streams.lock().unwrap().clone();
        for stream in &streams {
            stream.send_next(&mut packet);
        }
    }
}

/// Records the arrival of every RTP packet on `stream` until `stop`.
async fn listen(stream: Arc<Stream>, mut stop: watch::Receiver<bool>) {
    let mut buffer = [0u8; 2048];
    loop {
        let received = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            received = stream.socket.recv_from(&mut buffer) => received,
        };
        match received {
            Ok((len, _)) if len >= HEADER => stream.heard.lock().unwrap().arrived(Instant::now()),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_longer_than_jitter_is_a_gap_and_one_still_open_ends_with_the_call() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut heard = Heard::default();
        for at in [0, 20, 45, 65, 400, 420] {
            heard.arrived(ms(at));
        }
        assert_eq!(
            heard.gaps,
            vec![Gap {
                start: ms(65),
                end: ms(400)
            }]
        );
        let open = heard.gaps_until(ms(3_420));
        assert_eq!(open.last().unwrap().length(), Duration::from_millis(3_000));
        assert!(heard.flowing(ms(1_000), Duration::from_secs(1)));
        assert!(!heard.flowing(ms(1_500), Duration::from_secs(1)));
    }
}
