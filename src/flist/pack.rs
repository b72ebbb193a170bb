//! Moving file content between plans and stores.
//!
//! [`pack`]: every file handed to its sink is cut into 512 KiB pieces,
//! encoded (see `store::codec`) on a pool of threads and stored through
//! the router, skipping chunks already stored: first by a local index in
//! the workdir of chunks known to be in each store (no network at all for a
//! re-pack), then by asking the stores. The result is each inode's chunk
//! list, ready for the flist writer; nothing is written to the flist unless
//! every chunk was stored.
//!
//! [`ChunkContent`]: the other way, a content source that reads an flist's
//! files back from the stores (for `unpack`), verifying every chunk.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{params, Connection};
use tokio::runtime::Handle;

use crate::flist::chunkcache::{self, ChunkCache};
use crate::fs::content::ContentSource;
use crate::fs::tree::{InodeKind, Plan, Source};
use crate::store::ChunkError;
use crate::store::{codec, ChunkId, ChunkRef, Router, CHUNK_SIZE};

/// What packing did. `files` and `bytes` describe the flist written (each
/// file once, however much content was packed for it); so does `chunks`:
/// the distinct chunks the flist names (what `flist inspect` counts), of
/// which `uploaded` were stored by this pack and `skipped` were in the
/// stores already. `uploaded_replaced` chunks were stored too, for content
/// a later layer replaced or deleted (the stores hold them; the flist does
/// not name them).
#[derive(Debug, Default, serde::Serialize)]
pub struct PackStats {
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub uploaded: u64,
    pub skipped: u64,
    pub uploaded_replaced: u64,
    /// The chunks this pack stored, sorted.
    #[serde(skip)]
    pub uploaded_ids: Vec<ChunkId>,
}

/// The workdir's record of chunks known to be in each store: a cache that
/// saves uploads, never one that decides what a store holds. Each store is
/// known by its URL and its identity (see `Store::identity`): a store that
/// lost its content lost its identity too, and is then treated as empty.
/// A local directory store is asked as well (a `stat`), as it costs
/// nothing. A `chunks.db` that SQLite cannot read is set aside and rebuilt.
pub struct KnownChunks {
    path: PathBuf,
    /// The key of each route's store in the index (`url#identity`), in
    /// the router's order.
    keys: Vec<String>,
    known: HashMap<String, HashSet<ChunkId>>,
    /// Content key -> chunk id, so a re-pack hashes a piece once and skips
    /// compressing and encrypting it.
    encoded: HashMap<[u8; 32], ChunkId>,
}

