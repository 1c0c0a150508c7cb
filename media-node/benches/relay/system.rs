//! What the benchmark asks of the OS: CPU pinning, file limits, per-thread and per-CPU time.

use std::io;
use std::time::Duration;

/// Pins the calling thread (and the threads it spawns later) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the open-file limit to `wanted` (root may raise the hard limit too).
pub fn raise_file_limit(wanted: u64) {
    let limit = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: wanted,
    };
    // SAFETY: passes a live rlimit; failure leaves the old limit, which the caller copes with.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            let mut current: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut current);
            current.rlim_cur = current.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &current);
        }
    }
}

/// Gives the calling thread (and the threads it starts later) real-time FIFO scheduling when
/// allowed, else the highest nice priority, so other work on a shared machine disturbs the
/// measurement less; says which.
pub fn raise_priority() -> &'static str {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: plain libc calls on the calling thread with a live sched_param.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 {
            return "real-time (SCHED_FIFO)";
        }
        libc::setpriority(libc::PRIO_PROCESS, 0, -20);
    }
    "nice -20 (real-time scheduling not allowed)"
}

/// The calling thread's kernel id.
pub fn thread_id() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::gettid() }
}

/// The ids of this process's threads named `name`.
pub fn find_threads(name: &str) -> Vec<i32> {
    threads_where(|comm| comm == name)
}

/// The ids of this process's threads whose name starts with `prefix`.
pub fn find_threads_with_prefix(prefix: &str) -> Vec<i32> {
    threads_where(|comm| comm.starts_with(prefix))
}

fn threads_where(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            matches(comm.trim()).then(|| task.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// CPU time (user + system) thread `tid` has used.
pub fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: plain libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Busy and total jiffies of `cpu` since boot (`/proc/stat`), softirq and steal included.
pub fn cpu_jiffies(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{cpu} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 1);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total.max(1))
}

/// Nanoseconds on the realtime clock, the clock of the kernel's receive timestamps.
pub fn realtime_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Seconds per datagram of batched UDP send and receive over loopback (172 bytes), measured on
/// the calling thread: what a relay pays per packet at least, whatever it does in user space.
pub fn loopback_costs() -> (f64, f64) {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    const ROUNDS: usize = 500;
    const BATCH: usize = 64;
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender
        .connect(receiver.local_addr().unwrap())
        .expect("connect");
    receiver.set_nonblocking(true).expect("nonblocking");
    let mut buffers = vec![[0u8; 256]; BATCH];
    let (mut send_time, mut receive_time, mut packets) = (0.0, 0.0, 0usize);
    // SAFETY: the headers point at the live buffers above, of the advertised sizes.
    unsafe {
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 172,
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                let mut header: libc::mmsghdr = std::mem::zeroed();
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        for _ in 0..ROUNDS {
            let start = std::time::Instant::now();
            let sent = libc::sendmmsg(sender.as_raw_fd(), headers.as_mut_ptr(), BATCH as u32, 0);
            send_time += start.elapsed().as_secs_f64();
            for iov in &mut iovecs {
                iov.iov_len = 256;
            }
            let start = std::time::Instant::now();
            let received = libc::recvmmsg(
                receiver.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            receive_time += start.elapsed().as_secs_f64();
            for iov in &mut iovecs {
                iov.iov_len = 172;
            }
            packets += sent.max(0) as usize;
            debug_assert_eq!(sent, received);
        }
    }
    let packets = packets.max(1) as f64;
    (send_time / packets, receive_time / packets)
}
