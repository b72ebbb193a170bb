//! The local chunk cache between the readers of an flist (the FUSE
//! filesystem, `unpack`) and its stores.
//!
//! A chunk is looked for in three places, in order:
//! 1. a small in-memory LRU of decoded chunks (hot data of open files);
//! 2. a directory on local disk (`<dir>/<hh>/<key hex>`, the decoded piece
//!    named by its BLAKE2b-256 key), bounded by a size limit with
//!    least-recently-used eviction. Files are written to a temporary name
//!    and renamed, and every file read back is hashed against its name: a
//!    torn or corrupted file (crash, disk fault, tampering) is deleted and
//!    fetched again, never served;
//! 3. a cache store shared by a fleet (`-cache-store`: a zdb, dir, S3 or
//!    HTTP store near the readers), if one is given: read first, and
//!    filled with what the stores gave on a miss;
//! 4. the stores, through the router, which verifies the blob and the
//!    decoded piece. Fetches are retried until a deadline, so a store that
//!    is down or slow gives an error within a bounded time, never a hang.
//!
//! Whatever gave a chunk, it is verified against the flist's id and key
//! before use: a cache store that lies costs a fetch from the stores, never
//! a wrong byte.
//!
//! Concurrent requests for the same missing chunk share one fetch, which
//! runs at the priority of its most urgent reader: [`fetch`] decides which
//! fetches run and how many at once.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use lru::LruCache;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::fetch::{self, Priority, Scheduler, Ticket};
use crate::store::{codec, ChunkRef, Router, StoreSpec, CHUNK_SIZE};
use crate::store::{ChunkError, ChunkFailure};

/// Expected bytes of the background fetches in flight: a fetch holds its
/// blob and then its decoded piece, so this bounds their memory.
const FETCH_BYTES_IN_FLIGHT: u64 = 8 << 20;

/// Disk cache writes at once (each holds its piece until written).
const DISK_WRITES_IN_FLIGHT: usize = 4;

/// A decoded chunk, shared by every reader that needs it.
pub type Piece = Arc<Vec<u8>>;

/// Chunk ids and keys are 32 bytes; the cache is keyed by the piece's key.
type Key = [u8; 32];

/// How the cache behaves.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Where decoded chunks are kept on disk; `None` keeps none.
    pub dir: Option<PathBuf>,
    /// Bytes the disk cache may hold before it evicts.
    pub size_limit: u64,
    /// Decoded chunks kept in memory.
    pub memory_chunks: usize,
    /// How long one chunk fetch may take, retries included.
    pub timeout: Duration,
    /// `dir` is flmount's own (in the workdir): claimed even if it holds
    /// files from before caches were marked.
    pub adopt_dir: bool,
    /// A shared cache store in front of the stores (`-cache-store`).
    pub tier: Vec<StoreSpec>,
}

impl CacheOptions {
    /// The default size limit of the disk cache (4 GiB).
    pub const DEFAULT_SIZE: u64 = 4 << 30;
}

/// What the cache did, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub memory_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    /// Chunks the cache store gave.
    pub tier_hits: AtomicU64,
    pub fetched: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub corrupt: AtomicU64,
    pub evicted: AtomicU64,
}

/// One chunk being loaded, and every reader waiting for it.
#[derive(Default)]
struct Flight {
    result: OnceCell<Result<Piece, ChunkError>>,
    /// Set by the first reader; raised by more urgent ones.
    ticket: OnceCell<Arc<Ticket>>,
}

pub struct ChunkCache {
    router: Router,
    disk: Option<Arc<DiskCache>>,
    memory: Mutex<LruCache<Key, Piece>>,
    inflight: Mutex<HashMap<Key, Arc<Flight>>>,
    /// Fetched pieces on their way to the disk cache: found here until
    /// written, so a reader in between does not fetch them again.
    pending: Arc<Mutex<HashMap<Key, Piece>>>,
    /// Bounds the disk writes in flight (each holds a piece in memory).
    writes: Arc<Semaphore>,
    /// Orders the store fetches and bounds how many run at once.
    scheduler: Arc<Scheduler>,
    timeout: Duration,
    tier: Option<Tier>,
    pub stats: Arc<CacheStats>,
}

/// The shared cache store, and a bound on the fills in flight (a fill that
/// finds none free is skipped: the tier saves work, it is never needed).
struct Tier {
    router: Arc<Router>,
    fills: Arc<Semaphore>,
}

/// Cache store fills at once, and how long an unmount waits for them.
const TIER_FILLS_IN_FLIGHT: usize = 16;
const TIER_FLUSH: Duration = Duration::from_secs(10);

