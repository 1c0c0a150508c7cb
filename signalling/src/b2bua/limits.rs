//! Licence and trunk limits, enforced cluster-wide through counters in the coordination store
//! (`centrex_coord::calls`): a user's concurrent calls, a tenant's concurrent calls and calls per
//! second, a trunk's channels and calls per second. Every counter a call takes is lease-bound
//! and released when the call ends, so a crashed instance never leaks one.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centrex_coord::calls::{self, RateWindows, Slot};
use centrex_coord::lease::KeptLease;
use centrex_coord::snapshot::{TenantSnapshot, TrunkSnapshot, UserEntry};
use centrex_coord::{Store, StoreError, keys};

use crate::sip::StatusCode;

/// Longest wait for the store while admitting a call: an unreachable store gives a prompt 503,
/// not an INVITE left hanging.
const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// `operation`, or `Unavailable` when the store does not answer within [`STORE_DEADLINE`].
async fn within<T>(
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_DEADLINE, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {STORE_DEADLINE:?}"
            )))
        })
}

/// Why a call was not admitted: the SIP answer and its reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("caller is at their concurrent-call limit")]
    CallerBusy,
    #[error("tenant concurrent-call limit reached")]
    TenantConcurrent,
    #[error("tenant calls-per-second limit reached")]
    TenantRate,
    #[error("trunk channels all in use")]
    TrunkChannels,
    #[error("trunk calls-per-second limit reached")]
    TrunkRate,
    #[error("call counters unavailable")]
    StoreUnavailable,
}

impl Refusal {
    /// 486 when a person is busy; 503 when the platform or a licence is at its limit.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::CallerBusy => StatusCode::BUSY_HERE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the caller should retry a little later (a rate, not a capacity).
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, Refusal::TenantRate | Refusal::TrunkRate).then_some(1)
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "call counters unavailable");
        Refusal::StoreUnavailable
    }
}

/// Counters a call (or one of its branches) holds; given back with [`Limits::release`].
#[derive(Debug, Default)]
pub struct Held {
    slots: Vec<Slot>,
}

impl Held {
    fn push(&mut self, slot: Slot) {
        self.slots.push(slot);
    }

    /// Takes the other's counters over.
    pub fn absorb(&mut self, other: Held) {
        self.slots.extend(other.slots);
    }

    /// The keys of the slots held (what a dialog record keeps for whoever takes the call over).
    pub fn keys(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.key.clone()).collect()
    }
}

/// The counters of one signalling instance, under its kept lease.
pub struct Limits {
    store: Arc<dyn Store>,
    lease: Arc<KeptLease>,
    rates: RateWindows,
}

impl Limits {
    pub fn new(store: Arc<dyn Store>, lease: Arc<KeptLease>) -> Self {
        Self {
            store,
            lease,
            rates: RateWindows::default(),
        }
    }

    /// Admits a new call of `tenant`: its calls-per-second window, its concurrent calls and,
    /// when the caller is one of its users, the caller's own concurrent calls.
    pub async fn admit(
        &self,
        tenant: &TenantSnapshot,
        caller: Option<&UserEntry>,
        call_id: &str,
    ) -> Result<Held, Refusal> {
        let lease = within(self.lease.get()).await?;
        let store = self.store.as_ref();
        let rate = keys::tenant_rate(&tenant.domain);
        let per_second = tenant.limits.calls_per_second;
        if !within(self.rates.admit(store, &rate, per_second, now(), lease)).await? {
            return Err(Refusal::TenantRate);
        }
        let mut held = Held::default();
        if let Some(user) = caller {
            match self.hold_user(&tenant.domain, user, call_id).await? {
                Some(slot) => held.push(slot),
                None => return Err(Refusal::CallerBusy),
            }
        }
        let prefix = keys::tenant_calls(&tenant.domain);
        let limit = tenant.limits.concurrent_calls;
        match within(calls::acquire(store, &prefix, limit, call_id, lease)).await {
            Ok(Some(slot)) => held.push(slot),
            outcome => {
                self.release(held).await;
                outcome?;
                return Err(Refusal::TenantConcurrent);
            }
        }
        Ok(held)
    }

