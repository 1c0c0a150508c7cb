//! [`Store`] on an etcd v3 cluster through `etcd-client`.
//!
//! etcd-client balances requests over all endpoints but keeps sending to a member that is gone
//! (etcdv3/etcd-client#12, #39), and etcd itself leaves a request in the air when the leader it
//! was forwarded to dies. So the store holds one connection per member, talks to one member at a
//! time, and moves a request on to the next member when the one it tried cannot be reached, has no
//! leader, loses the connection, or does not answer in time.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use tokio::time::{Instant, sleep, timeout};

use super::{CasOutcome, KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};

/// Bound on establishing a connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request across all the members it is tried on (and on opening a watch), so a
/// hung cluster surfaces as `Unavailable`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one attempt on one member. A healthy member answers in milliseconds; one that does
/// not answer within this is hung, partitioned, or forwarded the request to a leader that died
/// (etcd would only give up after 5 s + 2 election timeouts). Above etcd's default election
/// timeout (1 s), so the attempt after it finds the new leader.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on open streams: a silently dead connection breaks an idle watch so it
/// reconnects, instead of waiting forever. etcd refuses pings more often than every 5 s.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff bounds between rounds over the members, and between watch reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A [`Store`] on etcd; clones share the connections.
///
/// Requests go to one member: the first endpoint at first, then whichever member answered last.
/// A request moves on to the next member when the one it tried cannot be reached or has no
/// leader (it did nothing there), and also when the connection is lost mid-request or no answer
/// comes within 2 s (it may have taken effect there). Repeating is safe for every operation:
/// reads and keep-alives change nothing; a put leaves the key with the value either way (a
/// watcher may see the same value written twice); a delete leaves the key absent either way (it
/// then reports what the repeat found); a compare-and-swap cannot succeed twice, and one whose
/// repeat conflicts reports `Unavailable`, since the conflicting write may be its own first
/// attempt. When every member refuses connections, a request fails at once; otherwise it is
/// tried round after round for at most 10 s.
#[derive(Clone)]
pub struct EtcdStore {
    cluster: Arc<Cluster>,
}

/// The connections to the members, shared by the clones of an [`EtcdStore`].
struct Cluster {
    members: Vec<Member>,
    /// The member a request goes to first: the last one that answered.
    in_use: AtomicUsize,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
}

/// One member's connection.
struct Member {
    endpoint: String,
    client: Client,
}

impl EtcdStore {
    /// Connects to the members at `endpoints` (e.g. `http://etcd-0:2379`), preferring the first,
    /// and checks that the cluster answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let joined = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
            // A member without a leader refuses at once ("no leader") instead of holding the
            // request, and ends its watch streams, so both move to a member that has one.
            .with_require_leader(true);
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            // Connections are made lazily; this only checks the URL.
            let client = timeout(
                CONNECT_TIMEOUT,
                Client::connect([endpoint], Some(options.clone())),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "etcd at {endpoint}: no connection within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| StoreError::Unavailable(format!("etcd at {endpoint}: connect: {e}")))?;
            members.push(Member {
                endpoint: endpoint.clone(),
                client,
            });
        }
        let store = Self {
            cluster: Arc::new(Cluster {
                members,
                in_use: AtomicUsize::new(0),
                endpoints: joined,
            }),
        };
        // Ask for the status so a wrong endpoint list fails here, at startup, rather than on
        // first use.
        store
            .call("status", "", None, |mut c| async move { c.status().await })
            .await
            .result?;
        Ok(store)
    }

    /// The endpoint of the member requests go to first (the one that answered last).
    pub fn current_endpoint(&self) -> &str {
        let cluster = &self.cluster;
        &cluster.members[cluster.in_use.load(Ordering::Relaxed)].endpoint
    }

    /// Runs one request, member after member as described on [`EtcdStore`], each attempt with
    /// a fresh handle on that member's connection; errors name the operation and key.
    async fn call<T, F, Fut>(&self, op: &str, key: &str, lease: Option<LeaseId>, f: F) -> Outcome<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let cluster = &*self.cluster;
        let count = cluster.members.len();
        let first = cluster.in_use.load(Ordering::Relaxed);
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut rounds = Rounds::new(first, count);
        let mut doubtful = false;
        let mut cause = String::new();
        loop {
            let index = match rounds.next() {
                Step::Try(index) => index,
                Step::After(pause, index) if Instant::now() + pause < deadline => {
                    sleep(pause).await;
                    index
                }
                Step::After(..) | Step::GiveUp => break,
            };
            if Instant::now() >= deadline {
                break;
            }
            let member = &cluster.members[index];
            let limit = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let failure = match timeout(limit, f(member.client.clone())).await {
                Ok(Ok(value)) => {
                    cluster.in_use.store(index, Ordering::Relaxed);
                    return Outcome {
                        result: Ok(value),
                        doubtful,
                    };
                }
                Ok(Err(error)) => {
                    let failure = Failure::of(&error);
                    if failure == Failure::Answered {
                        cluster.in_use.store(index, Ordering::Relaxed);
                        return Outcome {
                            result: Err(map_error(&member.endpoint, op, key, lease, error)),
                            doubtful,
                        };
                    }
                    // A refusal says least about the cluster: keep what a member said.
                    if failure != Failure::Unreachable || cause.is_empty() {
                        cause = format!("{}: {error}", member.endpoint);
                    }
                    failure
                }
                Err(_) => {
                    cause = format!("{}: no answer within {limit:?}", member.endpoint);
                    Failure::Lost
                }
            };
            tracing::debug!(%cause, ?failure, op, key, "etcd attempt failed; trying the next member");
            doubtful |= failure == Failure::Lost;
            rounds.record(failure);
        }
        Outcome {
            result: Err(StoreError::Unavailable(format!(
                "etcd at {}: {}: {cause}",
                cluster.endpoints,
                subject(op, key, lease)
            ))),
            doubtful,
        }
    }
}

