//! Failover state of answered calls: what another signalling instance needs to take a call over
//! when the instance that set it up dies (or hands it a request), kept in the coordination store
//! under each leg's Call-ID.
//!
//! A record is written once, when the call is answered, and deleted when it ends. It is not
//! lease-bound (a call outlives the instance that set it up); instead every record names its
//! owner, a live instance, and a survivor claims the records of an instance whose presence key
//! expired (compare-and-swap on the caller's key decides between survivors).
//!
//! Our CSeq numbers are not written on every in-dialog request: whoever takes a call over jumps
//! them by [`CSEQ_JUMP`], which only has to exceed what the old owner can have sent since.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centrex_coord::store::CasOutcome;
use centrex_coord::{Store, StoreError, keys};
use serde::{Deserialize, Serialize};

use crate::cdr::Direction;
use crate::media::{Anchor, Remote};
use crate::transport::Peer;

/// How far a new owner moves our CSeq numbers on: more in-dialog requests than one call sends.
pub const CSEQ_JUMP: u32 = 1000;

/// Which leg's Call-ID a copy of the record is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// The caller's dialog with us.
    A,
    /// Our dialog with the party that answered.
    B,
}

/// Who called, as the call record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerRecord {
    /// A user of the tenant, by extension.
    User { extension: String },
    /// A number delivered by a trunk.
    External { number: String, trunk: String },
}

/// Our dialog with the party that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalleeDialog {
    pub call_id: String,
    /// Our From, with our tag.
    pub from: String,
    /// Their To, without tag.
    pub to: String,
    pub to_tag: Option<String>,
    /// Request-URI of the INVITE.
    pub uri: String,
    /// Their Contact: where in-dialog requests go.
    pub target: Option<String>,
    pub destination: Peer,
    /// Who answered (extension or number), for the call record.
    pub party: String,
    /// The trunk the call left through, if any.
    pub trunk: Option<String>,
    /// CSeq of the INVITE that was answered (a retransmitted 2xx is ACKed with it).
    pub invite_cseq: u32,
    pub cseq: u32,
}

/// Everything another instance needs to carry an answered call on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// The instance that holds the call now.
    pub owner: String,
    /// Which leg's Call-ID this copy is stored under.
    pub leg: Leg,
    /// The tenant's SIP domain.
    pub domain: String,
    /// The caller's INVITE as received: its headers define the caller's dialog.
    pub caller_invite: String,
    pub caller: Peer,
    pub a_call_id: String,
    /// Our tag in the caller's dialog.
    pub a_to_tag: String,
    pub cseq_to_a: u32,
    pub callee: CalleeDialog,
    pub anchor: Anchor,
    /// Where each party sends and receives audio (the relay's legs point there).
    pub caller_media: MediaRecord,
    pub callee_media: Option<MediaRecord>,
    /// Each party's latest SDP: what it is offered again when its call moves to another node.
    #[serde(default)]
    pub caller_sdp: Option<String>,
    #[serde(default)]
    pub callee_sdp: Option<String>,
    /// Keys of the call's counter slots (the new owner holds them under its own lease).
    pub slots: Vec<String>,
    pub origin: CallerRecord,
    pub dialled: String,
    pub direction: Direction,
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
    pub hunt_group: Option<String>,
    pub forwarded_from: Option<String>,
}

/// A party's media address and codecs, as its SDP gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub rtp: SocketAddr,
    pub rtcp_mux: bool,
    pub payload_types: Vec<(u8, String, u32)>,
}

impl From<&Remote> for MediaRecord {
    fn from(remote: &Remote) -> Self {
        Self {
            rtp: remote.rtp,
            rtcp_mux: remote.rtcp_mux,
            payload_types: remote.payload_types.clone(),
        }
    }
}

