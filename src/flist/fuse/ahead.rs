//! Read-ahead: which chunks to fetch before a reader asks for them, so a
//! remote store costs bandwidth rather than one round trip per chunk.
//!
//! Three rules, each bounded so that a random reader is not flooded:
//! - **the rest of a small file** when it is first read (offset 0): a
//!   file is read whole far more often than not, and its chunks then come
//!   in one round trip instead of one each;
//! - **ahead of a sequential reader** of a larger file, a window of chunks
//!   that doubles while the reader keeps going (from local stores, which
//!   are fast already, two chunks, kept in memory);
//! - **the next files of a walk**: every file has a rank in the tree's
//!   depth-first, name-ordered walk (the order of `tar`, `cp -r`, `find`).
//!   When files are first read at nearby, rising ranks (a stream), the
//!   files after them are fetched, a window that doubles with every read
//!   the stream makes (up to [`MAX_WALK_FILES`] files ahead). A reader
//!   that jumps around starts a new stream each time, and a stream reads
//!   nothing ahead until its second read;
//! - **the files of a directory in use**: a program loading its modules,
//!   libraries or assets reads several files of one directory, in no
//!   useful order. The second file first read in a directory fetches
//!   [`DIR_FILES`] of its files around it, the fourth four times as many,
//!   the eighth the whole directory (at most [`DIR_MAX_FILES`] files).
//!
//! What is read ahead is fetched below demand reads (see `flist::fetch`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;

use super::index::{Entries, Index, NodeKind, ROOT};
use crate::flist::chunkcache::ChunkCache;
use crate::flist::fetch::Priority;
use crate::flist::rows::chunk_len;
use crate::store::{ChunkRef, CHUNK_SIZE};

/// A file up to this size is fetched whole on its first read.
const WHOLE_FILE: u64 = 16 << 20;
/// The sequential window of a larger file: first, and at most (chunks).
const FIRST_WINDOW: usize = 4;
const MAX_WINDOW: usize = 32;
/// The window from local stores, into memory (which holds few chunks).
const NEAR_WINDOW: usize = 2;
/// A stream's window of files: first, and at most.
const FIRST_WALK_FILES: u32 = 8;
pub const MAX_WALK_FILES: u32 = 256;
/// A first read this close to a stream (in ranks) continues it.
const GAP: u32 = 16;
/// Streams followed at once.
const STREAMS: usize = 8;
/// A file up to this size is read ahead whole by a walk, and by a
/// directory's rule; of a larger one, its first chunk.
const WALK_FILE_BYTES: u64 = WHOLE_FILE;
const DIR_FILE_BYTES: u64 = 1 << 20;
/// Bytes read ahead at most at once, for walks and directories together.
const MAX_AHEAD_BYTES: u64 = 64 << 20;
/// Files of a directory read ahead at its second distinct read, and at
/// most (at its eighth).
pub const DIR_FILES: usize = 16;
pub const DIR_MAX_FILES: usize = 1024;
/// Directories followed at once.
const DIRS: usize = 4096;

/// A chunk to fetch ahead, and its expected size.
pub type Wanted = (ChunkRef, u64);

pub struct ReadAhead {
    /// The tree's walk order, once [`ReadAhead::start_walk`] has read it.
    walk: OnceLock<Walk>,
    /// Whether whole files, walks and directories are read ahead (far
    /// stores, and a disk cache to hold what comes).
    wide: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Where the last read of each file ended, and its window.
    files: HashMap<u64, (u64, usize)>,
    streams: VecDeque<Stream>,
    /// Per directory: files first read in it, and the last one.
    dirs: HashMap<u64, (u32, u64)>,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The rank read last, and the rank read-ahead reached (exclusive).
    last: u32,
    ahead: u32,
    window: u32,
    reads: u32,
}

impl ReadAhead {
    pub fn new(wide: bool) -> Self {
        ReadAhead {
            walk: OnceLock::new(),
            wide,
            state: Mutex::new(State::default()),
        }
    }

