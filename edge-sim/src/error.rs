//! The one error type of the simulator's object store and API.

use thiserror::Error;

use crate::resource::Resource;
use crate::selector::SelectorError;

/// Why a store operation (and so an API request) failed; each maps to one Kubernetes `Status` reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The object does not exist (404 NotFound).
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// The resource asked for.
        resource: Resource,
        /// The name asked for.
        name: String,
    },
    /// An object with this name already exists (409 AlreadyExists).
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// The resource of the object.
        resource: Resource,
        /// The name that is taken.
        name: String,
    },
    /// An update carried a stale resourceVersion (409 Conflict).
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The resource of the object.
        resource: Resource,
        /// The object's name.
        name: String,
    },
    /// The object is not valid (422 Invalid).
    #[error("{kind} \"{name}\" is invalid: {detail}")]
    Invalid {
        /// The kind of the object.
        kind: &'static str,
        /// The object's name (may be empty).
        name: String,
        /// Which field is wrong and why.
        detail: String,
    },
    /// The request itself is malformed (400 BadRequest).
    #[error("{0}")]
    BadRequest(String),
    /// A selector could not be parsed (400 BadRequest).
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A watch asked for a resourceVersion older than the kept history (410 Expired).
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The resourceVersion the client asked for.
        requested: u64,
        /// The oldest resourceVersion a watch can still resume from.
        oldest: u64,
    },
    /// The change could not be kept in the cluster's objects file (500 InternalError); nothing changed.
    #[error("the change could not be stored: {0}")]
    StorageFailed(String),
    /// A validating admission webhook refused the request (403 Forbidden); nothing changed. The
    /// message is kube-apiserver's, word for word, since clients print it and people grep for it.
    #[error("admission webhook \"{webhook}\" denied the request{}", because(explanation))]
    Denied {
        /// The webhook's name (`webhooks[].name`).
        webhook: String,
        /// Its `response.status.message` (or `reason`), if it gave one.
        explanation: Option<String>,
    },
    /// A validating admission webhook whose `failurePolicy` is `Fail` could not be called, or gave
    /// no usable answer (500 InternalError, worded as kube-apiserver's); nothing changed.
    #[error("Internal error occurred: failed calling webhook \"{webhook}\": {reason}")]
    WebhookFailed {
        /// The webhook's name.
        webhook: String,
        /// What went wrong (refused connection, TLS, timeout, a bad answer, …).
        reason: String,
    },
}

/// What follows "denied the request": the webhook's explanation, or kube-apiserver's words when it
/// gave none.
fn because(explanation: &Option<String>) -> String {
    match explanation {
        Some(explanation) => format!(": {explanation}"),
        None => " without explanation".into(),
    }
}

/// The simulator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status code and Kubernetes reason of this error.
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            Error::NotFound { .. } => (404, "NotFound"),
            Error::AlreadyExists { .. } => (409, "AlreadyExists"),
            Error::Conflict { .. } => (409, "Conflict"),
            Error::Invalid { .. } => (422, "Invalid"),
            Error::BadRequest(_) | Error::Selector(_) => (400, "BadRequest"),
            Error::Expired { .. } => (410, "Expired"),
            Error::StorageFailed(_) | Error::WebhookFailed { .. } => (500, "InternalError"),
            Error::Denied { .. } => (403, "Forbidden"),
        }
    }
}
