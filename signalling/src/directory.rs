//! The directory: every compiled TenantSnapshot (found by SIP domain, or by one of its numbers)
//! and TrunkSnapshot (found by name, or by a carrier's source address), kept current by watches
//! on the store and swapped in whole so a lookup never sees half an update (and calls in
//! progress keep the snapshots they started with).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use centrex_coord::snapshot::{NumberEntry, SCHEMA_VERSION, TenantSnapshot, TrunkSnapshot};
use centrex_coord::{Store, StoreError, WatchEvent, keys};
use futures::StreamExt;
use serde::de::DeserializeOwned;

/// Tenants and trunks, as of one store revision each.
#[derive(Debug, Default, Clone)]
struct Index {
    by_key: HashMap<String, Arc<TenantSnapshot>>,
    by_domain: HashMap<String, Arc<TenantSnapshot>>,
    /// Trunks by `<namespace>/<name>`.
    trunks: HashMap<String, Arc<TrunkSnapshot>>,
}

impl Index {
    fn put(&mut self, key: String, snapshot: TenantSnapshot) {
        self.remove(&key);
        let snapshot = Arc::new(snapshot);
        self.by_domain
            .insert(snapshot.domain.clone(), snapshot.clone());
        self.by_key.insert(key, snapshot);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            // Only drop the domain entry if it still points at this tenant.
            if self
                .by_domain
                .get(&old.domain)
                .is_some_and(|s| Arc::ptr_eq(s, &old))
            {
                self.by_domain.remove(&old.domain);
            }
        }
    }

    fn put_trunk(&mut self, snapshot: TrunkSnapshot) {
        let name = trunk_name(&snapshot.source.namespace, &snapshot.source.name);
        self.trunks.insert(name, Arc::new(snapshot));
    }

    fn remove_trunk(&mut self, key: &str) {
        if let Some(name) = key.strip_prefix(&keys::trunks()) {
            self.trunks.remove(name);
        }
    }
}

fn trunk_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Shared, always-current view of the tenants.
#[derive(Clone, Default)]
pub struct Directory {
    index: Arc<RwLock<Arc<Index>>>,
}

impl Directory {
    /// The tenant whose SIP domain is `domain` (case-insensitive, as DNS names are).
    pub fn tenant(&self, domain: &str) -> Option<Arc<TenantSnapshot>> {
        let index = self.index.read().expect("directory lock").clone();
        index.by_domain.get(&domain.to_ascii_lowercase()).cloned()
    }

    /// The trunk `name` of `namespace`.
    pub fn trunk(&self, namespace: &str, name: &str) -> Option<Arc<TrunkSnapshot>> {
        let index = self.index.read().expect("directory lock").clone();
        index.trunks.get(&trunk_name(namespace, name)).cloned()
    }

    /// Every trunk, sorted by namespace and name.
    pub fn trunks(&self) -> Vec<Arc<TrunkSnapshot>> {
        let index = self.index.read().expect("directory lock").clone();
        let mut trunks: Vec<_> = index.trunks.values().cloned().collect();
        trunks.sort_by(|a, b| {
            (&a.source.namespace, &a.source.name).cmp(&(&b.source.namespace, &b.source.name))
        });
        trunks
    }

    /// The trunk whose carrier sends from `source` (one of its `inbound_sources` CIDRs).
    pub fn trunk_for_source(&self, source: IpAddr) -> Option<Arc<TrunkSnapshot>> {
        let index = self.index.read().expect("directory lock").clone();
        let mut trunks: Vec<_> = index.trunks.values().collect();
        // Deterministic when two trunks share a carrier: by namespace and name.
        trunks.sort_by(|a, b| {
            (&a.source.namespace, &a.source.name).cmp(&(&b.source.namespace, &b.source.name))
        });
        trunks
            .into_iter()
            .find(|t| {
                t.inbound_sources
                    .iter()
                    .any(|cidr| cidr_contains(cidr, source))
            })
            .cloned()
    }

    /// The tenant owning DID `number` (E.164) delivered by trunk `namespace/trunk`, with the
    /// number's entry.
    pub fn number(
        &self,
        namespace: &str,
        trunk: &str,
        number: &str,
    ) -> Option<(Arc<TenantSnapshot>, NumberEntry)> {
        let index = self.index.read().expect("directory lock").clone();
        index
            .by_key
            .values()
            .filter(|t| t.source.namespace == namespace)
            .find_map(|tenant| {
                let entry = tenant
                    .numbers
                    .iter()
                    .find(|n| n.number == number && n.trunk == trunk)?;
                Some((tenant.clone(), entry.clone()))
            })
    }