    /// Where whole files are read ahead: reads the tree's walk order on a
    /// thread of its own (it reads every directory; until it is done,
    /// walks are not read ahead).
    pub fn start_walk(self: &Arc<Self>, index: Arc<Index>) {
        if !self.wide {
            return;
        }
        let ahead = self.clone();
        let spawned = std::thread::Builder::new()
            .name("walk-order".into())
            .spawn(move || ahead.read_walk(&index));
        if let Err(e) = spawned {
            tracing::warn!("walks will not be read ahead: {e}");
        }
    }

    /// A read-ahead with its walk order read at once.
    #[cfg(test)]
    fn with_walk(index: &Index, wide: bool) -> Self {
        let ahead = ReadAhead::new(wide);
        if wide {
            ahead.read_walk(index);
        }
        ahead
    }

    fn read_walk(&self, index: &Index) {
        let started = std::time::Instant::now();
        let walk = Walk::of(index);
        tracing::debug!(
            "walk order: {} files in {} ms",
            walk.files.len(),
            started.elapsed().as_millis()
        );
        let _ = self.walk.set(walk);
    }

    /// What to fetch ahead of a read of `[offset, end)` from file `ino`
    /// of `size` bytes, whose chunks are `chunks` and whose read ends in
    /// chunk `last`;
    /// `foreseen`: the file was fetched by a rule that knew it would be
    /// read (a library), which says nothing of its directory.
    #[allow(clippy::too_many_arguments)]
    pub fn after_read(
        &self,
        index: &Index,
        ino: u64,
        size: u64,
        offset: u64,
        end: u64,
        last: usize,
        chunks: &[ChunkRef],
        foreseen: bool,
    ) -> Vec<Wanted> {
        let mut wanted = Vec::new();
        let mut state = self.state.lock().unwrap();
        if self.wide && offset == 0 && size <= WHOLE_FILE {
            state.files.remove(&ino);
            push_chunks(&mut wanted, size, chunks, last + 1, chunks.len());
        } else {
            let (first, most) = if self.wide {
                (FIRST_WINDOW, MAX_WINDOW)
            } else {
                (NEAR_WINDOW, NEAR_WINDOW)
            };
            let window = match state.files.get(&ino) {
                Some(&(prev_end, window)) if prev_end == offset => (window * 2).min(most),
                _ if offset == 0 => first,
                // Not sequential: nothing ahead.
                _ => 0,
            };
            if state.files.len() > 4096 {
                state.files.clear();
            }
            state.files.insert(ino, (end, window.max(first)));
            push_chunks(&mut wanted, size, chunks, last + 1, last + 1 + window);
        }
        if self.wide && offset == 0 {
            let walk = self.stream(&mut state, ino);
            let dir = if !foreseen {
                self.directory(&mut state, index, ino)
            } else {
                Vec::new()
            };
            drop(state);
            // A walker reads whole files; a program using a directory
            // reads some: its small files whole, a large one's start.
            let walk = walk.into_iter().flat_map(|r| {
                let files = self.walk.get().map_or(&[][..], |w| &w.files[r]);
                files.iter().map(|&f| (f, WALK_FILE_BYTES))
            });
            let dir = dir.into_iter().map(|f| (f, DIR_FILE_BYTES));
            let mut bytes = 0;
            for (file, most) in walk.chain(dir) {
                if let Some(NodeKind::File { size, chunks, .. }) = index.node(file).as_ref().map(|n| &n.kind)
                {
                    let take = if *size <= most { *size } else { CHUNK_SIZE as u64 };
                    bytes += take;
                    if bytes > MAX_AHEAD_BYTES {
                        break;
                    }
                    let n = take.div_ceil(CHUNK_SIZE as u64) as usize;
                    push_chunks(&mut wanted, *size, chunks, 0, n);
                }
            }
        }
        wanted
    }

