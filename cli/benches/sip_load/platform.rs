//! The bench's edges: child processes (killed on drop), free ports, the generated manifests,
//! memory figures from /proc, Prometheus scrapes, and what the platform's logs complain about.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The tenant's SIP domain.
pub const DOMAIN: &str = "bench.example.com";

/// A child process, killed and reaped when dropped so that a failing bench leaves nothing running.
pub struct Process {
    name: String,
    child: Child,
    /// Whether it leads a process group of its own (a server that forks its workers): its CPU
    /// is the group's, and the whole group is stopped with it.
    group: bool,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self {
            name: name.into(),
            child,
            group: false,
        })
    }

    /// As [`Process::spawn`], in a process group of its own: for a server that forks workers.
    pub fn spawn_group(name: &str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let mut process = Self::spawn(name, command.process_group(0), log)?;
        process.group = true;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for it to serve UDP on 127.0.0.1:`port`: `Ok(())` once the socket
    /// is bound, `Err` with why when it exits first or the time runs out.
    pub fn wait_bound(&mut self, port: u16, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if udp_drops(port).is_some() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                anyhow::bail!("exited at once ({status})");
            }
            if Instant::now() >= deadline {
                anyhow::bail!("127.0.0.1:{port} not bound within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits at most `limit` for it to end; kills it past that (`None`).
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = self.wait_for_quietly(limit);
        if status.is_none() {
            eprintln!("  {} still running after {limit:?}: killed", self.name);
        }
        status
    }

    /// Its exit status if it ends within `limit`.
    fn wait_for_quietly(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Its memory figure `field` (`VmRSS:` now, `VmHWM:` peak) in MiB, while it runs.
    pub fn memory_mib(&self, field: &str) -> Option<f64> {
        memory_mib(self.pid(), field)
    }

    /// CPU seconds (user + system) it has used so far, with its group's when it leads one;
    /// `None` once it is gone.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let own = cpu_seconds(self.pid())?;
        if !self.group {
            return Some(own);
        }
        let members = std::fs::read_dir("/proc").ok()?.filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            (pid != self.pid() && stat_field(&stat, 5)? == self.pid().to_string())
                .then(|| stat_seconds(&stat, 14))
                .flatten()
        });
        Some(own + members.sum::<f64>())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.group {
            // The leader stops its workers on SIGTERM; whatever is left is killed.
            let group = format!("-{}", self.pid());
            let signal = |name| Command::new("kill").args([name, "--", &group]).output();
            let _ = signal("-TERM");
            if self.wait_for_quietly(Duration::from_secs(3)).is_none() {
                let _ = signal("-KILL");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A memory figure of process `pid` from /proc (`VmRSS:` now, `VmHWM:` peak), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, field).map(|kib| kib / 1024.0)
}

/// CPU seconds (user + system) of the processes in one step: the server under test (`centrex up`
/// or, for the reference, the sipp server), its sipp peer (the callee), and the sipp callers the
/// bench has reaped (they are children of this process, so the kernel adds them up for it).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub server: f64,
    pub peer: f64,
    pub callers: f64,
}

impl CpuUse {
    /// The figures now; `None` when the server is gone.
    pub fn sample(server: &Process, peer: Option<&Process>) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Some(Self {
            server: server.cpu_seconds()?,
            peer: peer.and_then(Process::cpu_seconds).unwrap_or(0.0),
            // cutime and cstime: children that ended and were waited for.
            callers: stat_seconds(&own, 16)?,
        })
    }

    /// What was used between `before` and `self`.
    pub fn since(self, before: Self) -> Self {
        Self {
            server: self.server - before.server,
            peer: self.peer - before.peer,
            callers: self.callers - before.callers,
        }
    }
}

/// CPU seconds (user + system) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_seconds(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        14,
    )
}

