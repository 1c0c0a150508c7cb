//! The store side of a MediaPool's graceful scale-down: reads the drain marks and the media
//! nodes' registrations of one pool, and writes and removes marks as a [`Plan`] says. The
//! decision itself is [`super::scale_down`].

use std::collections::BTreeMap;

use centrex_coord::media::MediaNodeRegistration;
use centrex_coord::{Store, keys};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use super::scale_down::{DrainMark, NodeReport, Plan, ordinal_of, pod_name};
use crate::error::Result;

/// One pool's marks and registrations, by pod ordinal.
#[derive(Debug, Default)]
pub struct Observed {
    /// When each marked pod was marked.
    pub marks: BTreeMap<u32, Timestamp>,
    /// What each registered pod reports.
    pub nodes: BTreeMap<u32, NodeReport>,
    /// Drain keys that name no pod of the StatefulSet or hold no readable mark: removed, unless
    /// the plan marks that pod again (which overwrites the key).
    pub stray: Vec<String>,
}

/// Where one pool's marks live: its namespace, name and StatefulSet.
#[derive(Debug, Clone, Copy)]
pub struct PoolKeys<'a> {
    pub namespace: &'a str,
    pub pool: &'a str,
    /// The StatefulSet, whose pods are the media nodes.
    pub workload: &'a str,
}

impl PoolKeys<'_> {
    fn mark(&self, ordinal: u32) -> String {
        keys::media_drain(self.namespace, self.pool, &pod_name(self.workload, ordinal))
    }
}

/// Reads the marks and registrations of `pool`.
pub async fn read(store: &dyn Store, pool: PoolKeys<'_>) -> Result<Observed> {
    let mut observed = Observed::default();
    let prefix = keys::media_drains(pool.namespace, pool.pool);
    let (marks, _) = store.list(&prefix).await?;
    for kv in marks {
        let pod = kv.key.strip_prefix(&prefix).unwrap_or_default();
        let mark = serde_json::from_slice::<DrainMark>(&kv.value);
        match (ordinal_of(pool.workload, pod), mark) {
            (Some(ordinal), Ok(mark)) => {
                observed.marks.insert(ordinal, mark.marked_at.0);
            }
            _ => {
                tracing::warn!(key = kv.key, "stray drain mark; removing it");
                observed.stray.push(kv.key);
            }
        }
    }
    let prefix = keys::media_nodes(pool.namespace, pool.pool);
    let (registrations, _) = store.list(&prefix).await?;
    for kv in registrations {
        let pod = kv.key.strip_prefix(&prefix).unwrap_or_default();
        let Some(ordinal) = ordinal_of(pool.workload, pod) else {
            continue;
        };
        match serde_json::from_slice::<MediaNodeRegistration>(&kv.value) {
            Ok(node) => {
                observed.nodes.insert(
                    ordinal,
                    NodeReport {
                        active_sessions: node.active_sessions,
                        draining: node.draining,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(key = kv.key, %error, "unreadable media node registration")
            }
        }
    }
    Ok(observed)
}

/// Writes the marks the plan adds, stamped `now`.
pub async fn mark(
    store: &dyn Store,
    pool: PoolKeys<'_>,
    plan: &Plan,
    now: Timestamp,
) -> Result<()> {
    let value = serde_json::to_vec(&DrainMark {
        marked_at: MicroTime(now),
    })
    .expect("a mark always serialises");
    for &ordinal in &plan.mark {
        store.put(&pool.mark(ordinal), value.clone(), None).await?;
    }
    Ok(())
}

/// Removes the marks the plan drops and the stray keys it does not overwrite.
pub async fn unmark(
    store: &dyn Store,
    pool: PoolKeys<'_>,
    plan: &Plan,
    stray: &[String],
) -> Result<()> {
    let marked: Vec<String> = plan.mark.iter().map(|&o| pool.mark(o)).collect();
    for key in plan.unmark.iter().map(|&o| pool.mark(o)) {
        store.delete(&key).await?;
    }
    for key in stray.iter().filter(|key| !marked.contains(key)) {
        store.delete(key).await?;
    }
    Ok(())
}
