//! Call detail records: one [`CallRecord`] per call when it ends, handed to [`RecordSink`]s.
//!
//! The JSON form is a stable schema (snake_case field names, every field always present, `null`
//! when empty, timestamps in RFC 3339 UTC with milliseconds) versioned by its `schema` field: a
//! change of a name or a meaning bumps [`SCHEMA_VERSION`], and a test pins the field names so
//! that a change is deliberate.
//!
//! Sinks are called on the call path, from tokio workers, so [`RecordSink::record`] must never
//! block: a sink that does IO hands the record to a bounded queue drained by its own writer
//! (thread or task), and drops and counts records when the queue is full, as
//! [`JsonLinesSink`] does. A database or webhook sink follows the same pattern: serialise in
//! `record`, `try_send` to a bounded queue, and let the worker batch inserts or POSTs and retry
//! with backoff; [`Fanout`] then feeds it alongside the others.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use centrex_coord::snapshot::Source;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::sip::StatusCode;

/// Version of the [`CallRecord`] JSON schema.
pub const SCHEMA_VERSION: u32 = 1;

/// `tracing` target of the records [`LogSink`] emits.
pub const LOG_TARGET: &str = "centrex::cdr";

/// What happened to one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// Always [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Call-ID of the caller's leg.
    pub call_id: String,
    /// The Tenant object the call belongs to.
    pub tenant: TenantRef,
    /// SIP domain of the tenant.
    pub domain: String,
    /// Caller: extension or E.164 number (the real one, even when withheld from the callee).
    pub from: String,
    /// Number or extension dialled.
    pub to: String,
    /// Whether the call stayed in the tenant, left it or came in.
    pub direction: Direction,
    /// When the call started, was answered and ended.
    #[serde(flatten)]
    pub times: CallTimes,
    /// How the call ended.
    pub result: CallResult,
    /// Final SIP status of the call (200 for an answered one).
    #[serde(serialize_with = "status_as_number")]
    pub sip_status: StatusCode,
    /// Extension of the hunt group called, if any.
    pub hunt_group: Option<String>,
    /// Extension or number that answered.
    pub answered_by: Option<String>,
    /// Trunk (name in the tenant's namespace) the call left or came in through.
    pub trunk: Option<String>,
    /// Extension whose forwarding sent the call where it was answered or failed.
    pub forwarded_from: Option<String>,
}

/// A Tenant object, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRef {
    /// Namespace of the Tenant.
    pub namespace: String,
    /// Name of the Tenant.
    pub name: String,
}

impl From<&Source> for TenantRef {
    fn from(source: &Source) -> Self {
        Self {
            namespace: source.namespace.clone(),
            name: source.name.clone(),
        }
    }
}

/// Which way a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Between two users or groups of one tenant.
    Internal,
    /// From a user to a trunk.
    Outbound,
    /// From a trunk to a DID.
    Inbound,
}

impl Direction {
    /// The name used in the JSON schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// Somebody answered.
    Answered,
    /// The callee was busy (486, 600).
    Busy,
    /// Nobody answered in time (408, 480).
    NoAnswer,
    /// The callee, the policy or the carrier refused the call (other 3xx, 4xx, 6xx).
    Rejected,
    /// The caller hung up before an answer (487).
    Cancelled,
    /// A server failed (5xx) or the call never got a final answer.
    Failed,
}

impl CallResult {
    /// The result a call ended with its final SIP status `status`.
    pub fn from_final_status(status: StatusCode) -> Self {
        match status {
            s if s.is_success() => Self::Answered,
            StatusCode::BUSY_HERE | StatusCode::BUSY_EVERYWHERE => Self::Busy,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TEMPORARILY_UNAVAILABLE => Self::NoAnswer,
            StatusCode::REQUEST_TERMINATED => Self::Cancelled,
            s if matches!(s.as_u16(), 300..=499 | 600..=699) => Self::Rejected,
            _ => Self::Failed,
        }
    }

    /// The name used in the JSON schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// When a call started, was answered and ended; serialised as `started_at`, `answered_at`,
/// `ended_at` and the derived `duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimes {
    /// When the INVITE arrived.
    pub started: SystemTime,
    /// When the 200 OK was relayed, if it was.
    pub answered: Option<SystemTime>,
    /// When the call ended (BYE, CANCEL or final failure).
    pub ended: SystemTime,
}

impl CallTimes {
    /// Seconds from answer to end, rounded up as carriers bill a started second; 0 when the call
    /// was not answered.
    pub fn duration_seconds(&self) -> u64 {
        let Some(answered) = self.answered else {
            return 0;
        };
        let talk = self.ended.duration_since(answered).unwrap_or_default();
        talk.as_secs() + u64::from(talk.subsec_nanos() > 0)
    }
}

