//! The tree of a mounted flist, read from the flist's SQLite file as the
//! kernel asks for it ([`Rows`]) and kept in two bounded caches: the
//! entries of recently used directories and recently used inodes (with
//! each file's chunks). Mounting reads one row, so it takes the same time
//! for ten entries or a million, and the memory of serving does not grow
//! with the tree.
//!
//! FUSE inode numbers are the flist's own: the root is 1, and every name
//! of a hard-linked file maps to the inode of its first name. Directory
//! entries are sorted by name (a name given twice: the lowest inode).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Result};
use lru::LruCache;

use crate::flist::rows::{Row, Rows};
use crate::fs::layer::Meta;
use crate::fs::node::Special;
use crate::fs::tree::InodeKind;
use crate::store::ChunkRef;

pub const ROOT: u64 = 1;

/// The bytes a file's content takes on disk once unpacked: its chunks but
/// the all-zero ones (which `unpack` leaves as holes). A chunk's key is the
/// hash of its content, so zeros are known without reading them; a file's
/// last, shorter chunk is checked only when an earlier one was all zeros.
pub fn allocated(size: u64, chunks: &[ChunkRef]) -> u64 {
    use crate::store::{codec, CHUNK_SIZE};
    static ZERO_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let zero_key = ZERO_KEY.get_or_init(|| codec::blake2b256(&vec![0u8; CHUNK_SIZE]));
    let mut holes = 0u64;
    let mut sparse = false;
    for (i, chunk) in chunks.iter().enumerate() {
        let start = i as u64 * CHUNK_SIZE as u64;
        let len = size.saturating_sub(start).min(CHUNK_SIZE as u64);
        let zero = if len == CHUNK_SIZE as u64 {
            chunk.key == *zero_key
        } else {
            sparse && chunk.key == codec::blake2b256(&vec![0u8; len as usize])
        };
        if zero {
            holes += len;
            sparse = true;
        }
    }
    size - holes.min(size)
}

/// Inodes kept in memory (about 200 bytes each, with their chunks).
const NODES: usize = 65_536;
/// Directory entries kept in memory, all directories together (about 50
/// bytes each); one directory larger than this is kept alone.
const DIR_ENTRIES: usize = 262_144;

/// A directory entry: name, inode number, and type (`S_IFMT` bits).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Box<[u8]>,
    pub ino: u64,
    pub kind: u32,
}

/// The entries of a directory, sorted by name.
pub type Entries = Arc<[Entry]>;

#[derive(Debug)]
pub enum NodeKind {
    Dir,
    /// `blocks` are the 512-byte blocks its content takes (all-zero
    /// chunks, a sparse file's holes, take none).
    File {
        size: u64,
        chunks: Arc<[ChunkRef]>,
        blocks: u64,
    },
    Special(Special),
}

impl NodeKind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(&self) -> u32 {
        match self {
            NodeKind::Dir => libc::S_IFDIR,
            NodeKind::File { .. } => libc::S_IFREG,
            NodeKind::Special(s) => s.type_bits(),
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub meta: Meta,
    pub nlink: u32,
    pub parent: u64,
}

pub struct Index {
    rows: Rows,
    /// For each hard-linked file, how many other names it has.
    links: HashMap<u64, u32>,
    nodes: Mutex<LruCache<u64, Arc<Node>>>,
    dirs: Mutex<Dirs>,
    totals: OnceLock<(u64, u64)>,
}

/// The directory cache, weighed in entries.
struct Dirs {
    lru: LruCache<u64, Entries>,
    entries: usize,
}

impl Index {
    /// Opens the flist at `path` for serving: checks it is one and that its
    /// root is a directory, and counts its hard links.
    pub fn open(path: &Path) -> Result<Self> {
        let rows = Rows::open(path)?;
        match rows.inode(ROOT)? {
            Some(Row {
                kind: InodeKind::Dir,
                link: None,
                ..
            }) => {}
            Some(_) => bail!("the flist's root (inode 1) is not a directory"),
            None => bail!("the flist has no root (inode 1)"),
        }
        Ok(Index {
            links: rows.link_counts()?,
            rows,
            // Grown as used (a bounded LruCache allocates its whole table
            // at once), and held at NODES by `keep_node`.
            nodes: Mutex::new(LruCache::unbounded()),
            dirs: Mutex::new(Dirs {
                lru: LruCache::unbounded(),
                entries: 0,
            }),
            totals: OnceLock::new(),
        })
    }

