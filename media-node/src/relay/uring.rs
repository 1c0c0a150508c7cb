//! The io_uring ring of one worker and the memory it shares with the kernel: every `unsafe` of
//! the io_uring backend is in this module.
//!
//! - Each watched socket has one multishot `RECVMSG` (`IORING_RECV_MULTISHOT`): the kernel
//!   receives every datagram into a buffer it takes from a provided-buffer ring and posts a
//!   completion naming the buffer, with no system call per datagram.
//! - The buffers are [`BUFFERS`] fixed slots of one allocation, so memory is bounded whatever
//!   peers send; when all are in use the multishot receives end with `ENOBUFS` and the worker
//!   re-arms them once buffers come back, while datagrams wait in the sockets' buffers.
//! - A relayed datagram is sent from the buffer it arrived in (`SEND` with a destination,
//!   `MSG_DONTWAIT`): no copy in user space. The buffer goes back to the ring when the send
//!   completes.
//! - Sends are queued as submission entries and go to the kernel in one `io_uring_enter` per
//!   loop, the same call that waits for and collects the next completions.
//!
//! Ownership of a buffer: the kernel's while it is in the provided-buffer ring; the worker's
//! from the completion that names it (a [`Buffer`], neither `Copy` nor `Clone`) until it is
//! recycled or its send completes. Only a [`Buffer`] gives access to a buffer's bytes.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::mem::{ManuallyDrop, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, CancelBuilder, Fd, RecvMsgOut};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::sys::{MAX_DATAGRAM, SockAddr};

/// Provided buffers per worker (a power of two, at most 32,768): 2048 × 2112 bytes, about
/// 4.1 MiB. More than one loop ever holds at the rates one core relays.
pub const BUFFERS: u16 = 2048;
/// Submission entries: the sends of one loop, submitted early if they overflow it.
const SUBMISSIONS: u32 = 1024;
/// Completion entries: a loop's receives and sends both fit (the kernel keeps any overflow).
const COMPLETIONS: u32 = 4 * BUFFERS as u32;
/// The provided-buffer group of the receives.
const GROUP: u16 = 0;
/// Room for the source address in a received buffer: IPv4 and IPv6 both fit.
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
/// Where the datagram starts in a received buffer: after the kernel's `io_uring_recvmsg_out`
/// header (four `u32`s) and the source address (no control data is asked for).
const PAYLOAD_OFFSET: usize = 16 + NAME_LEN;
/// What the kernel may fill of a buffer.
const BUFFER_LEN: usize = PAYLOAD_OFFSET + MAX_DATAGRAM;
/// Distance between buffers (cache-line aligned).
const STRIDE: usize = BUFFER_LEN.next_multiple_of(64);

/// What a completion is about, in the top two bits of its user data; receive tokens are the
/// worker's socket tokens, below 2^62.
const KIND_SHIFT: u32 = 62;
const KIND_SEND: u64 = 1 << KIND_SHIFT;
const KIND_WAKE: u64 = 2 << KIND_SHIFT;
/// `IORING_ENTER_GETEVENTS`: an enter that runs deferred work and collects completions.
const ENTER_GETEVENTS: u32 = 1;
/// Largest receive token.
pub const TOKEN_LIMIT: u64 = 1 << KIND_SHIFT;

/// A provided buffer the worker owns: filled by a receive, or with a send in flight.
#[derive(Debug)]
pub struct Buffer {
    id: u16,
    /// Bytes the kernel wrote (header, address and datagram).
    len: u32,
}

/// A received datagram, read from its buffer.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub source: Option<SocketAddr>,
    /// Longer than [`MAX_DATAGRAM`]: `data` is cut short.
    pub truncated: bool,
}

/// One completion, decoded.
#[derive(Debug)]
pub enum Completion {
    /// The wake-up descriptor became readable; `more`: its poll goes on.
    Wake { more: bool },
    /// A multishot receive on the socket of `token` produced a datagram (`buffer`) or ended
    /// (`error`, or `more` false: it must be armed again to go on).
    Received {
        token: u64,
        buffer: Option<Buffer>,
        error: Option<i32>,
        more: bool,
    },
    /// A send finished: `Ok(bytes)` or the error; its buffer is back to the worker.
    Sent {
        buffer: Buffer,
        context: u64,
        result: Result<u32, i32>,
    },
}