    /// Whether `ino` was just first read by a walk (a stream of two reads
    /// or more): a walker reads a program's bytes, it does not start it.
    pub fn in_walk(&self, ino: u64) -> bool {
        let Some(rank) = self.rank_of(ino) else {
            return false;
        };
        let state = self.state.lock().unwrap();
        state
            .streams
            .iter()
            .any(|s| s.reads >= 2 && rank <= s.last && s.last - rank <= GAP)
    }

    fn rank_of(&self, ino: u64) -> Option<u32> {
        let ranks = &self.walk.get()?.ranks;
        let i = ranks.binary_search_by_key(&ino, |&(ino, _)| ino).ok()?;
        Some(ranks[i].1)
    }

    /// Feeds the first read of `ino` to its directory's count; returns the
    /// files of the directory to read ahead, if any.
    fn directory(&self, state: &mut State, index: &Index, ino: u64) -> Vec<u64> {
        let Some(parent) = index.node(ino).map(|n| n.parent) else {
            return Vec::new();
        };
        if state.dirs.len() >= DIRS && !state.dirs.contains_key(&parent) {
            state.dirs.clear();
        }
        let (reads, last) = state.dirs.entry(parent).or_insert((0, 0));
        if *last == ino {
            return Vec::new();
        }
        *last = ino;
        *reads += 1;
        let want = match *reads {
            2 => DIR_FILES,
            4 => DIR_FILES * 4,
            8 => DIR_MAX_FILES,
            _ => return Vec::new(),
        };
        let Some(entries) = index.entries(parent) else {
            return Vec::new();
        };
        // The directory's other files, in name order, and where `ino` is
        // among them.
        let mut files = Vec::new();
        let mut at = 0;
        for e in entries.iter() {
            if e.ino == ino {
                at = files.len();
            } else if e.kind == libc::S_IFREG {
                files.push(e.ino);
            }
        }
        // Around the file read: a quarter before it, the rest after.
        let start = at.saturating_sub(want / 4).min(files.len().saturating_sub(want));
        files.into_iter().skip(start).take(want).collect()
    }

    /// Feeds the first read of `ino` to the streams; returns the ranks of
    /// the files to read ahead, if any.
    fn stream(&self, state: &mut State, ino: u64) -> Option<std::ops::Range<usize>> {
        let rank = self.rank_of(ino)?;
        let found = state
            .streams
            .iter()
            .position(|s| rank > s.last && rank <= s.ahead.max(s.last + 1) + GAP);
        let Some(i) = found else {
            if state.streams.len() == STREAMS {
                state.streams.pop_back();
            }
            state.streams.push_front(Stream {
                last: rank,
                ahead: rank + 1,
                window: FIRST_WALK_FILES,
                reads: 1,
            });
            return None;
        };
        let mut s = state.streams.remove(i).expect("found above");
        s.reads += 1;
        if s.reads > 2 {
            s.window = (s.window * 2).min(MAX_WALK_FILES);
        }
        s.last = rank;
        let from = s.ahead.max(rank + 1);
        let files = self.walk.get().map_or(0, |w| w.files.len()) as u32;
        let to = (rank + s.window).min(files);
        // Issued in batches of at least half a window, not file by file.
        let issue = to > from && (to - from) * 2 >= s.window.min(files - from);
        if issue {
            s.ahead = to;
        }
        state.streams.push_front(s);
        issue.then_some(from as usize..to as usize)
    }
}

/// Starts fetching `wanted` below demand reads, into the cache.
pub(super) fn fill(cache: &Arc<ChunkCache>, rt: &Handle, wanted: Vec<Wanted>) {
    if wanted.is_empty() {
        return;
    }
    let cache = cache.clone();
    rt.spawn(async move {
        let fills = wanted
            .iter()
            .map(|(chunk, bytes)| cache.fill(chunk, Priority::Ahead, *bytes));
        for result in futures_util::future::join_all(fills).await {
            if let Err(e) = result {
                tracing::debug!("read-ahead: {e:#}");
            }
        }
    });
}