    /// How many rows the tree has, and the bytes of its files, each
    /// counted once (read once, on first use: it reads the whole table).
    pub fn totals(&self) -> (u64, u64) {
        *self.totals.get_or_init(|| {
            self.rows.totals().unwrap_or_else(|e| {
                tracing::warn!("counting the flist's entries: {e:#}");
                (0, 0)
            })
        })
    }

    /// Inode `ino`, if the tree has it.
    pub fn node(&self, ino: u64) -> Option<Arc<Node>> {
        if let Some(node) = self.cached(ino) {
            return Some(node);
        }
        let node = self.read_node(ino)?;
        // A miss on a file is mostly the first of its directory's (a
        // reader going through it, the kernel having forgotten it): the
        // whole directory is read in three queries and its files kept,
        // rather than one query per file.
        if !matches!(node.kind, NodeKind::Dir) {
            self.reload_files(node.parent);
        }
        Some(node)
    }

    /// Reads the entries of `dir` again (not one larger than a quarter of
    /// the inode cache), which keeps its files' inodes.
    fn reload_files(&self, dir: u64) {
        let cached = self.dirs.lock().unwrap().lru.peek(&dir).map(|e| e.len());
        match cached {
            Some(n) if n > NODES / 4 => {}
            Some(_) => {
                if let Ok(entries) = self.load_dir(dir) {
                    self.keep_dir(dir, entries);
                }
            }
            None => {
                let _ = self.entries(dir);
            }
        }
    }

    /// Inode `ino` if it is in the cache.
    fn cached(&self, ino: u64) -> Option<Arc<Node>> {
        self.nodes.lock().unwrap().get(&ino).cloned()
    }

    /// Inode `ino`, read on its own if it is not cached.
    fn node_alone(&self, ino: u64) -> Option<Arc<Node>> {
        self.cached(ino).or_else(|| self.read_node(ino))
    }

    /// Reads inode `ino` from the flist, and caches it.
    fn read_node(&self, ino: u64) -> Option<Arc<Node>> {
        match self.load_node(ino) {
            Ok(node) => {
                let node = Arc::new(node?);
                keep_node(&mut self.nodes.lock().unwrap(), ino, node.clone());
                Some(node)
            }
            Err(e) => {
                tracing::warn!("reading inode {ino} of the flist: {e:#}");
                None
            }
        }
    }

    /// The entries of directory `dir`, if it is one.
    pub fn entries(&self, dir: u64) -> Option<Entries> {
        if let Some(entries) = self.dirs.lock().unwrap().lru.get(&dir) {
            return Some(entries.clone());
        }
        if !matches!(self.node(dir)?.kind, NodeKind::Dir) {
            return None;
        }
        match self.load_dir(dir) {
            Ok(entries) => {
                self.keep_dir(dir, entries.clone());
                Some(entries)
            }
            Err(e) => {
                tracing::warn!("reading directory {} of the flist: {e:#}", self.path_of(dir));
                None
            }
        }
    }

    /// Puts a directory's entries in the cache, dropping the least
    /// recently used beyond [`DIR_ENTRIES`] (one larger is kept alone).
    fn keep_dir(&self, dir: u64, entries: Entries) {
        let mut dirs = self.dirs.lock().unwrap();
        if let Some(old) = dirs.lru.put(dir, entries.clone()) {
            dirs.entries -= old.len();
        }
        dirs.entries += entries.len();
        while dirs.entries > DIR_ENTRIES && dirs.lru.len() > 1 {
            let (_, old) = dirs.lru.pop_lru().expect("not empty");
            dirs.entries -= old.len();
        }
    }

    /// The inode number of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let entries = self.entries(parent)?;
        entries
            .binary_search_by(|e| e.name.as_ref().cmp(name))
            .ok()
            .map(|i| entries[i].ino)
    }

    /// Reads inode `ino` from the flist: `None` if it has no such row, or
    /// the row is another name of a file (not an inode of its own).
    fn load_node(&self, ino: u64) -> Result<Option<Node>> {
        let Some(row) = self.rows.inode(ino)? else {
            return Ok(None);
        };
        if row.link.is_some() {
            return Ok(None);
        }
        let chunks = match row.kind {
            InodeKind::File { .. } => self.rows.chunks(ino)?,
            _ => Vec::new(),
        };
        self.node_of(row, chunks).map(Some)
    }