impl ChunkCache {
    pub fn new(router: Router, options: &CacheOptions) -> Result<Self> {
        let stats = Arc::new(CacheStats::default());
        let disk = match &options.dir {
            Some(dir) => {
                for route in router.routes() {
                    let Some(root) = route.store.local_root() else {
                        continue;
                    };
                    let same = |a: &Path, b: &Path| {
                        crate::owned::FileId::following(a).ok().is_some()
                            && crate::owned::FileId::following(a).ok()
                                == crate::owned::FileId::following(b).ok()
                    };
                    if same(dir, root) {
                        crate::refuse!(
                            "-cache {} is the store {}: a cache evicts what it holds; give another directory",
                            dir.display(),
                            route.store.public_url()
                        );
                    }
                }
                Some(Arc::new(DiskCache::open(
                    dir,
                    options.size_limit,
                    options.adopt_dir,
                    stats.clone(),
                )?))
            }
            None => None,
        };
        Ok(ChunkCache {
            router,
            disk,
            memory: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(options.memory_chunks.max(1)).unwrap(),
            )),
            inflight: Mutex::new(HashMap::new()),
            pending: Arc::new(Mutex::new(HashMap::new())),
            writes: Arc::new(Semaphore::new(DISK_WRITES_IN_FLIGHT)),
            scheduler: Scheduler::new(FETCH_BYTES_IN_FLIGHT),
            timeout: options.timeout,
            tier: match options.tier.as_slice() {
                [] => None,
                specs => Some(Tier {
                    router: Arc::new(Router::open(specs, options.timeout)?),
                    fills: Arc::new(Semaphore::new(TIER_FILLS_IN_FLIGHT)),
                }),
            },
            stats,
        })
    }

    /// The chunk if it is in memory: no waiting, no I/O.
    pub fn get_in_memory(&self, chunk: &ChunkRef) -> Option<Piece> {
        self.get_all_in_memory(std::slice::from_ref(chunk))
            .and_then(|mut v| v.pop())
    }

    /// Every one of `chunks` if all are in memory (counted as hits only
    /// then, since a caller that gets `None` fetches them all).
    pub fn get_all_in_memory(&self, chunks: &[ChunkRef]) -> Option<Vec<Piece>> {
        let mut memory = self.memory.lock().unwrap();
        let pending = self.pending.lock().unwrap();
        let pieces: Option<Vec<Piece>> = chunks
            .iter()
            .map(|c| memory.get(&c.key).or_else(|| pending.get(&c.key)).cloned())
            .collect();
        if pieces.is_some() {
            self.stats
                .memory_hits
                .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        }
        pieces
    }

    /// Whether the chunk is in memory (not counted as a hit, not touched).
    pub fn is_in_memory(&self, chunk: &ChunkRef) -> bool {
        self.memory.lock().unwrap().contains(&chunk.key)
            || self.pending.lock().unwrap().contains_key(&chunk.key)
    }

    /// The decoded chunk, from memory, disk or the stores, for a reader
    /// that waits for it.
    pub async fn get(&self, chunk: &ChunkRef) -> Result<Piece> {
        if let Some(piece) = self.get_in_memory(chunk) {
            return Ok(piece);
        }
        let piece = self.load_once(chunk, Priority::Demand, CHUNK_SIZE as u64).await?;
        self.memory.lock().unwrap().put(chunk.key, piece.clone());
        Ok(piece)
    }

    /// Makes sure the chunk (of about `bytes` bytes) is cached before it is
    /// read: read-ahead, traces and prefetching. It goes to the disk cache
    /// (not pushing hot chunks out of memory), except read-ahead from local
    /// stores or without a disk cache, which is kept in memory.
    pub async fn fill(&self, chunk: &ChunkRef, priority: Priority, bytes: u64) -> Result<()> {
        if self.is_in_memory(chunk) {
            return Ok(());
        }
        let to_disk = self.disk.is_some() && (priority != Priority::Ahead || self.fetches_ahead());
        match &self.disk {
            Some(disk) if to_disk && disk.contains(&chunk.key) => Ok(()),
            _ if to_disk => self.load_once(chunk, priority, bytes).await.map(drop),
            _ => {
                let piece = self.load_once(chunk, priority, bytes).await?;
                self.memory.lock().unwrap().put(chunk.key, piece);
                Ok(())
            }
        }
    }

    /// Whether the chunk is in memory or on disk (not counted as a hit).
    pub fn is_cached(&self, chunk: &ChunkRef) -> bool {
        self.is_in_memory(chunk) || self.disk.as_ref().is_some_and(|d| d.contains(&chunk.key))
    }

    /// What the fetch scheduler is doing.
    pub fn fetch_load(&self) -> fetch::Load {
        self.scheduler.load()
    }

    /// Waits for the chunks being written to the disk cache.
    /// Waits for the chunks being written to the disk cache, and (for a
    /// few seconds at most) for the cache store's fills.
    pub async fn flush(&self) {
        // A demand read's write is spawned and takes its slot later: the
        // pieces pending now are waited for by key, not only by slot.
        let waiting: Vec<Key> = self.pending.lock().unwrap().keys().copied().collect();
        while waiting
            .iter()
            .any(|k| self.pending.lock().unwrap().contains_key(k))
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = self.writes.acquire_many(DISK_WRITES_IN_FLIGHT as u32).await;
        if let Some(tier) = &self.tier {
            let all = tier.fills.acquire_many(TIER_FILLS_IN_FLIGHT as u32);
            if tokio::time::timeout(TIER_FLUSH, all).await.is_err() {
                tracing::warn!("the cache store did not take every chunk within {TIER_FLUSH:?}");
            }
        }
    }

    /// Whether a disk cache is in use, and its size limit.
    pub fn disk_limit(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.limit)
    }

    /// Whether fetching ahead pays: the stores are far (not all local
    /// directories) and a disk cache holds what is fetched.
    pub fn fetches_ahead(&self) -> bool {
        self.disk.is_some() && !self.router.is_local()
    }

    /// Loads a chunk, sharing the work with every concurrent caller; the
    /// fetch runs at the priority of the most urgent one.
    async fn load_once(&self, chunk: &ChunkRef, priority: Priority, bytes: u64) -> Result<Piece> {
        let flight = self
            .inflight
            .lock()
            .unwrap()
            .entry(chunk.key)
            .or_default()
            .clone();
        let ticket = flight
            .ticket
            .get_or_init(|| async { self.scheduler.ticket(priority, bytes) })
            .await;
        self.scheduler.raise(ticket, priority);
        let result = flight
            .result
            .get_or_init(|| self.load(chunk, ticket))
            .await
            .clone();
        {
            let mut inflight = self.inflight.lock().unwrap();
            if inflight.get(&chunk.key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                inflight.remove(&chunk.key);
            }
        }
        result.map_err(anyhow::Error::new)
    }

    async fn load(&self, chunk: &ChunkRef, ticket: &Arc<Ticket>) -> Result<Piece, ChunkError> {
        if let Some(disk) = self.disk.as_ref().filter(|d| d.contains(&chunk.key)) {
            let (disk, key) = (disk.clone(), chunk.key);
            if let Ok(Some(piece)) = tokio::task::spawn_blocking(move || disk.read(&key)).await {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::new(piece));
            }
        }
        let permit = self.scheduler.admit(ticket).await;
        let (piece, from_stores) = self.fetch(chunk, &permit).await?;
        let piece = Arc::new(piece);
        permit.succeeded();
        let demand = ticket.priority() == Priority::Demand;
        if from_stores {
            self.fill_tier(chunk, &piece, !demand).await;
        }
        self.stats.fetched.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fetched_bytes
            .fetch_add(piece.len() as u64, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            let (disk, key, writes) = (disk.clone(), chunk.key, self.writes.clone());
            let pending = self.pending.clone();
            pending.lock().unwrap().insert(key, piece.clone());
            let write = async move |piece: Piece| {
                // Wait for a write slot (back-pressure), not for the write.
                if let Ok(permit) = writes.acquire_owned().await {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = disk.write(&key, &piece) {
                            tracing::warn!("caching chunk {}: {e:#}", hex::encode(key));
                        }
                        pending.lock().unwrap().remove(&key);
                        drop(permit);
                    });
                } else {
                    pending.lock().unwrap().remove(&key);
                }
            };
            if demand {
                // A blocked reader never waits behind background writes.
                tokio::spawn(write(piece.clone()));
            } else {
                // The fetch keeps its place (and so its memory counted)
                // until the piece is handed to a write.
                write(piece.clone()).await;
            }
        }
        drop(permit);
        Ok(piece)
    }

    /// Fetches from the stores, retrying until the deadline.
    /// Fetches from the cache store or else the stores, retrying until
    /// the deadline; says whether the stores gave it.
    async fn fetch(&self, chunk: &ChunkRef, permit: &fetch::Permit) -> Result<(Vec<u8>, bool), ChunkError> {
        let deadline = Instant::now() + self.timeout;
        if let Some(piece) = self.read_tier(chunk).await {
            return Ok((piece, false));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let delay = crate::retry::Backoff::STORE.delay(attempt);
            let error = match tokio::time::timeout_at(deadline, self.router.get_chunk(chunk)).await {
                Ok(Ok(piece)) => return Ok((piece, true)),
                // Missing or corrupt everywhere: asking again will not help.
                Ok(Err(e)) if !e.is_transient() => return Err(e),
                Ok(Err(e)) => e.message,
                Err(_) => format!("chunk {}: no store answered", chunk.id_hex()),
            };
            if Instant::now() + delay >= deadline {
                return Err(ChunkError {
                    message: format!("{error} (gave up after {:?})", self.timeout),
                    failure: ChunkFailure::Unreachable,
                });
            }
            permit.congested();
            tracing::debug!("{error}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
        }
    }
}

