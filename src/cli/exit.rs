//! Errors to the README's exit codes: the error chain is searched for the
//! typed errors of each family (chunks, stores, registries, refusals,
//! signals, local I/O).

use crate::image::registry::ErrorKind;
use crate::store::{ChunkError, ChunkFailure, StoreError};

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<crate::owned::signals::Interrupted>()) {
        return crate::owned::signals::exit_code();
    }
    if e.chain().any(|c| c.is::<crate::owned::Refused>()) {
        return 8;
    }
    if e.chain().any(|c| c.is::<crate::image::source::BadSource>()) {
        return 2;
    }
    // A chunk from a store, like a blob from a registry: missing (3),
    // unreachable (5), corrupt (6); a local store's disk failing (7).
    match chunk_failure(e) {
        Some(ChunkFailure::Missing) => return 3,
        Some(ChunkFailure::Unreachable) => return 5,
        Some(ChunkFailure::Corrupt) => return 6,
        Some(ChunkFailure::Local) => return 7,
        None => {}
    }
    // A store that failed while storing chunks.
    match e.chain().find_map(|c| c.downcast_ref::<StoreError>()) {
        Some(StoreError::Unavailable { .. }) => return 5,
        Some(StoreError::Missing { .. }) => return 3,
        Some(StoreError::Local { .. }) => return 7,
        Some(StoreError::Corrupt { .. }) => return 6,
        // A store that refused the credentials (a namespace password, S3
        // keys), as a registry's refusal is.
        Some(StoreError::Refused { .. }) => return 4,
        _ => {}
    }
    match crate::image::registry::error_kind(e) {
        Some(ErrorKind::NotFound) => 3,
        Some(ErrorKind::Auth) => 4,
        Some(ErrorKind::Unavailable) => 5,
        Some(ErrorKind::Integrity) => 6,
        Some(ErrorKind::Protocol) => 1,
        // A local file-system failure: disk full, permissions, I/O errors.
        None if e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error().is_some())
        }) =>
        {
            7
        }
        None => 1,
    }
}

/// Why a chunk could not be read, if that is what failed: the error may be
/// in the chain, or inside an I/O error of a reader of chunks.
fn chunk_failure(e: &anyhow::Error) -> Option<ChunkFailure> {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<ChunkError>().or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<ChunkError>())
            })
        })
        .map(|c| c.failure)
}