/// What a request came to, across its attempts.
struct Outcome<T> {
    result: Result<T, StoreError>,
    /// An attempt before the last lost its answer, so it may have taken effect.
    doubtful: bool,
}

/// Why one attempt on one member failed, as far as trying again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The member could not be reached (connection refused): the request did nothing.
    Unreachable,
    /// The member turned the request away unheard because it has no leader.
    NoLeader,
    /// The connection broke mid-request or the answer did not come in time: the request may
    /// have taken effect.
    Lost,
    /// etcd answered about the request itself (invalid, lease not found): final.
    Answered,
}

impl Failure {
    fn of(error: &etcd_client::Error) -> Self {
        match error {
            etcd_client::Error::GRpcStatus(status) => Self::of_status(status),
            // Streams (watch, keep-alive) that ended before their first answer.
            etcd_client::Error::WatchError(_)
            | etcd_client::Error::IoError(_)
            | etcd_client::Error::TransportError(_) => Failure::Lost,
            _ => Failure::Answered,
        }
    }

    fn of_status(status: &tonic::Status) -> Self {
        if connect_failed(status) {
            return Failure::Unreachable;
        }
        match status.code() {
            tonic::Code::Unavailable if status.message() == "etcdserver: no leader" => {
                Failure::NoLeader
            }
            // Unavailable: etcd's transient errors (request timed out, leader changed, server
            // stopped) and a connection that closed; Unknown: a transport error on a stream.
            tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded => Failure::Lost,
            _ => Failure::Answered,
        }
    }
}

/// Whether the status comes from failing to open a connection (tonic's `ConnectError` among its
/// causes), in which case nothing was sent.
fn connect_failed(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The order of attempts: every member once per round, starting from the one in use, with a
/// backoff between rounds; no further round after one in which no member could be reached
/// (the cluster is down: fail fast). The caller keeps the deadline.
struct Rounds {
    first: usize,
    count: usize,
    attempts: usize,
    /// Whether every attempt of the current round found its member unreachable.
    all_unreachable: bool,
    backoff: Duration,
}

/// The next move of a request.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Try this member now.
    Try(usize),
    /// A round ended: wait this long, then try this member.
    After(Duration, usize),
    GiveUp,
}

impl Rounds {
    fn new(first: usize, count: usize) -> Self {
        Rounds {
            first,
            count,
            attempts: 0,
            all_unreachable: true,
            backoff: BACKOFF_MIN,
        }
    }

    fn next(&mut self) -> Step {
        let index = (self.first + self.attempts) % self.count;
        let round_ended = self.attempts > 0 && self.attempts.is_multiple_of(self.count);
        if round_ended && self.all_unreachable {
            return Step::GiveUp;
        }
        self.attempts += 1;
        if !round_ended {
            return Step::Try(index);
        }
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.all_unreachable = true;
        Step::After(pause, index)
    }

