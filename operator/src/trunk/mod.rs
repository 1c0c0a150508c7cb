//! Trunk: dereference → validate → compile → publish → status; and the `Registered` condition
//! read from the store.

pub mod compile;
pub mod controller;
pub mod registration;