impl ChunkCache {
    /// The chunk from the cache store, verified; `None` on a miss, a
    /// corrupt copy, or a cache store that does not answer within a
    /// quarter of the timeout (the stores are then asked).
    async fn read_tier(&self, chunk: &ChunkRef) -> Option<Vec<u8>> {
        let tier = self.tier.as_ref()?;
        match tokio::time::timeout(self.timeout / 4, tier.router.get_chunk(chunk)).await {
            Ok(Ok(piece)) => {
                self.stats.tier_hits.fetch_add(1, Ordering::Relaxed);
                Some(piece)
            }
            Ok(Err(e)) => {
                if e.failure != ChunkFailure::Missing {
                    tracing::debug!("cache store: {e}");
                }
                None
            }
            Err(_) => {
                tracing::debug!("cache store: no answer for chunk {}", chunk.id_hex());
                None
            }
        }
    }

    /// Puts a chunk the stores gave into the cache store, in the
    /// background. `wait`: for a free fill slot (a background fetch, whose
    /// place in the scheduler then bounds the pieces waiting); otherwise
    /// the fill is skipped when none is free (a blocked reader waits for
    /// nothing; the cache store only saves work).
    async fn fill_tier(&self, chunk: &ChunkRef, piece: &Piece, wait: bool) {
        let Some(tier) = &self.tier else { return };
        let slot = if wait {
            tier.fills.clone().acquire_owned().await.ok()
        } else {
            tier.fills.clone().try_acquire_owned().ok()
        };
        let Some(slot) = slot else { return };
        let (router, chunk, piece) = (tier.router.clone(), *chunk, piece.clone());
        tokio::spawn(async move {
            // Encoding is deterministic: the same piece gives the same blob
            // the stores hold, under the same id.
            let blob = match tokio::task::spawn_blocking(move || codec::encode(&piece)).await {
                Ok((encoded, blob)) if encoded == chunk => blob,
                _ => return,
            };
            if let Err(e) = router.set(&chunk.id, &blob).await {
                tracing::debug!("filling the cache store: {e}");
            }
            drop(slot);
        });
    }
}