    /// Notes how the last attempt failed.
    fn record(&mut self, failure: Failure) {
        self.all_unreachable &= failure == Failure::Unreachable;
    }
}

fn map_error(
    endpoint: &str,
    op: &str,
    key: &str,
    lease: Option<LeaseId>,
    error: etcd_client::Error,
) -> StoreError {
    match (&error, lease) {
        // etcd answers NotFound only for unknown leases ("requested lease not found").
        (etcd_client::Error::GRpcStatus(status), Some(lease))
            if status.code() == tonic::Code::NotFound =>
        {
            StoreError::LeaseNotFound(lease)
        }
        // How etcd-client reports a keep-alive answered with TTL 0: the lease is gone.
        (etcd_client::Error::LeaseKeepAliveError(_), Some(lease)) => {
            StoreError::LeaseNotFound(lease)
        }
        (etcd_client::Error::GRpcStatus(status), _)
            if status.code() == tonic::Code::InvalidArgument =>
        {
            StoreError::Invalid(format!("{}: {}", subject(op, key, lease), status.message()))
        }
        _ => StoreError::Unavailable(format!(
            "etcd at {endpoint}: {}: {error}",
            subject(op, key, lease)
        )),
    }
}

/// What a request was about, for error messages: `put "/a/b" with lease 7`.
fn subject(op: &str, key: &str, lease: Option<LeaseId>) -> String {
    let mut subject = op.to_owned();
    if !key.is_empty() {
        subject.push_str(&format!(" {key:?}"));
    }
    if let Some(lease) = lease {
        subject.push_str(&format!(" with lease {}", lease.0));
    }
    subject
}

fn revision(
    header: Option<&etcd_client::ResponseHeader>,
    op: &str,
) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Unavailable(format!("etcd {op} response without header")))
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_str(kv)?.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

