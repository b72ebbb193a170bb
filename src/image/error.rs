//! The failures of getting an image, classified: callers branch on the
//! kind (retry, exit code), people read the message. Registries give most
//! of them; manifests, sources and flists name theirs the same way.

use std::time::Duration;

/// What kind of failure a registry call ended in; callers branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network failure, timeout, 5xx, 429: worth retrying.
    Unavailable,
    NotFound,
    Auth,
    /// Content that does not match its digest or size.
    Integrity,
    /// Anything else the registry or its content got wrong.
    Protocol,
}

/// A classified registry failure with a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub kind: ErrorKind,
    pub message: String,
    /// How long the registry asked us to wait before trying again.
    pub retry_after: Option<Duration>,
}

impl RegistryError {
    pub fn new(kind: ErrorKind, message: String) -> Self {
        RegistryError {
            kind,
            message,
            retry_after: None,
        }
    }
}
