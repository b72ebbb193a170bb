//! Sharding and replication by key range: the first byte of a chunk id
//! picks the stores whose `[start, end]` range holds it. A write goes to
//! every such store (all must take it, after bounded retries); a read tries
//! them in turn until one returns a blob that decodes and verifies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::codec::{self, ChunkRef};
use super::{ChunkId, Store, StoreError};

/// A chunk no store gave, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ChunkError {
    pub message: String,
    pub failure: ChunkFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFailure {
    /// Some store could not be reached: trying again may help.
    Unreachable,
    /// Every store answered; none has it.
    Missing,
    /// Every store answered; a copy failed verification.
    Corrupt,
    /// A local store could not be read (permissions, I/O errors).
    Local,
}

impl ChunkError {
    pub fn is_transient(&self) -> bool {
        self.failure == ChunkFailure::Unreachable
    }
}

/// One route of the flist's `route` table.
#[derive(Clone)]
pub struct Route {
    pub start: u8,
    pub end: u8,
    pub store: Arc<dyn Store>,
}

pub struct Router {
    routes: Vec<Route>,
    attempts: u32,
}

impl Router {
    /// Opens the stores `specs` name.
    pub fn open(specs: &[super::StoreSpec], timeout: Duration) -> Result<Self> {
        let mut routes = Vec::new();
        for spec in specs {
            routes.push(Route {
                start: spec.start,
                end: spec.end,
                store: Arc::from(super::open(&spec.url, timeout)?),
            });
        }
        if routes.is_empty() {
            bail!("no store given: name at least one with -store URL");
        }
        Ok(Router { routes, attempts: 3 })
    }

    pub fn from_routes(routes: Vec<Route>) -> Self {
        Router { routes, attempts: 3 }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether every store is a local directory.
    pub fn is_local(&self) -> bool {
        self.routes
            .iter()
            .all(|r| r.store.public_url().starts_with("dir://"))
    }

    /// Fails unless every id prefix 00..ff has at least one store.
    pub fn check_coverage(&self) -> Result<()> {
        for b in 0..=255u8 {
            if !self.routes.iter().any(|r| r.start <= b && b <= r.end) {
                bail!("no store covers chunk ids starting with {b:02x}: the -store ranges must cover 00-ff");
            }
        }
        Ok(())
    }

    fn stores_for<'a>(&'a self, id: &'a ChunkId) -> impl Iterator<Item = &'a Arc<dyn Store>> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.start <= id[0] && id[0] <= r.end)
            .map(|r| &r.store)
    }

    /// Stores a blob in every store its id routes to.
    pub async fn set(&self, id: &ChunkId, blob: &[u8]) -> Result<(), StoreError> {
        let mut any = false;
        for store in self.stores_for(id) {
            any = true;
            let mut attempt = 0;
            loop {
                attempt += 1;
                match store.set(id, blob).await {
                    Ok(()) => break,
                    Err(StoreError::Unavailable { .. }) if attempt < self.attempts => {
                        tokio::time::sleep(crate::retry::Backoff::STORE.delay(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !any {
            return Err(StoreError::Refused {
                store: "(none)".into(),
                reason: format!("no store covers chunk ids starting with {:02x}", id[0]),
            });
        }
        Ok(())
    }

    /// Makes what was set durable in every store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        for r in &self.routes {
            r.store.flush().await?;
        }
        Ok(())
    }

    /// Whether every store the id routes to has the blob.
    pub async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let mut any = false;
        for store in self.stores_for(id) {
            any = true;
            if !store.exists(id).await? {
                return Ok(false);
            }
        }
        Ok(any)
    }

    /// Fetches and decodes a chunk, trying each replica until one gives a
    /// blob that verifies. A corrupt replica is skipped with a warning.
    pub async fn get_chunk(&self, chunk: &ChunkRef) -> Result<Vec<u8>, ChunkError> {
        let mut failures = Vec::new();
        let (mut unreachable, mut corrupt, mut local) = (false, false, false);
        for store in self.stores_for(&chunk.id) {
            let answer = match store.get_piece(chunk) {
                Some(read) => read.await.map(|piece| codec::check_piece(chunk, piece)),
                None => store.get(&chunk.id).await.map(|blob| codec::decode(chunk, &blob)),
            };
            match answer {
                Ok(decoded) => match decoded {
                    Ok(piece) => return Ok(piece),
                    Err(e) => {
                        tracing::warn!(store = store.public_url(), "{e}; trying another replica");
                        corrupt = true;
                        failures.push(format!("{}: {e}", store.public_url()));
                    }
                },
                Err(e) => {
                    tracing::debug!(store = store.public_url(), "{e}");
                    unreachable |= matches!(e, StoreError::Unavailable { .. } | StoreError::Refused { .. });
                    corrupt |= matches!(e, StoreError::Corrupt { .. });
                    local |= matches!(e, StoreError::Local { .. });
                    failures.push(e.to_string());
                }
            }
        }
        if failures.is_empty() {
            return Err(ChunkError {
                message: format!("no store covers chunk {}", chunk.id_hex()),
                failure: ChunkFailure::Missing,
            });
        }
        Err(ChunkError {
            message: format!(
                "chunk {} could not be read from any store: {}",
                chunk.id_hex(),
                failures.join("; ")
            ),
            failure: if unreachable {
                ChunkFailure::Unreachable
            } else if local {
                ChunkFailure::Local
            } else if corrupt {
                ChunkFailure::Corrupt
            } else {
                ChunkFailure::Missing
            },
        })
    }
}
