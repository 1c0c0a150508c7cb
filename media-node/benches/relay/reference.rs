//! The reference forwarders: the least a user-space relay must do, so the kernel's limit. No
//! latching, counters, commands or parsing.
//!
//! - [`Reference::per_leg`]: a port per leg, as the relay has: epoll, then `recvmmsg` on the
//!   ready socket and `sendmmsg` from its partner socket to a fixed address. The kernel's limit
//!   for this socket layout.
//! - [`Reference::hot_socket`]: every stream on one socket, a plain blocking
//!   `recvmmsg`/`sendmmsg` loop: batches fill, so this is the kernel's own limit for moving
//!   datagrams through user space, whatever the layout.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

const BATCH: usize = 32;
const SIZE: usize = 2048;

/// A running reference forwarder.
pub struct Reference {
    /// The port pairs it forwards between, as (A, B) per session.
    pub pairs: Vec<(SocketAddr, SocketAddr)>,
    pub thread_id: i32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reference {
    /// Binds `sessions` socket pairs on 127.0.0.1 and forwards between them, sending to `peer`.
    pub fn per_leg(sessions: usize, peer: SocketAddr) -> std::io::Result<Self> {
        let mut sockets = Vec::with_capacity(sessions * 2);
        for _ in 0..sessions * 2 {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        let pairs = sockets
            .chunks(2)
            .map(|p| (p[0].local_addr().unwrap(), p[1].local_addr().unwrap()))
            .collect();
        Self::spawn(pairs, move |stop| forward(&sockets, peer, stop))
    }

    /// Binds one socket on 127.0.0.1 that every stream of `sessions` goes to, and forwards what
    /// it receives to `peer`.
    pub fn hot_socket(sessions: usize, peer: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // Blocking, so that the loop sleeps when idle; the timeout lets it see `stop`.
        socket.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
        let own = socket.local_addr()?;
        // A deep buffer, as a hot socket carrying every stream would be given.
        crate::generator::set_option(&socket, libc::SO_RCVBUFFORCE, 32 << 20)
            .or_else(|_| crate::generator::set_option(&socket, libc::SO_RCVBUF, 32 << 20))?;
        Self::spawn(vec![(own, own); sessions], move |stop| {
            forward_hot(&socket, peer, stop)
        })
    }

    fn spawn(
        pairs: Vec<(SocketAddr, SocketAddr)>,
        run: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("reference".into())
            .spawn(move || {
                let _ = tid_tx.send(crate::system::thread_id());
                run(&stopping);
            })?;
        Ok(Self {
            pairs,
            thread_id: tid_rx.recv().expect("the forwarder reports its thread"),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sockaddr(peer: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(peer) = peer else {
        panic!("the benchmark runs on 127.0.0.1");
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: peer.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*peer.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One socket: a blocking `recvmmsg` that returns as soon as a datagram is there
/// (`MSG_WAITFORONE`) with whatever else waits, then one `sendmmsg` of all of it.
fn forward_hot(socket: &UdpSocket, peer: SocketAddr, stop: &AtomicBool) {
    let destination = sockaddr(peer);
    // SAFETY: every call below gets pointers into these live, correctly sized buffers.
    unsafe {
        let mut buffers = vec![[0u8; SIZE]; BATCH];
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SIZE,
            })
            .collect();
        let mut rx: Vec<libc::mmsghdr> = vec![std::mem::zeroed(); BATCH];
        let mut tx_iov = iovecs.clone();
        let mut tx: Vec<libc::mmsghdr> = vec![std::mem::zeroed(); BATCH];
        for i in 0..BATCH {
            rx[i].msg_hdr.msg_iov = &mut iovecs[i];
            rx[i].msg_hdr.msg_iovlen = 1;
            tx[i].msg_hdr.msg_iov = &mut tx_iov[i];
            tx[i].msg_hdr.msg_iovlen = 1;
            tx[i].msg_hdr.msg_name = (&raw const destination).cast_mut().cast();
            tx[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        while !stop.load(Ordering::Relaxed) {
            let n = libc::recvmmsg(
                socket.as_raw_fd(),
                rx.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            );
            if n <= 0 {
                continue;
            }
            for i in 0..n as usize {
                tx_iov[i].iov_len = rx[i].msg_len as usize;
            }
            libc::sendmmsg(socket.as_raw_fd(), tx.as_mut_ptr(), n as u32, 0);
        }
    }
}

fn forward(sockets: &[UdpSocket], peer: SocketAddr, stop: &AtomicBool) {
    let destination = sockaddr(peer);
    // SAFETY: every call below gets pointers into these live, correctly sized buffers.
    unsafe {
        let epoll = libc::epoll_create1(0);
        for (i, socket) in sockets.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event);
        }
        let mut buffers = vec![[0u8; SIZE]; BATCH];
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SIZE,
            })
            .collect();
        let mut rx: Vec<libc::mmsghdr> = vec![std::mem::zeroed(); BATCH];
        let mut tx_iov = iovecs.clone();
        let mut tx: Vec<libc::mmsghdr> = vec![std::mem::zeroed(); BATCH];
        for i in 0..BATCH {
            rx[i].msg_hdr.msg_iov = &mut iovecs[i];
            rx[i].msg_hdr.msg_iovlen = 1;
            tx[i].msg_hdr.msg_iov = &mut tx_iov[i];
            tx[i].msg_hdr.msg_iovlen = 1;
            tx[i].msg_hdr.msg_name = (&raw const destination).cast_mut().cast();
            tx[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        while !stop.load(Ordering::Relaxed) {
            let ready = libc::epoll_wait(epoll, events.as_mut_ptr(), 256, 100);
            for event in events.iter().take(ready.max(0) as usize) {
                let index = event.u64 as usize;
                let n = libc::recvmmsg(
                    sockets[index].as_raw_fd(),
                    rx.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                );
                if n <= 0 {
                    continue;
                }
                for i in 0..n as usize {
                    tx_iov[i].iov_len = rx[i].msg_len as usize;
                }
                libc::sendmmsg(sockets[index ^ 1].as_raw_fd(), tx.as_mut_ptr(), n as u32, 0);
            }
        }
        libc::close(epoll);
    }
}