fn key_str(kv: &etcd_client::KeyValue) -> Result<&str, StoreError> {
    kv.key_str().map_err(|_| {
        StoreError::Invalid(format!(
            "non-UTF-8 key {:?} in etcd",
            String::from_utf8_lossy(kv.key())
        ))
    })
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("empty key".into()));
    }
    Ok(())
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let resp = self
            .call(
                "get",
                key,
                None,
                |mut c| async move { c.get(key, None).await },
            )
            .await
            .result?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let resp = self
            .call("list", prefix, None, |mut c| {
                let options = options.clone();
                async move { c.get(prefix, Some(options)).await }
            })
            .await
            .result?;
        let kvs = resp.kvs().iter().map(convert).collect::<Result<_, _>>()?;
        Ok((kvs, revision(resp.header(), "list")?))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let options = lease.map(|l| PutOptions::new().with_lease(l.0));
        let resp = self
            .call("put", key, lease, |mut c| {
                let (value, options) = (value.clone(), options.clone());
                async move { c.put(key, value, options).await }
            })
            .await
            .result?;
        revision(resp.header(), "put")
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let resp = self
            .call("delete", key, None, |mut c| async move {
                c.delete(key, None).await
            })
            .await
            .result?;
        Ok(resp.deleted() > 0)
    }

    async fn put_all(&self, entries: &[(String, Vec<u8>)]) -> Result<Revision, StoreError> {
        super::check_batch(entries.iter().map(|(k, _)| k.as_str()))?;
        let Some((first, _)) = entries.first() else {
            return Err(StoreError::Invalid("put_all of no entries".into()));
        };
        let writes: Vec<TxnOp> = entries
            .iter()
            .map(|(key, value)| TxnOp::put(key.as_str(), value.clone(), None))
            .collect();
        let txn = Txn::new().and_then(writes);
        // Repeating the same writes is harmless, so a lost answer is simply retried.
        let resp = self
            .call("put all", first, None, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .result?;
        revision(resp.header(), "txn")
    }

    async fn delete_all(&self, keys: &[String]) -> Result<usize, StoreError> {
        super::check_batch(keys.iter().map(String::as_str))?;
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let deletes: Vec<TxnOp> = keys
            .iter()
            .map(|key| TxnOp::delete(key.as_str(), None))
            .collect();
        let txn = Txn::new().and_then(deletes);
        let resp = self
            .call("delete all", first, None, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .result?;
        Ok(resp
            .op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Delete(delete) => usize::try_from(delete.deleted()).unwrap_or(0),
                _ => 0,
            })
            .sum())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        check_key(key)?;
        let compare = match expected {
            // An absent key compares as a zero KeyValue, so "create_revision == 0" means absent.
            0 => Compare::create_revision(key, CompareOp::Equal, 0),
            1.. => Compare::mod_revision(key, CompareOp::Equal, expected),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "negative expected revision {expected} for {key}"
                )));
            }
        };
        let write = match value {
            Some(value) => TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l.0))),
            None => TxnOp::delete(key, None),
        };
        // On conflict, read the key in the same transaction so the caller sees what won.
        let txn = Txn::new()
            .when([compare])
            .and_then([write])
            .or_else([TxnOp::get(key, None)]);
        let outcome = self
            .call("compare-and-swap", key, lease, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let resp = outcome.result?;
        if resp.succeeded() {
            return Ok(CasOutcome::Written(revision(resp.header(), "txn")?));
        }
        if outcome.doubtful {
            // The write that won may be this request's own lost first attempt.
            return Err(StoreError::Unavailable(format!(
                "etcd at {}: compare-and-swap {key:?}: outcome unknown: an attempt lost its \
                 answer and the repeat found the key changed",
                self.cluster.endpoints
            )));
        }
        let current = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(convert).transpose()?,
            _ => None,
        };
        Ok(CasOutcome::Conflict(current))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds: round up so a lease never lives shorter than asked.
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
            .map_err(|_| StoreError::Invalid(format!("lease TTL {ttl:?} too long")))?;
        if secs == 0 {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        // A repeat after a lost answer may leave an unused lease behind; it expires after `ttl`.
        let resp = self
            .call("grant lease", "", None, |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await
            .result?;
        if !resp.error().is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd at {}: grant lease: {}",
                self.cluster.endpoints,
                resp.error()
            )));
        }
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // One request and its response on a keep-alive stream, closed again when the keeper
        // and stream are dropped; a TTL of 0 in the response maps to `LeaseNotFound`.
        self.call("keep-alive", "", Some(lease), |mut c| async move {
            c.lease_keep_alive(lease.0).await.map(drop)
        })
        .await
        .result
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let outcome = self
            .call("revoke lease", "", Some(lease), |mut c| async move {
                c.lease_revoke(lease.0).await
            })
            .await;
        match outcome.result {
            Ok(_) => Ok(()),
            // The lost first attempt revoked it: what was asked for is done.
            Err(StoreError::LeaseNotFound(_)) if outcome.doubtful => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if from < 0 {
            return Err(StoreError::Invalid(format!(
                "negative watch revision {from} for {prefix}"
            )));
        }
        let mut watcher = Watcher {
            store: self.clone(),
            prefix: prefix.to_owned(),
            next: from,
            stream: None,
            pending: VecDeque::new(),
        };
        // Open now, not on first poll: "from now" must mean the time of this call, and a dead
        // cluster should fail here.
        watcher.open().await?;
        // The stream ends after its first error (`Compacted`, or malformed data).
        Ok(
            futures::stream::unfold(Some(watcher), |watcher| async move {
                let mut watcher = watcher?;
                match watcher.next().await {
                    Ok(event) => Some((Ok(event), Some(watcher))),
                    Err(error) => Some((Err(error), None)),
                }
            })
            .boxed(),
        )
    }
}

/// One prefix watch that survives broken etcd streams by re-watching from the revision after
/// the last one it received.
struct Watcher {
    store: EtcdStore,
    prefix: String,
    /// The first revision not yet received (0 until the first watch fixes "now").
    next: Revision,
    stream: Option<etcd_client::WatchStream>,
    /// Events of the last response not yet handed out. etcd never splits one revision across
    /// responses, so resuming after a whole response never loses or repeats an event.
    pending: VecDeque<WatchEvent>,
}