impl KnownChunks {
    /// Loads the index for the stores of `router`, giving each store an
    /// identity if it has none yet.
    pub fn load(path: &Path, router: &Router, rt: &Handle) -> Result<Self> {
        let path = path.to_owned();
        let conn = Self::connect(&path)?;
        let mut known = HashMap::new();
        let mut keys = Vec::new();
        for route in router.routes() {
            let store = &route.store;
            let identity = match rt.block_on(store.identity())? {
                Some(id) => id,
                None => {
                    let id = crate::store::new_identity();
                    rt.block_on(store.set_identity(&id))?;
                    tracing::debug!("store {} has no identity yet: {id}", store.public_url());
                    id
                }
            };
            let key = format!("{}#{identity}", store.public_url());
            let mut ids = HashSet::new();
            let mut stmt = conn.prepare("SELECT id FROM known WHERE store = ?1")?;
            for id in stmt.query_map([&key], |r| r.get::<_, Vec<u8>>(0))? {
                if let Ok(id) = <ChunkId>::try_from(id?.as_slice()) {
                    ids.insert(id);
                }
            }
            // A remote store may lose chunks and keep its identity (keys
            // evicted, objects expired, a partial restore): a sample of what
            // it is remembered to hold is asked for first, and any miss
            // makes every chunk be checked.
            if store.holds_locally(&[0; 32]).is_none() && !ids.is_empty() {
                for id in ids.iter().take(16) {
                    if !rt.block_on(store.exists(id))? {
                        tracing::warn!(
                            "store {} lost chunks flmount stored in it: checking every chunk",
                            store.public_url()
                        );
                        ids.clear();
                        break;
                    }
                }
            }
            known.insert(key.clone(), ids);
            keys.push(key);
        }
        let mut encoded = HashMap::new();
        let mut stmt = conn.prepare("SELECT key, id FROM encoded")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (key, id) = row?;
            if let (Ok(key), Ok(id)) = (
                <[u8; 32]>::try_from(key.as_slice()),
                <ChunkId>::try_from(id.as_slice()),
            ) {
                encoded.insert(key, id);
            }
        }
        Ok(KnownChunks {
            path,
            keys,
            known,
            encoded,
        })
    }

    fn connect(path: &Path) -> Result<Connection> {
        const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS known (store TEXT, id BLOB, PRIMARY KEY (store, id)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS encoded (key BLOB PRIMARY KEY, id BLOB) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS layer_entry (layer TEXT, entry INTEGER, chunks BLOB, PRIMARY KEY (layer, entry)) WITHOUT ROWID;";
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            conn.execute_batch(SCHEMA)?;
            // Damage inside a table shows only when a page is read: look at
            // every page once (milliseconds for the sizes this index has).
            let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
            if verdict != "ok" {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                    Some(verdict),
                ));
            }
            Ok(conn)
        };
        match open() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                let aside = path.with_extension(format!(
                    "db.corrupt-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                ));
                tracing::warn!(
                    "{} is corrupt ({e}); it is only a cache: moved to {} and rebuilt",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
                open().with_context(|| format!("opening {}", path.display()))
            }
            other => other.with_context(|| format!("opening {}", path.display())),
        }
    }

    /// Chunk lists of the entries of `layer` (a blob digest) packed before.
    pub fn layer_entries(&self, layer: &str) -> Result<HashMap<u32, Vec<ChunkRef>>> {
        let conn = Self::connect(&self.path)?;
        let mut stmt = conn.prepare("SELECT entry, chunks FROM layer_entry WHERE layer = ?1")?;
        let mut out = HashMap::new();
        for row in stmt.query_map([layer], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (entry, raw) = row?;
            let chunks = raw
                .chunks_exact(64)
                .map(|c| ChunkRef {
                    id: c[..32].try_into().unwrap(),
                    key: c[32..].try_into().unwrap(),
                })
                .collect();
            out.insert(entry, chunks);
        }
        Ok(out)
    }

    /// Records the chunk lists of layer entries just packed.
    pub fn save_layer_entries(
        &self,
        entries: impl FnOnce(&mut dyn FnMut(&str, u32, &[ChunkRef]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let mut conn = Self::connect(&self.path)?;
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT OR REPLACE INTO layer_entry (layer, entry, chunks) VALUES (?1, ?2, ?3)")?;
            entries(&mut |layer, entry, chunks| {
                let raw: Vec<u8> = chunks
                    .iter()
                    .flat_map(|c| c.id.iter().chain(c.key.iter()).copied())
                    .collect();
                insert.execute(params![layer, entry, raw])?;
                Ok(())
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether every store `id` routes to is known to hold it.
    pub fn all_have(&self, router: &Router, id: &ChunkId) -> bool {
        let mut any = false;
        for (r, key) in router.routes().iter().zip(&self.keys) {
            if !(r.start <= id[0] && id[0] <= r.end) {
                continue;
            }
            any = true;
            let remembered = self.known.get(key).is_some_and(|s| s.contains(id));
            if !remembered || r.store.holds_locally(id) == Some(false) {
                return false;
            }
        }
        any
    }

    /// Forgets chunks removed from the store `url` (by `gc`), whatever its
    /// identity, so a later pack uploads them again.
    pub fn forget(path: &Path, url: &str, ids: &[ChunkId]) -> Result<()> {
        let mut conn = Self::connect(path)?;
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare("DELETE FROM known WHERE substr(store, 1, ?1) = ?2 AND id = ?3")?;
            let prefix = format!("{url}#");
            for id in ids {
                delete.execute(params![prefix.len(), prefix, &id[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records chunks now in the stores of `router`.
    fn save<'a>(&self, router: &Router, chunks: impl IntoIterator<Item = &'a ChunkRef>) -> Result<()> {
        let mut conn = Self::connect(&self.path)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare("INSERT OR IGNORE INTO known (store, id) VALUES (?1, ?2)")?;
            let mut encoded = tx.prepare("INSERT OR IGNORE INTO encoded (key, id) VALUES (?1, ?2)")?;
            for c in chunks {
                encoded.execute(params![&c.key[..], &c.id[..]])?;
                for (r, key) in router.routes().iter().zip(&self.keys) {
                    if r.start <= c.id[0] && c.id[0] <= r.end {
                        insert.execute(params![key, &c.id[..]])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Each packed file's chunks, kept in an unnamed temporary file (64
/// bytes a chunk, each file's in a run of slots) rather than in memory: a
/// million files' lists in vectors held over 100 MiB. Read back once each,
/// when the flist's rows are written.
pub struct Packed<K> {
    slots: std::fs::File,
    /// Each file's first slot and chunk count.
    files: HashMap<K, (u32, u32)>,
}

const SLOT: u64 = 64;

impl<K: Copy + Eq + std::hash::Hash> Packed<K> {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Packed {
            slots: tempfile::tempfile_in(dir)
                .with_context(|| format!("a temporary file in {}", dir.display()))?,
            files: HashMap::new(),
        })
    }

    /// Reserves `count` slots for `file`; false if it has some already.
    fn reserve(&mut self, file: K, count: u32, next: &mut u32) -> Result<bool> {
        if self.files.contains_key(&file) {
            return Ok(false);
        }
        self.files.insert(file, (*next, count));
        *next = next
            .checked_add(count)
            .context("more than 2^32 chunks in one pack")?;
        Ok(true)
    }

    fn write(slots: &std::fs::File, slot: u64, chunk: &ChunkRef) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut raw = [0u8; SLOT as usize];
        raw[..32].copy_from_slice(&chunk.id);
        raw[32..].copy_from_slice(&chunk.key);
        slots
            .write_all_at(&raw, slot * SLOT)
            .context("keeping a chunk list in a temporary file")
    }

    fn read(&self, (start, count): (u32, u32)) -> Result<Vec<ChunkRef>> {
        use std::os::unix::fs::FileExt;
        let mut raw = vec![0u8; count as usize * SLOT as usize];
        self.slots
            .read_exact_at(&mut raw, u64::from(start) * SLOT)
            .context("reading a chunk list back")?;
        Ok(raw
            .chunks_exact(SLOT as usize)
            .map(|s| ChunkRef {
                id: s[..32].try_into().expect("32 bytes"),
                key: s[32..].try_into().expect("32 bytes"),
            })
            .collect())
    }

    /// The chunks of `file`, taken out (each file's are read once).
    pub fn take(&mut self, file: &K) -> Result<Option<Vec<ChunkRef>>> {
        self.files.remove(file).map(|run| self.read(run)).transpose()
    }

    /// Every file with its chunks, in the order they were packed.
    pub fn for_each(&self, mut f: impl FnMut(&K, Vec<ChunkRef>) -> Result<()>) -> Result<()> {
        let mut runs: Vec<(&K, &(u32, u32))> = self.files.iter().collect();
        runs.sort_unstable_by_key(|(_, run)| run.0);
        for (file, run) in runs {
            f(file, self.read(*run)?)?;
        }
        Ok(())
    }
}

/// Where a packer hands over a file's content: `(file, size, reader)`,
/// `file` being the caller's key for the file.
pub type Sink<'s, K> = dyn Fn(K, u64, &mut dyn Read) -> Result<()> + Sync + 's;

/// Stores the content of every file `deliver` hands to its sink, cutting
/// it into pieces encoded on `threads` threads; returns each file's chunks
/// (kept in a temporary file in `spill`).
pub fn pack<K>(
    deliver: impl FnOnce(&Sink<'_, K>) -> Result<()>,
    router: &Router,
    known: &KnownChunks,
    rt: &Handle,
    threads: usize,
    spill: &Path,
) -> Result<(Packed<K>, PackStats)>
where
    K: Copy + Eq + std::hash::Hash + Send + Sync + std::fmt::Debug,
{
    // Each file's chunks, written to their slots as its pieces are stored
    // (`recorded` counts those that were).
    let results: Mutex<(Packed<K>, u32)> = Mutex::new((Packed::new(spill)?, 0));
    let slots = results.lock().unwrap().0.slots.try_clone()?;
    let (pieces, recorded) = (AtomicU64::new(0), AtomicU64::new(0));
    let seen: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    // Chunks now in the stores, and whether this pack uploaded them.
    let fresh: Mutex<Vec<(ChunkRef, bool)>> = Mutex::new(Vec::new());
    let (uploaded, skipped, chunks) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        stop.store(true, Ordering::SeqCst);
        failure.lock().unwrap().get_or_insert(e);
    };
    // A piece to encode and store: (file, piece number, bytes).
    let (tx, rx) = mpsc::sync_channel::<(K, usize, Vec<u8>)>(threads * 2);
    let rx = Mutex::new(rx);

    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let Ok((file, index, piece)) = rx.lock().unwrap().recv() else {
                    break;
                };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                chunks.fetch_add(1, Ordering::Relaxed);
                let record = |chunk: ChunkRef| {
                    let start = results.lock().unwrap().0.files[&file].0;
                    match Packed::<K>::write(&slots, u64::from(start) + index as u64, &chunk) {
                        Ok(()) => {
                            recorded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => fail(e),
                    }
                };
                // Known content: hash only, no compression or encryption.
                let key = codec::blake2b256(&piece);
                if let Some(&id) = known.encoded.get(&key).filter(|id| known.all_have(router, id)) {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    record(ChunkRef { id, key });
                    continue;
                }
                let (chunk, blob) = codec::encode(&piece);
                let first_time = seen.lock().unwrap().insert(chunk.id);
                let store = || -> Result<()> {
                    if !first_time || known.all_have(router, &chunk.id) {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    let stored = if rt.block_on(router.exists(&chunk.id))? {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        false
                    } else {
                        rt.block_on(router.set(&chunk.id, &blob))?;
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        true
                    };
                    fresh.lock().unwrap().push((chunk, stored));
                    Ok(())
                };
                match store() {
                    Ok(()) => record(chunk),
                    Err(e) => fail(e.context(format!("storing chunk {}", chunk.id_hex()))),
                }
            });
        }
        let sink = |file: K, size: u64, reader: &mut dyn Read| -> Result<()> {
            let count = size.div_ceil(CHUNK_SIZE as u64) as usize;
            let reserved = {
                let (packed, next) = &mut *results.lock().unwrap();
                packed.reserve(file, u32::try_from(count).context("a file of 2^32 chunks")?, next)?
            };
            if !reserved {
                bail!("{file:?} delivered twice");
            }
            pieces.fetch_add(count as u64, Ordering::Relaxed);
            let mut reader = reader.take(size);
            for index in 0..count {
                if stop.load(Ordering::Relaxed) {
                    bail!("packing stopped");
                }
                crate::owned::signals::check()?;
                let mut piece = Vec::with_capacity(CHUNK_SIZE);
                (&mut reader).take(CHUNK_SIZE as u64).read_to_end(&mut piece)?;
                if piece.is_empty() {
                    bail!("the content of {file:?} ended early");
                }
                tx.send((file, index, piece))
                    .map_err(|_| anyhow!("encoders stopped"))?;
            }
            Ok(())
        };
        if let Err(e) = deliver(&sink) {
            fail(e);
        }
        drop(tx);
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    rt.block_on(router.flush())?;
    let fresh = fresh.into_inner().unwrap();
    known.save(router, fresh.iter().map(|(c, _)| c))?;
    let mut uploaded_ids: Vec<ChunkId> = fresh
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(c, _)| c.id)
        .collect();
    uploaded_ids.sort_unstable();
    // Collected in place, it would keep `fresh`'s allocation (65 bytes a
    // chunk where it needs 32) through the rest of the pack.
    uploaded_ids.shrink_to_fit();
    if recorded.into_inner() != pieces.into_inner() {
        bail!("a piece was not stored");
    }
    let (out, _) = results.into_inner().unwrap();
    let stats = PackStats {
        // What the flist holds is the caller's to count (write_flist).
        files: 0,
        bytes: 0,
        chunks: chunks.into_inner(),
        uploaded: uploaded.into_inner(),
        skipped: skipped.into_inner(),
        uploaded_replaced: 0,
        uploaded_ids,
    };
    Ok((out, stats))
}

/// Content of an flist's files, read from the stores chunk by chunk.
pub struct ChunkContent<'a> {
    pub blocks: &'a HashMap<i64, Vec<ChunkRef>>,
    pub cache: &'a ChunkCache,
    pub rt: Handle,
    pub threads: usize,
}

impl ContentSource for ChunkContent<'_> {
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()> {
        let files: Vec<(usize, i64, u64)> = plan
            .inodes
            .iter()
            .enumerate()
            .filter_map(|(i, inode)| match inode.kind {
                InodeKind::File {
                    size,
                    source: Some(Source::Flist { ino }),
                } => Some((i, ino, size)),
                _ => None,
            })
            .collect();
        crate::fs::threads::for_each_parallel(&files, self.threads, |&(i, ino, size)| {
            let chunks = self.blocks.get(&ino).map(Vec::as_slice).unwrap_or(&[]);
            let expected = size.div_ceil(CHUNK_SIZE as u64) as usize;
            if chunks.len() != expected {
                bail!(
                    "{} has {} chunks for {size} bytes (expected {expected})",
                    crate::write::extract::show(&plan.inodes[i].paths[0]),
                    chunks.len()
                );
            }
            let mut reader = ChunkReader {
                chunks,
                next: 0,
                buf: chunkcache::Piece::default(),
                pos: 0,
                size,
                total: 0,
                content: self,
            };
            sink(i, &mut reader)
        })
    }
}

/// Reads a file's chunks in order, fetching each when needed.
struct ChunkReader<'a, 'c> {
    chunks: &'a [ChunkRef],
    next: usize,
    buf: chunkcache::Piece,
    pos: usize,
    /// The file's size, and what the chunks gave so far: they must agree.
    size: u64,
    total: u64,
    content: &'a ChunkContent<'c>,
}

impl Read for ChunkReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let Some(chunk) = self.chunks.get(self.next) else {
                if self.total != self.size {
                    return Err(std::io::Error::other(format!(
                        "the chunks hold {} bytes of a {}-byte file",
                        self.total, self.size
                    )));
                }
                return Ok(0);
            };
            self.buf = self
                .content
                .rt
                .block_on(self.content.cache.get(chunk))
                .map_err(|e| match e.downcast::<ChunkError>() {
                    // Kept whole, so the exit code can tell why.
                    Ok(chunk_error) => std::io::Error::other(chunk_error),
                    Err(e) => std::io::Error::other(format!("{e:#}")),
                })?;
            if self.next + 1 < self.chunks.len() && self.buf.len() != CHUNK_SIZE {
                return Err(std::io::Error::other(format!(
                    "chunk {} is {} bytes; all but a file's last must be {CHUNK_SIZE}",
                    chunk.id_hex(),
                    self.buf.len()
                )));
            }
            self.next += 1;
            self.pos = 0;
            self.total += self.buf.len() as u64;
            if self.total > self.size {
                return Err(std::io::Error::other(format!(
                    "the chunks hold more than the file's {} bytes",
                    self.size
                )));
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
