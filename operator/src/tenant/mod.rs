//! Tenant: dereference → validate → compile → publish → status.

pub mod compile;
pub mod controller;
pub mod validate;
