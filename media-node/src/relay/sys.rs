//! Thin safe wrappers over the Linux calls of the data plane: epoll, eventfd, and
//! `recvmmsg`/`sendmmsg` over buffers allocated once per worker.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Datagrams read or written per system call.
pub const BATCH: usize = 32;
/// Largest datagram relayed; RTP over UDP stays below the path MTU, so longer ones are dropped
/// as malformed rather than fragmented on.
pub const MAX_DATAGRAM: usize = 2048;

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// An epoll instance and its event buffer (level-triggered, read interest only).
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
    ready: usize,
}

impl Epoll {
    /// Creates an instance that reports up to `capacity` ready descriptors per wait.
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            ready: 0,
        })
    }

    /// Watches `fd` for input, reporting it as `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        check(unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
        })?;
        Ok(())
    }

    /// Stops watching `fd` (closing it would too, but only once every duplicate is closed).
    pub fn remove(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL; failure means it was not watched.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits until a descriptor is ready (or `timeout`); returns how many are.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        // SAFETY: the buffer holds `events.len()` initialised events.
        let ready = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout,
            )
        };
        self.ready = match check(ready) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(self.ready)
    }

    /// The token of the `i`-th ready descriptor of the last wait.
    pub fn token(&self, i: usize) -> u64 {
        debug_assert!(i < self.ready);
        self.events[i].u64
    }
}

/// An eventfd that wakes a worker blocked in `epoll_wait`.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates a non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is owned from here on.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        Ok(Self {
            // SAFETY: `fd` was just returned by eventfd.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable.
    pub fn notify(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64; a full counter (EAGAIN) is still readable.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Resets the descriptor to not readable.
    pub fn clear(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN means already clear.
        unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut value).cast(), 8) };
    }

    /// The raw descriptor, to watch it.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A socket address in the kernel's layout, converted once so that sending does not convert
/// per packet.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        // SAFETY: an all-zero sockaddr_storage is valid; the family-specific view written below
        // fits inside it.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*v4.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in fits in (and is less aligned than) sockaddr_storage.
                unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

impl SockAddr {
    /// The address for a system call.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }

    /// Its length for a system call.
    pub fn socklen(&self) -> libc::socklen_t {
        self.len
    }
}

/// Reads a socket address the kernel wrote; `None` for other families.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family and length say the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family and length say the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// One datagram of the last receive.
pub struct Received<'a> {
    pub data: &'a [u8],
    pub source: Option<SocketAddr>,
    /// Longer than [`MAX_DATAGRAM`]: `data` is cut short.
    pub truncated: bool,
}

/// What one flush sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// A heap array of [`BATCH`] all-zero `T`s.
///
/// # Safety
/// All-zero bytes must be a valid `T` (true of the plain C structs and byte arrays used here).
fn zeroed_batch<T>() -> Box<[T; BATCH]> {
    // SAFETY: see above; every caller passes a type for which zero is valid.
    unsafe { Box::<[T; BATCH]>::new_zeroed().assume_init() }
}

/// Receive and send buffers of one worker: datagrams are received into `buffers` and sent on
/// from there, never copied.
pub struct Datagrams {
    buffers: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    sources: Box<[libc::sockaddr_storage; BATCH]>,
    rx_iov: Box<[libc::iovec; BATCH]>,
    rx: Box<[libc::mmsghdr; BATCH]>,
    received: usize,
    destinations: Box<[libc::sockaddr_storage; BATCH]>,
    tx_iov: Box<[libc::iovec; BATCH]>,
    tx: Box<[libc::mmsghdr; BATCH]>,
    queued: usize,
}

// SAFETY: the raw pointers only point into the boxes `Datagrams` owns, which move with it.
unsafe impl Send for Datagrams {}