    fn node_of(&self, row: Row, chunks: Vec<ChunkRef>) -> Result<Node> {
        let (kind, nlink) = match row.kind {
            InodeKind::Dir => (NodeKind::Dir, 2 + self.rows.subdirs(row.ino)?),
            InodeKind::File { size, .. } => {
                let blocks = allocated(size, &chunks).div_ceil(512);
                let names = 1 + self.links.get(&row.ino).copied().unwrap_or(0);
                let chunks = chunks.into();
                (NodeKind::File { size, chunks, blocks }, names)
            }
            InodeKind::Special(s) => (NodeKind::Special(s), 1),
        };
        let parent = if row.ino == ROOT { ROOT } else { row.parent };
        Ok(Node {
            kind,
            meta: row.meta,
            nlink,
            parent,
        })
    }

    /// Reads the entries of directory `dir`, and keeps the inodes of its
    /// files (and other non-directories) in the inode cache.
    fn load_dir(&self, dir: u64) -> Result<Entries> {
        let rows = self.rows.children(dir)?;
        let mut chunks = if rows.iter().any(|r| matches!(r.kind, InodeKind::File { .. })) {
            self.rows.children_chunks(dir)?
        } else {
            HashMap::new()
        };
        let mut entries = Vec::with_capacity(rows.len());
        let mut links = Vec::new();
        let mut nodes = Vec::new();
        for row in rows {
            // The root is no one's child (its parent column names some
            // directory of the tree in a hostile flist: a loop), nor is a
            // directory its own.
            if row.ino == ROOT || row.ino == dir {
                continue;
            }
            if let Some(target) = row.link {
                links.push((row.name, target));
                continue;
            }
            let (name, ino) = (row.name.clone(), row.ino);
            let kind = match row.kind {
                InodeKind::Dir => libc::S_IFDIR,
                _ => {
                    let node = self.node_of(row, chunks.remove(&ino).unwrap_or_default())?;
                    let kind = node.kind.type_bits();
                    nodes.push((ino, Arc::new(node)));
                    kind
                }
            };
            entries.push(Entry { name, ino, kind });
        }
        {
            let mut cache = self.nodes.lock().unwrap();
            for (ino, node) in nodes {
                keep_node(&mut cache, ino, node);
            }
        }
        // Other names of files: the file must be one (not a directory, not
        // itself another name).
        for (name, target) in links {
            match self.node_alone(target) {
                Some(node) if !matches!(node.kind, NodeKind::Dir) => entries.push(Entry {
                    name,
                    ino: target,
                    kind: node.kind.type_bits(),
                }),
                _ => tracing::warn!(
                    "{}: leaving out {:?}, a hard link to inode {target}, which is not a file",
                    self.path_of(dir),
                    String::from_utf8_lossy(&name)
                ),
            }
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.ino.cmp(&b.ino)));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries.into())
    }

    /// The inode an absolute `path` names inside the tree, following
    /// symbolic links as the kernel would with the tree as the root (at
    /// most 40 of them): `..` never leaves the root.
    pub fn resolve(&self, path: &[u8]) -> Option<u64> {
        let mut links = 0;
        let mut dir = ROOT;
        // Components still to walk, last first.
        let mut rest: Vec<Box<[u8]>> = split_path(path);
        while let Some(name) = rest.pop() {
            match name.as_ref() {
                b"." => continue,
                b".." => {
                    dir = self.node(dir)?.parent;
                    continue;
                }
                _ => {}
            }
            let ino = self.lookup(dir, &name)?;
            match &self.node(ino)?.kind {
                NodeKind::Special(Special::Symlink { target }) => {
                    links += 1;
                    if links > 40 {
                        return None;
                    }
                    if target.first() == Some(&b'/') {
                        dir = ROOT;
                    }
                    rest.extend(split_path(target));
                }
                _ if rest.is_empty() => return Some(ino),
                NodeKind::Dir => dir = ino,
                _ => return None,
            }
        }
        Some(dir)
    }

    /// A path for log messages (hard-linked files: the name in the
    /// directory of their first name); walks up the tree, so it is for the
    /// rare paths, not every request.
    pub fn path_of(&self, mut ino: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        // A directory tree deeper than this is not walked up further.
        for _ in 0..4096 {
            if ino == ROOT {
                break;
            }
            let Some(parent) = self.node(ino).map(|n| n.parent) else {
                break;
            };
            let Some(entries) = self.entries(parent) else {
                break;
            };
            match entries.iter().find(|e| e.ino == ino) {
                Some(e) => parts.push(String::from_utf8_lossy(&e.name).into_owned()),
                None => break,
            }
            ino = parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The size of each chunk among `keys` (see [`Rows::chunk_sizes`]).
    pub fn chunk_sizes(&self, keys: &std::collections::HashSet<[u8; 32]>) -> Result<HashMap<[u8; 32], u64>> {
        self.rows.chunk_sizes(keys)
    }

    /// Calls `f(size, chunks)` for every file with chunks in the flist
    /// (see [`Rows::each_file`]).
    pub fn each_file(&self, f: impl FnMut(u64, &[ChunkRef]) -> bool) -> Result<()> {
        self.rows.each_file(f)
    }
}

/// Puts a node in the inode cache, dropping the least recently used
/// beyond [`NODES`].
fn keep_node(cache: &mut LruCache<u64, Arc<Node>>, ino: u64, node: Arc<Node>) {
    cache.put(ino, node);
    while cache.len() > NODES {
        cache.pop_lru();
    }
}

/// The components of `path`, last first (empty ones dropped).
fn split_path(path: &[u8]) -> Vec<Box<[u8]>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(Box::from)
        .collect()
}