impl Serialize for CallTimes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CallTimes", 4)?;
        s.serialize_field("started_at", &rfc3339(self.started))?;
        s.serialize_field("answered_at", &self.answered.map(rfc3339))?;
        s.serialize_field("ended_at", &rfc3339(self.ended))?;
        s.serialize_field("duration_seconds", &self.duration_seconds())?;
        s.end()
    }
}

fn status_as_number<S: Serializer>(status: &StatusCode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u16(status.as_u16())
}

/// `time` in RFC 3339 UTC with milliseconds, e.g. `2024-02-29T12:34:56.789Z` (times before
/// 1970 are written as the epoch).
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Year, month and day of the `days`th day after 1970-01-01, in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so that the leap day ends each 400-year era's year.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Where call records go. Implementations must not block: they run on tokio workers.
pub trait RecordSink: Send + Sync {
    /// Takes `record` (queued or dropped, never waited on).
    fn record(&self, record: &CallRecord);
}

impl<T: RecordSink + ?Sized> RecordSink for Arc<T> {
    fn record(&self, record: &CallRecord) {
        (**self).record(record);
    }
}

/// Hands every record to several sinks, in order.
pub struct Fanout {
    sinks: Vec<Box<dyn RecordSink>>,
}

impl Fanout {
    /// A sink feeding each of `sinks`.
    pub fn new(sinks: Vec<Box<dyn RecordSink>>) -> Self {
        Self { sinks }
    }
}

impl RecordSink for Fanout {
    fn record(&self, record: &CallRecord) {
        for sink in &self.sinks {
            sink.record(record);
        }
    }
}

/// Emits each record as a structured `tracing` event with target [`LOG_TARGET`], for log
/// pipelines that already collect the pod's output.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl RecordSink for LogSink {
    fn record(&self, r: &CallRecord) {
        tracing::info!(
            target: LOG_TARGET,
            schema = r.schema,
            call_id = %r.call_id,
            tenant_namespace = %r.tenant.namespace,
            tenant_name = %r.tenant.name,
            domain = %r.domain,
            from = %r.from,
            to = %r.to,
            direction = r.direction.as_str(),
            started_at = %rfc3339(r.times.started),
            answered_at = r.times.answered.map(rfc3339),
            ended_at = %rfc3339(r.times.ended),
            duration_seconds = r.times.duration_seconds(),
            result = r.result.as_str(),
            sip_status = r.sip_status.as_u16(),
            hunt_group = r.hunt_group.as_deref(),
            answered_by = r.answered_by.as_deref(),
            trunk = r.trunk.as_deref(),
            forwarded_from = r.forwarded_from.as_deref(),
            "call record"
        );
    }
}

/// Why a call record file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The file cannot be opened for appending.
    #[error("cannot open call record file {}: {source} (check that the directory exists and is writable)", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The writer thread cannot be started.
    #[error("cannot start the writer thread of call record file {}: {source}", path.display())]
    Spawn {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Appends each record as one JSON object per line to a file, from a dedicated writer thread
/// fed by a bounded queue; records that find the queue full are dropped and counted.
pub struct JsonLinesSink {
    queue: LineQueue,
    writer: JoinHandle<()>,
}

impl JsonLinesSink {
    /// Records queued at most by default (a few seconds of a busy node's calls).
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A sink appending to `path` (created if missing), queueing at most `capacity` records.
    /// It opens the file: call it at start-up, not on a tokio worker.
    pub fn open(path: impl Into<PathBuf>, capacity: usize) -> Result<Self, CdrError> {
        let path = path.into();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| CdrError::Open {
                path: path.clone(),
                source,
            })?;
        let (lines, received) = std::sync::mpsc::sync_channel(capacity);
        let writer_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || write_lines(file, received, &writer_path))
            .map_err(|source| CdrError::Spawn {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            queue: LineQueue::new(lines, path),
            writer,
        })
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every queued record is written, then stops the writer. It blocks: call it at
    /// shutdown, outside the runtime's workers (dropping the sink instead lets the writer finish
    /// on its own).
    pub fn close(self) {
        drop(self.queue);
        if self.writer.join().is_err() {
            tracing::error!(target: LOG_TARGET, "call record writer panicked");
        }
    }
}

