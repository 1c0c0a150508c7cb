//! The load generator: RTP streams of 172-byte packets (12-byte header, 160 bytes of G.711)
//! at 50 packets/s each, paced evenly, sent in batches with `sendmmsg` from one socket and
//! received with `recvmmsg` on the same socket with kernel receive timestamps. Each payload
//! carries its stream, sequence number and send time.

use std::io;
use std::mem::zeroed;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::system::realtime_ns;

/// Bytes per packet: an RTP header and 20 ms of G.711.
pub const PACKET: usize = 172;
/// Packets per second of one stream.
pub const STREAM_PPS: u64 = 50;
/// Most packets per `sendmmsg`.
const TX_BATCH: usize = 16;
/// Longest a due packet waits for a batch to fill: sending one packet per call would make the
/// generator, not the forwarder, the bottleneck.
const TX_LINGER: Duration = Duration::from_micros(100);
const RX_BATCH: usize = 64;
const CONTROL: usize = 64;
/// Below this, waiting for the next batch spins instead of sleeping.
const SPIN: Duration = Duration::from_micros(20);
/// Silence that marks a forwarder as idle before a step.
const QUIET: Duration = Duration::from_millis(50);
/// How long stragglers are awaited after the last send.
const SETTLE: Duration = Duration::from_millis(300);

/// The forwarder ports streams go to: stream `i` to the `i`-th.
pub struct Targets(Vec<libc::sockaddr_in>);

impl Targets {
    /// Stream `2i` goes to session i's leg A, stream `2i + 1` to its leg B.
    pub fn new(pairs: &[(SocketAddr, SocketAddr)]) -> Self {
        Self(
            pairs
                .iter()
                .flat_map(|&(a, b)| [sockaddr(a), sockaddr(b)])
                .collect(),
        )
    }

    /// How many streams there can be.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// What one step of load did.
pub struct Step {
    pub streams: usize,
    pub sent: u64,
    pub received: u64,
    /// How long sending took (the schedule's duration when the generator kept up).
    pub send_time: Duration,
    /// From the first send to the last packet back.
    pub span: Duration,
    pub scheduled: Duration,
    /// One-way latencies, generator to generator through the forwarder, when recorded: the
    /// first packet of each send batch, whose send time is taken just before it leaves.
    pub latencies_ns: Vec<u64>,
}

impl Step {
    /// The rate offered.
    pub fn offered_pps(&self) -> u64 {
        self.streams as u64 * STREAM_PPS
    }

    /// The share of packets that did not come back.
    pub fn loss(&self) -> f64 {
        self.sent.saturating_sub(self.received) as f64 / self.sent.max(1) as f64
    }

    /// Packets relayed per second: all that came back over the time they took to come back,
    /// so a forwarder that fell behind and caught up later is not credited with the offered rate.
    pub fn relayed_pps(&self) -> f64 {
        self.received as f64 / self.span.as_secs_f64()
    }

