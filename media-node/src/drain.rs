//! Draining: the node stops taking sessions and lets the running ones finish, up to the drain
//! timeout; and `media-node drain`, the preStop action that asks the local node to drain and
//! waits for it.
//!
//! A node drains for one of two reasons, which the state keeps apart:
//! - **requested**: the operator marked it for a coming scale-down (its drain key in the store,
//!   see [`crate::drain_request`]). The node takes no new session but keeps running; the mark can
//!   be withdrawn (the pool scaled back up), and the node then serves again.
//! - **stopping**: a MediaControl `Drain` call (the preStop hook) or SIGTERM. The node exits once
//!   its sessions have ended or the deadline passed; this is never withdrawn.
//!
//! The drain timeout counts from the first of the two: a node marked long ago and then stopped
//! has had its time already.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use centrex_proto::media::media_control_client::MediaControlClient;
use centrex_proto::media::{DrainRequest, WatchNodeStatsRequest};
use futures::StreamExt;
use tokio::sync::watch;

/// Since when, and why, the node drains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    /// Since when the operator asks the node to drain (a scale-down is coming); `None` when it
    /// does not (any more).
    pub requested: Option<Instant>,
    /// Since when the node drains to stop.
    pub stopping: Option<Instant>,
}

impl Drain {
    /// Whether the node takes no new session.
    pub fn is_draining(&self) -> bool {
        self.requested.is_some() || self.stopping.is_some()
    }

    /// When the drain started (the earlier of the two reasons).
    fn since(&self) -> Option<Instant> {
        match (self.requested, self.stopping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether, why and since when the node drains.
#[derive(Debug)]
pub struct DrainState {
    state: watch::Sender<Drain>,
    timeout: Duration,
}

impl DrainState {
    /// Not draining; a drain will last at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: watch::Sender::new(Drain::default()),
            timeout,
        }
    }

    /// Starts draining to stop (once: a second call keeps the first deadline); returns the
    /// deadline and whether this call made the node drain (it did not before, for any reason).
    pub fn stop(&self) -> (Instant, bool) {
        let mut started = false;
        self.state.send_if_modified(|drain| {
            started = !drain.is_draining();
            let first = drain.stopping.is_none();
            drain.stopping.get_or_insert_with(Instant::now);
            first
        });
        (self.deadline().expect("drain started"), started)
    }

    /// Records whether the operator asks the node to drain; returns whether that changed.
    pub fn set_requested(&self, requested: bool) -> bool {
        self.state.send_if_modified(|drain| {
            if drain.requested.is_some() == requested {
                return false;
            }
            drain.requested = requested.then(Instant::now);
            true
        })
    }

    /// Whether the node drains, for either reason.
    pub fn is_draining(&self) -> bool {
        self.state.borrow().is_draining()
    }

    /// When the drain gives up on running sessions, once draining.
    pub fn deadline(&self) -> Option<Instant> {
        self.state
            .borrow()
            .since()
            .map(|since| since + self.timeout)
    }

    /// Notified whenever the drain state changes.
    pub fn subscribe(&self) -> watch::Receiver<Drain> {
        self.state.subscribe()
    }
}

/// Converts a monotonic deadline to Unix milliseconds, for the wire.
pub fn unix_ms(deadline: Instant) -> i64 {
    let wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Deadline of each call of the drain action.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the node at `endpoint` (e.g. `http://127.0.0.1:9090`) to drain, then waits until it
/// has no session, passes its drain deadline, exits, or `timeout` passes.
pub async fn drain_node(endpoint: String, timeout: Option<Duration>) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .with_context(|| format!("--grpc {endpoint:?} is not a URL"))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to the media node at {endpoint}"))?;
    let mut client = MediaControlClient::new(channel);
    let drain = client
        .drain(DrainRequest {})
        .await
        .context("asking the media node to drain")?
        .into_inner();
    tracing::info!(sessions = drain.sessions_remaining, "media node draining");
    if drain.sessions_remaining == 0 {
        return Ok(());
    }
    let until_deadline = u64::try_from(drain.deadline_unix_ms)
        .ok()
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        .and_then(|deadline| deadline.duration_since(SystemTime::now()).ok())
        .unwrap_or_default();
    let wait = timeout.map_or(until_deadline, |t| t.min(until_deadline));
    let watch = async {
        let mut stats = client
            .watch_node_stats(WatchNodeStatsRequest { interval_ms: 1000 })
            .await?
            .into_inner();
        // The stream ends when the node exits, which it does once drained.
        while let Some(figures) = stats.next().await {
            if figures?.active_sessions == 0 {
                break;
            }
        }
        Ok::<_, tonic::Status>(())
    };
    match tokio::time::timeout(wait, watch).await {
        Ok(Ok(())) => tracing::info!("media node drained"),
        // Losing the node mid-watch means it exited.
        Ok(Err(status)) => tracing::info!(%status, "media node gone"),
        Err(_) => tracing::warn!(?wait, "drain wait over; sessions remain"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_drain_sets_the_deadline_and_later_ones_keep_it() {
        let drain = DrainState::new(Duration::from_secs(30));
        assert!(!drain.is_draining());
        let (deadline, started) = drain.stop();
        assert!(started);
        assert_eq!(drain.stop(), (deadline, false));
        assert!(drain.is_draining());
    }

    #[test]
    fn a_withdrawn_request_ends_the_drain_unless_the_node_stops() {
        let drain = DrainState::new(Duration::from_secs(30));
        assert!(drain.set_requested(true));
        assert!(
            !drain.set_requested(true),
            "a repeated request changes nothing"
        );
        assert!(drain.is_draining());
        assert!(drain.set_requested(false));
        assert!(!drain.is_draining());

        drain.set_requested(true);
        let (_, started) = drain.stop();
        assert!(!started, "the node drained already");
        drain.set_requested(false);
        assert!(drain.is_draining(), "stopping is never withdrawn");
    }

    #[test]
    fn the_deadline_counts_from_the_request_when_the_node_stops_later() {
        let drain = DrainState::new(Duration::from_secs(30));
        drain.set_requested(true);
        let requested = drain.subscribe().borrow().requested.unwrap();
        let (deadline, _) = drain.stop();
        assert_eq!(deadline, requested + Duration::from_secs(30));
    }
}