impl Watcher {
    async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let Some(stream) = self.stream.as_mut() else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match self.open().await {
                    Ok(()) => backoff = BACKOFF_MIN,
                    Err(StoreError::Unavailable(cause)) => {
                        tracing::warn!(
                            prefix = %self.prefix, %cause, "etcd watch reconnect failed; retrying"
                        );
                    }
                    Err(error) => return Err(error),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => self.absorb(resp)?,
                Ok(None) => self.broken("stream ended"),
                Err(error) => self.broken(&error.to_string()),
            }
        }
    }

    fn broken(&mut self, cause: &str) {
        tracing::warn!(
            prefix = %self.prefix, next = self.next, cause, "etcd watch broke; reconnecting"
        );
        self.stream = None;
    }

    /// Starts an etcd watch from `next` on the member in use (or the next that answers) and
    /// waits for its creation.
    async fn open(&mut self) -> Result<(), StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next);
        let prefix = self.prefix.as_str();
        let (stream, created) = self
            .store
            .call("watch", prefix, None, |mut c| {
                let options = options.clone();
                async move {
                    let mut stream = c.watch(prefix, Some(options)).await?;
                    let created = stream.message().await?;
                    Ok((stream, created))
                }
            })
            .await
            .result?;
        match created {
            Some(resp) if resp.created() => {
                if self.next == 0 {
                    // Watching "now" starts after the revision the watch was created at.
                    self.next = revision(resp.header(), "watch")? + 1;
                }
                self.stream = Some(stream);
                self.absorb(resp)
            }
            _ => Err(StoreError::Unavailable(format!(
                "etcd at {}: watch {:?}: no creation acknowledgement",
                self.store.current_endpoint(),
                self.prefix
            ))),
        }
    }

    fn absorb(&mut self, resp: WatchResponse) -> Result<(), StoreError> {
        if resp.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: self.next,
                oldest: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            self.broken(&format!("cancelled by etcd: {}", resp.cancel_reason()));
            return Ok(());
        }
        for event in resp.events() {
            let kv = event.kv().ok_or_else(|| {
                StoreError::Invalid(format!(
                    "etcd watch event without key under {:?}",
                    self.prefix
                ))
            })?;
            self.pending.push_back(match event.event_type() {
                EventType::Put => WatchEvent::Put(convert(kv)?),
                EventType::Delete => WatchEvent::Delete {
                    key: key_str(kv)?.to_owned(),
                    mod_revision: kv.mod_revision(),
                },
            });
            self.next = self.next.max(kv.mod_revision() + 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_start_at_the_member_in_use_and_go_round() {
        let mut rounds = Rounds::new(1, 3);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rounds.next());
            rounds.record(Failure::Lost);
        }
        order.push(rounds.next());
        assert_eq!(
            order,
            [
                Step::Try(1),
                Step::Try(2),
                Step::Try(0),
                Step::After(BACKOFF_MIN, 1)
            ]
        );
    }

    #[test]
    fn rounds_give_up_when_no_member_could_be_reached() {
        let mut rounds = Rounds::new(0, 2);
        for _ in 0..2 {
            assert!(matches!(rounds.next(), Step::Try(_)));
            rounds.record(Failure::Unreachable);
        }
        assert_eq!(rounds.next(), Step::GiveUp);
    }

    #[test]
    fn rounds_back_off_longer_each_round() {
        let mut rounds = Rounds::new(0, 1);
        let mut pauses = Vec::new();
        for _ in 0..8 {
            if let Step::After(pause, _) = rounds.next() {
                pauses.push(pause);
            }
            rounds.record(Failure::NoLeader);
        }
        assert_eq!(pauses[..2], [BACKOFF_MIN, BACKOFF_MIN * 2]);
        assert_eq!(pauses.last(), Some(&BACKOFF_MAX));
    }

    #[test]
    fn etcd_transient_errors_are_told_apart() {
        let of = |status| Failure::of(&etcd_client::Error::GRpcStatus(status));
        assert_eq!(
            of(tonic::Status::unavailable("etcdserver: no leader")),
            Failure::NoLeader
        );
        assert_eq!(
            of(tonic::Status::unavailable(
                "etcdserver: request timed out, possibly due to previous leader failure"
            )),
            Failure::Lost
        );
        assert_eq!(of(tonic::Status::unknown("transport error")), Failure::Lost);
        assert_eq!(
            of(tonic::Status::not_found(
                "etcdserver: requested lease not found"
            )),
            Failure::Answered
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut client = Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .expect("lazy client");
        let error = client.get("k", None).await.expect_err("nothing listens");
        assert_eq!(Failure::of(&error), Failure::Unreachable, "{error:?}");
    }
}
