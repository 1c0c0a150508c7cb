//! A three-member etcd cluster loses a member without effect on the store's callers: requests,
//! kept-alive leases and watches carry on through the other two members, and the lost member
//! rejoins. Each test prints the slowest store call it saw while a member was down.

use std::time::Duration;

use centrex_coord::store::{CasOutcome, EtcdStore};
use centrex_coord::testing::{EtcdCluster, PATIENCE, Stop};
use centrex_coord::{Store, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use tokio::time::{Instant, interval, timeout};

/// Lease TTL for the keep-alive test: etcd's minimum with its default raft timings is 2 s.
const TTL: Duration = Duration::from_secs(3);

/// A store that talks to `member` first (it prefers the first endpoint it is given).
async fn store_using(cluster: &EtcdCluster, member: usize) -> EtcdStore {
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(member);
    let store = EtcdStore::connect(&endpoints)
        .await
        .expect("connect to the cluster");
    assert_eq!(store.current_endpoint(), cluster.endpoint(member));
    store
}

/// A member other than `member`.
fn other_than(member: usize) -> usize {
    (member + 1) % EtcdCluster::SIZE
}

/// The slowest of a set of timed calls.
#[derive(Debug, Default)]
struct Slowest {
    what: String,
    took: Duration,
}

impl Slowest {
    /// Runs `call`, failing the test on an error, and remembers it if it was the slowest yet.
    async fn time<T>(
        &mut self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> T {
        let start = Instant::now();
        let result = call.await;
        let took = start.elapsed();
        if took > self.took {
            *self = Slowest {
                what: what.to_owned(),
                took,
            };
        }
        result.unwrap_or_else(|error| panic!("{what} failed after {took:?}: {error}"))
    }

    fn report(&self, scenario: &str) {
        eprintln!(
            "{scenario}: slowest store call {:?} took {:?}",
            self.what, self.took
        );
    }
}

/// One of each request under `prefix`, each of which must succeed at once with the expected
/// result. The compare-and-swap comes first: the first request after a loss is the one that
/// may lose its first attempt, and a compare-and-swap is the hardest to repeat.
async fn every_request(store: &EtcdStore, prefix: &str, slowest: &mut Slowest) {
    let slot = format!("{prefix}slot");
    let CasOutcome::Written(created) = slowest
        .time(
            "compare-and-swap create",
            store.compare_and_swap(&slot, 0, Some(b"mine".to_vec()), None),
        )
        .await
    else {
        panic!("creating {slot} conflicted");
    };
    let updated = slowest
        .time(
            "compare-and-swap update",
            store.compare_and_swap(&slot, created, Some(b"still mine".to_vec()), None),
        )
        .await;
    assert!(matches!(updated, CasOutcome::Written(r) if r > created));

    let key = format!("{prefix}key");
    let written = slowest
        .time("put", store.put(&key, b"one".to_vec(), None))
        .await;
    let read = slowest.time("get", store.get(&key)).await;
    assert_eq!(read.map(|kv| kv.mod_revision), Some(written));

    let (listed, _) = slowest.time("list", store.list(prefix)).await;
    assert_eq!(listed.len(), 2);
    assert!(slowest.time("delete", store.delete(&key)).await);
}

#[tokio::test]
async fn requests_carry_on_when_the_member_in_use_is_killed() {
    let mut cluster = EtcdCluster::start().await;
    let leader = cluster.leader().await;
    let victim = other_than(leader);
    let store = store_using(&cluster, victim).await;
    every_request(&store, "/before/", &mut Slowest::default()).await;

    cluster.stop(victim, Stop::Kill).await;
    let mut slowest = Slowest::default();
    every_request(&store, "/after/", &mut slowest).await;
    slowest.report("follower in use killed");
    assert_ne!(store.current_endpoint(), cluster.endpoint(victim));
}

#[tokio::test]
async fn requests_carry_on_when_the_leader_in_use_is_killed() {
    let mut cluster = EtcdCluster::start().await;
    let leader = cluster.leader().await;
    let store = store_using(&cluster, leader).await;
    every_request(&store, "/before/", &mut Slowest::default()).await;

    cluster.stop(leader, Stop::Kill).await;
    let mut slowest = Slowest::default();
    every_request(&store, "/after/", &mut slowest).await;
    slowest.report("leader in use killed");
}

#[tokio::test]
async fn requests_carry_on_when_the_leader_elsewhere_is_killed() {
    let mut cluster = EtcdCluster::start().await;
    let leader = cluster.leader().await;
    let store = store_using(&cluster, other_than(leader)).await;
    every_request(&store, "/before/", &mut Slowest::default()).await;

    cluster.stop(leader, Stop::Kill).await;
    let mut slowest = Slowest::default();
    every_request(&store, "/after/", &mut slowest).await;
    slowest.report("leader not in use killed");
}

#[tokio::test]
async fn a_kept_alive_lease_outlives_the_loss_of_the_leader() {
    let mut cluster = EtcdCluster::start().await;
    let leader = cluster.leader().await;
    let store = store_using(&cluster, leader).await;
    let lease = store.grant_lease(TTL).await.unwrap();
    let granted = store.put("/leased/key", vec![], Some(lease)).await.unwrap();

    // Keep the lease alive as `KeptLease` does (every third of the TTL) through the loss and
    // for three TTLs after it: without the keep-alives the key would be gone twice over.
    cluster.stop(leader, Stop::Kill).await;
    let mut slowest = Slowest::default();
    let mut ticks = interval(TTL / 3);
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        ticks.tick().await;
        slowest.time("keep-alive", store.keep_alive(lease)).await;
    }
    slowest.report("keep-alive through a leader loss");

    let kv = store.get("/leased/key").await.unwrap();
    assert_eq!(
        kv.map(|kv| (kv.create_revision, kv.lease)),
        Some((granted, Some(lease))),
        "the leased key never expired"
    );
}

/// The next `n` events, failing the test on an error, the end, or [`PATIENCE`].
async fn take(watch: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let events = timeout(PATIENCE, watch.by_ref().take(n).collect::<Vec<_>>())
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} watch events within {PATIENCE:?}"));
    assert_eq!(events.len(), n, "the watch ended");
    events
        .into_iter()
        .map(|event| event.expect("watch event"))
        .collect()
}