/// Indexes over trees written as flists, for tests.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::fs::tree::{Plan, Source};

    /// An index of `plan` written as an flist: a file's chunks are
    /// `blocks[ino]` where its source is `Source::Flist { ino }`. The file
    /// is removed at once (the index keeps it open).
    pub fn index_of_plan(plan: &Plan, blocks: &HashMap<i64, Vec<ChunkRef>>) -> Index {
        let by_inode: HashMap<usize, Vec<ChunkRef>> = (plan.inodes.iter().enumerate())
            .filter_map(|(i, inode)| match &inode.kind {
                InodeKind::File {
                    source: Some(Source::Flist { ino }),
                    ..
                } => Some((i, blocks.get(ino)?.clone())),
                _ => None,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.fl");
        crate::flist::format::write(&path, plan, &by_inode, &[], &[]).unwrap();
        Index::open(&path).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::index_of_plan;
    use super::*;
    use crate::fs::tree::{Plan, PlanDir, PlanInode, Source};

    /// A directory of the plan, 0755.
    fn dir(path: &str) -> PlanDir {
        PlanDir {
            path: path.as_bytes().to_vec(),
            meta: meta(0o755),
            implicit: false,
            opaque: false,
        }
    }

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }

    #[test]
    fn layout_links_and_lookup() {
        let plan = Plan {
            dirs: vec![dir(""), dir("etc")],
            inodes: vec![
                PlanInode {
                    paths: vec![b"etc/a".to_vec(), b"b".to_vec()],
                    kind: InodeKind::File {
                        size: 3,
                        source: Some(Source::Flist { ino: 7 }),
                    },
                    meta: meta(0o600),
                },
                PlanInode {
                    paths: vec![b"etc/null".to_vec()],
                    kind: InodeKind::Special(Special::CharDev { major: 1, minor: 3 }),
                    meta: meta(0o666),
                },
            ],
            whiteouts: vec![],
        };
        let chunk = ChunkRef {
            id: [1; 32],
            key: [2; 32],
        };
        let blocks = HashMap::from([(7, vec![chunk])]);
        let index = index_of_plan(&plan, &blocks);
        let etc = index.lookup(ROOT, b"etc").unwrap();
        let a = index.lookup(etc, b"a").unwrap();
        assert_eq!(index.lookup(ROOT, b"b"), Some(a), "hard links share an inode");
        assert_eq!(index.node(a).unwrap().nlink, 2);
        assert_eq!(index.node(ROOT).unwrap().nlink, 3, "root holds one subdirectory");
        assert_eq!(index.lookup(ROOT, b"missing"), None);
        assert_eq!(index.lookup(a, b"x"), None, "a file has no entries");
        assert!(index.node(0).is_none() && index.node(99).is_none());
        let node = index.node(a).unwrap();
        let NodeKind::File { chunks, size, .. } = &node.kind else {
            panic!()
        };
        assert_eq!((*size, &chunks[..]), (3, &[chunk][..]));
        let null = index.lookup(etc, b"null").unwrap();
        assert!(matches!(
            index.node(null).unwrap().kind,
            NodeKind::Special(Special::CharDev { major: 1, minor: 3 })
        ));
        let root: Vec<(String, u32)> = (index.entries(ROOT).unwrap().iter())
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind))
            .collect();
        assert_eq!(root, [("b".into(), libc::S_IFREG), ("etc".into(), libc::S_IFDIR)]);
        assert_eq!(index.totals(), (5, 3), "five rows, the linked file's bytes once");
        assert_eq!(index.path_of(null), "/etc/null");
        assert_eq!(index.path_of(a), "/etc/a", "a hard-linked file: its first name");
    }

    /// A tree of one directory, written as an flist and then changed with
    /// `sql` (rows as a hostile or broken writer would leave them).
    fn edited(sql: &str) -> Index {
        let plan = Plan {
            dirs: vec![dir(""), dir("d")],
            inodes: ["d/f1", "d/f2", "d/f3", "d/f4", "d/f5"]
                .iter()
                .map(|p| PlanInode {
                    paths: vec![p.as_bytes().to_vec()],
                    kind: InodeKind::File {
                        size: 0,
                        source: None,
                    },
                    meta: meta(0o644),
                })
                .collect(),
            whiteouts: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.fl");
        crate::flist::format::write(&path, &plan, &HashMap::new(), &[], &[]).unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        Index::open(&path).unwrap()
    }

    fn names(index: &Index, dir: u64) -> Vec<String> {
        (index.entries(dir).unwrap().iter())
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect()
    }

    /// Rows a writer should not have left are left out, one by one; the
    /// rest of their directory is served. Inodes: root 1, d 2, d/f1.. 3..7.
    #[test]
    fn bad_rows_are_left_out_and_their_directory_served() {
        // Each leaves out d/f1 (inode 3) alone.
        let f1_left_out = [
            ("a slash", "UPDATE inode SET name = 'a/b' WHERE ino = 3"),
            ("dot-dot", "UPDATE inode SET name = '..' WHERE ino = 3"),
            ("empty", "UPDATE inode SET name = '' WHERE ino = 3"),
            (
                "a NUL",
                "UPDATE inode SET name = CAST(x'6100' AS TEXT) WHERE ino = 3",
            ),
            ("a huge size", "UPDATE inode SET size = 1 << 50 WHERE ino = 3"),
            (
                "an unknown type",
                "UPDATE inode SET mode = 49152 | 420 WHERE ino = 3",
            ),
            ("a text size", "UPDATE inode SET size = 'big' WHERE ino = 3"),
            (
                "a link to a directory",
                "INSERT INTO fl_link (ino, target) VALUES (3, 2)",
            ),
            (
                "a link to nothing",
                "INSERT INTO fl_link (ino, target) VALUES (3, 999)",
            ),
            // f2 is another name of f5, f1 of f2: a link to a link.
            (
                "a link to a link",
                "INSERT INTO fl_link (ino, target) VALUES (4, 5), (3, 4)",
            ),
            // The first row keeps the name: f1 (3) is now a second "f2".
            ("a name twice", "UPDATE inode SET name = 'f2' WHERE ino = 3"),
        ];
        for (what, sql) in f1_left_out {
            let index = edited(sql);
            let d = index.lookup(ROOT, b"d").unwrap();
            assert_eq!(names(&index, d), ["f2", "f3", "f4", "f5"], "{what}");
            assert_eq!(names(&index, ROOT), ["d"], "{what}");
        }
        // The root listed as a child of d: not shown there.
        let index = edited("UPDATE inode SET parent = 2 WHERE ino = 1");
        assert_eq!(names(&index, 2), ["f1", "f2", "f3", "f4", "f5"]);
        assert_eq!(names(&index, ROOT), ["d"]);
        // A directory that is its own parent is no one's child.
        let index = edited("UPDATE inode SET parent = 2 WHERE ino = 2");
        assert!(names(&index, ROOT).is_empty());
        assert_eq!(names(&index, 2), ["f1", "f2", "f3", "f4", "f5"], "nor its own");
        // A name given twice: the first row's.
        let index = edited("UPDATE inode SET name = 'f2' WHERE ino = 3");
        let d = index.lookup(ROOT, b"d").unwrap();
        assert_eq!(index.lookup(d, b"f2"), Some(3));
    }

    /// A file read on its own (the kernel asking by number) brings its
    /// directory's other files into the cache with it, in one read.
    #[test]
    fn a_missed_file_brings_its_siblings() {
        let index = edited("");
        let cached = |ino: u64| index.nodes.lock().unwrap().contains(&ino);
        assert!((3..=7).all(|i| !cached(i)), "nothing is read at open");
        assert!(index.node(5).is_some());
        assert!((3..=7).all(cached), "the siblings of inode 5 came with it");
        // Dropped from the cache (while the directory's entries stay), a
        // file still brings them back.
        index.nodes.lock().unwrap().clear();
        assert!(index.node(3).is_some());
        assert!((3..=7).all(cached));
    }

    /// A root that is missing or not a directory is refused at mount.
    #[test]
    fn a_flist_without_a_root_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.fl");
        let plan = Plan {
            dirs: vec![dir("")],
            inodes: vec![],
            whiteouts: vec![],
        };
        for (sql, expected) in [
            ("UPDATE inode SET mode = 33188 WHERE ino = 1", "not a directory"),
            ("DELETE FROM inode WHERE ino = 1", "no root"),
        ] {
            crate::flist::format::write(&path, &plan, &HashMap::new(), &[], &[]).unwrap();
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute_batch(sql)
                .unwrap();
            let err = Index::open(&path).err().unwrap();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
        }
    }

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // Below 2^12 majors and 2^20 minors the kernel's 32-bit encoding is
        // glibc's 64-bit one (an independent implementation) cut to 32 bits.
        for (major, minor) in [(8, 1), (1, 3), (259, 0x12345), (4095, 0xfffff)] {
            let d = Special::CharDev { major, minor };
            assert_eq!(
                u64::from(d.fuse_rdev()),
                libc::makedev(major, minor),
                "{major}:{minor}"
            );
        }
    }

    /// Paths resolve as the kernel would with the tree as the root:
    /// symlinks absolute and relative, `..` stopping at the root, loops
    /// and paths through a file refused.
    #[test]
    fn paths_resolve_through_symlinks_inside_the_tree() {
        let link = |path: &str, target: &str| PlanInode {
            paths: vec![path.as_bytes().to_vec()],
            kind: InodeKind::Special(Special::Symlink {
                target: target.as_bytes().into(),
            }),
            meta: meta(0o777),
        };
        let plan = Plan {
            dirs: vec![dir(""), dir("usr"), dir("usr/lib"), dir("usr/lib/x")],
            inodes: vec![
                PlanInode {
                    paths: vec![b"usr/lib/x/libc.so.6".to_vec()],
                    kind: InodeKind::File {
                        size: 0,
                        source: None,
                    },
                    meta: meta(0o644),
                },
                link("lib", "usr/lib"),
                link("lib64", "/usr/lib/x/"),
                link("usr/lib/x/libc.so", "libc.so.6"),
                link("usr/lib/up", "../../../../usr"),
                link("loop", "loop2"),
                link("loop2", "/loop"),
            ],
            whiteouts: vec![],
        };
        let index = index_of_plan(&plan, &HashMap::new());
        let libc = index.resolve(b"/usr/lib/x/libc.so.6").unwrap();
        assert!(matches!(index.node(libc).unwrap().kind, NodeKind::File { .. }));
        for path in [
            "/lib/x/libc.so.6",
            "/lib64/libc.so.6",
            "/lib64/libc.so",
            "//usr/./lib/x/../x/libc.so.6",
            "/usr/lib/up/lib/x/libc.so",
            "/../../lib/x/libc.so.6",
        ] {
            assert_eq!(index.resolve(path.as_bytes()), Some(libc), "{path}");
        }
        assert_eq!(index.resolve(b"/"), Some(ROOT));
        assert_eq!(index.resolve(b"/lib64"), index.resolve(b"/usr/lib/x"));
        for path in [
            "/loop",
            "/loop/x",
            "/usr/lib/x/libc.so.6/x",
            "/usr/missing",
            "/lib/none",
        ] {
            assert_eq!(index.resolve(path.as_bytes()), None, "{path}");
        }
    }
}
