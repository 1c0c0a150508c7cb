//! MediaPool and SignallingPool: build (pure) → apply and prune → status; MediaPool autoscaling
//! (decision pure, a periodic pass of the leader writes it).

pub mod apply;
pub mod autoscale;
pub mod controller;
pub mod media;
pub mod pod;
pub mod scaler;
pub mod signalling;
pub mod status;