    /// Whether the generator could not offer the scheduled rate (then the step measured less
    /// than intended).
    pub fn behind(&self) -> bool {
        self.send_time > self.scheduled.mul_f64(1.05)
    }
}

/// The generator's socket and buffers.
pub struct Generator {
    socket: UdpSocket,
    tx_buffers: Vec<[u8; PACKET]>,
    tx_names: Vec<libc::sockaddr_in>,
    tx_iov: Vec<libc::iovec>,
    tx: Vec<libc::mmsghdr>,
    rx_buffers: Vec<[u8; 256]>,
    rx_control: Vec<[u8; CONTROL]>,
    rx_iov: Vec<libc::iovec>,
    rx: Vec<libc::mmsghdr>,
}

fn sockaddr(address: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = address else {
        panic!("the benchmark runs on 127.0.0.1");
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sets an integer `SOL_SOCKET` option.
pub fn set_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a live c_int of the stated size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Generator {
    /// Binds the generator's socket on 127.0.0.1.
    pub fn new() -> io::Result<Box<Self>> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        // Half a second of the highest rate; FORCE needs root, the fallback is capped by rmem_max.
        set_option(&socket, libc::SO_RCVBUFFORCE, 256 << 20)
            .or_else(|_| set_option(&socket, libc::SO_RCVBUF, 256 << 20))?;
        set_option(&socket, libc::SO_TIMESTAMPNS, 1)?;
        // SAFETY: zeroed iovec and mmsghdr are valid; pointers are set below.
        let (tx_iov, tx, rx_iov, rx) = unsafe {
            (
                vec![zeroed(); TX_BATCH],
                vec![zeroed(); TX_BATCH],
                vec![zeroed(); RX_BATCH],
                vec![zeroed(); RX_BATCH],
            )
        };
        let mut this = Box::new(Self {
            socket,
            tx_buffers: vec![[0; PACKET]; TX_BATCH],
            tx_names: vec![sockaddr("127.0.0.1:9".parse().unwrap()); TX_BATCH],
            tx_iov,
            tx,
            rx_buffers: vec![[0; 256]; RX_BATCH],
            rx_control: vec![[0; CONTROL]; RX_BATCH],
            rx_iov,
            rx,
        });
        // The vectors never grow, so their elements stay where the headers point.
        for i in 0..TX_BATCH {
            this.tx_iov[i] = libc::iovec {
                iov_base: this.tx_buffers[i].as_mut_ptr().cast(),
                iov_len: PACKET,
            };
            this.tx[i].msg_hdr.msg_iov = &mut this.tx_iov[i];
            this.tx[i].msg_hdr.msg_iovlen = 1;
            this.tx[i].msg_hdr.msg_name = (&raw mut this.tx_names[i]).cast();
            this.tx[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        for i in 0..RX_BATCH {
            this.rx_iov[i] = libc::iovec {
                iov_base: this.rx_buffers[i].as_mut_ptr().cast(),
                iov_len: 256,
            };
            this.rx[i].msg_hdr.msg_iov = &mut this.rx_iov[i];
            this.rx[i].msg_hdr.msg_iovlen = 1;
            this.rx[i].msg_hdr.msg_control = this.rx_control[i].as_mut_ptr().cast();
        }
        Ok(this)
    }

    /// Where the forwarders must send.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Sends `streams` streams to `targets` for `duration` and counts what comes back.
    pub fn run(
        &mut self,
        targets: &Targets,
        streams: usize,
        duration: Duration,
        record_latency: bool,
    ) -> Step {
        let streams = streams.clamp(1, targets.len());
        // Stragglers of the last step, if a forwarder is still catching up.
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < QUIET {
            if self.receive(None) > 0 {
                quiet_since = Instant::now();
            }
        }
        let rate = streams as u64 * STREAM_PPS;
        let total = rate * duration.as_millis() as u64 / 1000;
        let mut latencies = Vec::with_capacity(if record_latency { total as usize } else { 0 });
        let (mut sent, mut received) = (0u64, 0u64);
        let start = Instant::now();
        let mut last_send = start;
        let per_packet = Duration::from_nanos(1_000_000_000 / rate);
        while sent < total {
            let now = Instant::now();
            let due = ((now - start).as_nanos() as u64 * rate / 1_000_000_000).min(total);
            let ready = due - sent;
            if ready >= TX_BATCH as u64
                || (ready > 0 && (now - last_send >= TX_LINGER || due == total))
            {
                sent += self.send(targets, sent, ready.min(TX_BATCH as u64) as usize, streams);
                last_send = now;
            }
            received += self.receive(record_latency.then_some(&mut latencies));
            // Sleep until a batch is due rather than spin: a spinning real-time thread would be
            // throttled by the kernel, and the pauses would show up as bursts.
            let next_batch = start + per_packet * (sent + TX_BATCH as u64) as u32;
            let wake = next_batch.min(last_send + TX_LINGER);
            let now = Instant::now();
            if sent < total && wake > now + SPIN {
                std::thread::sleep(wake - now);
            }
        }
        let send_time = start.elapsed();
        let mut last_progress = Instant::now();
        while received < sent && last_progress.elapsed() < SETTLE {
            let got = self.receive(record_latency.then_some(&mut latencies));
            if got > 0 {
                received += got;
                last_progress = Instant::now();
            }
        }
        let span = send_time.max(last_progress - start);
        Step {
            streams,
            sent,
            received,
            send_time,
            span,
            scheduled: duration,
            latencies_ns: latencies,
        }
    }

    /// Sends packets `first..first + count` of the schedule; returns how many went out.
    fn send(&mut self, targets: &Targets, first: u64, count: usize, streams: usize) -> u64 {
        let now = realtime_ns();
        for j in 0..count {
            let k = first + j as u64;
            let stream = (k % streams as u64) as u32;
            let seq = (k / streams as u64) as u32;
            let packet = &mut self.tx_buffers[j];
            packet[0] = 0x80;
            packet[1] = 0;
            packet[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
            packet[4..8].copy_from_slice(&(seq.wrapping_mul(160)).to_be_bytes());
            packet[8..12].copy_from_slice(&stream.to_be_bytes());
            packet[12..16].copy_from_slice(&stream.to_be_bytes());
            packet[16..20].copy_from_slice(&seq.to_be_bytes());
            packet[20..28].copy_from_slice(&now.to_be_bytes());
            packet[28] = u8::from(j == 0);
            self.tx_names[j] = targets.0[stream as usize];
        }
        // SAFETY: the first `count` headers point at filled buffers and addresses.
        let n = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                self.tx.as_mut_ptr(),
                count as u32,
                0,
            )
        };
        n.max(0) as u64
    }

    /// Receives what has come back; records latencies into `latencies` when given.
    fn receive(&mut self, mut latencies: Option<&mut Vec<u64>>) -> u64 {
        let mut total = 0;
        loop {
            for header in &mut self.rx {
                header.msg_hdr.msg_controllen = CONTROL;
                header.msg_hdr.msg_flags = 0;
            }
            // SAFETY: the headers point at live buffers of the advertised sizes.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    self.rx.as_mut_ptr(),
                    RX_BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return total;
            }
            total += n as u64;
            if let Some(latencies) = latencies.as_deref_mut() {
                for i in 0..n as usize {
                    if self.rx_buffers[i][28] == 0 {
                        continue;
                    }
                    let sent = u64::from_be_bytes(self.rx_buffers[i][20..28].try_into().unwrap());
                    if let Some(arrived) = receive_time(&self.rx[i].msg_hdr)
                        && latencies.len() < latencies.capacity()
                    {
                        latencies.push(arrived.saturating_sub(sent));
                    }
                }
            }
            if (n as usize) < RX_BATCH {
                return total;
            }
        }
    }
}

/// The kernel's receive timestamp (SO_TIMESTAMPNS) of a received message.
fn receive_time(header: &libc::msghdr) -> Option<u64> {
    // SAFETY: the kernel filled the control buffer the header points at; the CMSG macros walk
    // within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let time = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                return Some(time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}
