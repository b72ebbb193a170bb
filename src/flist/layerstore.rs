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
//! layer is read span by span. A zstd layer, which cannot be read from its
//! middle, is fetched whole on first use, checked against its digest and
//! decompressed into an unnamed temporary file for the mount's life.
//!
//! Nothing the blob source says is trusted: an interval whose bytes do not
//! inflate to its hash is an error ([`StoreError::Corrupt`]), never
//! cached, and every piece is checked against its key by the router on
//! top. A registry (or a proxy) that lies costs an EIO, never a wrong byte.

use std::collections::HashMap;
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

/// Decoded intervals kept: at least one, and more while they hold at most
/// this much (an interval is [`gzindex::SPAN`] and a block, 4 MiB and a
/// little, for gzip as Docker and Go write it).
const DECODED_BYTES: usize = 32 << 20;

/// Intervals fetched and inflated at once.
const DECODING: usize = 4;

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
            let file = std::fs::File::open(path)
                .map_err(|e| StoreError::local(&self.url, format!("opening layer {digest}: {e}")))?;
            return read_at(Arc::new(file), start, end - start)
                .await
                .map_err(|e| StoreError::local(&self.url, format!("reading layer {digest}: {e}")));
        }
        let Some(registry) = &self.registry else {
            return Err(StoreError::NotFound(format!(
                "layer {digest} (no registry to read it from)"
            )));
        };
        registry.fetch_range(digest, start, end).await.map_err(|e| {
            use crate::image::registry::ErrorKind;
            let reason = format!("{e:#}");
            match crate::image::registry::error_kind(&e) {
                Some(ErrorKind::NotFound) => StoreError::NotFound(format!("layer {digest}: {reason}")),
                Some(ErrorKind::Auth) => StoreError::refused(&self.url, reason),
                Some(ErrorKind::Protocol | ErrorKind::Integrity) => StoreError::corrupt(&self.url, reason),
                _ => StoreError::unavailable(&self.url, reason),
            }
        })
    }
}

/// `len` bytes of `file` from `start`, read on the blocking pool.
async fn read_at(file: Arc<std::fs::File>, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, start).map(|_| buf)
    });
    read.await.map_err(std::io::Error::other)?
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
    /// Intervals being fetched and inflated at once.
    decoding: tokio::sync::Semaphore,
    /// Zstd layers, fetched whole on first use.
    unpacked: Vec<OnceCell<Arc<std::fs::File>>>,
    pub stats: Arc<LayerStats>,
}

impl LayerStore {
    pub fn new(layers: Vec<LayerIndex>, blobs: Blobs) -> Self {
        LayerStore {
            unpacked: layers.iter().map(|_| OnceCell::new()).collect(),
            layers: Arc::new(layers),
            blobs,
            decoded: Mutex::new(LruCache::unbounded()),
            decoding: tokio::sync::Semaphore::new(DECODING),
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
        StoreError::corrupt(&self.blobs.url, reason)
    }

    /// The span's bytes.
    async fn piece(&self, span: Span) -> Result<Vec<u8>, StoreError> {
        let missing = || StoreError::NotFound(format!("{span:?}"));
        let layer = self.layers.get(span.layer as usize).ok_or_else(missing)?;
        if span.end() > layer.tar_size || span.len as usize > crate::store::CHUNK_SIZE {
            return Err(missing());
        }
        match layer.compression {
            Compression::None => self.read(&layer.digest, span.offset, span.end()).await,
            Compression::Zstd => {
                let file = self.unpacked(span.layer).await?;
                read_at(file, span.offset, u64::from(span.len))
                    .await
                    .map_err(|e| self.local(format!("reading the unpacked layer: {e}")))
            }
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

    fn local(&self, reason: String) -> StoreError {
        StoreError::local(&self.blobs.url, reason)
    }

    /// A zstd layer's tar stream in an unnamed temporary file: fetched
    /// whole (in parts, each a ranged read), checked against its digest,
    /// decompressed, once however many ask.
    async fn unpacked(&self, layer: u32) -> Result<Arc<std::fs::File>, StoreError> {
        let index = &self.layers[layer as usize];
        self.unpacked[layer as usize]
            .get_or_try_init(|| async {
                tracing::info!(
                    "layer {} is zstd-compressed: it cannot be read in parts, so it is fetched whole ({})",
                    index.digest,
                    crate::progress::human_bytes(index.size)
                );
                let (parts, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
                let tar_size = index.tar_size;
                let writer = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                    use std::io::Write;
                    let file = tempfile::tempfile()?;
                    // No more than the index says the tar stream holds: a
                    // layer that inflates beyond it fails, the disk spared.
                    let bounded = Bounded {
                        inner: std::io::BufWriter::new(file),
                        left: tar_size,
                    };
                    let mut decoder = zstd::stream::write::Decoder::new(bounded)?;
                    while let Some(part) = received.blocking_recv() {
                        decoder.write_all(&part)?;
                    }
                    decoder.flush()?;
                    decoder
                        .into_inner()
                        .inner
                        .into_inner()
                        .map_err(|e| e.into_error())
                });
                let mut hasher = crate::image::digest::Hasher::new(index.digest.algorithm());
                let mut pos = 0;
                while pos < index.size {
                    let end = (pos + (16 << 20)).min(index.size);
                    let part = self.read(&index.digest, pos, end).await?;
                    hasher.update(&part);
                    if parts.send(part).await.is_err() {
                        // The writer stopped: its error says why.
                        break;
                    }
                    pos = end;
                }
                drop(parts);
                let file = writer.await.map_err(|e| self.local(e.to_string()))?;
                let file = file.map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::Other => {
                        self.corrupt(format!("layer {}: {e}", index.digest))
                    }
                    _ => self.local(format!("unpacking layer {}: {e}", index.digest)),
                })?;
                if pos < index.size || hasher.finish() != index.digest {
                    return Err(self.corrupt(format!("layer {} does not match its digest", index.digest)));
                }
                Ok(Arc::new(file))
            })
            .await
            .cloned()
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
            // A few intervals fetched and inflated at a time: each holds
            // its input and output until done.
            let _slot = self
                .decoding
                .acquire()
                .await
                .map_err(|e| self.local(e.to_string()))?;
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
        .inspect(|_| self.keep_decoded_within_bounds())
    }

    /// Drops the least recently used decoded intervals beyond
    /// [`DECODED_BYTES`], never the most recent one nor one being filled.
    fn keep_decoded_within_bounds(&self) {
        let mut decoded = self.decoded.lock().unwrap();
        let mut bytes: usize = decoded.iter().filter_map(|(_, c)| c.get()).map(|d| d.len()).sum();
        while bytes > DECODED_BYTES {
            let oldest = (decoded.iter().rev().skip(1))
                .find(|(_, c)| c.get().is_some())
                .map(|(k, _)| *k);
            let Some(key) = oldest else { break };
            if let Some(cell) = decoded.pop(&key) {
                bytes -= cell.get().map_or(0, |d| d.len());
            }
        }
    }
}

impl Store for LayerStore {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move { Err(StoreError::NotFound(hex::encode(id))) })
    }

    fn set<'a>(&'a self, _: &'a ChunkId, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            Err(StoreError::refused(
                &self.blobs.url,
                "an image's layers are read-only",
            ))
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

/// A writer that takes at most `left` bytes more.
struct Bounded<W> {
    inner: W,
    left: u64,
}

impl<W: std::io::Write> std::io::Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the layer inflates to more than its tar stream's size in the index",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
