//! The `Store` contract, written once and run against `MemoryStore` and a real etcd.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::store::{CasOutcome, EtcdStore, MAX_BATCH, MemoryStore};
use centrex_coord::{LeaseId, Revision, Store, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use support::Etcd;
use tokio::time::{Instant, sleep, timeout};

/// Upper bound on anything the tests wait for.
const DEADLINE: Duration = Duration::from_secs(10);
/// The shortest lease etcd grants with the harness's raft timings.
const SHORT_TTL: Duration = Duration::from_secs(1);

/// Runs each contract test against both stores: `memory::<test>` and `etcd::<test>`.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(Arc::new(MemoryStore::new())).await;
                }
            )*
        }
        mod etcd {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    let etcd = Etcd::start().await;
                    super::$test(Arc::new(etcd.store().await)).await;
                }
            )*
        }
    };
}

contract!(
    get_put_delete,
    revisions_are_store_wide,
    list_is_sorted_with_revision,
    cas_create_if_absent,
    cas_update_if_unchanged,
    cas_delete_if_unchanged,
    lease_expiry_deletes_keys,
    revoke_deletes_keys,
    keep_alive_extends_lease,
    keep_alive_after_expiry_is_lease_not_found,
    watch_sees_changes_under_prefix_only,
    watch_from_past_revision_replays,
    watch_resumes_without_gap_or_duplicate,
    watch_sees_lease_expiry_and_revocation,
    racing_callers_never_exceed_a_slot_limit,
    racing_callers_never_exceed_a_rate_window,
    batches_write_and_delete_at_one_revision,
);