impl From<&MediaRecord> for Remote {
    fn from(record: &MediaRecord) -> Self {
        Self {
            rtp: record.rtp,
            rtcp_mux: record.rtcp_mux,
            payload_types: record.payload_types.clone(),
        }
    }
}

impl DialogRecord {
    /// The same record as stored under the other leg's Call-ID.
    fn under(&self, leg: Leg) -> Self {
        Self {
            leg,
            ..self.clone()
        }
    }

    /// The record with `owner` as its holder, and our CSeq numbers moved past what the previous
    /// owner can have used.
    pub fn taken_over_by(&self, owner: &str) -> Self {
        let mut record = self.clone();
        record.owner = owner.into();
        record.cseq_to_a = record.cseq_to_a.saturating_add(CSEQ_JUMP);
        record.callee.cseq = record.callee.cseq.saturating_add(CSEQ_JUMP);
        record
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The dialog records in the store.
#[derive(Clone)]
pub struct Dialogs {
    store: Arc<dyn Store>,
}

impl Dialogs {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Writes `record` under both legs' Call-IDs.
    pub async fn save(&self, record: &DialogRecord) -> Result<(), StoreError> {
        let entries: Vec<(String, Vec<u8>)> = [
            (Leg::A, &record.a_call_id),
            (Leg::B, &record.callee.call_id),
        ]
        .into_iter()
        .map(|(leg, call_id)| {
            let value = serde_json::to_vec(&record.under(leg)).expect("a record serialises");
            (keys::dialog(call_id), value)
        })
        .collect();
        self.store.put_all(&entries).await.map(drop)
    }

    /// The keys of the record of a call (both legs'): deleted when it ends.
    pub fn keys(a_call_id: &str, b_call_id: &str) -> Vec<String> {
        vec![keys::dialog(a_call_id), keys::dialog(b_call_id)]
    }

    /// The record of the call one of whose legs has `call_id`.
    pub async fn find(&self, call_id: &str) -> Result<Option<DialogRecord>, StoreError> {
        let Some(kv) = self.store.get(&keys::dialog(call_id)).await? else {
            return Ok(None);
        };
        Ok(parse(&kv.value))
    }

    /// Makes `instance` the owner of the call of `record`, if `record.owner` still holds it:
    /// `None` when another instance changed it first (it claimed the call, or the call ended).
    /// The caller's key decides; the callee's copy follows.
    pub async fn claim(
        &self,
        record: &DialogRecord,
        instance: &str,
    ) -> Result<Option<DialogRecord>, StoreError> {
        let key = keys::dialog(&record.a_call_id);
        let Some(current) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let Some(stored) = parse(&current.value) else {
            return Ok(None);
        };
        if stored.owner != record.owner {
            return Ok(None);
        }
        let claimed = stored.taken_over_by(instance);
        let value = serde_json::to_vec(&claimed).expect("a record serialises");
        match self
            .store
            .compare_and_swap(&key, current.mod_revision, Some(value), None)
            .await?
        {
            CasOutcome::Written(_) => {}
            CasOutcome::Conflict(_) => return Ok(None),
        }
        let copy = serde_json::to_vec(&claimed.under(Leg::B)).expect("a record serialises");
        self.store
            .put(&keys::dialog(&claimed.callee.call_id), copy, None)
            .await?;
        Ok(Some(claimed))
    }

    /// The callers' copies of every record whose owner is not in `alive`.
    pub async fn orphans(&self, alive: &[String]) -> Result<Vec<DialogRecord>, StoreError> {
        let (items, _) = self.store.list(&keys::dialogs()).await?;
        Ok(items
            .iter()
            .filter_map(|kv| parse(&kv.value))
            .filter(|r| r.leg == Leg::A && !alive.contains(&r.owner))
            .collect())
    }
}

fn parse(value: &[u8]) -> Option<DialogRecord> {
    serde_json::from_slice(value)
        .inspect_err(|error| tracing::warn!(%error, "unreadable dialog record ignored"))
        .ok()
}
