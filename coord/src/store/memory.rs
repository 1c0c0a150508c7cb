//! In-memory [`Store`] for local mode and fast tests, with etcd's revision, lease and watch
//! semantics: one store-wide revision, leases that expire on their own, and prefix watches that
//! replay a bounded history.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::{CasOutcome, KeyValue, LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};

/// Events kept for watches that start in the past or fall behind; older ones are compacted.
const HISTORY_EVENTS: usize = 10_000;
/// Bound on the keys and values held by the history, whatever their sizes.
const HISTORY_BYTES: usize = 64 << 20;
/// Live events buffered per watcher; one that falls further behind catches up from the history.
const LIVE_BUFFER: usize = 1_024;

/// An in-memory [`Store`]; clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the lease reaper: a new lease may expire before the one it sleeps on, or the store
    /// is gone.
    reaper_wake: Arc<Notify>,
    reaper: Once,
}

struct State {
    /// Revision of the last write; etcd starts an empty store at 1.
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<i64, Lease>,
    /// Lease deadlines in expiry order, so expiring is cheap on every call.
    deadlines: BTreeSet<(Instant, i64)>,
    next_lease: i64,
    /// The latest events, shared with the live buffer; `history[i]` has sequence number
    /// `history_start + i`. Sequence numbers (not revisions) mark a watcher's position because
    /// one lease expiry deletes several keys at a single revision, as in etcd.
    history: VecDeque<Arc<WatchEvent>>,
    history_start: u64,
    history_bytes: usize,
    /// Highest revision evicted from `history`: watching from it or earlier is compacted.
    compacted: Revision,
    /// The watchers following live events. An event goes only to those whose prefix it is
    /// under: local mode writes call counters and dialog records all the time, which must not
    /// wake the tenant and media-node watchers, nor push them behind their buffers.
    live: Vec<LiveWatch>,
}

/// Where a watcher of `prefix` receives live events, with their sequence numbers.
struct LiveWatch {
    prefix: String,
    events: mpsc::Sender<(u64, Arc<WatchEvent>)>,
    /// The sequence number of the first event its full buffer could not take: where it resumes
    /// from the history (what came between was under other prefixes).
    missed: Arc<AtomicU64>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: HashSet<String>,
}

impl MemoryStore {
    /// Live events a watcher may fall behind by before it catches up from the history.
    pub const WATCH_BUFFER: usize = LIVE_BUFFER;