    /// Number of tenants served.
    pub fn len(&self) -> usize {
        self.index.read().expect("directory lock").by_key.len()
    }

    /// Whether no tenant is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update(&self, change: impl FnOnce(&mut Index)) {
        let mut guard = self.index.write().expect("directory lock");
        let mut next = Index::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Loads every tenant and trunk, then follows changes until the store streams end for good;
    /// re-lists after a compaction or an error, so the directory always converges on the store.
    pub async fn follow(&self, store: Arc<dyn Store>) {
        tokio::join!(
            self.follow_one(store.as_ref(), Kind::Tenants),
            self.follow_one(store.as_ref(), Kind::Trunks)
        );
    }

    async fn follow_one(&self, store: &dyn Store, kind: Kind) {
        loop {
            match self.sync(store, kind).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, ?kind, "directory out of sync; re-listing");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn sync(&self, store: &dyn Store, kind: Kind) -> Result<(), StoreError> {
        let prefix = kind.prefix();
        let (items, revision) = store.list(&prefix).await?;
        self.update(|index| {
            kind.clear(index);
            for kv in items {
                kind.put(index, kv.key, &kv.value);
            }
        });
        let mut changes = store.watch(&prefix, revision + 1).await?;
        while let Some(change) = changes.next().await {
            match change? {
                WatchEvent::Put(kv) => self.update(|index| kind.put(index, kv.key, &kv.value)),
                WatchEvent::Delete { key, .. } => self.update(|index| kind.remove(index, &key)),
            }
        }
        Ok(())
    }
}

/// The two collections the directory follows.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tenants,
    Trunks,
}

impl Kind {
    fn prefix(self) -> String {
        match self {
            Kind::Tenants => keys::tenants(),
            Kind::Trunks => keys::trunks(),
        }
    }

    fn clear(self, index: &mut Index) {
        match self {
            Kind::Tenants => {
                index.by_key.clear();
                index.by_domain.clear();
            }
            Kind::Trunks => index.trunks.clear(),
        }
    }

    fn put(self, index: &mut Index, key: String, value: &[u8]) {
        match self {
            Kind::Tenants => {
                if let Some(mut snapshot) = decode::<TenantSnapshot>(&key, value, |s| s.schema) {
                    snapshot.sort_users();
                    index.put(key, snapshot);
                }
            }
            Kind::Trunks => {
                if let Some(snapshot) = decode::<TrunkSnapshot>(&key, value, |s| s.schema) {
                    index.put_trunk(snapshot);
                }
            }
        }
    }

    fn remove(self, index: &mut Index, key: &str) {
        match self {
            Kind::Tenants => index.remove(key),
            Kind::Trunks => index.remove_trunk(key),
        }
    }
}

/// A snapshot from the store, or None (logged) when it is not one this version can read.
fn decode<T: DeserializeOwned>(key: &str, value: &[u8], schema: impl Fn(&T) -> u32) -> Option<T> {
    match serde_json::from_slice::<T>(value) {
        Ok(snapshot) if schema(&snapshot) == SCHEMA_VERSION => Some(snapshot),
        Ok(snapshot) => {
            tracing::warn!(
                key,
                schema = schema(&snapshot),
                "snapshot of another schema version ignored"
            );
            None
        }
        Err(error) => {
            tracing::warn!(key, %error, "unreadable snapshot ignored");
            None
        }
    }
}

/// Whether `cidr` (`a.b.c.d/n`, `x::/n`, or a bare address) contains `address`.
fn cidr_contains(cidr: &str, address: IpAddr) -> bool {
    let (network, bits) = match cidr.split_once('/') {
        Some((network, bits)) => (network, bits.parse::<u32>().ok()),
        None => (cidr, None),
    };
    let Ok(network) = network.trim().parse::<IpAddr>() else {
        return false;
    };
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod cidr_tests {
    use super::cidr_contains;

    #[test]
    fn a_source_matches_the_cidrs_that_contain_it() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(cidr_contains("192.0.2.0/24", ip("192.0.2.77")));
        assert!(!cidr_contains("192.0.2.0/24", ip("192.0.3.1")));
        assert!(cidr_contains("127.0.0.1", ip("127.0.0.1")));
        assert!(!cidr_contains("127.0.0.1", ip("127.0.0.2")));
        assert!(cidr_contains("0.0.0.0/0", ip("10.1.2.3")));
        assert!(cidr_contains("2001:db8::/32", ip("2001:db8::5")));
        assert!(!cidr_contains("2001:db8::/32", ip("192.0.2.1")));
        assert!(!cidr_contains("not-an-address/8", ip("10.0.0.1")));
    }
}