impl RecordSink for JsonLinesSink {
    fn record(&self, record: &CallRecord) {
        match serde_json::to_vec(record) {
            Ok(mut line) => {
                line.push(b'\n');
                self.queue.push(line);
            }
            Err(error) => tracing::warn!(
                target: LOG_TARGET,
                call_id = %record.call_id,
                %error,
                "call record not serialisable"
            ),
        }
    }
}

/// The sending end of a bounded queue of lines, counting those it drops.
struct LineQueue {
    lines: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
    path: PathBuf,
}

impl LineQueue {
    fn new(lines: SyncSender<Vec<u8>>, path: PathBuf) -> Self {
        Self {
            lines,
            dropped: AtomicU64::new(0),
            path,
        }
    }

    /// Queues `line`, or drops it when the queue is full or the writer is gone.
    fn push(&self, line: Vec<u8>) {
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if worth_reporting(dropped) {
                    tracing::warn!(
                        target: LOG_TARGET,
                        dropped,
                        path = %self.path.display(),
                        "call records dropped: the writer does not keep up"
                    );
                }
            }
        }
    }
}

/// Whether the `n`th occurrence of a repeated problem is logged: 1, 2, 4, 8… so a flood of them
/// costs a few lines, not one each.
fn worth_reporting(n: u64) -> bool {
    n.is_power_of_two()
}

