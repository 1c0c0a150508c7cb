//! Errors of a reconcile, with the bounded category they are counted under.

use centrex_coord::StoreError;

/// Why a reconcile failed (it is retried with a backoff that grows per object).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("coordination store: {0}")]
    Store(#[from] StoreError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// Metric label: a fixed set, never the message.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            // The finalizer helper's JSON-patch `test` fails when our cached copy is stale.
            Error::Kube(kube::Error::Api(status))
                if status.code == 422 && status.message.contains("/metadata/finalizers") =>
            {
                "conflict"
            }
            Error::Kube(_) => "kubernetes",
            Error::Store(_) => "store",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "object",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match error {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
            other => Error::Finalizer(other.to_string()),
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