/// The sum of the two clock-tick fields `first` and `first + 1` (1-based, as proc(5) numbers
/// them: 14 utime + stime, 16 cutime + cstime) of a /proc/<pid>/stat line, in seconds.
fn stat_seconds(stat: &str, first: usize) -> Option<f64> {
    // USER_HZ, which /proc counts in: 100 on every Linux this bench runs on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let a: u64 = stat_field(stat, first)?.parse().ok()?;
    let b: u64 = stat_field(stat, first + 1)?.parse().ok()?;
    Some((a + b) as f64 / TICKS_PER_SECOND)
}

/// Field `n` (1-based, as proc(5) numbers them; 3 or later) of a /proc/<pid>/stat line.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    // The command name (field 2) is in parentheses and may hold spaces, so count from the
    // state (field 3) after its closing parenthesis.
    stat.get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(n - 3)
}

/// A `Name:   1234 kB` field of /proc/<pid>/status, in KiB.
fn status_field_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// Datagrams the kernel dropped so far on the UDP socket bound to 127.0.0.1:`port` because its
/// receive buffer was full (the `drops` column of /proc/net/udp).
pub fn udp_drops(port: u16) -> Option<u64> {
    socket_drops(&std::fs::read_to_string("/proc/net/udp").ok()?, port)
}

/// The `drops` of the socket bound to 127.0.0.1:`port` in a /proc/net/udp table.
fn socket_drops(table: &str, port: u16) -> Option<u64> {
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| fields.last()?.parse().ok())?
    })
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A port free on 127.0.0.1 for UDP now (and for TCP too when `tcp`): the kernel picks it.
pub fn free_port(tcp: bool) -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        if !tcp || TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free for both UDP and TCP on 127.0.0.1")
}

/// A media port for sipp: sipp binds it and the three after it (audio RTCP, video RTP and RTCP)
/// even when no media flows, so all four must be free.
pub fn free_media_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        if port <= u16::MAX - 3 && (0..4).all(|i| UdpSocket::bind(("127.0.0.1", port + i)).is_ok())
        {
            return Ok(port);
        }
    }
    anyhow::bail!("no four consecutive UDP ports free on 127.0.0.1")
}

/// `n` distinct free ports (UDP and TCP).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n * 20 {
        let port = free_port(true)?;
        if !ports.contains(&port) {
            ports.push(port);
        }
        if ports.len() == n {
            return Ok(ports);
        }
    }
    anyhow::bail!("could not find {n} distinct free ports")
}

/// The `GET /metrics` text of a Prometheus endpoint, if it answers within a second.
pub fn scrape(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// The sum of the samples of metric `name` (any labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse().ok())?
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// The password of extension `extension` in the generated Secret (≥ 8 characters).
pub fn password(extension: &str) -> String {
    format!("bench-{extension}-secret")
}

/// The SIP domain of the bench's tenant number `tenant`: [`DOMAIN`], then `t1.DOMAIN`…
pub fn domain(tenant: usize) -> String {
    match tenant {
        0 => DOMAIN.to_string(),
        n => format!("t{n}.{DOMAIN}"),
    }
}

/// The manifests of tenants of these extensions (tenant `i` on [`domain`]`(i)`), in the format
/// of examples/quickstart: (file name, YAML). Limits at their maxima so that only the platform's
/// capacity limits calls; extensions are unique across tenants (they name Secret keys).
pub fn manifests(tenants: &[Vec<String>], pools_yaml: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = tenants
        .iter()
        .enumerate()
        .map(|(i, extensions)| {
            let users: String = extensions
                .iter()
                .map(|e| {
                    format!(
                        "    - extension: \"{e}\"\n      passwordSecretRef: {{ name: bench-passwords, key: u{e} }}\n      maxCalls: 8\n"
                    )
                })
                .collect();
            let tenant = format!(
                "# Generated by cli/benches/sip_load.rs.\n\
                 apiVersion: centrex.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: bench-{i}\n  namespace: default\n\
                 spec:\n  domain: {}\n  users:\n{users}\
                 \x20 limits:\n    concurrentCalls: 100000\n    callsPerSecond: 10000\n\
                 \x20 signallingPoolRef: default\n  mediaPoolRef: default\n",
                domain(i)
            );
            (format!("tenant-bench-{i}.yaml"), tenant)
        })
        .collect();
    let passwords: String = tenants
        .iter()
        .flatten()
        .map(|e| format!("  u{e}: {}\n", password(e)))
        .collect();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bench-passwords\n  namespace: default\n\
         type: Opaque\nstringData:\n{passwords}"
    );
    files.push(("secrets.yaml".into(), secret));
    files.push(("pools.yaml".into(), pools_yaml.to_string()));
    files
}

