//! What a pack holds per chunk, spilled to unnamed temporary files in
//! the workdir's `tmp/` rather than kept in memory: each file's chunk
//! list ([`ChunkLists`]) and the chunks found in or put into the stores
//! ([`StoredChunks`]). A million-file pack held several hundred MB of
//! these in vectors and maps; on disk they cost 64 or 65 bytes a chunk
//! and a few bytes a file in memory.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::store::ChunkRef;

/// The distinct chunks a pack found in or put into the stores, with
/// whether it uploaded them, kept in an unnamed temporary file (65 bytes
/// a chunk) until they are recorded in the index and counted against the
/// flist: a million chunks held in memory took 65 MB.
#[derive(Debug)]
pub struct StoredChunks {
    file: BufWriter<std::fs::File>,
}

const STORED: usize = 65;

impl StoredChunks {
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(StoredChunks {
            file: BufWriter::new(spill_file(dir)?),
        })
    }

    pub fn push(&mut self, chunk: &ChunkRef, uploaded: bool) -> Result<()> {
        let mut raw = [0u8; STORED];
        raw[..32].copy_from_slice(&chunk.id);
        raw[32..64].copy_from_slice(&chunk.key);
        raw[64] = u8::from(uploaded);
        self.file
            .write_all(&raw)
            .context("keeping the list of stored chunks in a temporary file")
    }

    /// Every chunk, in the order they were stored, with whether this pack
    /// uploaded it.
    pub fn for_each(&mut self, mut f: impl FnMut(&ChunkRef, bool) -> Result<()>) -> Result<()> {
        self.file.flush()?;
        let mut file = self.file.get_ref();
        file.rewind()?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut raw = [0u8; STORED];
        loop {
            match reader.read_exact(&mut raw) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(anyhow::Error::new(e).context("reading the list of stored chunks")),
            }
            let chunk = ChunkRef {
                id: raw[..32].try_into().expect("32 bytes"),
                key: raw[32..64].try_into().expect("32 bytes"),
            };
            f(&chunk, raw[64] == 1)?;
        }
        // Appends go on at the end.
        file.seek(std::io::SeekFrom::End(0))?;
        Ok(())
    }
}

/// An unnamed temporary file in `dir` (made if missing).
pub fn spill_file(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    tempfile::tempfile_in(dir).with_context(|| format!("a temporary file in {}", dir.display()))
}

/// Each file's chunk list, kept in an unnamed temporary file (64 bytes a
/// chunk: id and key, each file's in a run of slots): a million files'
/// lists in vectors held over 100 MiB. Read back once each, when the
/// flist's rows are written.
pub struct ChunkLists<K> {
    slots: std::fs::File,
    /// Each file's first slot and chunk count.
    files: HashMap<K, (u32, u32)>,
    /// The first slot not reserved.
    next: u32,
}

const SLOT: usize = 64;

impl<K: Copy + Eq + std::hash::Hash> ChunkLists<K> {
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(ChunkLists {
            slots: spill_file(dir)?,
            files: HashMap::new(),
            next: 0,
        })
    }

    /// Reserves `count` slots for `file`: the first, or `None` if it has
    /// some already.
    pub fn reserve(&mut self, file: K, count: u32) -> Result<Option<u32>> {
        if self.files.contains_key(&file) {
            return Ok(None);
        }
        let first = self.next;
        self.next = (self.next.checked_add(count)).context("more than 2^32 chunks in one pack")?;
        self.files.insert(file, (first, count));
        Ok(Some(first))
    }

    /// The file slots are written through by several threads at once.
    pub fn writer(&self) -> Result<SlotWriter> {
        Ok(SlotWriter(self.slots.try_clone()?))
    }

    /// Keeps `file`'s list as the index stores it: `raw` is its chunks'
    /// ids and keys, 64 bytes each. False if `file` has a list already.
    pub fn append_raw(&mut self, file: K, raw: &[u8]) -> Result<bool> {
        debug_assert_eq!(raw.len() % SLOT, 0);
        let count = u32::try_from(raw.len() / SLOT).context("a list of 2^32 chunks")?;
        let Some(first) = self.reserve(file, count)? else {
            return Ok(false);
        };
        (self.slots.write_all_at(raw, u64::from(first) * SLOT as u64))
            .context("keeping a chunk list in a temporary file")?;
        Ok(true)
    }

    /// How many chunks `file`'s list has, if it has one.
    pub fn count(&self, file: &K) -> Option<u32> {
        self.files.get(file).map(|&(_, count)| count)
    }

    /// Frees what the map of files holds beyond its entries.
    pub fn shrink_to_fit(&mut self) {
        self.files.shrink_to_fit();
    }

    fn read(&self, (start, count): (u32, u32)) -> Result<Vec<ChunkRef>> {
        let mut raw = vec![0u8; count as usize * SLOT];
        self.slots
            .read_exact_at(&mut raw, u64::from(start) * SLOT as u64)
            .context("reading a chunk list back")?;
        Ok(decode(&raw))
    }

    /// The chunks of `file`, taken out (each file's are read once).
    pub fn take(&mut self, file: &K) -> Result<Option<Vec<ChunkRef>>> {
        self.files.remove(file).map(|run| self.read(run)).transpose()
    }

    /// Every file with its chunks, in the order their slots were reserved.
    pub fn for_each(&self, mut f: impl FnMut(&K, Vec<ChunkRef>) -> Result<()>) -> Result<()> {
        let mut runs: Vec<(&K, &(u32, u32))> = self.files.iter().collect();
        runs.sort_unstable_by_key(|(_, run)| run.0);
        for (file, run) in runs {
            f(file, self.read(*run)?)?;
        }
        Ok(())
    }
}

/// Writes chunks into the slots [`ChunkLists::reserve`] gave.
pub struct SlotWriter(std::fs::File);

impl SlotWriter {
    pub fn write(&self, slot: u64, chunk: &ChunkRef) -> Result<()> {
        let mut raw = [0u8; SLOT];
        raw[..32].copy_from_slice(&chunk.id);
        raw[32..].copy_from_slice(&chunk.key);
        (self.0.write_all_at(&raw, slot * SLOT as u64)).context("keeping a chunk list in a temporary file")
    }
}

/// Chunk refs from their ids and keys, 64 bytes each (whole slots only).
pub fn decode(raw: &[u8]) -> Vec<ChunkRef> {
    raw.chunks_exact(SLOT)
        .map(|s| ChunkRef {
            id: s[..32].try_into().expect("32 bytes"),
            key: s[32..].try_into().expect("32 bytes"),
        })
        .collect()
}

/// The ids and keys of `chunks`, 64 bytes each.
pub fn encode(chunks: &[ChunkRef]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|c| c.id.iter().chain(c.key.iter()).copied())
        .collect()
}