    /// A slot of `user`'s concurrent calls; `None` when they are at their limit (busy).
    pub async fn hold_user(
        &self,
        domain: &str,
        user: &UserEntry,
        call_id: &str,
    ) -> Result<Option<Slot>, StoreError> {
        let lease = within(self.lease.get()).await?;
        let prefix = keys::user_calls(domain, &user.extension);
        let limit = u32::from(user.max_calls);
        within(calls::acquire(
            self.store.as_ref(),
            &prefix,
            limit,
            call_id,
            lease,
        ))
        .await
    }

    /// Takes one of `user`'s slots into `held`; `false` when they are busy.
    pub async fn hold_user_into(
        &self,
        held: &mut Held,
        domain: &str,
        user: &UserEntry,
        call_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(match self.hold_user(domain, user, call_id).await? {
            Some(slot) => {
                held.push(slot);
                true
            }
            None => false,
        })
    }

    /// Whether `user` is at their concurrent-call limit right now (hunt groups skip them).
    pub async fn user_busy(&self, domain: &str, user: &UserEntry) -> Result<bool, StoreError> {
        let prefix = keys::user_calls(domain, &user.extension);
        let held = within(calls::held(self.store.as_ref(), &prefix)).await?;
        Ok(held >= usize::from(user.max_calls))
    }

    /// A channel of `trunk` and a place in its calls-per-second window.
    pub async fn hold_trunk(&self, trunk: &TrunkSnapshot, call_id: &str) -> Result<Held, Refusal> {
        let lease = within(self.lease.get()).await?;
        let store = self.store.as_ref();
        let (namespace, name) = (&trunk.source.namespace, &trunk.source.name);
        let rate = keys::trunk_rate(namespace, name);
        if !within(
            self.rates
                .admit(store, &rate, trunk.calls_per_second, now(), lease),
        )
        .await?
        {
            return Err(Refusal::TrunkRate);
        }
        let prefix = keys::trunk_calls(namespace, name);
        let channels = trunk.max_channels;
        match within(calls::acquire(store, &prefix, channels, call_id, lease)).await? {
            Some(slot) => Ok(Held { slots: vec![slot] }),
            None => Err(Refusal::TrunkChannels),
        }
    }

    /// Holds again, under this instance's lease, the slots `keys` of call `call_id` taken over
    /// from a dead instance (whose lease, and with it the slots, expire): the call keeps counting
    /// against the limits. Best effort: a slot another call took meanwhile is left to it.
    pub async fn hold_again(&self, keys: &[String], call_id: &str) -> Held {
        let mut held = Held::default();
        let Ok(lease) = within(self.lease.get()).await else {
            return held;
        };
        for key in keys {
            match within(self.hold_slot_again(key, call_id, lease)).await {
                Ok(true) => held.push(Slot { key: key.clone() }),
                Ok(false) => tracing::info!(key, call_id, "call slot taken by another call"),
                Err(error) => tracing::warn!(%error, key, "call slot not held again"),
            }
        }
        held
    }

    /// Writes `key` for `call_id` under `lease` if it is free or still the call's own.
    async fn hold_slot_again(
        &self,
        key: &str,
        call_id: &str,
        lease: centrex_coord::LeaseId,
    ) -> Result<bool, StoreError> {
        let expected = match self.store.get(key).await? {
            None => 0,
            Some(kv) if kv.value == call_id.as_bytes() => kv.mod_revision,
            Some(_) => return Ok(false),
        };
        let value = Some(call_id.as_bytes().to_vec());
        let outcome = self
            .store
            .compare_and_swap(key, expected, value, Some(lease))
            .await?;
        Ok(matches!(
            outcome,
            centrex_coord::store::CasOutcome::Written(_)
        ))
    }

    /// Gives counters back (best effort: a slot left behind goes with the lease).
    pub async fn release(&self, held: Held) {
        self.release_with(held, Vec::new()).await;
    }

    /// Releases `held` and deletes the keys `also` (the call's dialog records) in one store
    /// write: a call ends with one round trip to etcd, not one per key.
    pub async fn release_with(&self, held: Held, also: Vec<String>) {
        let mut keys = held.keys();
        keys.extend(also);
        if keys.is_empty() {
            return;
        }
        if let Err(error) = self.store.delete_all(&keys).await {
            tracing::warn!(%error, ?keys, "call slots not released; their lease will");
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