/// A sipp injection file registering `extensions` in turn: the user, then the authentication
/// keyword with their credentials (sipp 3.6 cannot nest `[field…]` inside `[authentication …]`,
/// but expands a keyword given as a whole field).
pub fn users_csv(extensions: &[String]) -> String {
    let lines: String = extensions
        .iter()
        .map(|e| {
            format!(
                "{e};[authentication username={e} password={}]\n",
                password(e)
            )
        })
        .collect();
    format!("SEQUENTIAL\n{lines}")
}

/// A sipp injection file of calls, used in turn: per line the caller, the callee, the caller's
/// authentication keyword and their tenant's domain.
pub fn calls_csv(pairs: &[(String, String, usize)]) -> String {
    let lines: String = pairs
        .iter()
        .map(|(caller, callee, tenant)| {
            format!(
                "{caller};{callee};[authentication username={caller} password={}];{}\n",
                password(caller),
                domain(*tenant)
            )
        })
        .collect();
    format!("SEQUENTIAL\n{lines}")
}

/// What the platform's log complains about: WARN and ERROR lines and panics, counted by message
/// (fields, times and colours left out), most frequent first.
pub fn warning_kinds(log: &str) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().map(strip_ansi) {
        let kind = if line.contains("panicked at") {
            Some(line.trim().chars().take(160).collect())
        } else if line.trim_start().starts_with('{') {
            json_warning(&line)
        } else {
            ["WARN", "ERROR"].iter().find_map(|level| {
                let at = line.find(&format!(" {level} "))?;
                let rest = line[at + level.len() + 2..].trim_start();
                Some(format!("{level} {}", without_fields(rest)))
            })
        };
        if let Some(kind) = kind {
            *counts.entry(kind).or_default() += 1;
        }
    }
    let mut kinds: Vec<(String, usize)> = counts.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    kinds
}

/// The kind of a JSON log line (the media node logs JSON) if it is a warning or an error.
fn json_warning(line: &str) -> Option<String> {
    let record: serde_json::Value = serde_json::from_str(line).ok()?;
    let level = record["level"].as_str()?;
    if level != "WARN" && level != "ERROR" {
        return None;
    }
    let target = record["target"].as_str().unwrap_or_default();
    let message = record["fields"]["message"].as_str().unwrap_or_default();
    Some(format!("{level} {target}: {message}"))
}

/// A log message up to its first `key=value` field.
fn without_fields(message: &str) -> String {
    let words: Vec<&str> = message
        .split(' ')
        .take_while(|w| {
            !w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            })
        })
        .collect();
    words.join(" ").chars().take(140).collect()
}

