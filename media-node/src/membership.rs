//! Cluster membership: the node's registration in the coordination store, under a lease, with
//! its live load, so signalling can pick a lightly loaded node and the operator can scale and
//! drain the pool. Refreshed every few seconds; granted anew when the lease was lost (the store
//! was down longer than the TTL); revoked when the node stops, so it disappears at once.

use std::sync::Arc;
use std::time::Duration;

use centrex_coord::{LeaseId, Store, StoreError};

use tokio::sync::watch;

pub use centrex_coord::media::MediaNodeRegistration;

/// Longest wait for the lease revocation when stopping.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how often to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub key: String,
    pub ttl: Duration,
    pub refresh: Duration,
}

/// Keeps the registration of `describe()` in `store` until `stopping` turns true, publishing at
/// once whenever `nudge` changes (e.g. draining starts), then revokes it.
pub async fn maintain<T>(
    store: Arc<dyn Store>,
    registration: Registration,
    describe: impl Fn() -> MediaNodeRegistration,
    mut nudge: watch::Receiver<T>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut lease = None;
    let mut healthy = true;
    let mut ticks = tokio::time::interval(registration.refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            Ok(()) = nudge.changed() => {}
            _ = stopping.wait_for(|&s| s) => break,
        }
        match publish(&*store, &registration, &mut lease, &describe()).await {
            Ok(()) if !healthy => {
                healthy = true;
                tracing::info!(key = %registration.key, "registered again in the coordination store");
            }
            Ok(()) => {}
            Err(error) => {
                if healthy {
                    tracing::warn!(key = %registration.key, %error, "cannot refresh the registration; retrying");
                }
                healthy = false;
            }
        }
    }
    if let Some(lease) = lease {
        match tokio::time::timeout(REVOKE_TIMEOUT, store.revoke_lease(lease)).await {
            Ok(Ok(())) => tracing::info!(key = %registration.key, "registration removed"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot revoke the registration lease; it expires by itself")
            }
            Err(_) => {
                tracing::warn!("revoking the registration lease timed out; it expires by itself")
            }
        }
    }
}

/// Refreshes (or grants) the lease and writes the registration under it.
async fn publish(
    store: &dyn Store,
    registration: &Registration,
    lease: &mut Option<LeaseId>,
    value: &MediaNodeRegistration,
) -> Result<(), StoreError> {
    if let Some(id) = *lease {
        match store.keep_alive(id).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => *lease = None,
            Err(error) => return Err(error),
        }
    }
    let id = match *lease {
        Some(id) => id,
        None => {
            let id = store.grant_lease(registration.ttl).await?;
            *lease = Some(id);
            id
        }
    };
    let json = serde_json::to_vec(value).expect("a registration always serialises");
    match store.put(&registration.key, json, Some(id)).await {
        Err(StoreError::LeaseNotFound(_)) => {
            *lease = None;
            Err(StoreError::LeaseNotFound(id))
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRange;

    #[test]
    fn the_registration_is_camel_case_json() {
        let registration = MediaNodeRegistration {
            node_id: "media-0".into(),
            address: "192.0.2.10".parse().unwrap(),
            grpc_address: "192.0.2.10:9090".parse().unwrap(),
            rtp_ports: PortRange {
                min: 20000,
                max: 29999,
            },
            capacity: 2000,
            active_sessions: 3,
            packets_per_second: 300.0,
            draining: false,
        };
        let json = serde_json::to_value(&registration).unwrap();
        assert_eq!(json["grpcAddress"], "192.0.2.10:9090");
        assert_eq!(json["rtpPorts"]["max"], 29999);
        assert_eq!(json["activeSessions"], 3);
    }
}
