//! Cluster-wide call counters, enforced through the store so every signalling instance sees the
//! same count.
//!
//! - **Concurrent calls** are slots: a counter with limit `n` is the keys `<prefix>0` … `<prefix>n-1`,
//!   and a call holds one by creating its key with compare-and-swap ("must not exist"). Two
//!   instances can never hold the same slot, so the limit holds without a global lock. Slot keys
//!   live under the holder's lease: an instance that dies takes its slots with it when the lease
//!   expires, so a count never leaks.
//! - **Calls per second** is a one-key window, `"<unix second> <count>"`, incremented by
//!   compare-and-swap and reset when the second changes.

use std::collections::HashSet;
use std::time::Duration;

use crate::store::{CasOutcome, LeaseId, Store, StoreError};

/// Random slots tried before listing what is taken: cheap while a counter is far from full.
const PROBES: usize = 4;
/// Attempts on a listed free slot before giving up under contention.
const ROUNDS: usize = 4;
/// Compare-and-swap attempts on a rate window before giving up under contention.
const RATE_ATTEMPTS: usize = 16;
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
    for _ in 0..PROBES {
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

/// Counts one call in the calls-per-second window at `key` for second `now`; `false` when
/// `per_second` calls were already counted in that second. The window lives under `lease`, so a
/// window whose writer died just starts again.
pub async fn admit_rate(
    store: &dyn Store,
    key: &str,
    per_second: u32,
    now: u64,
    lease: LeaseId,
) -> Result<bool, StoreError> {
    for _ in 0..RATE_ATTEMPTS {
        let current = store.get(key).await?;
        let count = current
            .as_ref()
            .and_then(|kv| parse_window(&kv.value))
            .filter(|(second, _)| *second == now)
            .map_or(0, |(_, count)| count);
        if count >= per_second {
            return Ok(false);
        }
        let expected = current.map_or(0, |kv| kv.mod_revision);
        let next = format!("{now} {}", count + 1).into_bytes();
        match store
            .compare_and_swap(key, expected, Some(next), Some(lease))
            .await?
        {
            CasOutcome::Written(_) => return Ok(true),
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
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    (u64::from_le_bytes(bytes) % n as u64) as usize
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
        for _ in 0..3 {
            assert!(admit_rate(&store, "/r", 3, 100, lease).await.unwrap());
        }
        assert!(!admit_rate(&store, "/r", 3, 100, lease).await.unwrap());
        assert!(admit_rate(&store, "/r", 3, 101, lease).await.unwrap());
    }

    #[test]
    fn a_slot_index_is_read_only_from_keys_under_the_prefix() {
        assert_eq!(slot_index("/c/", "/c/7"), Some(7));
        assert_eq!(slot_index("/c/", "/d/7"), None);
        assert_eq!(slot_index("/c/", "/c/x"), None);
    }
}
