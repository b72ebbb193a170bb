//! Moving file content between plans and stores.
//!
//! [`pack`]: every file handed to its sink is cut into 512 KiB pieces,
//! encoded (see `store::codec`) on a pool of threads and stored through
//! the router, skipping chunks already stored: first by the workdir's
//! index of chunks known to be in each store (`known`: no network at all
//! for a re-pack), then by asking the stores. The result is each inode's chunk
//! list, ready for the flist writer; nothing is written to the flist unless
//! every chunk was stored.
//!
//! [`ChunkContent`]: the other way, a content source that reads an flist's
//! files back from the stores (for `unpack`), verifying every chunk.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use tokio::runtime::Handle;

use crate::flist::chunkcache::{self, ChunkCache};
use crate::flist::known::KnownChunks;
use crate::flist::spill::{ChunkLists, StoredChunks};
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
    /// The chunks this pack found in or put into the stores.
    #[serde(skip)]
    pub stored: Option<StoredChunks>,
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
) -> Result<(ChunkLists<K>, PackStats)>
where
    K: Copy + Eq + std::hash::Hash + Send + Sync + std::fmt::Debug,
{
    // Each file's chunks, written to their slots as its pieces are stored
    // (`recorded` counts those that were).
    let lists: Mutex<ChunkLists<K>> = Mutex::new(ChunkLists::new(spill)?);
    let slots = lists.lock().unwrap().writer()?;
    let (pieces, recorded) = (AtomicU64::new(0), AtomicU64::new(0));
    let seen: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    // Chunks now in the stores, and whether this pack uploaded them.
    let stored_chunks = Mutex::new(StoredChunks::new(spill)?);
    let (uploaded, skipped, chunks) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        stop.store(true, Ordering::SeqCst);
        failure.lock().unwrap().get_or_insert(e);
    };
    // A piece to encode and store: (its slot in the lists, bytes).
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
    let rx = Mutex::new(rx);

    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let Ok((slot, piece)) = rx.lock().unwrap().recv() else {
                    break;
                };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                chunks.fetch_add(1, Ordering::Relaxed);
                let record = |chunk: ChunkRef| match slots.write(slot, &chunk) {
                    Ok(()) => {
                        recorded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => fail(e),
                };
                // Known content: hash only, no compression or encryption.
                let key = codec::blake2b256(&piece);
                match known.encoded(router, &key) {
                    Ok(Some(id)) => {
                        skipped.fetch_add(1, Ordering::Relaxed);
                        record(ChunkRef { id, key });
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        fail(e);
                        continue;
                    }
                }
                let (chunk, blob) = codec::encode(&piece);
                let first_time = seen.lock().unwrap().insert(chunk.id);
                let store = || -> Result<()> {
                    if !first_time || known.all_have(router, &chunk.id)? {
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
                    stored_chunks.lock().unwrap().push(&chunk, stored)
                };
                match store() {
                    Ok(()) => record(chunk),
                    Err(e) => fail(e.context(format!("storing chunk {}", chunk.id_hex()))),
                }
            });
        }
        let sink = |file: K, size: u64, reader: &mut dyn Read| -> Result<()> {
            let count = size.div_ceil(CHUNK_SIZE as u64) as usize;
            let reserved = (lists.lock().unwrap())
                .reserve(file, u32::try_from(count).context("a file of 2^32 chunks")?)?;
            let Some(first) = reserved else {
                bail!("{file:?} delivered twice");
            };
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
                tx.send((u64::from(first) + index as u64, piece))
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
    let mut stored = stored_chunks.into_inner().unwrap();
    known.save(router, |save| stored.for_each(|c, _| save(c)))?;
    if recorded.into_inner() != pieces.into_inner() {
        bail!("a piece was not stored");
    }
    let out = lists.into_inner().unwrap();
    let stats = PackStats {
        // What the flist holds is the caller's to count (write_flist).
        files: 0,
        bytes: 0,
        chunks: chunks.into_inner(),
        uploaded: uploaded.into_inner(),
        skipped: skipped.into_inner(),
        uploaded_replaced: 0,
        stored: Some(stored),
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
