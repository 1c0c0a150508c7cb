//! sipp (Debian `sip-tester`, 3.6.1) as the bench drives it: the command lines, and what its
//! statistics file (`-trace_stat`) and error log (`-trace_err`) say. Parsing is pure; running is in
//! the bench's platform module.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// sipp drops packets under load with its default socket buffers.
pub const BUFF_SIZE: &str = "4194304";
/// A call waiting longer than this for an answer fails (bounds the tail of every run).
pub const RECV_TIMEOUT_MS: u32 = 5_000;
/// A probe passes only if sipp started calls at least this close to the requested rate.
pub const RATE_TOLERANCE: f64 = 0.95;

/// The scenario a sipp runs.
#[derive(Debug, Clone, Copy)]
pub enum Scenario<'a> {
    /// A file in sipp's working directory.
    File(&'a str),
    /// One of sipp's embedded scenarios (`uac`, `uas`).
    BuiltIn(&'a str),
}

/// One sipp instance: what it runs, where, and what it logs (`<label>.csv`, `<label>_errors.log`).
#[derive(Debug, Clone)]
pub struct Sipp<'a> {
    pub scenario: Scenario<'a>,
    /// The peer: the platform's SIP address, or for a UAS the address it would call.
    pub remote: SocketAddr,
    pub local_port: u16,
    pub media_port: u16,
    /// Names its statistics and error files.
    pub label: String,
    /// Role-specific flags (rate, counts, credentials…).
    pub extra: Vec<String>,
}

impl Sipp<'_> {
    /// The command line: everything on 127.0.0.1, large socket buffers, statistics every second.
    pub fn args(&self) -> Vec<String> {
        let scenario = match self.scenario {
            Scenario::File(file) => ["-sf", file],
            Scenario::BuiltIn(name) => ["-sn", name],
        };
        let mut args: Vec<String> = vec![self.remote.to_string()];
        args.extend(scenario.map(String::from));
        for (flag, value) in [
            ("-i", "127.0.0.1".to_string()),
            ("-p", self.local_port.to_string()),
            ("-mi", "127.0.0.1".to_string()),
            ("-mp", self.media_port.to_string()),
            ("-buff_size", BUFF_SIZE.to_string()),
            ("-stf", self.stats_file()),
            ("-fd", "1".to_string()),
            ("-error_file", self.errors_file()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args.extend(["-nostdin", "-trace_stat", "-trace_err"].map(String::from));
        args.extend(self.extra.iter().cloned());
        args
    }

    /// The statistics file, relative to sipp's working directory.
    pub fn stats_file(&self) -> String {
        format!("{}.csv", self.label)
    }

    /// The error log, relative to sipp's working directory.
    pub fn errors_file(&self) -> String {
        format!("{}_errors.log", self.label)
    }
}

/// Flags of a caller placing `total` calls at `rate` per second, at most `limit` at once, each
/// paused `hold_ms` after it is answered; bounded by a global timeout of `timeout_s`.
pub fn caller_flags(
    rate: u32,
    total: u64,
    limit: u64,
    hold_ms: u64,
    timeout_s: u64,
) -> Vec<String> {
    [
        ("-r", rate.to_string()),
        ("-m", total.to_string()),
        ("-l", limit.to_string()),
        ("-d", hold_ms.to_string()),
        ("-recv_timeout", RECV_TIMEOUT_MS.to_string()),
        ("-timeout", format!("{timeout_s}s")),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .chain(["-timeout_error".to_string()])
    .collect()
}

/// The columns the bench reads from one line of a sipp statistics file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatRow {
    /// When sipp started (Unix seconds).
    pub start: f64,
    /// When the line was written (Unix seconds).
    pub now: f64,
    /// Calls started so far.
    pub created: u64,
    /// Calls in progress.
    pub current: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Mean length of the successful calls, in milliseconds.
    pub call_length_ms: f64,
    /// Non-zero cumulative `Failed…(C)` counters besides the total, by cause.
    pub failures: Vec<(String, u64)>,
}

/// Parses a sipp statistics file (`;`-separated, a header line, cumulative columns end `(C)`);
/// lines that do not parse are skipped.
pub fn parse_stats(text: &str) -> Vec<StatRow> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split(';').collect();
    let index = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(start), Some(now), Some(created), Some(current), Some(ok), Some(failed)) = (
        index("StartTime"),
        index("CurrentTime"),
        index("TotalCallCreated"),
        index("CurrentCall"),
        index("SuccessfulCall(C)"),
        index("FailedCall(C)"),
    ) else {
        return Vec::new();
    };
    let retransmissions = index("Retransmissions(C)");
    let call_length = index("CallLength(C)");
    let causes: Vec<(usize, &str)> = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let cause = c.strip_prefix("Failed")?.strip_suffix("(C)")?;
            (cause != "Call").then_some((i, cause))
        })
        .collect();
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(';').collect();
            let count = |i: usize| fields.get(i)?.trim().parse::<u64>().ok();
            Some(StatRow {
                start: epoch(fields.get(start)?)?,
                now: epoch(fields.get(now)?)?,
                created: count(created)?,
                current: count(current)?,
                successful: count(ok)?,
                failed: count(failed)?,
                retransmissions: retransmissions.and_then(count).unwrap_or(0),
                call_length_ms: call_length
                    .and_then(|i| duration_ms(fields.get(i)?))
                    .unwrap_or(0.0),
                failures: causes
                    .iter()
                    .filter_map(|&(i, cause)| Some((cause.to_string(), count(i)?)))
                    .filter(|&(_, n)| n > 0)
                    .collect(),
            })
        })
        .collect()
}

