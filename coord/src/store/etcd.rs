//! [`Store`] on an etcd v3 cluster through `etcd-client`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use tokio::time::timeout;

use super::{CasOutcome, KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};

/// Bound on establishing a connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request (and on opening a watch), so a hung cluster surfaces as `Unavailable`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on open streams: a silently dead connection breaks an idle watch so it
/// reconnects, instead of waiting forever.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Watch reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A [`Store`] on etcd; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The endpoints, comma-separated, for error messages.
    endpoints: Arc<str>,
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://etcd:2379`) and checks that the cluster answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let joined: Arc<str> = endpoints.join(",").into();
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT);
        let client = timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "etcd at {joined}: no connection within {CONNECT_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| StoreError::Unavailable(format!("etcd at {joined}: connect: {e}")))?;
        let store = Self {
            client,
            endpoints: joined,
        };
        // The channel connects lazily: ask for the status so a wrong endpoint fails here, at
        // startup, rather than on first use.
        store
            .call("status", "", None, |mut c| async move { c.status().await })
            .await?;
        Ok(store)
    }

    /// Runs one request with a fresh handle on the shared connection, bounded by
    /// `REQUEST_TIMEOUT`, mapping errors with the operation and key they concern.
    async fn call<T, F, Fut>(
        &self,
        op: &str,
        key: &str,
        lease: Option<LeaseId>,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match timeout(REQUEST_TIMEOUT, f(self.client.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(map_error(&self.endpoints, op, key, lease, error)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {}: {}: no answer within {REQUEST_TIMEOUT:?}",
                self.endpoints,
                subject(op, key, lease)
            ))),
        }
    }
}

fn map_error(
    endpoints: &str,
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
            "etcd at {endpoints}: {}: {error}",
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
            .await?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let resp = self
            .call("list", prefix, None, |mut c| async move {
                c.get(prefix, Some(options)).await
            })
            .await?;
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
            .call("put", key, lease, |mut c| async move {
                c.put(key, value, options).await
            })
            .await?;
        revision(resp.header(), "put")
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let resp = self
            .call("delete", key, None, |mut c| async move {
                c.delete(key, None).await
            })
            .await?;
        Ok(resp.deleted() > 0)
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
        let resp = self
            .call("compare-and-swap", key, lease, |mut c| async move {
                c.txn(txn).await
            })
            .await?;
        if resp.succeeded() {
            return Ok(CasOutcome::Written(revision(resp.header(), "txn")?));
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
        let resp = self
            .call("grant lease", "", None, |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd at {}: grant lease: {}",
                self.endpoints,
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
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call("revoke lease", "", Some(lease), |mut c| async move {
            c.lease_revoke(lease.0).await
        })
        .await?;
        Ok(())
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

    /// Starts an etcd watch from `next` and waits for its creation.
    async fn open(&mut self) -> Result<(), StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next);
        let prefix = self.prefix.clone();
        let mut stream = self
            .store
            .call("watch", &self.prefix, None, |mut c| async move {
                c.watch(prefix, Some(options)).await
            })
            .await?;
        let created = self
            .store
            .call("watch", &self.prefix, None, |_| async {
                stream.message().await
            })
            .await?;
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
                self.store.endpoints, self.prefix
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
