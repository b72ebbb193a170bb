//! An image's layer blobs as a read-only store, for its seek index (see
//! [`super::seekindex`]): a piece is a span of a layer's tar stream, read
//! with ranged reads of the blob, from its registry or from a local copy.
//!
//! A gzip layer is read an interval at a time: from the checkpoint before
//! the span to the next checkpoint, one ranged read of the compressed
//! bytes, inflated from the checkpoint's window and checked against the
//! interval's hash in the index. A few decoded intervals are kept (a
//! directory's files lie next to each other in a layer, so reading them
//! in turn costs one fetch per interval, not one per file). A plain tar
//! layer is read span by span.
//!
//! Nothing the blob source says is trusted: an interval whose bytes do not
//! inflate to its hash is an error ([`StoreError::Corrupt`]), never
//! cached, and every piece is checked against its key by the router on
//! top. A registry (or a proxy) that lies costs an EIO, never a wrong byte.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use lru::LruCache;
use tokio::sync::OnceCell;

use super::seekindex::{LayerIndex, Span};
use crate::fs::gzindex;
use crate::fs::layer::Compression;
use crate::image::digest::Digest;
use crate::image::registry::RegistryClient;
use crate::store::{ChunkId, ChunkRef, Store, StoreError};

/// Decoded intervals kept (each up to [`gzindex::SPAN`] and a block).
const DECODED_INTERVALS: usize = 8;

/// Where the layer blobs are read from: a local copy when there is one,
/// else the registry.
pub struct Blobs {
    pub local: HashMap<Digest, PathBuf>,
    pub registry: Option<RegistryClient>,
    /// For messages: the registry and repository.
    pub url: String,
}

impl Blobs {
    async fn read_range(&self, digest: &Digest, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
        if let Some(path) = self.local.get(digest) {
            let path = path.clone();
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                use std::os::unix::fs::FileExt;
                let file = std::fs::File::open(&path)?;
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start)?;
                Ok(buf)
            });
            return match read.await {
                Ok(Ok(buf)) => Ok(buf),
                Ok(Err(e)) => Err(StoreError::Local {
                    store: self.url.clone(),
                    reason: format!("reading layer {digest}: {e}"),
                }),
                Err(e) => Err(StoreError::Local {
                    store: self.url.clone(),
                    reason: e.to_string(),
                }),
            };
        }
        let Some(registry) = &self.registry else {
            return Err(StoreError::NotFound(format!(
                "layer {digest} (no registry to read it from)"
            )));
        };
        registry.fetch_range(digest, start, end).await.map_err(|e| {
            let reason = format!("{e:#}");
            match crate::image::registry::error_kind(&e) {
                Some(crate::image::registry::ErrorKind::NotFound) => {
                    StoreError::NotFound(format!("layer {digest}: {reason}"))
                }
                Some(crate::image::registry::ErrorKind::Auth) => StoreError::Refused {
                    store: self.url.clone(),
                    reason,
                },
                Some(crate::image::registry::ErrorKind::Protocol) => StoreError::Corrupt {
                    store: self.url.clone(),
                    reason,
                },
                _ => StoreError::Unavailable {
                    store: self.url.clone(),
                    reason,
                },
            }
        })
    }
}

type Interval = Arc<OnceCell<Arc<Vec<u8>>>>;

/// Ranged reads of the blob source, for the statistics.
#[derive(Debug, Default)]
pub struct LayerStats {
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct LayerStore {
    layers: Arc<Vec<LayerIndex>>,
    blobs: Blobs,
    decoded: Mutex<LruCache<(u32, usize), Interval>>,
    pub stats: Arc<LayerStats>,
}

impl LayerStore {
    pub fn new(layers: Vec<LayerIndex>, blobs: Blobs) -> Self {
        LayerStore {
            layers: Arc::new(layers),
            blobs,
            decoded: Mutex::new(LruCache::new(NonZeroUsize::new(DECODED_INTERVALS).unwrap())),
            stats: Arc::default(),
        }
    }

    async fn read(&self, digest: &Digest, start: u64, end: u64) -> Result<Vec<u8>, StoreError> {
        let bytes = self.blobs.read_range(digest, start, end).await?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            store: self.blobs.url.clone(),
            reason,
        }
    }

    /// The span's bytes.
    async fn piece(&self, span: Span) -> Result<Vec<u8>, StoreError> {
        let missing = || StoreError::NotFound(format!("{span:?}"));
        let layer = self.layers.get(span.layer as usize).ok_or_else(missing)?;
        if span.end() > layer.tar_size {
            return Err(missing());
        }
        match layer.compression {
            Compression::None => self.read(&layer.digest, span.offset, span.end()).await,
            Compression::Zstd => Err(missing()),
            Compression::Gzip => {
                let mut out = Vec::with_capacity(span.len as usize);
                let mut pos = span.offset;
                while pos < span.end() {
                    let (i, end) = layer.interval(pos).ok_or_else(missing)?;
                    let data = self.interval(span.layer, i).await?;
                    let from = layer.checkpoints[i].out;
                    let to = end.min(span.end());
                    out.extend_from_slice(&data[(pos - from) as usize..(to - from) as usize]);
                    pos = to;
                }
                Ok(out)
            }
        }
    }

    /// Checkpoint `i`'s interval of layer `layer`, decoded and checked:
    /// from the cache, or fetched once however many ask at a time.
    async fn interval(&self, layer: u32, i: usize) -> Result<Arc<Vec<u8>>, StoreError> {
        let cell = self
            .decoded
            .lock()
            .unwrap()
            .get_or_insert((layer, i), Interval::default)
            .clone();
        cell.get_or_try_init(|| async {
            let index = &self.layers[layer as usize];
            let (start, end) = index.compressed_range(i);
            let compressed = self.read(&index.digest, start, end).await?;
            let layers = self.layers.clone();
            let decoded = tokio::task::spawn_blocking(move || {
                let index = &layers[layer as usize];
                let at = &index.checkpoints[i];
                let (_, out_end) = index.interval(at.out).expect("a checkpoint's own interval");
                let data = gzindex::inflate_from(at, &compressed, 0, (out_end - at.out) as usize)?;
                Ok::<_, std::io::Error>((gzindex::interval_hash(&data) == index.hashes[i]).then_some(data))
            })
            .await
            .map_err(|e| self.corrupt(e.to_string()))?;
            let what = || format!("layer {} bytes {start}-{end}", index.digest);
            match decoded {
                Ok(Some(data)) => Ok(Arc::new(data)),
                Ok(None) => Err(self.corrupt(format!("{} do not decode to what the index says", what()))),
                Err(e) => Err(self.corrupt(format!("{}: {e}", what()))),
            }
        })
        .await
        .cloned()
    }
}

impl Store for LayerStore {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move { Err(StoreError::NotFound(hex::encode(id))) })
    }

    fn set<'a>(&'a self, _: &'a ChunkId, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            Err(StoreError::Refused {
                store: self.blobs.url.clone(),
                reason: "an image's layers are read-only".into(),
            })
        })
    }

    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(Span::from_id(id).is_some()) })
    }

    fn public_url(&self) -> &str {
        &self.blobs.url
    }

    fn get_piece<'a>(&'a self, chunk: &'a ChunkRef) -> Option<BoxFuture<'a, Result<Vec<u8>, StoreError>>> {
        let span = Span::from_id(&chunk.id)?;
        Some(Box::pin(self.piece(span)))
    }
}