/// Chunks `from..to` of a file of `size` bytes, with their sizes.
pub(super) fn push_chunks(out: &mut Vec<Wanted>, size: u64, chunks: &[ChunkRef], from: usize, to: usize) {
    let count = chunks.len();
    for (i, chunk) in chunks.iter().enumerate().take(to.min(count)).skip(from) {
        out.push((*chunk, chunk_len(size, i, count)));
    }
}

/// The tree's files in depth-first, name-ordered walk order.
struct Walk {
    /// File inode numbers by rank (a hard-linked file at its first name;
    /// 0 at its others).
    files: Vec<u64>,
    /// (inode, rank) of every file, sorted by inode.
    ranks: Vec<(u64, u32)>,
}

impl Walk {
    fn of(index: &Index) -> Walk {
        let mut files = Vec::new();
        // The directories being walked, and the next entry of each.
        let mut stack: Vec<(Entries, usize)> = index.entries(ROOT).map(|e| (e, 0)).into_iter().collect();
        while let Some((entries, next)) = stack.last_mut() {
            let Some(e) = entries.get(*next) else {
                stack.pop();
                continue;
            };
            *next += 1;
            match e.kind {
                libc::S_IFDIR => {
                    if let Some(sub) = index.entries(e.ino) {
                        stack.push((sub, 0));
                    }
                }
                libc::S_IFREG => files.push(e.ino),
                _ => {}
            }
        }
        let mut ranks: Vec<(u64, u32)> = files.iter().enumerate().map(|(r, &f)| (f, r as u32)).collect();
        ranks.sort_unstable();
        ranks.dedup_by_key(|&mut (ino, _)| ino);
        let mut first = vec![false; files.len()];
        for &(_, r) in &ranks {
            first[r as usize] = true;
        }
        for (f, first) in files.iter_mut().zip(first) {
            if !first {
                *f = 0;
            }
        }
        Walk { files, ranks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::layer::Meta;
    use crate::fs::tree::{InodeKind, Plan, PlanDir, PlanInode, Source};
    use std::collections::HashMap as Map;

    /// A tree of `dirs` directories of `files` one-chunk files each, of
    /// `size` bytes.
    fn index_of(dirs: usize, files: usize, size: u64) -> Index {
        let mut plan = Plan::default();
        let mut blocks = Map::new();
        plan.dirs.push(PlanDir {
            path: Vec::new(),
            meta: Meta::default(),
            implicit: false,
            opaque: false,
        });
        for d in 0..dirs {
            plan.dirs.push(PlanDir {
                path: format!("d{d:03}").into_bytes(),
                meta: Meta::default(),
                implicit: false,
                opaque: false,
            });
            for f in 0..files {
                let ino = (d * files + f) as i64;
                plan.inodes.push(PlanInode {
                    paths: vec![format!("d{d:03}/f{f:03}").into_bytes()],
                    kind: InodeKind::File {
                        size,
                        source: Some(Source::Flist { ino }),
                    },
                    meta: Meta::default(),
                });
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&ino.to_le_bytes());
                blocks.insert(ino, vec![ChunkRef { id, key: id }]);
            }
        }
        super::super::index::testing::index_of_plan(&plan, &blocks)
    }

    /// 100-byte files.
    fn index(dirs: usize, files: usize) -> Index {
        index_of(dirs, files, 100)
    }

    fn file(index: &Index, path: &str) -> u64 {
        let (dir, name) = path.split_once('/').unwrap();
        let d = index.lookup(ROOT, dir.as_bytes()).unwrap();
        index.lookup(d, name.as_bytes()).unwrap()
    }

    fn first_read(ahead: &ReadAhead, index: &Index, path: &str) -> usize {
        let ino = file(index, path);
        let node = index.node(ino).unwrap();
        let NodeKind::File { chunks, size, .. } = &node.kind else {
            unreachable!()
        };
        ahead
            .after_read(index, ino, *size, 0, 100, 0, chunks, false)
            .len()
    }

    #[test]
    fn walk_order_is_depth_first_by_name() {
        let index = index(3, 2);
        let ahead = ReadAhead::with_walk(&index, true);
        let names: Vec<String> = ahead
            .walk
            .get()
            .unwrap()
            .files
            .iter()
            .map(|&i| index.path_of(i))
            .collect();
        assert_eq!(
            names,
            [
                "/d000/f000",
                "/d000/f001",
                "/d001/f000",
                "/d001/f001",
                "/d002/f000",
                "/d002/f001"
            ]
        );
    }

    #[test]
    fn a_walk_is_read_ahead_across_directories_and_grows() {
        // One file a directory: only the walk's rule applies.
        let index = index(400, 1);
        let ahead = ReadAhead::with_walk(&index, true);
        assert_eq!(
            first_read(&ahead, &index, "d000/f000"),
            0,
            "one read is not a stream"
        );
        assert!(
            !ahead.in_walk(file(&index, "d000/f000")),
            "one read is not a walk"
        );
        let n = first_read(&ahead, &index, "d001/f000");
        assert_eq!(n as u32, FIRST_WALK_FILES - 1, "the second read starts a window");
        assert!(ahead.in_walk(file(&index, "d001/f000")), "a walker's read");
        let mut total = n;
        for d in 2..40 {
            total += first_read(&ahead, &index, &format!("d{d:03}/f000"));
        }
        assert!(total >= 150, "a growing walk read {total} files ahead");
        assert!(
            total as u32 <= 40 + MAX_WALK_FILES,
            "{total} files ahead of 40 read"
        );
        // Going backwards is not a walk.
        let ahead = ReadAhead::with_walk(&index, true);
        for d in (300..310).rev() {
            assert_eq!(first_read(&ahead, &index, &format!("d{d:03}/f000")), 0);
            assert!(!ahead.in_walk(file(&index, &format!("d{d:03}/f000"))));
        }
    }

    #[test]
    fn a_directory_in_use_is_read_ahead_in_growing_steps() {
        // 10 MB in all: not a small directory.
        let index = index_of(2, 500, 20_000);
        let ahead = ReadAhead::with_walk(&index, true);
        // Files of one directory, in no order (so no walk).
        let order = [250, 40, 410, 7, 333, 121, 480, 66, 199];
        let got: Vec<usize> = order
            .iter()
            .map(|f| first_read(&ahead, &index, &format!("d001/f{f:03}")))
            .collect();
        assert_eq!(got[0], 0);
        assert_eq!(got[1], DIR_FILES, "the second file");
        assert_eq!(got[2], 0);
        assert_eq!(got[3], DIR_FILES * 4, "the fourth");
        assert_eq!(got[7], 499, "the eighth: the rest of the directory");
        assert_eq!(got[4] + got[5] + got[6] + got[8], 0);
        // The other directory is not touched by any of it.
        assert_eq!(first_read(&ahead, &index, "d000/f000"), 0);
    }

    #[test]
    fn random_reads_read_nothing_ahead() {
        let index = index(20, 10);
        let ahead = ReadAhead::with_walk(&index, true);
        for path in [
            "d005/f003",
            "d017/f001",
            "d002/f008",
            "d011/f004",
            "d000/f009",
            "d019/f000",
        ] {
            assert_eq!(first_read(&ahead, &index, path), 0, "{path}");
        }
    }

    #[test]
    fn without_a_disk_cache_only_the_file_itself_is_read_ahead() {
        let index = index(2, 10);
        let ahead = ReadAhead::with_walk(&index, false);
        for f in 0..10 {
            assert_eq!(first_read(&ahead, &index, &format!("d000/f{f:03}")), 0);
        }
    }
}