/// The Unix time at the end of a sipp date field (`2026-11-26\t08:43:29.447295\t1795682609.447295`).
fn epoch(field: &str) -> Option<f64> {
    field.rsplit('\t').next()?.trim().parse().ok()
}

/// Milliseconds of a sipp duration (`HH:MM:SS:micro`).
fn duration_ms(field: &str) -> Option<f64> {
    let parts: Vec<f64> = field
        .trim()
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [h, m, s, micro] => Some(((h * 60.0 + m) * 60.0 + s) * 1000.0 + micro / 1000.0),
        _ => None,
    }
}

/// What one sipp caller run achieved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Calls started per second while sipp was still starting them.
    pub achieved_rate: f64,
    pub call_length_ms: f64,
    pub failures: Vec<(String, u64)>,
    /// Most calls in progress at once in any statistics line.
    pub peak_current: u64,
}

/// Sums up a caller's statistics lines (`planned`: the `-m` it was given). The achieved rate
/// comes from the last line written while calls were still being started, so the wait for the
/// last answers does not count against it.
pub fn totals(rows: &[StatRow], planned: u64) -> Option<Totals> {
    let last = rows.last()?;
    let rate = |row: &StatRow| {
        let elapsed = row.now - row.start;
        (elapsed >= 0.5).then(|| row.created as f64 / elapsed)
    };
    let achieved_rate = rows
        .iter()
        .rev()
        .filter(|r| r.created < planned)
        .find_map(rate)
        .or_else(|| rate(last))
        .unwrap_or(0.0);
    Some(Totals {
        created: last.created,
        successful: last.successful,
        failed: last.failed,
        retransmissions: last.retransmissions,
        achieved_rate,
        call_length_ms: last.call_length_ms,
        failures: last.failures.clone(),
        peak_current: rows.iter().map(|r| r.current).max().unwrap_or(0),
    })
}

/// Why a run does not count as sustained at its rate.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    /// Calls failed (sipp's `FailedCall`).
    Failed(u64),
    /// Fewer calls succeeded than were planned (sipp gave up or was stopped).
    Incomplete { completed: u64, planned: u64 },
    /// sipp could not start calls at the requested rate.
    Slow { achieved: f64, requested: u32 },
    /// sipp ended with an error status.
    Exit(i32),
    /// sipp ran past its deadline and was killed.
    Killed,
}

impl Shortfall {
    /// Whether only the rate fell short (every call succeeded): a stall of the shared machine
    /// looks like this, so such a probe is worth running again.
    pub fn only_slow(&self) -> bool {
        matches!(self, Shortfall::Slow { .. })
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::Failed(n) => write!(f, "{n} failed calls"),
            Shortfall::Incomplete { completed, planned } => {
                write!(f, "only {completed}/{planned} calls completed")
            }
            Shortfall::Slow {
                achieved,
                requested,
            } => {
                write!(f, "calls started at {achieved:.0}/s of {requested}/s")
            }
            Shortfall::Exit(code) => write!(f, "sipp exited with status {code}"),
            Shortfall::Killed => write!(f, "sipp was killed"),
        }
    }
}

/// Why a run does not count as sustained at `rate` (`None`: it does). Failed calls, calls that
/// never completed, a rate sipp could not keep up, or sipp's own error exit each disqualify it.
pub fn disqualified(
    totals: &Totals,
    planned: u64,
    rate: u32,
    exit: Option<i32>,
) -> Option<Shortfall> {
    if totals.failed > 0 {
        return Some(Shortfall::Failed(totals.failed));
    }
    if totals.successful < planned {
        return Some(Shortfall::Incomplete {
            completed: totals.successful,
            planned,
        });
    }
    if totals.achieved_rate < f64::from(rate) * RATE_TOLERANCE {
        return Some(Shortfall::Slow {
            achieved: totals.achieved_rate,
            requested: rate,
        });
    }
    match exit {
        Some(0) => None,
        Some(code) => Some(Shortfall::Exit(code)),
        None => Some(Shortfall::Killed),
    }
}

