//! Trunk registration state: what the signalling instance that keeps a trunk registered with its
//! carrier publishes, and the operator turns into the Trunk's `Registered` condition.

use serde::{Deserialize, Serialize};

/// Under `keys::trunk_registration(namespace, name)`, attached to the owner's lease: when the
/// owner dies the state disappears and the next owner writes its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrunkRegistrationState {
    /// Signalling instance that holds the trunk's registration election.
    pub owner: String,
    /// The carrier accepted our REGISTER and the binding has not expired.
    pub registered: bool,
    /// Why the last attempt failed (status line from the carrier, timeout, unanswerable
    /// challenge), when it did.
    pub last_error: Option<String>,
    /// Unix seconds the binding expires at, when registered.
    pub expires_at: Option<u64>,
    /// Unix seconds of the last attempt.
    pub attempted_at: u64,
    /// `metadata.generation` of the Trunk whose snapshot was used.
    pub generation: i64,
}
