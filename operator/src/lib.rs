//! The Centrex operator: custom resources, and the controllers that reconcile them.
//!
//! Each controller is a pipeline of small steps — dereference (IO) → validate and build (pure)
//! → apply or publish (IO) → status (pure decision, one IO write).

pub mod census;
pub mod conditions;
pub mod config;
pub mod context;
pub mod crd;
pub mod crdgen;
pub mod error;
pub mod labels;
pub mod local;
pub mod manifests;
pub mod metrics;
pub mod pool;
pub mod publish;
pub mod run;
pub mod schema_check;
pub mod snapshot_status;
pub mod tenant;
pub mod triggers;
pub mod trunk;
pub mod validation;