async fn get_put_delete(store: Arc<dyn Store>) {
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    let r1 = store.put("/t/a", b"one".to_vec(), None).await.unwrap();
    let kv = store.get("/t/a").await.unwrap().expect("written key");
    assert_eq!(
        (kv.key.as_str(), kv.value.as_slice()),
        ("/t/a", &b"one"[..])
    );
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.lease),
        (r1, r1, None)
    );

    let r2 = store.put("/t/a", b"two".to_vec(), None).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get("/t/a").await.unwrap().expect("rewritten key");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"two"[..], r1, r2)
    );

    assert!(store.delete("/t/a").await.unwrap());
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    assert!(!store.delete("/t/a").await.unwrap());

    // Re-creating a deleted key starts a new create_revision.
    let r4 = store.put("/t/a", b"three".to_vec(), None).await.unwrap();
    let kv = store.get("/t/a").await.unwrap().expect("re-created key");
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));

    assert!(matches!(
        store.put("", vec![], None).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn batches_write_and_delete_at_one_revision(store: Arc<dyn Store>) {
    let before = store.put("/b/a", b"old".to_vec(), None).await.unwrap();
    let entries: Vec<(String, Vec<u8>)> = ["/b/a", "/b/b", "/b/c"]
        .iter()
        .map(|k| (k.to_string(), k.as_bytes().to_vec()))
        .collect();
    let written = store.put_all(&entries).await.unwrap();
    assert_eq!(written, before + 1, "one batch, one revision");
    let (kvs, revision) = store.list("/b/").await.unwrap();
    assert_eq!(revision, written);
    let seen: Vec<_> = kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision))
        .collect();
    assert_eq!(
        seen,
        [
            ("/b/a", &b"/b/a"[..], written),
            ("/b/b", &b"/b/b"[..], written),
            ("/b/c", &b"/b/c"[..], written),
        ]
    );
    assert_eq!(
        kvs[0].create_revision, before,
        "an overwritten key keeps its creation"
    );

    let gone = ["/b/a", "/b/c", "/b/absent"].map(String::from);
    assert_eq!(store.delete_all(&gone).await.unwrap(), 2);
    let (kvs, revision) = store.list("/b/").await.unwrap();
    assert_eq!(revision, written + 1, "one batch, one revision");
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/b/b"]
    );
    assert_eq!(store.delete_all(&gone).await.unwrap(), 0);
    assert_eq!(
        store.list("/b/").await.unwrap().1,
        written + 1,
        "nothing deleted, nothing written"
    );

    let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| format!("/b/{i}")).collect();
    assert!(matches!(
        store.delete_all(&too_many).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.put_all(&[(String::new(), vec![])]).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn revisions_are_store_wide(store: Arc<dyn Store>) {
    let r1 = store.put("/t/a", vec![1], None).await.unwrap();
    let r2 = store.put("/t/b", vec![2], None).await.unwrap();
    assert_eq!(r2, r1 + 1, "every write bumps one store-wide revision");
    // Deleting an absent key and a failed CAS write nothing.
    assert!(!store.delete("/t/absent").await.unwrap());
    assert!(matches!(
        store
            .compare_and_swap("/t/a", r2, Some(vec![]), None)
            .await
            .unwrap(),
        CasOutcome::Conflict(_)
    ));
    assert!(store.delete("/t/a").await.unwrap());
    let (_, revision) = store.list("/t/").await.unwrap();
    assert_eq!(revision, r2 + 1, "only the real delete bumped the revision");
}

async fn list_is_sorted_with_revision(store: Arc<dyn Store>) {
    for key in ["/l/c", "/l/a", "/other/x", "/l/b/deep", "/lz"] {
        store.put(key, key.as_bytes().to_vec(), None).await.unwrap();
    }
    let last = store.put("/other/y", vec![], None).await.unwrap();
    let (kvs, revision) = store.list("/l/").await.unwrap();
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/b/deep", "/l/c"]);
    assert!(kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    assert_eq!(
        revision, last,
        "list reports the store revision, not the newest key's"
    );

    let (kvs, revision) = store.list("/nothing/").await.unwrap();
    assert!(kvs.is_empty());
    assert_eq!(revision, last);
}

async fn cas_create_if_absent(store: Arc<dyn Store>) {
    let CasOutcome::Written(r1) = store
        .compare_and_swap("/c/k", 0, Some(b"first".to_vec()), None)
        .await
        .unwrap()
    else {
        panic!("create-if-absent on an absent key must write");
    };
    let kv = store.get("/c/k").await.unwrap().expect("created key");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"first"[..], r1));

    let outcome = store
        .compare_and_swap("/c/k", 0, Some(b"second".to_vec()), None)
        .await
        .unwrap();
    assert_eq!(outcome, CasOutcome::Conflict(Some(kv.clone())));
    assert_eq!(store.get("/c/k").await.unwrap(), Some(kv));
}

async fn cas_update_if_unchanged(store: Arc<dyn Store>) {
    let r1 = store.put("/c/k", b"v1".to_vec(), None).await.unwrap();
    let CasOutcome::Written(r2) = store
        .compare_and_swap("/c/k", r1, Some(b"v2".to_vec()), None)
        .await
        .unwrap()
    else {
        panic!("update-if-unchanged with the current revision must write");
    };
    assert!(r2 > r1);
    let current = store.get("/c/k").await.unwrap().expect("updated key");
    assert_eq!(
        (
            current.value.as_slice(),
            current.create_revision,
            current.mod_revision
        ),
        (&b"v2"[..], r1, r2)
    );

    let stale = store
        .compare_and_swap("/c/k", r1, Some(b"v3".to_vec()), None)
        .await
        .unwrap();
    assert_eq!(stale, CasOutcome::Conflict(Some(current.clone())));
    assert_eq!(store.get("/c/k").await.unwrap(), Some(current));

    let absent = store
        .compare_and_swap("/c/absent", r1, Some(vec![]), None)
        .await
        .unwrap();
    assert_eq!(absent, CasOutcome::Conflict(None));
    assert_eq!(store.get("/c/absent").await.unwrap(), None);
}

async fn cas_delete_if_unchanged(store: Arc<dyn Store>) {
    let r1 = store.put("/c/k", b"v1".to_vec(), None).await.unwrap();
    let r2 = store.put("/c/k", b"v2".to_vec(), None).await.unwrap();
    let stale = store
        .compare_and_swap("/c/k", r1, None, None)
        .await
        .unwrap();
    assert!(matches!(stale, CasOutcome::Conflict(Some(ref kv)) if kv.mod_revision == r2));
    assert!(store.get("/c/k").await.unwrap().is_some());

    let CasOutcome::Written(r3) = store
        .compare_and_swap("/c/k", r2, None, None)
        .await
        .unwrap()
    else {
        panic!("delete-if-unchanged with the current revision must delete");
    };
    assert!(r3 > r2);
    assert_eq!(store.get("/c/k").await.unwrap(), None);
}

async fn lease_expiry_deletes_keys(store: Arc<dyn Store>) {
    let lease = store.grant_lease(SHORT_TTL).await.unwrap();
    store.put("/l/leased", vec![1], Some(lease)).await.unwrap();
    let CasOutcome::Written(_) = store
        .compare_and_swap("/l/cas-leased", 0, Some(vec![2]), Some(lease))
        .await
        .unwrap()
    else {
        panic!("create-if-absent must write");
    };
    store.put("/l/plain", vec![3], None).await.unwrap();
    assert_eq!(
        store
            .get("/l/leased")
            .await
            .unwrap()
            .and_then(|kv| kv.lease),
        Some(lease)
    );

    eventually("leased keys to expire", || async {
        let (kvs, _) = store.list("/l/").await.unwrap();
        kvs.len() == 1
    })
    .await;
    assert!(
        store.get("/l/plain").await.unwrap().is_some(),
        "keys without the lease stay"
    );
    assert_lease_not_found(store.put("/l/late", vec![], Some(lease)).await, lease);
}

async fn revoke_deletes_keys(store: Arc<dyn Store>) {
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.put("/r/a", vec![], Some(lease)).await.unwrap();
    store.put("/r/b", vec![], Some(lease)).await.unwrap();
    // Re-putting without the lease detaches the key from it.
    store.put("/r/b", vec![], None).await.unwrap();

    store.revoke_lease(lease).await.unwrap();
    assert_eq!(store.get("/r/a").await.unwrap(), None);
    assert!(store.get("/r/b").await.unwrap().is_some());

    assert_lease_not_found(store.revoke_lease(lease).await, lease);
    assert_lease_not_found(store.put("/r/c", vec![], Some(lease)).await, lease);
    let unknown = LeaseId(0x7a11_0000_0000);
    assert_lease_not_found(store.put("/r/c", vec![], Some(unknown)).await, unknown);
}

async fn keep_alive_extends_lease(store: Arc<dyn Store>) {
    let lease = store.grant_lease(SHORT_TTL).await.unwrap();
    store.put("/k/alive", vec![], Some(lease)).await.unwrap();
    let until = Instant::now() + SHORT_TTL * 3;
    while Instant::now() < until {
        store.keep_alive(lease).await.unwrap();
        sleep(SHORT_TTL / 4).await;
    }
    assert!(
        store.get("/k/alive").await.unwrap().is_some(),
        "kept-alive key outlived three TTLs"
    );
    // And it was the keep-alives: once they stop, the key goes.
    eventually("the key to expire after keep-alives stop", || async {
        store.get("/k/alive").await.unwrap().is_none()
    })
    .await;
}

async fn keep_alive_after_expiry_is_lease_not_found(store: Arc<dyn Store>) {
    let lease = store.grant_lease(SHORT_TTL).await.unwrap();
    store.put("/k/leased", vec![], Some(lease)).await.unwrap();
    // Poll the key, not the lease: a keep-alive would extend it.
    eventually("the lease to expire", || async {
        store.get("/k/leased").await.unwrap().is_none()
    })
    .await;
    assert_lease_not_found(store.keep_alive(lease).await, lease);
}

async fn watch_sees_changes_under_prefix_only(store: Arc<dyn Store>) {
    let mut watch = store.watch("/w/", 0).await.unwrap();
    let r1 = store.put("/w/a", b"1".to_vec(), None).await.unwrap();
    store.put("/x/a", vec![], None).await.unwrap();
    store.put("/wz", vec![], None).await.unwrap();
    let r2 = store.delete_at("/w/a").await;
    // A later write under the prefix proves the writes outside it were skipped.
    let r3 = store.put("/w/b/c", b"2".to_vec(), None).await.unwrap();

    let events = take(&mut watch, 3).await;
    assert_eq!(
        summary(&events),
        [
            ("put", "/w/a", r1),
            ("delete", "/w/a", r2),
            ("put", "/w/b/c", r3)
        ]
    );
    let WatchEvent::Put(kv) = &events[0] else {
        unreachable!()
    };
    assert_eq!((kv.value.as_slice(), kv.create_revision), (&b"1"[..], r1));
}

async fn watch_from_past_revision_replays(store: Arc<dyn Store>) {
    let (_, start) = store.list("/w/").await.unwrap();
    let mut live = store.watch("/w/", 0).await.unwrap();
    let written = write_mix(&*store, "/w/", 6).await;
    let mut all = take(&mut live, written.len()).await;
    assert_eq!(summary(&all), as_summary(&written));

    // From the very start and from the middle: exactly the events at or after the revision.
    for from in [start + 1, all[3].revision()] {
        let mut replay = store.watch("/w/", from).await.unwrap();
        let expected: Vec<_> = all
            .iter()
            .filter(|e| e.revision() >= from)
            .cloned()
            .collect();
        assert_eq!(
            take(&mut replay, expected.len()).await,
            expected,
            "replay from {from}"
        );
        // Then it continues live.
        let r = store.put("/w/next", vec![], None).await.unwrap();
        let event = next(&mut replay).await;
        assert_eq!(
            summary(std::slice::from_ref(&event)),
            [("put", "/w/next", r)]
        );
        all.push(event);
    }
}

async fn watch_resumes_without_gap_or_duplicate(store: Arc<dyn Store>) {
    let (_, start) = store.list("/w/").await.unwrap();
    let mut reference = store.watch("/w/", start + 1).await.unwrap();
    let mut first = store.watch("/w/", start + 1).await.unwrap();
    let mut written = write_mix(&*store, "/w/", 10).await;

    let mut seen = take(&mut first, 4).await;
    drop(first);
    written.extend(write_mix(&*store, "/w/more-", 5).await);
    let mut second = store.watch("/w/", seen[3].revision() + 1).await.unwrap();
    seen.extend(take(&mut second, written.len() - 4).await);

    assert_eq!(seen, take(&mut reference, written.len()).await);
    assert_eq!(summary(&seen), as_summary(&written));
}

async fn watch_sees_lease_expiry_and_revocation(store: Arc<dyn Store>) {
    let mut watch = store.watch("/e/", 0).await.unwrap();
    let short = store.grant_lease(SHORT_TTL).await.unwrap();
    let long = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let r1 = store.put("/e/expires", vec![], Some(short)).await.unwrap();
    let r2 = store.put("/e/revoked", vec![], Some(long)).await.unwrap();
    assert_eq!(
        summary(&take(&mut watch, 2).await),
        [("put", "/e/expires", r1), ("put", "/e/revoked", r2)]
    );

    // Nothing else is written: the deletion comes from the expiry alone.
    // Nothing else is written, so the store revision after the event is the expiry's.
    let expired = next(&mut watch).await;
    let (_, r3) = store.list("/e/").await.unwrap();
    assert_eq!(summary(&[expired]), [("delete", "/e/expires", r3)]);
    assert!(r3 > r2);

    store.revoke_lease(long).await.unwrap();
    let (_, r4) = store.list("/e/").await.unwrap();
    assert_eq!(
        summary(&[next(&mut watch).await]),
        [("delete", "/e/revoked", r4)]
    );
}

mod memory_only {
    use super::*;

    /// More writes than the memory store's history (10,000 events).
    const BEYOND_HISTORY: usize = 10_100;

    #[tokio::test]
    async fn watch_older_than_history_is_compacted() {
        let store = MemoryStore::new();
        let first = store.put("/h/k", vec![], None).await.unwrap();
        for _ in 1..BEYOND_HISTORY {
            store.put("/h/k", vec![], None).await.unwrap();
        }
        let mut watch = store.watch("/h/", first).await.unwrap();
        let (requested, oldest) = compacted(&mut watch).await;
        assert_eq!(requested, first);
        assert!(oldest > first);
        // The retained history still replays.
        let (_, now) = store.list("/h/").await.unwrap();
        let mut recent = store.watch("/h/", now - 100).await.unwrap();
        assert_eq!(
            take(&mut recent, 101)
                .await
                .last()
                .map(WatchEvent::revision),
            Some(now)
        );
    }

    #[tokio::test]
    async fn slow_watcher_catches_up_from_history() {
        let store = MemoryStore::new();
        let mut watch = store.watch("/s/", 0).await.unwrap();
        // Far more than the live buffer, less than the history: nothing may be lost.
        let mut revisions = Vec::new();
        for i in 0..5_000 {
            revisions.push(
                store
                    .put(&format!("/s/{}", i % 7), vec![], None)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(revisions_of(&mut watch, revisions.len()).await, revisions);
    }

    #[tokio::test]
    async fn writes_under_other_prefixes_neither_reach_nor_compact_a_watcher() {
        let store = MemoryStore::new();
        let mut tenants = store.watch("/t/", 0).await.unwrap();
        // The tenant watcher, busy, has just filled its live buffer.
        let mut written = Vec::new();
        for i in 0..MemoryStore::WATCH_BUFFER {
            written.push(
                store
                    .put(&format!("/t/{}", i % 5), vec![1], None)
                    .await
                    .unwrap(),
            );
        }
        // Call counters churn past the whole history; then the tenant changes again.
        for i in 0..BEYOND_HISTORY {
            store
                .put(&format!("/calls/{}", i % 13), vec![], None)
                .await
                .unwrap();
        }
        written.push(store.put("/t/acme", vec![2], None).await.unwrap());
        // Every tenant event arrives: the churn was under another prefix.
        assert_eq!(revisions_of(&mut tenants, written.len()).await, written);
        let later = store.put("/t/acme", vec![3], None).await.unwrap();
        assert_eq!(next(&mut tenants).await.revision(), later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_lease_granted_after_a_longer_one_expires_on_time() {
        let store = MemoryStore::new();
        let long = store.grant_lease(Duration::from_secs(600)).await.unwrap();
        store.put("/l/long", vec![], Some(long)).await.unwrap();
        let short = store.grant_lease(Duration::from_secs(2)).await.unwrap();
        store.put("/l/short", vec![], Some(short)).await.unwrap();
        let mut watch = store.watch("/l/", 0).await.unwrap();
        // Nothing touches the store from here: only its reaper can expire the lease.
        let expired = timeout(Duration::from_secs(5), next(&mut watch))
            .await
            .expect("the short lease expires within its TTL, not the long one's");
        assert!(matches!(expired, WatchEvent::Delete { ref key, .. } if key == "/l/short"));
    }

    #[tokio::test]
    async fn watcher_behind_history_is_compacted() {
        let store = MemoryStore::new();
        let mut watch = store.watch("/s/", 0).await.unwrap();
        let mut written = Vec::new();
        // Twice the history: past it even counting what the watcher's live buffer holds.
        for _ in 0..2 * BEYOND_HISTORY {
            written.push(store.put("/s/k", vec![], None).await.unwrap());
        }
        // What its live buffer held arrives in order; then the gap is reported, never skipped.
        let mut seen = Vec::new();
        loop {
            match timeout(DEADLINE, watch.next()).await {
                Ok(Some(Ok(event))) => seen.push(event.revision()),
                Ok(Some(Err(StoreError::Compacted { .. }))) => break,
                other => panic!("expected events, then Compacted; got {other:?}"),
            }
        }
        assert!(seen.len() < written.len());
        assert_eq!(seen, written[..seen.len()]);
        assert!(
            watch.next().await.is_none(),
            "the stream ends after Compacted"
        );
    }
}

mod etcd_only {
    use super::*;

    #[tokio::test]
    async fn watch_survives_server_restart() {
        let mut etcd = Etcd::start().await;
        let store = etcd.store().await;
        let mut watch = store.watch("/w/", 0).await.unwrap();
        let before = write_mix(&store, "/w/", 4).await;
        assert_eq!(summary(&take(&mut watch, 4).await), as_summary(&before));

        etcd.stop();
        etcd.restart().await;
        // Wait until this client reaches the new server before writing: a write retried after
        // a transport error might have been applied, duplicating an event.
        eventually("the client to reconnect", || async {
            store.list("/w/").await.is_ok()
        })
        .await;
        let after = write_mix(&store, "/w/after-", 4).await;
        let sentinel = store.put("/w/sentinel", vec![], None).await.unwrap();

        let events = take(&mut watch, 5).await;
        let mut expected = as_summary(&after);
        expected.push(("put", "/w/sentinel", sentinel));
        assert_eq!(
            summary(&events),
            expected,
            "the same stream delivers each later event exactly once"
        );
    }

    #[tokio::test]
    async fn watch_from_compacted_revision_is_compacted() {
        let etcd = Etcd::start().await;
        let store = etcd.store().await;
        let first = store.put("/w/k", vec![], None).await.unwrap();
        let last = store.put("/w/k", vec![], None).await.unwrap();
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .unwrap();
        client.compact(last, None).await.unwrap();

        let mut watch = store.watch("/w/", first).await.unwrap();
        assert_eq!(compacted(&mut watch).await, (first, last));
    }

    #[tokio::test]
    async fn connect_without_server_is_unavailable() {
        let [port, _] = support::free_ports();
        let endpoint = format!("http://127.0.0.1:{port}");
        match timeout(
            DEADLINE * 2,
            EtcdStore::connect(std::slice::from_ref(&endpoint)),
        )
        .await
        {
            Ok(Err(StoreError::Unavailable(message))) => {
                assert!(message.contains(&endpoint), "{message}")
            }
            Ok(other) => panic!("expected Unavailable, got {:?}", other.map(|_| "a store")),
            Err(_) => panic!("connect did not give up"),
        }
    }
}

/// Polls `check` until it holds, failing the test after `DEADLINE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// The next watch event, failing the test on an error, the end, or `DEADLINE`.
async fn next(watch: &mut WatchStream) -> WatchEvent {
    match timeout(DEADLINE, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {DEADLINE:?}"),
    }
}

/// Expects the watch to fail with `Compacted` and end; returns (requested, oldest).
async fn compacted(watch: &mut WatchStream) -> (Revision, Revision) {
    match timeout(DEADLINE, watch.next()).await {
        Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
            assert!(
                watch.next().await.is_none(),
                "the stream ends after Compacted"
            );
            (requested, oldest)
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
}

fn assert_lease_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, lease: LeaseId) {
    match result {
        Err(StoreError::LeaseNotFound(l)) if l == lease => {}
        other => panic!("expected LeaseNotFound({lease:?}), got {other:?}"),
    }
}

/// The revisions of the next `n` events.
async fn revisions_of(watch: &mut WatchStream, n: usize) -> Vec<Revision> {
    take(watch, n)
        .await
        .iter()
        .map(WatchEvent::revision)
        .collect()
}

async fn take(watch: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next(watch).await);
    }
    events
}

/// A watch event as (kind, key, revision).
type Summary<'a> = (&'static str, &'a str, Revision);
/// A write as the watch must report it.
type Written = (&'static str, String, Revision);

fn summary(events: &[WatchEvent]) -> Vec<Summary<'_>> {
    events
        .iter()
        .map(|event| match event {
            WatchEvent::Put(kv) => ("put", kv.key.as_str(), kv.mod_revision),
            WatchEvent::Delete { key, mod_revision } => ("delete", key.as_str(), *mod_revision),
        })
        .collect()
}

fn as_summary(written: &[Written]) -> Vec<Summary<'_>> {
    written
        .iter()
        .map(|(kind, key, revision)| (*kind, key.as_str(), *revision))
        .collect()
}

/// Writes `n` changes under `prefix` (puts, with every third deleting the previous key) and
/// returns what a watch must report for them.
async fn write_mix(store: &dyn Store, prefix: &str, n: usize) -> Vec<Written> {
    let mut written = Vec::with_capacity(n);
    for i in 0..n {
        if i % 3 == 2 {
            let key = format!("{prefix}{}", i - 1);
            written.push(("delete", key.clone(), store.delete_at(&key).await));
        } else {
            let key = format!("{prefix}{i}");
            written.push((
                "put",
                key.clone(),
                store.put(&key, vec![i as u8], None).await.unwrap(),
            ));
        }
    }
    written
}

/// `delete` reports only whether the key existed; the tests also need the revision it
/// happened at, which is the store revision right after.
trait DeleteAt {
    async fn delete_at(&self, key: &str) -> Revision;
}

impl<S: Store + ?Sized> DeleteAt for S {
    async fn delete_at(&self, key: &str) -> Revision {
        assert!(self.delete(key).await.unwrap(), "{key} existed");
        self.list(key).await.unwrap().1
    }
}

/// Many calls racing for 5 slots, half through a second client of the same store (two
/// signalling instances): exactly 5 win.
async fn racing_callers_never_exceed_a_slot_limit(store: Arc<dyn Store>) {
    use centrex_coord::calls;
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let attempts = (0..20).map(|call| {
        let store = store.clone();
        tokio::spawn(async move {
            calls::acquire(&*store, "/race/", 5, &format!("call-{call}"), lease).await
        })
    });
    let won = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().as_ref().unwrap().is_some())
        .count();
    assert_eq!(won, 5);
    assert_eq!(calls::held(&*store, "/race/").await.unwrap(), 5);
}

/// Two instances with twenty callers each racing for a window of 7 per second: at most 7 are
/// admitted in that second, and the window is not left unused.
async fn racing_callers_never_exceed_a_rate_window(store: Arc<dyn Store>) {
    use centrex_coord::calls::RateWindows;
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let instances = [
        Arc::new(RateWindows::default()),
        Arc::new(RateWindows::default()),
    ];
    let attempts = (0..40).map(|i| {
        let (store, windows) = (store.clone(), instances[i % 2].clone());
        tokio::spawn(async move { windows.admit(&*store, "/rate", 7, 42, lease).await })
    });
    let admitted = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap().as_ref().unwrap())
        .count();
    // Chunks of one for a limit this small: every token taken is spent.
    assert_eq!(admitted, 7);
}