/// The key and revision of each put, in order.
fn puts(events: &[WatchEvent]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|event| match event {
            WatchEvent::Put(kv) => (kv.key.clone(), kv.mod_revision),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_watch_carries_on_when_the_member_it_reads_from_is_killed() {
    let mut cluster = EtcdCluster::start().await;
    let leader = cluster.leader().await;
    // The watch's stream is on the member the store uses: the leader, the harder case.
    let store = store_using(&cluster, leader).await;
    let mut watch = store.watch("/w/", 0).await.unwrap();
    let mut written = Vec::new();
    for i in 0..3 {
        let key = format!("/w/before-{i}");
        written.push((key.clone(), store.put(&key, vec![], None).await.unwrap()));
    }
    let mut seen = puts(&take(&mut watch, 3).await);

    cluster.stop(leader, Stop::Kill).await;
    let lost = Instant::now();
    for i in 0..3 {
        let key = format!("/w/after-{i}");
        written.push((key.clone(), store.put(&key, vec![], None).await.unwrap()));
    }
    seen.extend(puts(&take(&mut watch, 3).await));
    eprintln!(
        "watch through a leader loss: the last event arrived {:?} after the loss",
        lost.elapsed()
    );
    assert_eq!(seen, written, "every event once, in order");
}

#[tokio::test]
async fn a_killed_member_rejoins_with_what_it_missed() {
    let mut cluster = EtcdCluster::start().await;
    let victim = cluster.leader().await;
    let store = cluster.store().await;
    cluster.stop(victim, Stop::Kill).await;
    let missed = store.put("/missed", b"x".to_vec(), None).await.unwrap();

    cluster.restart(victim).await;
    let alone = EtcdStore::connect(&[cluster.endpoint(victim)])
        .await
        .unwrap();
    let kv = alone.get("/missed").await.unwrap();
    assert_eq!(kv.map(|kv| kv.mod_revision), Some(missed));

    // It votes again: with another member gone, the quorum needs it.
    cluster.stop(other_than(victim), Stop::Kill).await;
    let mut slowest = Slowest::default();
    every_request(&store, "/rejoined/", &mut slowest).await;
    slowest.report("second member lost after the first rejoined");
}

#[tokio::test]
async fn a_rolling_restart_goes_unnoticed() {
    let mut cluster = EtcdCluster::start().await;
    let store = cluster.store().await;
    let mut slowest = Slowest::default();
    for member in 0..EtcdCluster::SIZE {
        cluster.stop(member, Stop::Terminate).await;
        every_request(&store, &format!("/rolling-{member}/"), &mut slowest).await;
        cluster.restart(member).await;
    }
    slowest.report("rolling restart (SIGTERM each member in turn)");
}
