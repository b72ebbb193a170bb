//! `dir:///path`: blobs in a local directory, `<path>/<hex[0..2]>/<hex>`,
//! written to a temporary file and renamed, so a blob that exists is whole.

use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{bail, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::codec::MAX_BLOB;
use super::{ChunkId, Store, StoreError, StoreUrl, IDENTITY_KEY};

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
        let root = PathBuf::from(&url.path);
        if root.join(crate::owned::claim::CHUNK_CACHE).exists() {
            crate::refuse!(
                "{} is a chunk cache, not a store: a cache evicts what it holds",
                root.display()
            );
        }
        Ok(DirStore {
            root,
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
            match read_blob(&self.path(id)).await {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(self.io_error(std::io::Error::other(format!(
                    "{} is longer than a blob can be ({MAX_BLOB} bytes)",
                    self.path(id).display()
                )))),
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
            // Whole or absent, even if killed; durable together in `flush`.
            tokio::task::spawn_blocking(move || write_chunk(&path, &blob))
                .await
                .map_err(|e| StoreError::unavailable(&self.url, e))?
                .map_err(|e| StoreError::local(&self.url, format!("{e} (in {})", dir.display())))
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

    fn identity(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        async move {
            match tokio::fs::read(self.root.join(IDENTITY_KEY)).await {
                Ok(text) => Ok(super::parse_identity(&text)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io_error(e)),
            }
        }
        .boxed()
    }

    fn set_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let (root, text) = (self.root.clone(), format!("{id}\n"));
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&root)?;
                crate::owned::temp::write_new_file(&root, IDENTITY_KEY, text.as_bytes())
            })
            .await
            .map_err(|e| StoreError::unavailable(&self.url, e))?
            .map_err(|e| self.io_error(e))
        }
        .boxed()
    }

    fn holds_locally(&self, id: &ChunkId) -> Option<bool> {
        Some(self.path(id).is_file())
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        Some(&self.root)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&root)?;
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

/// Writes a chunk whole or not at all, creating the store's directories
/// (its root too) when missing.
fn write_chunk(path: &std::path::Path, blob: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a blob path has a parent");
    let name = path.file_name().expect("a blob has a name").to_string_lossy();
    match crate::owned::temp::write_new_file(dir, &name, blob) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            crate::owned::temp::write_new_file(dir, &name, blob)
        }
        other => other,
    }
}

/// A blob file's bytes, or `None` if it is longer than any blob: read on
/// the blocking pool in one go (tokio's own file reads would take a
/// blocking task per buffer-full).
async fn read_blob(path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        if len > MAX_BLOB as u64 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(len as usize);
        file.take(MAX_BLOB as u64 + 1).read_to_end(&mut out)?;
        Ok((out.len() <= MAX_BLOB).then_some(out))
    })
    .await
    .map_err(std::io::Error::other)?
}