/// The page-aligned ring of provided-buffer descriptors and the buffers themselves.
struct BufferRing {
    /// How many (a power of two).
    count: u16,
    entries: NonNull<BufRingEntry>,
    buffers: NonNull<u8>,
    /// The tail the worker has written; published to the kernel by [`BufferRing::publish`].
    tail: u16,
    published: u16,
}

impl BufferRing {
    fn entries_layout(count: u16) -> Layout {
        Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), 4096)
            .expect("a valid layout")
    }

    fn buffers_layout(count: u16) -> Layout {
        Layout::from_size_align(usize::from(count) * STRIDE, 64).expect("a valid layout")
    }

    fn new(count: u16) -> io::Result<Self> {
        assert!(
            count.is_power_of_two(),
            "provided buffers come in a power of two"
        );
        // SAFETY: both layouts have a non-zero size (count is at least 1).
        let (entries, buffers) = unsafe {
            (
                alloc_zeroed(Self::entries_layout(count)),
                alloc_zeroed(Self::buffers_layout(count)),
            )
        };
        let out_of_memory = || io::Error::from(io::ErrorKind::OutOfMemory);
        let entries = NonNull::new(entries.cast::<BufRingEntry>()).ok_or_else(out_of_memory)?;
        let buffers = NonNull::new(buffers).ok_or_else(out_of_memory)?;
        Ok(Self {
            count,
            entries,
            buffers,
            tail: 0,
            published: 0,
        })
    }

    /// Hands buffer `id` to the kernel at the next [`BufferRing::publish`].
    fn give(&mut self, id: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` is in the allocation; the kernel reads descriptors only up to the
        // published tail, and this one is past it. The tail itself lives in descriptor 0's
        // reserved field, which the setters below do not touch.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.address(id) as u64);
        entry.set_len(BUFFER_LEN as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given since the last call visible to the kernel.
    fn publish(&mut self) {
        if self.tail == self.published {
            return;
        }
        // SAFETY: the tail is the u16 in descriptor 0 that the kernel reads atomically; the
        // pointer is aligned and lives as long as the allocation.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    fn address(&self, id: u16) -> *mut u8 {
        assert!(id < self.count, "buffer ids come from this ring");
        // SAFETY: `id < count`, so the offset stays inside the allocation.
        unsafe { self.buffers.as_ptr().add(usize::from(id) * STRIDE) }
    }

    /// The bytes of a buffer the worker owns.
    fn bytes(&self, buffer: &Buffer) -> &[u8] {
        let len = (buffer.len as usize).min(BUFFER_LEN);
        // SAFETY: a `Buffer` exists only between the completion that filled it and its return
        // to the ring, so the kernel does not write it while this borrow lives; its first
        // `len` bytes were written by the kernel (or zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.address(buffer.id), len) }
    }
}

impl Drop for BufferRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts; the ring that shared them has
        // unregistered them (`Ring::drop` drops a registered BufferRing only then).
        unsafe {
            dealloc(
                self.entries.as_ptr().cast(),
                Self::entries_layout(self.count),
            );
            dealloc(self.buffers.as_ptr(), Self::buffers_layout(self.count));
        }
    }
}

/// A worker's io_uring: multishot receives into provided buffers, batched sends.
pub struct Ring {
    ring: IoUring,
    /// Dropped by `Ring::drop` once detached from the kernel, else leaked.
    buffers: ManuallyDrop<BufferRing>,
    /// The header every multishot receive is armed with: only its name and control lengths
    /// matter, and the kernel reads them when the receive is submitted.
    receive_header: Box<libc::msghdr>,
    /// Per buffer with a send in flight: its destination (read by the kernel when the send is
    /// submitted) and the caller's context.
    destinations: Box<[SockAddr]>,
    contexts: Box<[u64]>,
}

impl Ring {
    /// Sets up a ring with deferred task running (Linux 6.1 or later, which also has the
    /// multishot receive and the destination address on `SEND` this module relies on).
    pub fn new() -> io::Result<Self> {
        Self::with_buffers(BUFFERS)
    }

    /// A ring with `count` provided buffers (a power of two, at most 32,768).
    fn with_buffers(count: u16) -> io::Result<Self> {
        let ring = IoUring::builder()
            // One thread submits, and the kernel runs completion work only when that thread
            // asks for completions: no interrupting the worker mid-loop.
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .setup_cqsize(COMPLETIONS)
            .build(SUBMISSIONS)?;
        let mut buffers = ManuallyDrop::new(BufferRing::new(count)?);
        // SAFETY: the descriptors are page-aligned, `count` long, and stay allocated until
        // they are unregistered (`Ring::drop`) or leaked.
        let registered = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries.as_ptr() as u64,
                count,
                GROUP,
                0,
            )
        };
        if let Err(error) = registered {
            // SAFETY: never registered, so the kernel never saw them.
            unsafe { ManuallyDrop::drop(&mut buffers) };
            return Err(error);
        }
        for id in 0..count {
            buffers.give(id);
        }
        buffers.publish();
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut receive_header: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        receive_header.msg_namelen = NAME_LEN as libc::socklen_t;
        let nowhere = SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(Self {
            ring,
            buffers,
            receive_header,
            destinations: vec![nowhere; usize::from(count)].into_boxed_slice(),
            contexts: vec![0; usize::from(count)].into_boxed_slice(),
        })
    }

    /// Queues a submission entry, submitting what is queued first when the queue is full.
    ///
    /// # Safety
    /// Whatever the entry points at must stay valid until the kernel is done with it.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller vouches for the entry.
        if unsafe { self.ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        self.ring.submit()?;
        // SAFETY: as above.
        unsafe { self.ring.submission().push(entry) }
            .map_err(|_| io::Error::other("the io_uring submission queue stays full"))
    }

    /// Arms a multishot receive on `fd`, its completions carrying `token`, and submits it at
    /// once (a socket's receive must never wait unsubmitted while the socket may close).
    pub fn receive_on(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.rearm(fd, token)?;
        self.ring.submit()?;
        Ok(())
    }

    /// Queues a multishot receive on `fd` again, after one ended; submitted with the next
    /// loop's [`Ring::submit_and_wait`].
    pub fn rearm(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        assert!(token < TOKEN_LIMIT, "a receive token must be below 2^62");
        let entry = opcode::RecvMsgMulti::new(Fd(fd), &raw const *self.receive_header, GROUP)
            .build()
            .user_data(token);
        // SAFETY: the header is boxed and lives as long as the ring; the buffers are the
        // registered group's.
        unsafe { self.push(&entry) }
    }

    /// Polls `fd` (the worker's eventfd) for readability, repeatedly.
    pub fn watch_wake(&mut self, fd: RawFd) -> io::Result<()> {
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(KIND_WAKE);
        // SAFETY: a poll points at no memory.
        unsafe { self.push(&entry) }?;
        self.ring.submit()?;
        Ok(())
    }

    /// Ends a socket's receive (queued under `token`) before the socket closes, so that the
    /// ring holds no reference to it (its port is free once the caller closes it) and no
    /// completion follows but the final ones already posted. By user data, not by file: the
    /// kernel finds a request by user data in its hash table, while matching a file walks every
    /// request in flight — quadratic work with thousands of sessions. (Sends complete as they
    /// are submitted on UDP sockets, so the receive is the only request left on a socket.)
    /// False when the receive may still be armed: the socket must close, not serve again.
    pub fn cancel(&mut self, token: u64) -> bool {
        // Anything queued for `fd` must reach the kernel to be cancelled.
        let mut cancelled = true;
        if let Err(error) = self.ring.submit() {
            tracing::warn!(%error, "io_uring submit before a cancel failed");
            cancelled = false;
        }
        match self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::user_data(token).all())
        {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(error) => {
                tracing::warn!(%error, token, "cancelling a socket's io_uring receive failed");
                cancelled = false;
            }
        }
        self.run_deferred_work();
        cancelled
    }

    /// Lets the kernel finish the work it defers to this thread (completions of cancelled
    /// requests, which release their sockets), without waiting.
    fn run_deferred_work(&self) {
        // SAFETY: an enter that submits nothing and waits for nothing, with no argument.
        let _ = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, ENTER_GETEVENTS, None)
        };
    }

    /// Queues the datagram in `buffer` to be sent from `fd` to `destination`; `context` comes
    /// back with its completion. On failure the buffer is recycled.
    pub fn send(
        &mut self,
        buffer: Buffer,
        fd: RawFd,
        destination: &SockAddr,
        context: u64,
    ) -> io::Result<()> {
        let id = usize::from(buffer.id);
        let len = self.datagram(&buffer).data.len() as u32;
        self.destinations[id] = *destination;
        self.contexts[id] = context;
        let target = &self.destinations[id];
        // SAFETY: the datagram starts at PAYLOAD_OFFSET in a buffer the worker owns until this
        // send completes (its `Buffer` is given up here and comes back with the completion).
        let data = unsafe { self.buffers.address(buffer.id).add(PAYLOAD_OFFSET) };
        let entry = opcode::Send::new(Fd(fd), data.cast_const(), len)
            .dest_addr(target.as_ptr())
            .dest_addr_len(target.socklen())
            .flags(libc::MSG_DONTWAIT)
            .build()
            .user_data(KIND_SEND | u64::from(buffer.id));
        // SAFETY: the data stays put as said above; the destination lives in `destinations`,
        // untouched until this buffer's send completes.
        let pushed = unsafe { self.push(&entry) };
        if pushed.is_err() {
            self.recycle(buffer);
        }
        pushed
    }

    /// Gives a buffer back to the kernel (published with the next submit).
    pub fn recycle(&mut self, buffer: Buffer) {
        self.buffers.give(buffer.id);
    }

    /// Submits what is queued and waits for a completion (`wait`), or just collects what is
    /// ready, running the kernel's deferred work (busy polling).
    pub fn submit_and_wait(&mut self, wait: bool) -> io::Result<()> {
        self.buffers.publish();
        match self.ring.submit_and_wait(usize::from(wait)) {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Moves every posted completion into `into`, decoded.
    pub fn completions(&mut self, into: &mut Vec<Completion>) {
        let contexts = &self.contexts;
        for entry in self.ring.completion() {
            into.push(decode(contexts, &entry));
        }
    }

    /// The datagram in a buffer filled by a receive.
    pub fn datagram(&self, buffer: &Buffer) -> Datagram<'_> {
        let bytes = self.buffers.bytes(buffer);
        match RecvMsgOut::parse(bytes, &self.receive_header) {
            Ok(out) => Datagram {
                // The parsed view borrows itself; the payload is the same bytes of `bytes`.
                data: {
                    let payload = out.payload_data();
                    let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
                    &bytes[start..start + payload.len()]
                },
                source: (!out.is_name_data_truncated())
                    .then(|| socket_addr(out.name_data()))
                    .flatten(),
                truncated: out.is_payload_truncated()
                    || out.incoming_payload_len() as usize > MAX_DATAGRAM,
            },
            Err(()) => Datagram {
                data: &[],
                source: None,
                truncated: true,
            },
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Nothing may use the buffers once they are freed: cancel every request, then detach
        // the buffer ring. Should either fail, the buffers are leaked rather than freed under
        // the kernel's feet.
        let _ = self.ring.submit();
        let cancelled = self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any());
        let cancelled = match cancelled {
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        };
        self.run_deferred_work();
        let detached = self.ring.submitter().unregister_buf_ring(GROUP);
        match cancelled.and(detached) {
            // SAFETY: dropped once, here; the kernel no longer uses the buffers.
            Ok(()) => unsafe { ManuallyDrop::drop(&mut self.buffers) },
            Err(error) => {
                tracing::error!(%error, "cannot detach the io_uring buffers; leaking them")
            }
        }
    }
}

/// Decodes a completion; `contexts` are the sends' contexts by buffer.
fn decode(contexts: &[u64], entry: &cqueue::Entry) -> Completion {
    let (data, result, flags) = (entry.user_data(), entry.result(), entry.flags());
    let more = cqueue::more(flags);
    let buffer = cqueue::buffer_select(flags).map(|id| Buffer {
        id,
        len: result.max(0) as u32,
    });
    match data >> KIND_SHIFT {
        0 => Completion::Received {
            token: data,
            buffer,
            error: (result < 0).then_some(-result),
            more,
        },
        1 => {
            let id = (data & 0xffff) as u16;
            Completion::Sent {
                buffer: Buffer { id, len: 0 },
                context: contexts[usize::from(id)],
                result: if result < 0 {
                    Err(-result)
                } else {
                    Ok(result as u32)
                },
            }
        }
        _ => Completion::Wake { more },
    }
}

/// Reads a socket address in the kernel's layout from the bytes a receive wrote.
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    /// A ring, or `None` where the kernel does not allow one (the relay then uses epoll).
    fn ring() -> Option<Ring> {
        match Ring::new() {
            Ok(ring) => Some(ring),
            Err(error) => {
                eprintln!("io_uring unavailable here ({error}); skipped");
                None
            }
        }
    }

    #[test]
    fn socket_addresses_are_read_from_the_kernel_layout() {
        let mut v4 = [0u8; NAME_LEN];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&4000u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(socket_addr(&v4), Some("192.0.2.1:4000".parse().unwrap()));
        let mut v6 = [0u8; NAME_LEN];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&65535u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            socket_addr(&v6),
            Some("[2001:db8::7]:65535".parse().unwrap())
        );
        assert_eq!(socket_addr(&[0; 4]), None);
    }

    #[test]
    fn datagrams_are_received_into_provided_buffers_and_sent_on_from_them() {
        let Some(mut ring) = ring() else { return };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        ring.receive_on(relay.as_raw_fd(), 7).unwrap();
        for n in 0..3u8 {
            peer.send_to(&[n; 12], relay.local_addr().unwrap()).unwrap();
        }
        let destination = SockAddr::from(peer.local_addr().unwrap());
        let (mut received, mut sent, mut completions) = (0, 0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < 3 {
            assert!(Instant::now() < deadline, "the datagrams did not go round");
            ring.submit_and_wait(true).unwrap();
            ring.completions(&mut completions);
            for completion in completions.drain(..) {
                match completion {
                    Completion::Received {
                        token,
                        buffer: Some(buffer),
                        ..
                    } => {
                        let datagram = ring.datagram(&buffer);
                        assert_eq!((token, datagram.data), (7, &[received; 12][..]));
                        assert_eq!(datagram.source, Some(peer.local_addr().unwrap()));
                        assert!(!datagram.truncated);
                        ring.send(
                            buffer,
                            relay.as_raw_fd(),
                            &destination,
                            40 + u64::from(received),
                        )
                        .unwrap();
                        received += 1;
                    }
                    Completion::Sent {
                        buffer,
                        context,
                        result,
                    } => {
                        assert_eq!((context, result), (40 + sent, Ok(12)));
                        ring.recycle(buffer);
                        sent += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
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

    #[test]
    fn a_datagram_longer_than_the_relay_forwards_is_marked_truncated() {
        let Some(mut ring) = ring() else { return };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        ring.receive_on(relay.as_raw_fd(), 1).unwrap();
        peer.send_to(&[0x80; MAX_DATAGRAM + 1], relay.local_addr().unwrap())
            .unwrap();
        let (mut completions, deadline) = (Vec::new(), Instant::now() + Duration::from_secs(5));
        while completions.is_empty() {
            assert!(Instant::now() < deadline, "the datagram did not arrive");
            ring.submit_and_wait(true).unwrap();
            ring.completions(&mut completions);
        }
        let Some(Completion::Received {
            buffer: Some(buffer),
            ..
        }) = completions.pop()
        else {
            panic!("a received datagram");
        };
        assert!(ring.datagram(&buffer).truncated);
        ring.recycle(buffer);
    }

    #[test]
    fn a_receive_that_ran_out_of_buffers_goes_on_once_armed_again() {
        let Ok(mut ring) = Ring::with_buffers(2) else {
            return;
        };
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        ring.receive_on(relay.as_raw_fd(), 3).unwrap();
        for n in 0..5u8 {
            peer.send_to(&[n; 4], relay.local_addr().unwrap()).unwrap();
        }
        let (mut seen, mut held, mut completions) = (Vec::new(), Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 5 {
            assert!(Instant::now() < deadline, "received {seen:?}");
            ring.submit_and_wait(true).unwrap();
            ring.completions(&mut completions);
            for completion in completions.drain(..) {
                let Completion::Received {
                    buffer,
                    error,
                    more,
                    ..
                } = completion
                else {
                    panic!("unexpected {completion:?}");
                };
                if let Some(buffer) = buffer {
                    seen.push(ring.datagram(&buffer).data[0]);
                    held.push(buffer);
                }
                if !more {
                    // Both buffers held: the kernel ends the receive rather than drop.
                    assert_eq!(error, Some(libc::ENOBUFS));
                    for buffer in held.drain(..) {
                        ring.recycle(buffer);
                    }
                    ring.rearm(relay.as_raw_fd(), 3).unwrap();
                }
            }
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_cancelled_socket_s_port_is_free_once_it_closes() {
        let Some(mut ring) = ring() else { return };
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        ring.receive_on(socket.as_raw_fd(), 1).unwrap();
        assert!(ring.cancel(1), "the receive is cancelled for sure");
        drop(socket);
        UdpSocket::bind(address).expect("the port is free");
    }
}
