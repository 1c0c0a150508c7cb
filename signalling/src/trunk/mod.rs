//! Trunks seen from the signalling side (issue #5): keeping a trunk registered with its carrier.
//!
//! - [`register`]: the REGISTER a trunk sends and how the carrier's answer reads (pure).
//! - [`election`]: which instance keeps a trunk registered, elected through the store.
//! - [`registration`]: the task every instance runs: compete for each trunk, and keep the
//!   registrations of the trunks it holds, publishing their state.

pub mod election;
pub mod register;
pub mod registration;
