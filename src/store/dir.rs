//! `dir:///path`: blobs in a local directory, `<path>/<hex[0..2]>/<hex>`,
//! written to a temporary file and renamed, so a blob that exists is whole.

use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{bail, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{ChunkId, Store, StoreError, StoreUrl};

pub struct DirStore {
    root: PathBuf,
    url: String,
}

impl DirStore {
    pub fn new(url: &StoreUrl) -> Result<Self> {
        if !url.host.is_empty() || url.path.is_empty() {
            bail!(
                "invalid dir store {}: expected dir:///absolute/path",
                url.public()
            );
        }
        Ok(DirStore {
            root: PathBuf::from(&url.path),
            url: url.public(),
        })
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        let hex = hex::encode(id);
        self.root.join(&hex[..2]).join(hex)
    }

    fn io_error(&self, e: std::io::Error) -> StoreError {
        StoreError::local(&self.url, e)
    }
}

impl Store for DirStore {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        async move {
            match tokio::fs::read(self.path(id)).await {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(hex::encode(id))),
                Err(e) => Err(self.io_error(e)),
            }
        }
        .boxed()
    }

    fn set<'a>(&'a self, id: &'a ChunkId, blob: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let path = self.path(id);
            let dir = path.parent().expect("a blob path has a parent").to_owned();
            let blob = blob.to_vec();
            // Durable together in `flush`, not one fsync per chunk.
            tokio::task::spawn_blocking(move || crate::workdir::write_replacing(&path, &blob, false))
                .await
                .map_err(|e| StoreError::unavailable(&self.url, e))?
                .map_err(|e| StoreError::local(&self.url, format!("{e:#} (in {})", dir.display())))
        }
        .boxed()
    }

    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            match tokio::fs::metadata(self.path(id)).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(self.io_error(e)),
            }
        }
        .boxed()
    }

    fn public_url(&self) -> &str {
        &self.url
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || {
                let dir = std::fs::File::open(&root)?;
                nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
            })
            .await
            .map_err(|e| StoreError::unavailable(&self.url, e))?
            .map_err(|e| self.io_error(e))
        }
        .boxed()
    }
}