impl Datagrams {
    /// Allocates the buffers (about 80 KiB).
    pub fn new() -> Self {
        let mut this = Self {
            buffers: zeroed_batch(),
            sources: zeroed_batch(),
            rx_iov: zeroed_batch(),
            rx: zeroed_batch(),
            received: 0,
            destinations: zeroed_batch(),
            tx_iov: zeroed_batch(),
            tx: zeroed_batch(),
            queued: 0,
        };
        // The boxes never move their contents, so the headers can point into them for good.
        for i in 0..BATCH {
            this.rx_iov[i] = libc::iovec {
                iov_base: this.buffers[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let header = &mut this.rx[i].msg_hdr;
            header.msg_name = (&raw mut this.sources[i]).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &raw mut this.rx_iov[i];
            header.msg_iovlen = 1;
            let header = &mut this.tx[i].msg_hdr;
            header.msg_name = (&raw mut this.destinations[i]).cast();
            header.msg_iov = &raw mut this.tx_iov[i];
            header.msg_iovlen = 1;
        }
        this
    }

    /// Receives up to [`BATCH`] datagrams from `fd` without blocking; returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        // Only the headers of the last receive were written by the kernel.
        for header in &mut self.rx[..self.received.max(1)] {
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_flags = 0;
        }
        self.received = 0;
        // SAFETY: every header points at live buffers of the advertised sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.rx.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.received = check(n)? as usize;
        Ok(self.received)
    }

    /// The `i`-th datagram of the last receive.
    pub fn datagram(&self, i: usize) -> Received<'_> {
        debug_assert!(i < self.received);
        let header = &self.rx[i];
        let len = (header.msg_len as usize).min(MAX_DATAGRAM);
        Received {
            data: &self.buffers[i][..len],
            source: socket_addr(&self.sources[i], header.msg_hdr.msg_namelen),
            truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// Whether datagrams wait to be sent.
    pub fn has_queued(&self) -> bool {
        self.queued > 0
    }

    /// Queues the `i`-th received datagram for `destination`.
    pub fn queue(&mut self, i: usize, destination: &SockAddr) {
        let slot = self.queued;
        self.destinations[slot] = destination.storage;
        self.tx_iov[slot] = libc::iovec {
            iov_base: self.buffers[i].as_mut_ptr().cast(),
            iov_len: self.rx[i].msg_len as usize,
        };
        self.tx[slot].msg_hdr.msg_namelen = destination.len;
        self.queued += 1;
    }

    /// Sends every queued datagram from `fd`; a datagram the kernel refuses is skipped.
    pub fn flush(&mut self, fd: RawFd) -> Sent {
        let mut sent = Sent::default();
        let mut at = 0;
        while at < self.queued {
            // SAFETY: headers `at..queued` point at live buffers and addresses.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.tx[at..].as_mut_ptr(),
                    (self.queued - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            match check(n) {
                Ok(n) => {
                    for iov in &self.tx_iov[at..at + n as usize] {
                        sent.bytes += iov.iov_len as u64;
                    }
                    sent.packets += n as u64;
                    at += n as usize;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    sent.failed += 1;
                    at += 1;
                }
            }
        }
        self.queued = 0;
        sent
    }
}

/// Sets the kernel receive buffer of a socket (the kernel doubles it for bookkeeping).
pub fn set_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: passes a live c_int of the stated size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn socket_addresses_survive_the_kernel_layout() {
        for text in ["127.0.0.1:4000", "[2001:db8::7]:65535"] {
            let addr: SocketAddr = text.parse().unwrap();
            let raw = SockAddr::from(addr);
            assert_eq!(socket_addr(&raw.storage, raw.len), Some(addr));
        }
    }

    #[test]
    fn datagrams_are_received_and_sent_on_in_batches() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in 0..3u8 {
            peer.send_to(&[n; 12], relay.local_addr().unwrap()).unwrap();
        }
        let mut datagrams = Datagrams::new();
        let (mut got, deadline) = (0, std::time::Instant::now() + Duration::from_secs(5));
        while got < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "datagrams did not arrive"
            );
            let n = match datagrams.receive(relay.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("receive: {e}"),
            };
            for i in 0..n {
                let received = datagrams.datagram(i);
                assert_eq!(received.source, Some(peer.local_addr().unwrap()));
                datagrams.queue(i, &SockAddr::from(peer.local_addr().unwrap()));
            }
            assert_eq!(datagrams.flush(relay.as_raw_fd()).failed, 0);
            got += n;
        }
        let mut buf = [0; 64];
        for n in 0..3u8 {
            let (len, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..len], from),
                (&[n; 12][..], relay.local_addr().unwrap())
            );
        }
    }
}
