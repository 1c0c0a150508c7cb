//! What every controller shares: clients, configuration, metrics, and the per-object backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centrex_coord::Store;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use crate::config::OperatorConfig;
use crate::error::Error;
use crate::labels::MANAGER;
use crate::metrics::Metrics;

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub store: Arc<dyn Store>,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    backoff: Backoff,
}

impl Context {
    /// A context for controllers talking to `client` and `store`.
    pub fn new(
        client: Client,
        store: Arc<dyn Store>,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(config.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            store,
            config,
            metrics,
            recorder,
            backoff: Backoff::default(),
        }
    }

    /// Publishes a Kubernetes Event on `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, object = object.name_any(), "cannot publish event");
        }
    }

    /// Requeue after a failure of `key`: grows per object (5 s, 10 s, … up to 5 min). A
    /// conflict (another writer got there first, or our cache was behind) is retried after a
    /// second without growing the backoff: it resolves itself once the cache catches up.
    pub fn retry_after(&self, controller: &'static str, key: String, error: &Error) -> Action {
        self.metrics.failed(controller, error.category());
        let delay = if error.category() == "conflict" {
            CONFLICT_RETRY
        } else {
            self.backoff.next(key)
        };
        tracing::warn!(controller, %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.backoff.reset(key);
    }
}

/// Retry delay after a write conflict.
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

/// Consecutive failures per object; an entry lives only while its object keeps failing.
#[derive(Default)]
struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);

    fn next(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        delay_for(*count)
    }

    fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

/// Delay after `failures` consecutive failures: doubling from 5 s, capped at 5 min.
fn delay_for(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (Backoff::BASE * factor).min(Backoff::MAX)
}

/// Key of an object for the backoff map.
pub fn key_of<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_and_is_capped() {
        assert_eq!(delay_for(1), Duration::from_secs(5));
        assert_eq!(delay_for(2), Duration::from_secs(10));
        assert_eq!(delay_for(4), Duration::from_secs(40));
        assert_eq!(delay_for(30), Duration::from_secs(300));
    }

    #[test]
    fn backoff_is_per_object_and_resets_on_success() {
        let backoff = Backoff::default();
        backoff.next("a".into());
        assert_eq!(backoff.next("a".into()), Duration::from_secs(10));
        assert_eq!(backoff.next("b".into()), Duration::from_secs(5));
        backoff.reset("a");
        assert_eq!(backoff.next("a".into()), Duration::from_secs(5));
    }
}