/// The writer thread: appends every line received to `file` until every sender is gone.
fn write_lines(mut file: File, lines: Receiver<Vec<u8>>, path: &Path) {
    let mut failures = 0u64;
    for line in lines {
        if let Err(error) = file.write_all(&line).and_then(|()| file.flush()) {
            failures += 1;
            if worth_reporting(failures) {
                tracing::warn!(
                    target: LOG_TARGET,
                    failures,
                    path = %path.display(),
                    %error,
                    "call record not written"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// `seconds` and `millis` after the epoch.
    fn at(seconds: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    fn record(call_id: &str) -> CallRecord {
        CallRecord {
            schema: SCHEMA_VERSION,
            call_id: call_id.into(),
            tenant: TenantRef {
                namespace: "customers".into(),
                name: "acme".into(),
            },
            domain: "acme.example.com".into(),
            from: "100".into(),
            to: "+33612345678".into(),
            direction: Direction::Outbound,
            times: CallTimes {
                started: at(1_709_210_090, 0),
                answered: Some(at(1_709_210_096, 250)),
                ended: at(1_709_210_156, 500),
            },
            result: CallResult::Answered,
            sip_status: StatusCode::OK,
            hunt_group: None,
            answered_by: Some("+33612345678".into()),
            trunk: Some("carrier-a".into()),
            forwarded_from: None,
        }
    }

    #[test]
    fn the_json_schema_field_names_are_pinned() {
        let value = serde_json::to_value(record("c1")).unwrap();
        let names: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // Changing this list changes the schema: bump SCHEMA_VERSION and tell the consumers.
        let mut expected = vec![
            "schema",
            "call_id",
            "tenant",
            "domain",
            "from",
            "to",
            "direction",
            "started_at",
            "answered_at",
            "ended_at",
            "duration_seconds",
            "result",
            "sip_status",
            "hunt_group",
            "answered_by",
            "trunk",
            "forwarded_from",
        ];
        expected.sort_unstable();
        let mut names = names;
        names.sort_unstable();
        assert_eq!(names, expected);
        let tenant: Vec<&String> = value["tenant"].as_object().unwrap().keys().collect();
        assert_eq!(tenant, ["name", "namespace"]);
        assert_eq!(SCHEMA_VERSION, 1);
    }

    #[test]
    fn the_json_form_has_rfc3339_times_numbers_and_snake_case_names() {
        let value = serde_json::to_value(record("c1")).unwrap();
        assert_eq!(value["schema"], 1);
        assert_eq!(value["started_at"], "2024-02-29T12:34:50.000Z");
        assert_eq!(value["answered_at"], "2024-02-29T12:34:56.250Z");
        assert_eq!(value["ended_at"], "2024-02-29T12:35:56.500Z");
        assert_eq!(value["duration_seconds"], 61);
        assert_eq!(value["direction"], "outbound");
        assert_eq!(value["result"], "answered");
        assert_eq!(value["sip_status"], 200);
        assert_eq!(value["hunt_group"], serde_json::Value::Null);
        assert_eq!(value["tenant"]["namespace"], "customers");
    }

    #[test]
    fn enum_names_in_logs_match_the_json_schema() {
        for d in [Direction::Internal, Direction::Outbound, Direction::Inbound] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        for r in [
            CallResult::Answered,
            CallResult::Busy,
            CallResult::NoAnswer,
            CallResult::Rejected,
            CallResult::Cancelled,
            CallResult::Failed,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn an_unanswered_call_lasts_zero_seconds_and_has_no_answer_time() {
        let mut r = record("c1");
        r.times.answered = None;
        let value = serde_json::to_value(r).unwrap();
        assert_eq!(value["duration_seconds"], 0);
        assert_eq!(value["answered_at"], serde_json::Value::Null);
    }

    #[test]
    fn duration_rounds_a_started_second_up_and_ignores_clock_steps_back() {
        let times = |answered, ended| CallTimes {
            started: at(0, 0),
            answered: Some(answered),
            ended,
        };
        assert_eq!(times(at(10, 0), at(70, 0)).duration_seconds(), 60);
        assert_eq!(times(at(10, 0), at(70, 1)).duration_seconds(), 61);
        assert_eq!(times(at(10, 0), at(10, 200)).duration_seconds(), 1);
        assert_eq!(times(at(10, 0), at(9, 0)).duration_seconds(), 0);
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds_across_leap_days_and_centuries() {
        let cases = [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_827_696, 7), "2000-02-29T12:34:56.007Z"),
            (at(1_709_210_096, 999), "2024-02-29T12:34:56.999Z"),
            (at(1_735_689_599, 0), "2024-12-31T23:59:59.000Z"),
            (at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z"),
            (
                UNIX_EPOCH - Duration::from_secs(5),
                "1970-01-01T00:00:00.000Z",
            ),
        ];
        for (time, text) in cases {
            assert_eq!(rfc3339(time), text);
        }
    }

    #[test]
    fn call_result_follows_the_final_status() {
        let cases = [
            (StatusCode::OK, CallResult::Answered),
            (StatusCode::BUSY_HERE, CallResult::Busy),
            (StatusCode::BUSY_EVERYWHERE, CallResult::Busy),
            (StatusCode::REQUEST_TIMEOUT, CallResult::NoAnswer),
            (StatusCode::TEMPORARILY_UNAVAILABLE, CallResult::NoAnswer),
            (StatusCode::REQUEST_TERMINATED, CallResult::Cancelled),
            (StatusCode::FORBIDDEN, CallResult::Rejected),
            (StatusCode::NOT_FOUND, CallResult::Rejected),
            (StatusCode::ADDRESS_INCOMPLETE, CallResult::Rejected),
            (StatusCode::DECLINE, CallResult::Rejected),
            (StatusCode::MOVED_TEMPORARILY, CallResult::Rejected),
            (StatusCode::SERVICE_UNAVAILABLE, CallResult::Failed),
            (StatusCode::SERVER_INTERNAL_ERROR, CallResult::Failed),
        ];
        for (status, result) in cases {
            assert_eq!(CallResult::from_final_status(status), result, "{status}");
        }
    }

    #[test]
    fn json_lines_sink_creates_the_file_and_writes_one_parseable_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        sink.record(&record("c1"));
        sink.record(&record("c2"));
        sink.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["call_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn json_lines_sink_appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        std::fs::write(&path, "{\"call_id\":\"old\"}\n").unwrap();
        let sink = JsonLinesSink::open(&path, 16).unwrap();
        sink.record(&record("new"));
        sink.close();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn json_lines_sink_names_the_file_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("cdr.jsonl");
        let error = JsonLinesSink::open(&path, 16).err().unwrap();
        assert!(error.to_string().contains("missing/cdr.jsonl"), "{error}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_records_instead_of_blocking() {
        let (lines, _received) = std::sync::mpsc::sync_channel(1);
        let queue = LineQueue::new(lines, "cdr.jsonl".into());
        queue.push(b"1\n".to_vec());
        queue.push(b"2\n".to_vec());
        queue.push(b"3\n".to_vec());
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn repeated_problems_are_reported_at_powers_of_two() {
        let reported: Vec<u64> = (1..=20).filter(|&n| worth_reporting(n)).collect();
        assert_eq!(reported, [1, 2, 4, 8, 16]);
    }

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl RecordSink for Collect {
        fn record(&self, record: &CallRecord) {
            self.0.lock().unwrap().push(record.call_id.clone());
        }
    }

    #[test]
    fn fanout_hands_every_record_to_every_sink() {
        let a = Arc::new(Collect::default());
        let b = Arc::new(Collect::default());
        let fanout = Fanout::new(vec![
            Box::new(a.clone()),
            Box::new(b.clone()),
            Box::new(LogSink),
        ]);
        fanout.record(&record("c1"));
        assert_eq!(*a.0.lock().unwrap(), ["c1"]);
        assert_eq!(*b.0.lock().unwrap(), ["c1"]);
    }
}