/// Decoded chunks on local disk, with a size limit and LRU eviction. The
/// directory is claimed with a marker ([`MARKER`]); only files named by a
/// key, in a directory named by the key's first two hex digits, are ever
/// read, evicted or deleted.
struct DiskCache {
    dir: PathBuf,
    limit: u64,
    index: Mutex<DiskIndex>,
    stats: Arc<CacheStats>,
    _claim: crate::owned::claim::Claimed,
}

/// The marker file of a chunk cache directory.
pub const MARKER: &str = crate::owned::claim::CHUNK_CACHE;

struct DiskIndex {
    /// Every cached chunk and its size, least recently used first.
    lru: LruCache<Key, u64>,
    bytes: u64,
}

impl DiskCache {
    fn open(dir: &Path, limit: u64, adopt: bool, stats: Arc<CacheStats>) -> Result<Self> {
        let claim = crate::owned::claim::claim(dir, MARKER, "chunk cache", adopt)?;
        let mut found: Vec<(SystemTime, Key, u64)> = Vec::new();
        for shard in fs::read_dir(dir)? {
            let shard = shard?;
            let name = shard.file_name();
            let is_shard = name.len() == 2
                && name
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_shard || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(key) = entry.file_name().to_str().and_then(parse_key) else {
                    continue;
                };
                let meta = entry.metadata()?;
                if meta.is_file() && hex::encode(&key[..1]) == name.to_string_lossy() {
                    // An oversized file is a corrupt chunk: read() removes it.
                    found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), key, meta.len()))
                }
            }
        }
        found.sort();
        let mut index = DiskIndex {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for (_, key, size) in found {
            index.lru.put(key, size);
            index.bytes += size;
        }
        let cache = DiskCache {
            dir: dir.to_owned(),
            limit,
            index: Mutex::new(index),
            stats,
            _claim: claim,
        };
        {
            let mut index = cache.index.lock().unwrap();
            cache.evict(&mut index);
            tracing::debug!(
                "chunk cache {}: {} chunks, {} bytes",
                dir.display(),
                index.lru.len(),
                index.bytes
            );
        }
        Ok(cache)
    }

    /// Deletes a cached chunk's file (never through a symlinked shard).
    fn remove(&self, key: &Key) {
        let hex = hex::encode(key);
        let _ = crate::owned::temp::remove_in(&self.dir.join(&hex[..2]), &hex);
    }

    fn path(&self, key: &Key) -> PathBuf {
        let hex = hex::encode(key);
        self.dir.join(&hex[..2]).join(hex)
    }

    fn contains(&self, key: &Key) -> bool {
        self.index.lock().unwrap().lru.contains(key)
    }

    /// The cached piece, if present and intact.
    fn read(&self, key: &Key) -> Option<Vec<u8>> {
        self.index.lock().unwrap().lru.get(key)?;
        let path = self.path(key);
        match fs::read(&path) {
            Ok(piece) if codec::blake2b256(&piece) == *key => Some(piece),
            Ok(_) => {
                tracing::warn!(
                    "cached chunk {} is corrupt: removing it and fetching it again",
                    path.display()
                );
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                self.forget(key);
                self.remove(key);
                None
            }
            Err(e) => {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!("reading cached chunk {}: {e}", path.display());
                }
                self.forget(key);
                None
            }
        }
    }

    fn forget(&self, key: &Key) {
        let mut index = self.index.lock().unwrap();
        if let Some(size) = index.lru.pop(key) {
            index.bytes -= size;
        }
    }

    /// Stores a verified piece: whole or not at all, even if killed.
    fn write(&self, key: &Key, piece: &[u8]) -> Result<()> {
        if piece.len() as u64 > self.limit || self.contains(key) {
            return Ok(());
        }
        let path = self.path(key);
        let shard = path.parent().expect("a chunk path has a parent");
        let name = hex::encode(key);
        let result = match crate::owned::temp::write_new_file(shard, &name, piece) {
            Err(e) if e.kind() == ErrorKind::NotFound => fs::create_dir_all(shard)
                .and_then(|()| crate::owned::temp::write_new_file(shard, &name, piece)),
            other => other,
        };
        result.with_context(|| format!("writing {}", path.display()))?;
        let mut index = self.index.lock().unwrap();
        if index.lru.put(*key, piece.len() as u64).is_none() {
            index.bytes += piece.len() as u64;
        }
        self.evict(&mut index);
        Ok(())
    }

    /// Removes least recently used chunks until the cache fits its limit.
    fn evict(&self, index: &mut DiskIndex) {
        while index.bytes > self.limit {
            let Some((key, size)) = index.lru.pop_lru() else {
                break;
            };
            index.bytes -= size;
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.remove(&key);
        }
    }
}

