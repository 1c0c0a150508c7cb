//! The `Registered` condition of a Trunk. The signalling instance that keeps a trunk registered
//! with its carrier publishes a [`TrunkRegistrationState`] under its lease; every period the
//! leader reads them all (one list) and writes the condition and `status.lastRegistrationError`
//! of each Trunk whose view changed. A Trunk without `spec.registration` has no `Registered`
//! condition (`kubectl get tk` shows `<none>`). Status writes here wake no reconciler: the Trunk
//! controller and the Tenant watch on Trunks filter on spec and lifecycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centrex_coord::keys;
use centrex_coord::trunk::TrunkRegistrationState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store as Reflector;
use serde_json::json;

use crate::conditions::{ConditionType, Decided, merge};
use crate::context::Context;
use crate::crd::{Trunk, TrunkSpec, TrunkStatus};

/// Reasons of the `Registered` condition.
pub mod reason {
    /// The carrier accepted the registration and it has not expired.
    pub const REGISTERED: &str = "Registered";
    /// The last attempt failed; the message carries the error.
    pub const FAILED: &str = "RegistrationFailed";
    /// The owner says registered, but the binding's expiry has passed without a refresh.
    pub const EXPIRED: &str = "RegistrationExpired";
    /// No instance holds the registration yet, or its first attempt has no answer yet.
    pub const PENDING: &str = "Pending";
}

/// Longest carrier error kept in status (the reason phrase comes from a remote peer).
const MAX_ERROR_LEN: usize = 256;

/// Reports every `period` until the future is dropped.
pub async fn run(ctx: Arc<Context>, trunks: Reflector<Trunk>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = report_once(&ctx, &trunks).await {
            tracing::warn!(%error, "trunk registration report failed; next period retries");
        }
    }
}

async fn report_once(ctx: &Context, trunks: &Reflector<Trunk>) -> anyhow::Result<()> {
    let trunks = trunks.state();
    let mut states: HashMap<String, Option<TrunkRegistrationState>> = trunks
        .iter()
        .filter(|t| t.spec.registration.is_some())
        .map(|t| (state_key(t), None))
        .collect();
    if !states.is_empty() {
        let (listed, _) = ctx.store.list(&keys::trunk_registrations()).await?;
        for kv in listed {
            if let Some(slot) = states.get_mut(&kv.key) {
                *slot = serde_json::from_slice(&kv.value)
                    .inspect_err(|error| {
                        tracing::warn!(key = kv.key, %error, "unreadable trunk registration state")
                    })
                    .ok();
            }
        }
    }
    let now = unix_now();
    for trunk in trunks
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
    {
        let state = states.get(&state_key(trunk)).and_then(Option::as_ref);
        let current = trunk.status.clone().unwrap_or_default();
        let next = next_status(trunk, &current, state, now, Timestamp::now());
        if next == current {
            continue;
        }
        // Pinned to the version read: a write racing the Trunk controller's fails (409) instead
        // of dropping its conditions, and the next period tries again on fresh data.
        let patch = json!({
            "metadata": { "resourceVersion": trunk.resource_version() },
            "status": {
                "conditions": next.conditions,
                "lastRegistrationError": next.last_registration_error,
            },
        });
        let api: Api<Trunk> =
            Api::namespaced(ctx.client.clone(), &trunk.namespace().unwrap_or_default());
        match api
            .patch_status(
                &trunk.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(trunk = trunk.name_any(), "stale trunk; next period retries");
            }
            Err(error) => {
                tracing::warn!(trunk = trunk.name_any(), %error, "cannot write trunk registration status");
            }
        }
    }
    Ok(())
}

fn state_key(trunk: &Trunk) -> String {
    keys::trunk_registration(&trunk.namespace().unwrap_or_default(), &trunk.name_any())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `current` with the `Registered` condition and `lastRegistrationError` that `state` (published
/// by the registering instance; `None`: nobody holds the registration) gives at unix time `now`.
pub fn next_status(
    trunk: &Trunk,
    current: &TrunkStatus,
    state: Option<&TrunkRegistrationState>,
    now: u64,
    at: Timestamp,
) -> TrunkStatus {
    let Some(decided) = registered(&trunk.spec, state, now) else {
        return TrunkStatus {
            conditions: without(&current.conditions, ConditionType::Registered),
            last_registration_error: None,
            ..current.clone()
        };
    };
    // The condition describes the spec the registering instance used, when one does.
    let generation = state.map(|s| s.generation).or(trunk.metadata.generation);
    TrunkStatus {
        conditions: merge(&current.conditions, &[decided], generation, at),
        last_registration_error: state.and_then(|s| s.last_error.as_deref()).map(bounded),
        ..current.clone()
    }
}

/// The `Registered` condition `state` gives at unix time `now`; `None` when the trunk does not
/// register with its carrier.
pub fn registered(
    spec: &TrunkSpec,
    state: Option<&TrunkRegistrationState>,
    now: u64,
) -> Option<Decided> {
    spec.registration.as_ref()?;
    let type_ = ConditionType::Registered;
    let Some(state) = state else {
        return Some(Decided::no(
            type_,
            reason::PENDING,
            "no signalling instance holds this trunk's registration yet (none runs, or the \
             previous owner went away and another is taking over)",
        ));
    };
    let owner = &state.owner;
    Some(
        match (state.registered, &state.last_error, state.expires_at) {
            (true, _, Some(expires)) if expires <= now => Decided::no(
                type_,
                reason::EXPIRED,
                format!(
                    "registered by {owner}, but the binding expired at {} without a refresh",
                    time(expires)
                ),
            ),
            (true, _, expires) => Decided::yes(
                type_,
                reason::REGISTERED,
                match expires {
                    Some(expires) => format!("registered by {owner} until {}", time(expires)),
                    None => format!("registered by {owner}"),
                },
            ),
            (false, Some(error), _) => Decided::no(
                type_,
                reason::FAILED,
                format!(
                    "{owner} could not register at {}: {}",
                    time(state.attempted_at),
                    bounded(error)
                ),
            ),
            (false, None, _) => Decided::no(
                type_,
                reason::PENDING,
                format!("{owner} is registering with the carrier"),
            ),
        },
    )
}

/// `conditions` without the one of `type_`.
fn without(conditions: &[Condition], type_: ConditionType) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| c.type_ != type_.as_str())
        .cloned()
        .collect()
}

