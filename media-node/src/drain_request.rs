//! The operator's drain request: before it removes a node (its pool scales down), the operator
//! writes `/centrex/v1/media-drain/<namespace>/<pool>/<node>`. While that key exists the node
//! drains (no new session, registration `draining: true`, `/readyz` 503) but keeps running and
//! relaying; when it is deleted (the pool scaled back up) the node serves again. The node never
//! exits for this: it exits on SIGTERM, once the operator has shrunk the StatefulSet.
//!
//! Only the key's presence counts; its value belongs to the operator (when it marked the node).
//! The node reads the key, then watches it from the revision of that read; when the store fails
//! it keeps the state it last saw and reads and watches again, with a growing pause, so a store
//! outage neither starts nor ends a drain.

use std::sync::Arc;
use std::time::Duration;

use centrex_coord::{Store, StoreError, WatchEvent};
use futures::StreamExt;
use tokio::sync::watch;

use crate::node::Node;

/// First pause after a store failure.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest pause between attempts while the store stays down.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows `key` into `node`'s drain state until `stopping` turns true.
pub async fn follow(
    store: Arc<dyn Store>,
    key: String,
    node: Arc<Node>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut retry = RETRY_MIN;
    let mut healthy = true;
    loop {
        let ended = tokio::select! {
            ended = sync(&*store, &key, &node, &mut retry, &mut healthy) => ended,
            _ = stopping.wait_for(|&s| s) => return,
        };
        match ended {
            // A watch stream that ends without an error: read and watch again.
            Ok(()) => tracing::debug!(%key, "drain request watch ended; watching again"),
            Err(error) if healthy => {
                healthy = false;
                tracing::warn!(%key, %error, "cannot follow the drain request; keeping the current drain state and retrying");
            }
            Err(error) => tracing::debug!(%key, %error, "drain request still unreadable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stopping.wait_for(|&s| s) => return,
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Reads the key, then applies every change of it until the watch ends.
async fn sync(
    store: &dyn Store,
    key: &str,
    node: &Node,
    retry: &mut Duration,
    healthy: &mut bool,
) -> Result<(), StoreError> {
    // A list, not a get: it gives the revision to watch from without a gap. Watching the key as
    // a prefix also matches longer names (`…-media-1` and `…-media-10`), hence the equality tests.
    let (found, revision) = store.list(key).await?;
    node.request_drain(found.iter().any(|kv| kv.key == key));
    let mut changes = store.watch(key, revision + 1).await?;
    *retry = RETRY_MIN;
    if !*healthy {
        *healthy = true;
        tracing::info!(%key, "following the drain request again");
    }
    while let Some(change) = changes.next().await {
        match change? {
            WatchEvent::Put(kv) if kv.key == key => node.request_drain(true),
            WatchEvent::Delete { key: deleted, .. } if deleted == key => node.request_drain(false),
            _ => {}
        }
    }
    Ok(())
}
