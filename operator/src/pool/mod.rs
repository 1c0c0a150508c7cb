//! MediaPool and SignallingPool: build (pure) → apply and prune → status; MediaPool autoscaling
//! (decision pure, a periodic pass of the leader writes it) and graceful scale-down (pods marked
//! draining in the store, the StatefulSet shrunk as they finish; decision pure).

pub mod apply;
pub mod autoscale;
pub mod controller;
pub mod drain_marks;
pub mod media;
pub mod pod;
pub mod scale_down;
pub mod scaler;
pub mod signalling;
pub mod status;