/// Unix seconds as RFC 3339.
fn time(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| format!("unix {seconds}"), |t| t.to_string())
}

/// `text` cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(registers: bool) -> Trunk {
        let mut spec = json!({ "host": "sip.carrier.example" });
        if registers {
            spec["registration"] = json!({
                "username": "acme-trunk",
                "passwordSecretRef": { "name": "carrier-credentials", "key": "password" },
            });
        }
        serde_json::from_value(json!({
            "apiVersion": "centrex.dev/v1alpha1",
            "kind": "Trunk",
            "metadata": { "name": "carrier", "namespace": "default", "generation": 4 },
            "spec": spec,
        }))
        .unwrap()
    }

    fn state(registered: bool, last_error: Option<&str>) -> TrunkRegistrationState {
        TrunkRegistrationState {
            owner: "signalling-0".into(),
            registered,
            last_error: last_error.map(str::to_string),
            expires_at: registered.then_some(2_000),
            attempted_at: 1_000,
            generation: 3,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_trunk_without_registration_has_no_registered_condition() {
        assert_eq!(registered(&trunk(false).spec, None, 1_500), None);
    }

    #[test]
    fn a_trunk_nobody_registers_yet_is_pending() {
        let decided = registered(&trunk(true).spec, None, 1_500).unwrap();
        assert_eq!((decided.status, decided.reason), (false, reason::PENDING));
    }

    #[test]
    fn an_accepted_registration_names_its_owner_and_expiry() {
        let decided = registered(&trunk(true).spec, Some(&state(true, None)), 1_500).unwrap();
        assert_eq!((decided.status, decided.reason), (true, reason::REGISTERED));
        assert_eq!(
            decided.message,
            "registered by signalling-0 until 1970-01-01T00:33:20Z"
        );
    }

    #[test]
    fn a_registration_past_its_expiry_is_not_registered() {
        let decided = registered(&trunk(true).spec, Some(&state(true, None)), 2_000).unwrap();
        assert_eq!((decided.status, decided.reason), (false, reason::EXPIRED));
    }

    #[test]
    fn a_failed_registration_carries_the_carrier_error() {
        let failed = state(false, Some("403 Forbidden"));
        let decided = registered(&trunk(true).spec, Some(&failed), 1_500).unwrap();
        assert_eq!((decided.status, decided.reason), (false, reason::FAILED));
        assert!(
            decided.message.ends_with(": 403 Forbidden"),
            "{}",
            decided.message
        );
    }

    #[test]
    fn the_condition_observes_the_generation_the_owner_registered_with() {
        let trunk = trunk(true);
        let next = next_status(
            &trunk,
            &TrunkStatus::default(),
            Some(&state(true, None)),
            1_500,
            at(10),
        );
        assert_eq!(next.conditions[0].observed_generation, Some(3));
    }

    #[test]
    fn a_refreshed_registration_keeps_its_transition_time() {
        let trunk = trunk(true);
        let first = next_status(
            &trunk,
            &TrunkStatus::default(),
            Some(&state(true, None)),
            1_500,
            at(10),
        );
        let mut refreshed = state(true, None);
        refreshed.expires_at = Some(5_000);
        let second = next_status(&trunk, &first, Some(&refreshed), 3_000, at(20));
        assert_eq!(
            second.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
        assert!(second.conditions[0].message.contains("01:23:20Z"));
    }

    #[test]
    fn removing_the_registration_removes_the_condition_and_the_error() {
        let failed = state(false, Some("timeout"));
        let first = next_status(
            &trunk(true),
            &TrunkStatus::default(),
            Some(&failed),
            1_500,
            at(10),
        );
        assert_eq!(first.last_registration_error.as_deref(), Some("timeout"));
        let second = next_status(&trunk(false), &first, None, 1_600, at(20));
        assert!(second.conditions.is_empty() && second.last_registration_error.is_none());
    }

    #[test]
    fn a_long_carrier_error_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        assert!(bounded(&long).len() <= MAX_ERROR_LEN);
        assert!(bounded(&long).chars().all(|c| c == 'é'));
    }
}
