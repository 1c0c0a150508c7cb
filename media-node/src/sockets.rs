//! The node's media sockets, kept bound between sessions: opening, binding and closing four
//! sockets per call cost a fifth of a call's media work, and a port that stays bound cannot be
//! taken by another process meanwhile.
//!
//! A socket comes back when its session ends and is handed out again for the same port, with
//! whatever arrived while it rested discarded. The pool is bounded by the open files the
//! process may hold; past that, ended sessions' sockets close as before.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use crate::relay::set_receive_buffer;

/// Datagrams read from a resting socket before it is handed out: its receive buffer holds a
/// few dozen at most.
const DISCARD_LIMIT: usize = 1024;
/// Open files left to everything else in the process (signalling, gRPC, the store).
const RESERVED_FILES: u64 = 1024;

/// Bound sockets by local port, ready for the next session that gets the port.
#[derive(Debug)]
pub struct SocketPool {
    bind: IpAddr,
    receive_buffer: usize,
    resting: HashMap<u16, UdpSocket>,
    limit: usize,
}

impl SocketPool {
    /// A pool binding on `bind` with `receive_buffer` bytes per socket, keeping at most
    /// `limit` sockets resting.
    pub fn new(bind: IpAddr, receive_buffer: usize, limit: usize) -> Self {
        Self {
            bind,
            receive_buffer,
            resting: HashMap::new(),
            limit,
        }
    }

    /// The socket of `port`: the resting one emptied of what arrived meanwhile, or a new one
    /// (also when emptying fails: the resting one closes first).
    pub fn take(&mut self, port: u16) -> io::Result<UdpSocket> {
        if let Some(socket) = self.resting.remove(&port) {
            match discard_queued(&socket) {
                Ok(()) => return Ok(socket),
                Err(error) => tracing::debug!(%error, port, "a resting media socket is replaced"),
            }
        }
        self.bind(port)
    }

    /// Keeps an ended session's socket for its port's next session (or closes it when the pool
    /// is full or the socket's port is unknown).
    pub fn put(&mut self, socket: UdpSocket) {
        if self.resting.len() >= self.limit {
            return;
        }
        if let Ok(local) = socket.local_addr() {
            self.resting.insert(local.port(), socket);
        }
    }

    /// Sockets resting.
    #[cfg(test)]
    fn resting(&self) -> usize {
        self.resting.len()
    }

    fn bind(&self, port: u16) -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind(SocketAddr::new(self.bind, port))?;
        socket.set_nonblocking(true)?;
        set_receive_buffer(socket.as_raw_fd(), self.receive_buffer)?;
        Ok(socket)
    }
}

/// Reads and drops what a resting socket received, so the next session starts clean.
fn discard_queued(socket: &UdpSocket) -> io::Result<()> {
    let mut scratch = [0u8; 1];
    for _ in 0..DISCARD_LIMIT {
        match socket.recv_from(&mut scratch) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // A truncated datagram is still consumed; an ICMP error queued on the socket is
            // reported once and cleared.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// How many sockets may rest, given the open-file limit (raised to its hard maximum first) and
/// the `in_use` sockets that sessions at capacity hold: at most `ports`, the whole range.
pub fn resting_limit(ports: usize, in_use: usize) -> usize {
    let files = raise_open_file_limit();
    rest_within(ports, in_use, files)
}

/// The resting sockets that fit beside `in_use` and the reserve in `files` open files.
fn rest_within(ports: usize, in_use: usize, files: u64) -> usize {
    let spare = files.saturating_sub(in_use as u64 + RESERVED_FILES);
    ports.min(usize::try_from(spare).unwrap_or(usize::MAX))
}

/// Raises the soft open-file limit to the hard one (as Go's runtime does); the soft limit now.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write a live rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn free_port() -> u16 {
        UdpSocket::bind((LOOPBACK, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_returned_socket_serves_its_port_again_without_what_arrived_meanwhile() {
        let mut pool = SocketPool::new(LOOPBACK, 16 << 10, 8);
        let port = free_port();
        let socket = pool.take(port).unwrap();
        let peer = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        peer.send_to(b"late packet of the ended call", (LOOPBACK, port))
            .unwrap();
        pool.put(socket);
        assert_eq!(pool.resting(), 1);

        let again = pool.take(port).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
        assert_eq!(pool.resting(), 0);
        let mut buffer = [0u8; 64];
        let queued = again.recv_from(&mut buffer);
        assert_eq!(
            queued.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock),
            "the late packet was discarded"
        );
        peer.send_to(b"new call", (LOOPBACK, port)).unwrap();
        again.set_nonblocking(false).unwrap();
        again
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (n, _) = again.recv_from(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"new call");
    }

    #[test]
    fn a_full_pool_closes_what_comes_back() {
        let mut pool = SocketPool::new(LOOPBACK, 16 << 10, 1);
        let (first, second) = (free_port(), free_port());
        let a = pool.take(first).unwrap();
        let b = pool.take(second).unwrap();
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.resting(), 1);
        // The closed port is free for anyone to bind.
        UdpSocket::bind((LOOPBACK, second)).unwrap();
    }

    #[test]
    fn the_pool_fits_beside_the_sessions_and_a_reserve() {
        assert_eq!(rest_within(10_000, 8_000, 1 << 20), 10_000);
        assert_eq!(rest_within(10_000, 8_000, 20_000), 10_000);
        assert_eq!(rest_within(10_000, 8_000, 12_000), 2_976);
        assert_eq!(rest_within(10_000, 8_000, 4_000), 0);
    }
}
