//! API errors rendered as `Status` objects, which kube surfaces as `kube::Error::Api`.

use serde_json::{Value, json};

use crate::path::Gvr;

/// A failed API call: HTTP code, machine-readable reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// An error about one named object; `details` lets clients see which one.
    fn about(code: u16, reason: &str, gvr: &Gvr, name: &str, message: String) -> Self {
        let details = json!({ "name": name, "group": gvr.group, "kind": gvr.plural });
        Self {
            details: Some(details),
            ..Self::new(code, reason, message)
        }
    }

    pub fn not_found(gvr: &Gvr, name: &str) -> Self {
        Self::about(
            404,
            "NotFound",
            gvr,
            name,
            format!("{gvr} \"{name}\" not found"),
        )
    }

    pub fn already_exists(gvr: &Gvr, name: &str) -> Self {
        Self::about(
            409,
            "AlreadyExists",
            gvr,
            name,
            format!("{gvr} \"{name}\" already exists"),
        )
    }

    pub fn conflict(gvr: &Gvr, name: &str, why: &str) -> Self {
        let message = format!("Operation cannot be fulfilled on {gvr} \"{name}\": {why}");
        Self::about(409, "Conflict", gvr, name, message)
    }

    /// The optimistic-concurrency failure of a write carrying a stale resourceVersion.
    pub fn stale(gvr: &Gvr, name: &str) -> Self {
        Self::conflict(
            gvr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(gvr: &Gvr, name: &str, why: &str) -> Self {
        Self::about(
            422,
            "Invalid",
            gvr,
            name,
            format!("{gvr} \"{name}\" is invalid: {why}"),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// What a watch or list continuation from a compacted resourceVersion gets.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// A fault with the reason the apiserver pairs with `code`.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(
            code,
            reason,
            format!("kube-fake: injected failure ({code} {reason})"),
        )
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}
