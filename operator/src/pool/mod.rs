//! MediaPool and SignallingPool: build (pure) → apply and prune → status.

pub mod apply;
pub mod controller;
pub mod media;
pub mod pod;
pub mod signalling;
pub mod status;