/// What went wrong in a sipp error log, counted by kind (Call-IDs and times left out), most
/// frequent first.
pub fn error_kinds(log: &str) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for entry in entries(log) {
        *counts.entry(error_kind(entry)).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = counts.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    kinds
}

/// The entries of an error log: each starts with `YYYY-MM-DD\tHH:MM:SS.micro\tUNIX: ` (sipp does
/// not always end the previous entry with a newline).
fn entries(log: &str) -> Vec<&str> {
    let bytes = log.as_bytes();
    let is_start = |i: usize| {
        bytes.len() >= i + 11
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 5..i + 7].iter().all(u8::is_ascii_digit)
            && bytes[i + 7] == b'-'
            && bytes[i + 8..i + 10].iter().all(u8::is_ascii_digit)
            && bytes[i + 10] == b'\t'
    };
    let starts: Vec<usize> = (0..bytes.len()).filter(|&i| is_start(i)).collect();
    starts
        .iter()
        .zip(starts.iter().skip(1).copied().chain([bytes.len()]))
        .filter_map(|(&from, to)| {
            let entry = &log[from..to];
            let message = entry.find(": ").map(|at| &entry[at + 2..])?;
            Some(message)
        })
        .collect()
}

/// The kind of one error entry: sipp's sentence with the received message reduced to its status
/// line or method.
fn error_kind(message: &str) -> String {
    let received = message
        .find("received '")
        .map(|at| first_line_kind(&message[at + "received '".len()..]));
    // `… while expecting '200' (index 3), received …` or `… while pausing (index 9), …`
    let doing = message.find(": while ").and_then(|at| {
        let rest = &message[at + ": while ".len()..];
        Some(rest[..rest.find(" (index")?].replace('\'', ""))
    });
    if message.contains("receive timeout") {
        // `… receive timeout on message <scenario name>:<index> without label …`
        let step = message
            .find("on message ")
            .map(|at| &message[at + "on message ".len()..])
            .map(|rest| rest.split(" without").next().unwrap_or(rest))
            .and_then(|step| step.rsplit(':').next())
            .unwrap_or("?");
        return format!("no answer in time (waiting at message {step})");
    }
    if message.starts_with("Dead call") {
        return format!(
            "{} after the call was aborted",
            received.unwrap_or_default()
        );
    }
    if message.starts_with("Aborting call on unexpected message") {
        return match (received, doing) {
            (Some(got), Some(doing)) => format!("unexpected {got} while {doing}"),
            (Some(got), None) => format!("unexpected {got}"),
            _ => "unexpected message".into(),
        };
    }
    // Anything else: sipp's first line without the Call-IDs (the words holding an `@`).
    let first = message.lines().next().unwrap_or_default();
    let words: Vec<&str> = first
        .split_whitespace()
        .filter(|w| !w.contains('@'))
        .collect();
    let kind: String = words.join(" ").chars().take(100).collect();
    kind.trim_end_matches([':', ',', ' ']).to_string()
}

