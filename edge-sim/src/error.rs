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
            Error::StorageFailed(_) => (500, "InternalError"),
        }
    }
}
