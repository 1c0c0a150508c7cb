//! Call routing for the Centrex features, as pure functions over a compiled
//! [`TenantSnapshot`](centrex_coord::snapshot::TenantSnapshot): no IO, no store, no clock.
//!
//! The B2BUA asks, in this order: what does the dialled string mean in the tenant
//! ([`target::resolve`]); if it leaves the tenant, may it and over which trunks
//! ([`numbers::outbound_decision`]); does the callee forward it ([`forwarding`], with a
//! [`forwarding::ForwardChain`] per call against loops); which members of a hunt group ring when
//! ([`hunt::stages`]); and what the callee sees of the caller ([`presentation`]).

pub mod forwarding;
pub mod hunt;
pub mod numbers;
pub mod presentation;
pub mod target;

pub use forwarding::{Condition, ForwardChain, ForwardLoop, MAX_FORWARDS_HOPS};
pub use hunt::Stage;
pub use numbers::{Destination, NumberError, NumberPlan, OutboundRefusal, OutboundRoute};
pub use presentation::Presentation;
pub use target::Target;
