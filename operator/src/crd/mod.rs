//! The custom resources of group `centrex.dev`, version `v1alpha1`.
//!
//! Single-object rules live on the types as CEL (`x-kubernetes-validations`) so the API server
//! refuses bad input at `kubectl apply`; cross-object rules live in [`crate::tenant::validate`].

// `printcolumn(..)` repeats `type_ = ..` by design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

mod common;
mod media_pool;
mod signalling_pool;
mod tenant;
mod trunk;

pub use common::*;
pub use media_pool::*;
pub use signalling_pool::*;
pub use tenant::*;
pub use trunk::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Centrex resource.
pub const GROUP: &str = "centrex.dev";

/// Every CRD this operator serves, in the order `crdgen` writes them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Tenant::crd(),
        Trunk::crd(),
        MediaPool::crd(),
        SignallingPool::crd(),
    ]
}