fn parse_key(name: &str) -> Option<Key> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(name, &mut key).ok()?;
    Some(key)
}

/// The length chunk `index` of `count` must have in a file of `size` bytes:
/// every chunk but the last is exactly [`CHUNK_SIZE`].
pub fn expected_len(size: u64, index: usize, count: usize) -> Option<usize> {
    if count as u64 != size.div_ceil(CHUNK_SIZE as u64) || index >= count {
        return None;
    }
    let start = index as u64 * CHUNK_SIZE as u64;
    Some((size - start).min(CHUNK_SIZE as u64) as usize)
}

/// Copies the part `[offset, end)` of a file out of its chunks
/// `first..=first + pieces.len() - 1`, checking each chunk's length.
pub fn assemble(
    size: u64,
    count: usize,
    first: usize,
    pieces: &[Piece],
    offset: u64,
    end: u64,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity((end - offset) as usize);
    for (i, piece) in pieces.iter().enumerate() {
        let index = first + i;
        let expected = expected_len(size, index, count)
            .ok_or_else(|| format!("the flist lists {count} chunks for {size} bytes"))?;
        if piece.len() != expected {
            return Err(format!(
                "chunk {index} holds {} bytes, expected {expected}",
                piece.len()
            ));
        }
        let start = index as u64 * CHUNK_SIZE as u64;
        let from = offset.saturating_sub(start) as usize;
        let to = ((end - start) as usize).min(piece.len());
        out.extend_from_slice(&piece[from..to]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::store::{self, Route};

    /// Eight readers ask before the store answers (it answers after 200 ms
    /// of tokio's paused clock, so they overlap whatever the load).
    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_fetch() {
        let (slow, cache, chunks) =
            far_cache_with(1, Duration::from_millis(200), Duration::from_secs(10), false);
        let results = futures_util::future::join_all((0..8).map(|_| cache.get(&chunks[0]))).await;
        for r in results {
            assert_eq!(codec::blake2b256(&r.unwrap()), chunks[0].key);
        }
        assert_eq!(slow.gets.load(Ordering::SeqCst), 1, "eight readers, one fetch");
        assert_eq!(cache.stats.fetched.load(Ordering::SeqCst), 1);
    }

    /// On tokio's paused clock (it advances only when every task waits):
    /// the store answers after an hour; the read gives up at its 300 ms
    /// deadline, whatever the machine's load. A missing deadline would
    /// give the store's answer after an hour of the clock instead.
    #[tokio::test(start_paused = true)]
    async fn a_hung_store_fails_within_the_timeout() {
        let (slow, cache, chunks) =
            far_cache_with(1, Duration::from_secs(3600), Duration::from_millis(300), false);
        let started = tokio::time::Instant::now();
        let err = cache.get(&chunks[0]).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "gave up after {took:?} of the clock, with a 300 ms timeout"
        );
        assert!(slow.gets.load(Ordering::SeqCst) >= 1, "the store was never asked");
        assert!(format!("{err:#}").contains("gave up after"), "{err:#}");
    }

    /// A cache store in front of a far store: the first reader fills it,
    /// a second cache (another machine) reads from it without asking the
    /// far store; a cache store that lies costs a fetch, never a wrong byte.
    #[tokio::test]
    async fn a_cache_store_is_filled_on_a_miss_and_read_first() {
        let tmp = tempfile::tempdir().unwrap();
        let tier_dir = tmp.path().join("tier");
        let (far, _, chunks) = far_cache(20, false);
        let tier = || vec![store::StoreSpec::parse(&format!("dir://{}", tier_dir.display())).unwrap()];
        let cache_over = |far: &Arc<Far>| cache_over(far, Duration::from_secs(30), tier());
        let first = cache_over(&far);
        for chunk in &chunks {
            assert_eq!(codec::blake2b256(&first.get(chunk).await.unwrap()), chunk.key);
        }
        assert_eq!(far.gets.load(Ordering::SeqCst), 20);
        // The fills run in the background.
        let tier = store::open(&store::StoreUrl::dir(&tier_dir), Duration::from_secs(5)).unwrap();
        for _ in 0..200 {
            let mut all = true;
            for chunk in &chunks {
                all &= tier.exists(&chunk.id).await.unwrap();
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = cache_over(&far);
        for chunk in &chunks {
            assert_eq!(codec::blake2b256(&second.get(chunk).await.unwrap()), chunk.key);
        }
        assert_eq!(
            far.gets.load(Ordering::SeqCst),
            20,
            "the second reader asked the far store"
        );
        assert_eq!(second.stats.tier_hits.load(Ordering::SeqCst), 20);
        // A corrupted copy in the cache store: the far store is asked.
        let hex = chunks[0].id_hex();
        let path = tier_dir.join(&hex[..2]).join(&hex);
        let mut blob = std::fs::read(&path).unwrap();
        blob[0] ^= 1;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, blob).unwrap();
        let third = cache_over(&far);
        assert_eq!(
            codec::blake2b256(&third.get(&chunks[0]).await.unwrap()),
            chunks[0].key
        );
        assert_eq!(far.gets.load(Ordering::SeqCst), 21);
    }

    /// What a reader was given is on disk once `flush` returns, though
    /// a demand read's write is spawned after its reader has the piece
    /// (unpack flushes, then the process exits).
    #[tokio::test]
    async fn a_flush_waits_for_the_demand_reads_writes() {
        let dir = tempfile::tempdir().unwrap();
        let pieces: Vec<Vec<u8>> = (0..20).map(|i| format!("piece {i}").into_bytes()).collect();
        let (far, chunks) = Far::holding(&pieces, Duration::ZERO, false);
        let on_disk = |far: &Arc<Far>| {
            let router = Router::from_routes(vec![Route {
                start: 0,
                end: 255,
                store: far.clone(),
            }]);
            let options = CacheOptions {
                dir: Some(dir.path().join("cache")),
                size_limit: 1 << 30,
                memory_chunks: 64,
                timeout: Duration::from_secs(30),
                adopt_dir: false,
                tier: Vec::new(),
            };
            ChunkCache::new(router, &options).unwrap()
        };
        let first = on_disk(&far);
        for chunk in &chunks {
            first.get(chunk).await.unwrap();
        }
        first.flush().await;
        drop(first);
        let gets = far.gets.load(Ordering::SeqCst);
        let second = on_disk(&far);
        for chunk in &chunks {
            second.get(chunk).await.unwrap();
        }
        assert_eq!(
            far.gets.load(Ordering::SeqCst),
            gets,
            "every chunk came from the disk cache"
        );
    }

    /// On tokio's paused clock: 3,000 prefetches are queued behind a store
    /// 30 ms away; a demand read of another chunk, and one of a chunk at
    /// the back of the prefetch queue, each take one round trip.
    #[tokio::test(start_paused = true)]
    async fn a_demand_read_overtakes_thousands_of_queued_prefetches() {
        let (far, cache, chunks) = far_cache(3002, false);
        for chunk in &chunks[..3001] {
            let (cache, chunk) = (cache.clone(), *chunk);
            tokio::spawn(async move { cache.fill(&chunk, Priority::Prefetch, 10).await });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let load = cache.fetch_load();
        assert!(load.queued > 2500, "{load:?}");
        for wanted in [&chunks[3001], &chunks[3000]] {
            let started = Instant::now();
            let piece = cache.get(wanted).await.unwrap();
            assert_eq!(codec::blake2b256(&piece), wanted.key);
            let took = started.elapsed();
            assert!(
                took <= Duration::from_millis(3 * 30),
                "a demand read took {took:?} behind a prefetch"
            );
        }
        assert!(cache.fetch_load().queued > 2000, "the prefetch was still queued");
        // Each chunk was fetched once: the raised one was not fetched twice.
        while cache.fetch_load().running + cache.fetch_load().queued > 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(far.gets.load(Ordering::SeqCst), 3002);
    }

    /// A store that answers slowly with altered blobs: every read fails,
    /// none gives bytes (demand, read-ahead and prefetch alike).
    #[tokio::test(start_paused = true)]
    async fn a_slow_lying_store_never_yields_wrong_bytes() {
        let (_, cache, chunks) = far_cache(50, true);
        for (i, chunk) in chunks.iter().enumerate() {
            if i % 2 == 0 {
                let err = cache.get(chunk).await.unwrap_err();
                assert!(format!("{err:#}").contains("could not be read"), "{err:#}");
            } else {
                assert!(cache.fill(chunk, Priority::Prefetch, 10).await.is_err());
                assert!(!cache.is_cached(chunk));
            }
        }
    }

    #[test]
    fn assemble_spans_chunks() {
        let c = CHUNK_SIZE;
        let size = (2 * c + 10) as u64;
        let pieces: Vec<Piece> = vec![Arc::new(vec![1; c]), Arc::new(vec![2; c]), Arc::new(vec![3; 10])];
        let out = assemble(size, 3, 0, &pieces, (c - 2) as u64, (2 * c + 3) as u64).unwrap();
        assert_eq!(out.len(), c + 5);
        assert_eq!(&out[..2], &[1, 1]);
        assert_eq!(out[2], 2);
        assert_eq!(&out[out.len() - 3..], &[3, 3, 3]);
        let tail = assemble(size, 3, 2, &pieces[2..], (2 * c + 4) as u64, size).unwrap();
        assert_eq!(tail, vec![3; 6]);
        // A short chunk in the middle of a file is an error, not data.
        let short: Vec<Piece> = vec![Arc::new(vec![1; c - 1])];
        assert!(assemble(size, 3, 0, &short, 0, 10).is_err());
    }

    #[test]
    fn chunk_lengths() {
        let c = CHUNK_SIZE as u64;
        assert_eq!(expected_len(0, 0, 0), None);
        assert_eq!(expected_len(10, 0, 1), Some(10));
        assert_eq!(expected_len(c, 0, 1), Some(CHUNK_SIZE));
        assert_eq!(expected_len(c + 1, 1, 2), Some(1));
        assert_eq!(expected_len(c + 1, 0, 2), Some(CHUNK_SIZE));
        assert_eq!(expected_len(c + 1, 0, 1), None, "too few chunks");
        assert_eq!(expected_len(c, 1, 1), None, "index out of range");
    }

    #[test]
    fn disk_cache_verifies_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(CacheStats::default());
        let cache = DiskCache::open(dir.path(), 250, false, stats.clone()).unwrap();
        let pieces: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let keys: Vec<Key> = pieces.iter().map(|p| codec::blake2b256(p)).collect();
        cache.write(&keys[0], &pieces[0]).unwrap();
        cache.write(&keys[1], &pieces[1]).unwrap();
        assert_eq!(cache.read(&keys[0]).as_deref(), Some(&pieces[0][..]));
        // keys[1] is now the least recently used: the third write evicts it.
        cache.write(&keys[2], &pieces[2]).unwrap();
        assert!(cache.read(&keys[1]).is_none());
        assert!(!cache.path(&keys[1]).exists());
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);

        // A corrupted file is detected, removed and not served.
        fs::write(cache.path(&keys[2]), vec![9u8; 100]).unwrap();
        assert!(cache.read(&keys[2]).is_none());
        assert!(!cache.path(&keys[2]).exists());
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 1);

        // Reopening finds what is left, and never touches a name it does
        // not write (even in a marked cache, even over the size limit).
        let shard = cache.path(&keys[0]).parent().unwrap().to_owned();
        fs::write(shard.join("notes.txt"), vec![1u8; 1000]).unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/123.1"), b"someone's").unwrap();
        drop(cache);
        let cache = DiskCache::open(dir.path(), 250, false, stats).unwrap();
        assert_eq!(cache.read(&keys[0]).as_deref(), Some(&pieces[0][..]));
        assert!(shard.join("notes.txt").exists());
        assert!(dir.path().join("tmp/123.1").exists());
    }
}

