//! Cluster-wide call counters, enforced through the store so every signalling instance sees the
//! same count.
//!
//! - **Concurrent calls** are slots: a counter with limit `n` is the keys `<prefix>0` … `<prefix>n-1`,
//!   and a call holds one by creating its key with compare-and-swap ("must not exist"). Two
//!   instances can never hold the same slot, so the limit holds without a global lock. Slot keys
//!   live under the holder's lease: an instance that dies takes its slots with it when the lease
//!   expires, so a count never leaks.
//! - **Calls per second** is a one-key window, `"<unix second> <count>"`, incremented by
//!   compare-and-swap and reset when the second changes. Instances take from it in chunks and
//!   spend them locally ([`RateWindows`]), so a busy tenant's window is not a hot spot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::store::{CasOutcome, LeaseId, Store, StoreError};

/// Random slots tried before listing what is taken: cheap while a counter is far from full.
const PROBES: usize = 4;
/// Counters this small (a user's few calls) get one probe before the listing: when such a counter
/// is busy it is often nearly full, where blind probes mostly miss and each miss is a round trip.
const SMALL_COUNTER: u32 = 16;
/// Attempts on a listed free slot before giving up under contention.
const ROUNDS: usize = 4;
/// Compare-and-swap attempts on a rate window before giving up under contention.
const RATE_ATTEMPTS: usize = 16;
/// A rate window is handed out in chunks of its limit divided by this (see [`RateWindows`]): at
/// most this many compare-and-swaps per second per instance on a busy window, and at most this
/// share of the limit left unspent by an instance when the second turns.
const RATE_CHUNK_DIVISOR: u32 = 32;
/// Longest random pause (ms) after losing a compare-and-swap race on a rate window.
const RATE_BACKOFF_MS: usize = 5;

/// A held concurrent-call slot; [`release`] it when the call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: String,
}