/// `SIP/2.0 503 Service Unavailable` → `503 Service Unavailable`; `ACK sip:… SIP/2.0` → `ACK`.
fn first_line_kind(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    match line.strip_prefix("SIP/2.0 ") {
        Some(status) => status.to_string(),
        None => line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

pub mod checks {
    //! Specifications of the sipp parsing, run by `cargo test --benches`.
    use super::*;

    /// Every check, by name.
    pub const ALL: &[(&str, fn())] = crate::named![
        a_stats_file_gives_counts_times_and_failure_causes,
        the_achieved_rate_is_read_while_calls_are_still_being_started,
        a_run_is_disqualified_by_failures_incomplete_calls_a_slow_rate_or_an_error_exit,
        error_logs_are_counted_by_kind_without_call_ids,
        every_sipp_binds_loopback_with_large_buffers,
    ];

    const HEADER: &str = "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);TotalCallCreated;CurrentCall;SuccessfulCall(C);FailedCall(C);FailedMaxUDPRetrans(C);FailedTimeoutOnRecv(C);Retransmissions(C);CallLength(C);";

    fn line(now: f64, created: u64, current: u64, ok: u64, failed: u64, timeouts: u64) -> String {
        format!(
            "2026-11-26\t08:00:00.000000\t1000.000000;x;2026-11-26\t08:00:00.000000\t{now:.6};00:00:00;{created};{current};{ok};{failed};0;{timeouts};3;00:00:00:012500;"
        )
    }

    fn a_stats_file_gives_counts_times_and_failure_causes() {
        let text = format!("{HEADER}\n{}\n", line(1002.0, 10, 1, 8, 1, 1));
        let rows = parse_stats(&text);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.start, row.now), (1000.0, 1002.0));
        assert_eq!(
            (row.created, row.current, row.successful, row.failed),
            (10, 1, 8, 1)
        );
        assert_eq!(row.retransmissions, 3);
        assert_eq!(row.call_length_ms, 12.5);
        assert_eq!(row.failures, [("TimeoutOnRecv".to_string(), 1)]);
    }

    fn the_achieved_rate_is_read_while_calls_are_still_being_started() {
        let text = [
            HEADER.to_string(),
            line(1000.0, 0, 0, 0, 0, 0),
            line(1001.0, 100, 5, 95, 0, 0),
            line(1002.0, 200, 5, 195, 0, 0),
            // All 250 started; the last answers took long: the rate must not count this line.
            line(1010.0, 250, 0, 250, 0, 0),
        ]
        .join("\n");
        let totals = totals(&parse_stats(&text), 250).unwrap();
        assert_eq!(totals.achieved_rate, 100.0);
        assert_eq!((totals.successful, totals.peak_current), (250, 5));
    }

    fn a_run_is_disqualified_by_failures_incomplete_calls_a_slow_rate_or_an_error_exit() {
        let good = Totals {
            created: 500,
            successful: 500,
            achieved_rate: 99.0,
            ..Totals::default()
        };
        assert_eq!(disqualified(&good, 500, 100, Some(0)), None);
        let failed = Totals {
            failed: 2,
            ..good.clone()
        };
        assert_eq!(
            disqualified(&failed, 500, 100, Some(1)),
            Some(Shortfall::Failed(2))
        );
        let slow = Totals {
            achieved_rate: 80.0,
            ..good.clone()
        };
        let shortfall = disqualified(&slow, 500, 100, Some(0)).unwrap();
        assert!(shortfall.only_slow());
        assert_eq!(shortfall.to_string(), "calls started at 80/s of 100/s");
        let short = Totals {
            successful: 499,
            ..good.clone()
        };
        assert_eq!(
            disqualified(&short, 500, 100, Some(0)),
            Some(Shortfall::Incomplete {
                completed: 499,
                planned: 500
            })
        );
        assert_eq!(disqualified(&good, 500, 100, None), Some(Shortfall::Killed));
    }

    fn error_logs_are_counted_by_kind_without_call_ids() {
        let log = "The following events occurred:\n\
            2026-11-26\t08:43:35.691684\t1795682615.691684: Call-Id: 122-7732@127.0.0.1, receive timeout on message authenticated call:6 without label to jump to (ontimeout attribute): aborting call\
            2026-11-26\t08:43:35.694100\t1795682615.694100: Dead call 122-7732@127.0.0.1 (aborted at index 6), received 'SIP/2.0 200 OK\r\nVia: x\r\n\r\n'\
            2026-11-26\t08:43:36.870909\t1795682616.870909: Aborting call on unexpected message for Call-Id '1-5@127.0.0.1': while expecting '200' (index 3), received 'SIP/2.0 503 Service Unavailable\r\nVia: x\r\n'\n\
            2026-11-26\t08:43:36.970909\t1795682616.970909: Aborting call on unexpected message for Call-Id '2-5@127.0.0.1': while expecting '200' (index 3), received 'SIP/2.0 503 Service Unavailable\r\nVia: y\r\n'\n\
            2026-11-26\t08:43:37.000000\t1795682617.000000: Aborting call on an unexpected BYE for call: 12385-29829@127.0.0.1\n\
            2026-11-26\t08:45:54.442740\t1795686354.442740: Aborting call on unexpected message for Call-Id '791-8510@127.0.0.1': while pausing (index 9), received 'SIP/2.0 180 Ringing\r\n\r\n'";
        assert_eq!(
            error_kinds(log),
            [
                (
                    "unexpected 503 Service Unavailable while expecting 200".to_string(),
                    2
                ),
                ("200 OK after the call was aborted".to_string(), 1),
                ("Aborting call on an unexpected BYE for call".to_string(), 1),
                ("no answer in time (waiting at message 6)".to_string(), 1),
                ("unexpected 180 Ringing while pausing".to_string(), 1),
            ]
        );
    }

    fn every_sipp_binds_loopback_with_large_buffers() {
        let sipp = Sipp {
            scenario: Scenario::BuiltIn("uas"),
            remote: "127.0.0.1:5060".parse().unwrap(),
            local_port: 5070,
            media_port: 5072,
            label: "callee".into(),
            extra: vec![],
        };
        let args = sipp.args();
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].as_str())
        };
        assert_eq!(after("-i"), Some("127.0.0.1"));
        assert_eq!(after("-mi"), Some("127.0.0.1"));
        assert_eq!(after("-buff_size"), Some(BUFF_SIZE));
        assert_eq!(after("-sn"), Some("uas"));
        assert_eq!(after("-stf"), Some("callee.csv"));
    }
}