/// A far store in memory, and caches over it, for tests here and of the
/// readers above the cache.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::store::{ChunkId, Route, Store, StoreError};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicU64;

    /// A store a round trip away, holding blobs in memory (so tokio's
    /// paused clock measures only the round trips); `lie` returns every
    /// blob with a byte changed.
    pub struct Far {
        blobs: HashMap<ChunkId, Vec<u8>>,
        delay: Duration,
        lie: bool,
        pub gets: AtomicU64,
        /// Every id asked for, in order.
        pub asked: Mutex<Vec<ChunkId>>,
    }

    impl Far {
        /// A store `delay` away holding `pieces`, and their references.
        pub fn holding(pieces: &[Vec<u8>], delay: Duration, lie: bool) -> (Arc<Far>, Vec<ChunkRef>) {
            let mut blobs = HashMap::new();
            let mut chunks = Vec::new();
            for piece in pieces {
                let (chunk, blob) = codec::encode(piece);
                blobs.insert(chunk.id, blob);
                chunks.push(chunk);
            }
            let far = Far {
                blobs,
                delay,
                lie,
                gets: AtomicU64::new(0),
                asked: Mutex::new(Vec::new()),
            };
            (Arc::new(far), chunks)
        }
    }

    impl Store for Far {
        fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
            Box::pin(async move {
                self.gets.fetch_add(1, Ordering::SeqCst);
                self.asked.lock().unwrap().push(*id);
                tokio::time::sleep(self.delay).await;
                let mut blob = self
                    .blobs
                    .get(id)
                    .cloned()
                    .ok_or_else(|| StoreError::NotFound(hex::encode(id)))?;
                if self.lie {
                    let last = blob.len() - 1;
                    blob[last] ^= 1;
                }
                Ok(blob)
            })
        }
        fn set<'a>(&'a self, _: &'a ChunkId, _: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
            unimplemented!("read-only")
        }
        fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async move { Ok(self.blobs.contains_key(id)) })
        }
        fn public_url(&self) -> &str {
            "test://far"
        }
    }

    /// A cache over a store 30 ms away holding `n` distinct chunks.
    pub fn far_cache(n: usize, lie: bool) -> (Arc<Far>, Arc<ChunkCache>, Vec<ChunkRef>) {
        far_cache_with(n, Duration::from_millis(30), Duration::from_secs(30), lie)
    }

    /// A cache over a store `delay` away holding `n` distinct chunks, whose
    /// fetches give up after `timeout`.
    pub fn far_cache_with(
        n: usize,
        delay: Duration,
        timeout: Duration,
        lie: bool,
    ) -> (Arc<Far>, Arc<ChunkCache>, Vec<ChunkRef>) {
        let pieces: Vec<Vec<u8>> = (0..n).map(|i| format!("chunk {i}").into_bytes()).collect();
        let (far, chunks) = Far::holding(&pieces, delay, lie);
        let cache = Arc::new(cache_over(&far, timeout, Vec::new()));
        (far, cache, chunks)
    }

    /// A cache without a disk cache over `far` (and the cache store `tier`).
    pub fn cache_over(far: &Arc<Far>, timeout: Duration, tier: Vec<StoreSpec>) -> ChunkCache {
        let router = Router::from_routes(vec![Route {
            start: 0,
            end: 255,
            store: far.clone(),
        }]);
        let options = CacheOptions {
            dir: None,
            size_limit: 0,
            memory_chunks: 64,
            timeout,
            adopt_dir: false,
            tier,
        };
        ChunkCache::new(router, &options).unwrap()
    }
}
