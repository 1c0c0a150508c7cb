//! The contract tests' etcd lives in the crate (feature `testing`) so other crates' tests share it.

pub use centrex_coord::testing::*;