/// `text` without ANSI colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub mod checks {
    //! Specifications of the pure helpers, run by `cargo test --benches`.
    use super::*;

    /// Every check, by name.
    pub const ALL: &[(&str, fn())] = crate::named![
        status_fields_are_read_in_kib,
        cpu_times_are_read_past_a_command_name_with_spaces,
        socket_drops_are_read_for_the_loopback_port,
        metrics_are_summed_over_their_labels,
        generated_manifests_give_every_user_a_secret_key_of_eight_characters_or_more,
        the_injection_file_carries_each_users_authentication,
        log_warnings_are_counted_without_fields_or_colours,
    ];

    fn cpu_times_are_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid … utime(14) stime(15) cutime(16) cstime(17) …
        let stat = "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 4 0";
        assert_eq!(stat_seconds(stat, 14), Some(3.0));
        assert_eq!(stat_seconds(stat, 16), Some(0.1));
        assert_eq!(stat_seconds("4242 (x) S 1", 14), None);
        assert_eq!(stat_field(stat, 5), Some("4242"), "the process group");
        let (before, after) = (
            CpuUse {
                server: 1.0,
                peer: 0.5,
                callers: 2.0,
            },
            CpuUse {
                server: 3.5,
                peer: 0.5,
                callers: 2.25,
            },
        );
        let used = after.since(before);
        assert_eq!((used.server, used.peer, used.callers), (2.5, 0.0, 0.25));
    }

    fn status_fields_are_read_in_kib() {
        let status = "Name:\tcentrex\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS:"), Some(102400.0));
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(204800.0));
        assert_eq!(status_field_kib(status, "VmSwap:"), None);
    }

    fn socket_drops_are_read_for_the_loopback_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     \x20 1: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17\n\
                     \x20 2: 0200007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 99\n";
        assert_eq!(socket_drops(table, 5060), Some(17));
        assert_eq!(socket_drops(table, 5061), None);
    }

    fn metrics_are_summed_over_their_labels() {
        let page = "# HELP centrex_media_sessions Relay sessions now\n\
                    centrex_media_sessions 12\n\
                    centrex_sip_requests_total{method=\"INVITE\"} 3\n\
                    centrex_sip_requests_total{method=\"BYE\"} 2\n";
        assert_eq!(metric(page, "centrex_media_sessions"), Some(12.0));
        assert_eq!(metric(page, "centrex_sip_requests_total"), Some(5.0));
        assert_eq!(metric(page, "centrex_sip_requests"), None);
    }

    fn generated_manifests_give_every_user_a_secret_key_of_eight_characters_or_more() {
        let extensions = ["1000".to_string(), "1001".to_string()];
        let files = manifests(
            &[extensions[..1].to_vec(), extensions[1..].to_vec()],
            "pools",
        );
        let tenant = format!("{}{}", files[0].1, files[1].1);
        let secret = &files[2].1;
        assert!(files[1].1.contains(&format!("domain: t1.{DOMAIN}")));
        for e in &extensions {
            assert!(tenant.contains(&format!("extension: \"{e}\"")));
            assert!(tenant.contains(&format!("key: u{e}")));
            assert!(secret.contains(&format!("u{e}: {}", password(e))));
            assert!(password(e).len() >= 8);
        }
        assert!(tenant.contains("concurrentCalls: 100000"));
        assert!(tenant.contains("callsPerSecond: 10000"));
    }

    fn the_injection_file_carries_each_users_authentication() {
        let csv = users_csv(&["1000".to_string()]);
        assert_eq!(
            csv,
            "SEQUENTIAL\n1000;[authentication username=1000 password=bench-1000-secret]\n"
        );
    }

    fn log_warnings_are_counted_without_fields_or_colours() {
        let log = "2026-11-26T08:00:00.000001Z \u{1b}[33m WARN\u{1b}[0m centrex_signalling::media: media node refused a session; trying another node=127.0.0.2:9 status=x\n\
                   2026-11-26T08:00:00.000002Z  WARN centrex_signalling::media: media node refused a session; trying another node=127.0.0.3:9 status=y\n\
                   2026-11-26T08:00:00.000003Z  INFO centrex: local mode\n\
                   {\"level\":\"ERROR\",\"target\":\"centrex_media_node::run\",\"fields\":{\"message\":\"bind failed\",\"port\":1}}\n\
                   {\"level\":\"INFO\",\"target\":\"centrex_media_node::run\",\"fields\":{\"message\":\"up\"}}\n\
                   thread 'tokio-runtime-worker' panicked at signalling/src/x.rs:1:1:\n";
        let kinds = warning_kinds(log);
        assert_eq!(
            kinds[0],
            (
                "WARN centrex_signalling::media: media node refused a session; trying another"
                    .to_string(),
                2
            )
        );
        assert!(
            kinds
                .iter()
                .any(|(k, n)| k == "ERROR centrex_media_node::run: bind failed" && *n == 1)
        );
        assert!(kinds.iter().any(|(k, _)| k.contains("panicked at")));
        assert_eq!(kinds.len(), 3);
    }
}
