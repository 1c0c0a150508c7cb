//! Draining: the node stops taking sessions and lets the running ones finish, up to the drain
//! timeout; and `media-node drain`, the preStop action that asks the local node to drain and
//! waits for it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use centrex_proto::media::media_control_client::MediaControlClient;
use centrex_proto::media::{DrainRequest, WatchNodeStatsRequest};
use futures::StreamExt;
use tokio::sync::watch;

/// Whether and since when the node drains.
#[derive(Debug)]
pub struct DrainState {
    since: watch::Sender<Option<Instant>>,
    timeout: Duration,
}

impl DrainState {
    /// Not draining; a drain will last at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            since: watch::Sender::new(None),
            timeout,
        }
    }

    /// Starts draining (once: a second call keeps the first deadline); returns the deadline
    /// and whether this call started it.
    pub fn start(&self) -> (Instant, bool) {
        let mut started = false;
        self.since.send_if_modified(|since| {
            started = since.is_none();
            since.get_or_insert_with(Instant::now);
            started
        });
        (self.deadline().expect("drain started"), started)
    }

    /// Whether the node drains.
    pub fn is_draining(&self) -> bool {
        self.since.borrow().is_some()
    }

    /// When the drain gives up on running sessions, once draining.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.borrow().map(|since| since + self.timeout)
    }

    /// Notified when draining starts.
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.since.subscribe()
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
        let (deadline, started) = drain.start();
        assert!(started);
        assert_eq!(drain.start(), (deadline, false));
        assert!(drain.is_draining());
    }
}