    /// Creates an empty store.
    pub fn new() -> Self {
        let state = State {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_lease: 1,
            history: VecDeque::new(),
            history_start: 0,
            history_bytes: 0,
            compacted: 0,
            live: Vec::new(),
        };
        let inner = Inner {
            state: Mutex::new(state),
            reaper_wake: Arc::new(Notify::new()),
            reaper: Once::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Locks the state after expiring due leases, so no call observes an expired lease.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.inner.lock();
        state.expire(Instant::now());
        state
    }

    /// Starts the task that expires leases on time, so watchers see the deletions even when
    /// nothing else touches the store. Started lazily because `new` may run outside a runtime.
    fn start_reaper(&self) {
        self.inner.reaper.call_once(|| {
            tokio::spawn(reap(
                Arc::downgrade(&self.inner),
                self.inner.reaper_wake.clone(),
            ));
        });
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere: no method panics mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the reaper notice the store is gone instead of sleeping forever.
        self.reaper_wake.notify_one();
    }
}

/// Expires leases at their deadlines until the store is dropped.
async fn reap(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let mut state = inner.lock();
            state.expire(Instant::now());
            state.deadlines.first().map(|&(deadline, _)| deadline)
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl State {
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first()
            && deadline <= now
        {
            self.revoke(id);
        }
    }

    /// Removes a lease and deletes its keys at one revision, as etcd does; false if unknown.
    fn revoke(&mut self, id: i64) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        self.deadlines.remove(&(lease.deadline, id));
        if lease.keys.is_empty() {
            return true;
        }
        self.revision += 1;
        // Sorted like etcd, so every run emits the deletions in the same order.
        let keys: BTreeSet<String> = lease.keys.into_iter().collect();
        for key in keys {
            self.kvs.remove(&key);
            self.emit(WatchEvent::Delete {
                key,
                mod_revision: self.revision,
            });
        }
        true
    }

    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        if let Some(id) = lease
            && !self.leases.contains_key(&id.0)
        {
            return Err(StoreError::LeaseNotFound(id));
        }
        let revision = self.revision + 1;
        let create_revision = match self.kvs.get(key) {
            Some(old) => {
                let (old_lease, create_revision) = (old.lease, old.create_revision);
                self.detach(key, old_lease);
                create_revision
            }
            None => revision,
        };
        if let Some(id) = lease
            && let Some(lease) = self.leases.get_mut(&id.0)
        {
            lease.keys.insert(key.to_owned());
        }
        self.revision = revision;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision,
            mod_revision: revision,
            lease,
        };
        self.kvs.insert(key.to_owned(), kv.clone());
        self.emit(WatchEvent::Put(kv));
        Ok(revision)
    }

    fn delete(&mut self, key: &str) -> bool {
        let Some(old) = self.kvs.remove(key) else {
            return false;
        };
        self.detach(key, old.lease);
        self.revision += 1;
        self.emit(WatchEvent::Delete {
            key: key.to_owned(),
            mod_revision: self.revision,
        });
        true
    }

    /// Writes `entries` at one new revision.
    fn put_all(&mut self, entries: &[(String, Vec<u8>)]) -> Revision {
        let revision = self.revision + 1;
        for (key, value) in entries {
            let create_revision = match self.kvs.get(key.as_str()) {
                Some(old) => {
                    let (old_lease, create_revision) = (old.lease, old.create_revision);
                    self.detach(key, old_lease);
                    create_revision
                }
                None => revision,
            };
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision,
                mod_revision: revision,
                lease: None,
            };
            self.kvs.insert(key.clone(), kv.clone());
            self.emit(WatchEvent::Put(kv));
        }
        self.revision = revision;
        revision
    }

    /// Deletes those of `keys` that exist at one new revision (none when nothing existed).
    fn delete_all(&mut self, keys: &[String]) -> usize {
        let revision = self.revision + 1;
        let mut deleted = 0;
        for key in keys {
            let Some(old) = self.kvs.remove(key.as_str()) else {
                continue;
            };
            self.detach(key, old.lease);
            self.emit(WatchEvent::Delete {
                key: key.clone(),
                mod_revision: revision,
            });
            deleted += 1;
        }
        if deleted > 0 {
            self.revision = revision;
        }
        deleted
    }

    fn detach(&mut self, key: &str, lease: Option<LeaseId>) {
        if let Some(id) = lease
            && let Some(lease) = self.leases.get_mut(&id.0)
        {
            lease.keys.remove(key);
        }
    }

    fn emit(&mut self, event: WatchEvent) {
        let event = Arc::new(event);
        let seq = self.history_start + self.history.len() as u64;
        self.history_bytes += size_of_event(&event);
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY_EVENTS || self.history_bytes > HISTORY_BYTES {
            let Some(evicted) = self.history.pop_front() else {
                break;
            };
            self.history_start += 1;
            self.history_bytes -= size_of_event(&evicted);
            self.compacted = evicted.revision();
        }
        // A watcher gone is forgotten; one whose buffer is full too: its channel closes once
        // drained, and it catches up from the history, from the event it missed.
        let key = key_of(&event);
        self.live.retain(|watch| {
            if !key.starts_with(&watch.prefix) {
                return !watch.events.is_closed();
            }
            match watch.events.try_send((seq, event.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    watch.missed.store(seq, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// The history events under `prefix` from sequence number `seq` (skipping revisions before
    /// `from`), the sequence number after them, and a receiver for every later event under
    /// `prefix`. Taken under the lock, so nothing falls between the replay and the live events.
    fn follow(&mut self, prefix: &str, from: Revision, seq: u64) -> Result<Follow, StoreError> {
        let Some(skip) = seq.checked_sub(self.history_start) else {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        };
        let replay = self
            .history
            .iter()
            // `seq` never passes the end of the history, so `skip` fits.
            .skip(skip as usize)
            .filter(|event| event.revision() >= from && key_of(event).starts_with(prefix))
            .cloned()
            .collect();
        let next_seq = self.history_start + self.history.len() as u64;
        let (events, live) = mpsc::channel(LIVE_BUFFER);
        let missed = Arc::new(AtomicU64::new(0));
        // Watchers dropped since the last write under their prefix go here, not only in `emit`.
        self.live.retain(|watch| !watch.events.is_closed());
        self.live.push(LiveWatch {
            prefix: prefix.to_owned(),
            events,
            missed: missed.clone(),
        });
        Ok(Follow {
            replay,
            next_seq,
            live,
            missed,
        })
    }
}

struct Follow {
    replay: VecDeque<Arc<WatchEvent>>,
    next_seq: u64,
    live: mpsc::Receiver<(u64, Arc<WatchEvent>)>,
    missed: Arc<AtomicU64>,
}

/// One prefix watch: replays history, then follows live events.
struct Watcher {
    inner: Arc<Inner>,
    prefix: String,
    /// Events before this revision are skipped (a watch may start in the future); advanced to
    /// each delivered event's revision.
    from: Revision,
    follow: Follow,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.follow.replay.pop_front() {
                self.from = event.revision();
                return Some(Ok(Arc::unwrap_or_clone(event)));
            }
            match self.follow.live.recv().await {
                Some((seq, event)) => {
                    debug_assert!(
                        seq >= self.follow.next_seq,
                        "a channel only gets later events"
                    );
                    self.follow.next_seq = seq + 1;
                    if event.revision() >= self.from {
                        self.from = event.revision();
                        return Some(Ok(Arc::unwrap_or_clone(event)));
                    }
                }
                None => {
                    // Fell behind the live buffer (the store stops sending to a full one, and
                    // it never closes otherwise: this watcher holds it): catch up from the
                    // longer history, from the first event it missed.
                    let resume = self
                        .follow
                        .next_seq
                        .max(self.follow.missed.load(Ordering::Relaxed));
                    let follow = self.inner.lock().follow(&self.prefix, self.from, resume);
                    match follow {
                        Ok(follow) => self.follow = follow,
                        Err(error) => return Some(Err(error)),
                    }
                }
            }
        }
    }
}

fn size_of_event(event: &WatchEvent) -> usize {
    match event {
        WatchEvent::Put(kv) => kv.key.len() + kv.value.len(),
        WatchEvent::Delete { key, .. } => key.len(),
    }
}

fn key_of(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put(kv) => &kv.key,
        WatchEvent::Delete { key, .. } => key,
    }
}

fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::Invalid("empty key".into()));
    }
    Ok(())
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.state().kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let state = self.state();
        let kvs = state
            .kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((kvs, state.revision))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        self.state().put(key, value, lease)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        Ok(self.state().delete(key))
    }

    async fn put_all(&self, entries: &[(String, Vec<u8>)]) -> Result<Revision, StoreError> {
        super::check_batch(entries.iter().map(|(k, _)| k.as_str()))?;
        if entries.is_empty() {
            return Err(StoreError::Invalid("put_all of no entries".into()));
        }
        Ok(self.state().put_all(entries))
    }

    async fn delete_all(&self, keys: &[String]) -> Result<usize, StoreError> {
        super::check_batch(keys.iter().map(String::as_str))?;
        Ok(self.state().delete_all(keys))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Option<Vec<u8>>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        check_key(key)?;
        if expected < 0 {
            return Err(StoreError::Invalid(format!(
                "negative expected revision {expected} for {key}"
            )));
        }
        let mut state = self.state();
        let current = state.kvs.get(key);
        if current.map_or(0, |kv| kv.mod_revision) != expected {
            return Ok(CasOutcome::Conflict(current.cloned()));
        }
        let revision = match value {
            Some(value) => state.put(key, value, lease)?,
            // Deleting an absent key (expected 0) writes nothing, like an etcd txn.
            None => {
                state.delete(key);
                state.revision
            }
        };
        Ok(CasOutcome::Written(revision))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        self.start_reaper();
        let (id, first) = {
            let mut state = self.state();
            let id = state.next_lease;
            state.next_lease += 1;
            let deadline = Instant::now() + ttl;
            // The reaper sleeps until the first deadline: it needs waking only for an earlier one.
            let first = state.deadlines.first().is_none_or(|&(d, _)| deadline < d);
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline,
                    keys: HashSet::new(),
                },
            );
            state.deadlines.insert((deadline, id));
            (id, first)
        };
        if first {
            self.inner.reaper_wake.notify_one();
        }
        Ok(LeaseId(id))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.state();
        let State {
            leases, deadlines, ..
        } = &mut *state;
        let entry = leases
            .get_mut(&lease.0)
            .ok_or(StoreError::LeaseNotFound(lease))?;
        deadlines.remove(&(entry.deadline, lease.0));
        entry.deadline = Instant::now() + entry.ttl;
        deadlines.insert((entry.deadline, lease.0));
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        if self.state().revoke(lease.0) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if from < 0 {
            return Err(StoreError::Invalid(format!(
                "negative watch revision {from} for {prefix}"
            )));
        }
        let mut state = self.state();
        let from = if from == 0 { state.revision + 1 } else { from };
        let follow = if from <= state.compacted {
            Err(StoreError::Compacted {
                requested: from,
                oldest: state.compacted + 1,
            })
        } else {
            let seq =
                state.history_start + state.history.partition_point(|e| e.revision() < from) as u64;
            state.follow(prefix, from, seq)
        };
        drop(state);
        let watcher = match follow {
            Ok(follow) => Watcher {
                inner: self.inner.clone(),
                prefix: prefix.to_owned(),
                from,
                follow,
            },
            Err(error) => return Ok(futures::stream::once(async { Err(error) }).boxed()),
        };
        // The stream ends after its first error, as the trait promises for `Compacted`.
        Ok(
            futures::stream::unfold(Some(watcher), |watcher| async move {
                let mut watcher = watcher?;
                match watcher.next().await? {
                    Ok(event) => Some((Ok(event), Some(watcher))),
                    Err(error) => Some((Err(error), None)),
                }
            })
            .boxed(),
        )
    }
}