/// Takes a free slot of the counter under `prefix` for `holder` (a Call-ID), attached to `lease`;
/// `None` when all `limit` slots are held.
pub async fn acquire(
    store: &dyn Store,
    prefix: &str,
    limit: u32,
    holder: &str,
    lease: LeaseId,
) -> Result<Option<Slot>, StoreError> {
    if limit == 0 {
        return Ok(None);
    }
    let probes = if limit <= SMALL_COUNTER { 1 } else { PROBES };
    for _ in 0..probes {
        let index = random_below(limit as usize) as u32;
        if let Some(slot) = try_slot(store, prefix, index, holder, lease).await? {
            return Ok(Some(slot));
        }
    }
    for _ in 0..ROUNDS {
        let (held, _) = store.list(prefix).await?;
        let taken: HashSet<u32> = held
            .iter()
            .filter_map(|kv| slot_index(prefix, &kv.key))
            .collect();
        // Slots above a lowered limit still count until their calls end.
        if taken.len() >= limit as usize {
            return Ok(None);
        }
        let free: Vec<u32> = (0..limit).filter(|i| !taken.contains(i)).collect();
        if free.is_empty() {
            return Ok(None);
        }
        let index = free[random_below(free.len())];
        if let Some(slot) = try_slot(store, prefix, index, holder, lease).await? {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Frees a slot (a slot whose lease expired is already free).
pub async fn release(store: &dyn Store, slot: &Slot) -> Result<(), StoreError> {
    store.delete(&slot.key).await.map(drop)
}

/// Slots held under `prefix`.
pub async fn held(store: &dyn Store, prefix: &str) -> Result<usize, StoreError> {
    Ok(store.list(prefix).await?.0.len())
}

/// This instance's side of the calls-per-second windows. Tokens are taken from the shared window
/// in chunks (1/[`RATE_CHUNK_DIVISOR`] of the limit, at least one) and spent here, so a busy
/// window costs one compare-and-swap per chunk instead of one per call, and this instance's own
/// callers queue for the window instead of racing each other for it. The cluster-wide bound holds:
/// no more than the limit is ever taken from a window in one second; what an instance took and did
/// not spend lapses with the second. A window found full is remembered until the second turns.
#[derive(Debug, Default)]
pub struct RateWindows {
    windows: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Tokens>>>>,
}

/// The tokens this instance holds of one window.
#[derive(Debug, Default)]
struct Tokens {
    second: u64,
    left: u32,
    /// The shared window had nothing left for this second.
    full: bool,
}

impl RateWindows {
    /// Counts one call in the window at `key` for second `now`; `false` when `per_second` calls
    /// were already counted in that second. The window lives under `lease`, so a window whose
    /// writer died just starts again.
    pub async fn admit(
        &self,
        store: &dyn Store,
        key: &str,
        per_second: u32,
        now: u64,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        let window = self
            .windows
            .lock()
            .expect("rate windows lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let mut tokens = window.lock().await;
        // A caller that read the clock before waiting here counts in the newer second.
        let now = now.max(tokens.second);
        if tokens.second != now {
            *tokens = Tokens {
                second: now,
                ..Tokens::default()
            };
        }
        if tokens.left == 0 && !tokens.full {
            let chunk = per_second.div_ceil(RATE_CHUNK_DIVISOR).max(1);
            tokens.left = take_rate(store, key, per_second, chunk, now, lease).await?;
            tokens.full = tokens.left == 0;
        }
        if tokens.left == 0 {
            return Ok(false);
        }
        tokens.left -= 1;
        Ok(true)
    }
}

/// Takes up to `chunk` calls from the window at `key` for second `now` (at most what is left of
/// `per_second`); how many it got, 0 when the window is full.
async fn take_rate(
    store: &dyn Store,
    key: &str,
    per_second: u32,
    chunk: u32,
    now: u64,
    lease: LeaseId,
) -> Result<u32, StoreError> {
    for _ in 0..RATE_ATTEMPTS {
        let current = store.get(key).await?;
        let count = current
            .as_ref()
            .and_then(|kv| parse_window(&kv.value))
            .filter(|(second, _)| *second == now)
            .map_or(0, |(_, count)| count);
        let granted = chunk.min(per_second.saturating_sub(count));
        if granted == 0 {
            return Ok(0);
        }
        let expected = current.map_or(0, |kv| kv.mod_revision);
        let next = format!("{now} {}", count + granted).into_bytes();
        match store
            .compare_and_swap(key, expected, Some(next), Some(lease))
            .await?
        {
            CasOutcome::Written(_) => return Ok(granted),
            // Another writer got in first: wait a random moment so the racers spread out.
            CasOutcome::Conflict(_) => {
                let pause = Duration::from_millis(random_below(RATE_BACKOFF_MS) as u64);
                tokio::time::sleep(pause).await;
            }
        }
    }
    // Not a full window: too many writers at once. The caller hears "unavailable", not a
    // limit that was not reached.
    Err(StoreError::Unavailable(format!(
        "{key}: still contended after {RATE_ATTEMPTS} attempts"
    )))
}

async fn try_slot(
    store: &dyn Store,
    prefix: &str,
    index: u32,
    holder: &str,
    lease: LeaseId,
) -> Result<Option<Slot>, StoreError> {
    let key = format!("{prefix}{index}");
    let value = Some(holder.as_bytes().to_vec());
    Ok(
        match store.compare_and_swap(&key, 0, value, Some(lease)).await? {
            CasOutcome::Written(_) => Some(Slot { key }),
            CasOutcome::Conflict(_) => None,
        },
    )
}

/// The slot number of `key` under `prefix`.
fn slot_index(prefix: &str, key: &str) -> Option<u32> {
    key.strip_prefix(prefix)?.parse().ok()
}

/// `"<second> <count>"`.
fn parse_window(value: &[u8]) -> Option<(u64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (second, count) = text.split_once(' ')?;
    Some((second.parse().ok()?, count.parse().ok()?))
}

fn random_below(n: usize) -> usize {
    crate::random::below(n)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::MemoryStore;

    async fn lease(store: &MemoryStore) -> LeaseId {
        store.grant_lease(Duration::from_secs(60)).await.unwrap()
    }

    #[tokio::test]
    async fn a_counter_gives_out_exactly_its_limit_of_slots() {
        let store = MemoryStore::new();
        let lease = lease(&store).await;
        let mut slots = Vec::new();
        for call in 0..5 {
            let slot = acquire(&store, "/c/", 5, &format!("call-{call}"), lease).await;
            slots.push(slot.unwrap().expect("a free slot"));
        }
        assert_eq!(
            acquire(&store, "/c/", 5, "call-5", lease).await.unwrap(),
            None
        );
        release(&store, &slots[2]).await.unwrap();
        assert!(
            acquire(&store, "/c/", 5, "call-6", lease)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(held(&store, "/c/").await.unwrap(), 5);
    }

    #[tokio::test]
    async fn slots_of_a_holder_whose_lease_ends_are_free_again() {
        let store = MemoryStore::new();
        let dead = lease(&store).await;
        acquire(&store, "/c/", 1, "call-1", dead)
            .await
            .unwrap()
            .unwrap();
        store.revoke_lease(dead).await.unwrap();
        let alive = lease(&store).await;
        assert!(
            acquire(&store, "/c/", 1, "call-2", alive)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn slots_held_above_a_lowered_limit_still_count() {
        let store = MemoryStore::new();
        let lease = lease(&store).await;
        for call in 0..4 {
            acquire(&store, "/c/", 4, &format!("call-{call}"), lease)
                .await
                .unwrap();
        }
        assert_eq!(
            acquire(&store, "/c/", 2, "late", lease).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn the_rate_window_admits_its_limit_per_second_then_starts_again() {
        let store = MemoryStore::new();
        let lease = lease(&store).await;
        let windows = RateWindows::default();
        for _ in 0..3 {
            assert!(windows.admit(&store, "/r", 3, 100, lease).await.unwrap());
        }
        assert!(!windows.admit(&store, "/r", 3, 100, lease).await.unwrap());
        assert!(windows.admit(&store, "/r", 3, 101, lease).await.unwrap());
    }

    #[tokio::test]
    async fn a_busy_window_is_taken_in_chunks_and_a_full_one_is_not_asked_again() {
        let store = MemoryStore::new();
        let lease = lease(&store).await;
        let windows = RateWindows::default();
        let count = || async { parse_window(&store.get("/r").await.unwrap().unwrap().value) };
        // 64 per second: chunks of 2.
        assert!(windows.admit(&store, "/r", 64, 100, lease).await.unwrap());
        assert_eq!(count().await, Some((100, 2)));
        assert!(windows.admit(&store, "/r", 64, 100, lease).await.unwrap());
        assert_eq!(
            count().await,
            Some((100, 2)),
            "the second call spent the chunk"
        );
        assert!(windows.admit(&store, "/r", 64, 100, lease).await.unwrap());
        assert_eq!(count().await, Some((100, 4)));
        // Another instance fills the window; this one finds it full once, then stops asking.
        let other = RateWindows::default();
        while other.admit(&store, "/r", 64, 100, lease).await.unwrap() {}
        assert_eq!(count().await, Some((100, 64)));
        assert!(
            windows.admit(&store, "/r", 64, 100, lease).await.unwrap(),
            "its own token"
        );
        let revision = store.get("/r").await.unwrap().unwrap().mod_revision;
        for _ in 0..3 {
            assert!(!windows.admit(&store, "/r", 64, 100, lease).await.unwrap());
        }
        assert_eq!(
            store.get("/r").await.unwrap().unwrap().mod_revision,
            revision
        );
        assert!(windows.admit(&store, "/r", 64, 101, lease).await.unwrap());
    }

    #[test]
    fn a_slot_index_is_read_only_from_keys_under_the_prefix() {
        assert_eq!(slot_index("/c/", "/c/7"), Some(7));
        assert_eq!(slot_index("/c/", "/d/7"), None);
        assert_eq!(slot_index("/c/", "/c/x"), None);
    }
}
