//! The tree of a mounted flist, held in memory: FUSE inode numbers,
//! attributes, sorted directory entries, and each file's chunks. It is
//! built once at mount time from the flist's validated plan
//! (`flist::Flist::plan`), and read without locks by every request thread.
//!
//! Inode numbers are stable: the root is 1, then the directories and then
//! the other inodes in plan order, which depends only on the flist. Every
//! name of a hard-linked file maps to the one inode number.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{bail, Context, Result};

use crate::fs::layer::Meta;
use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Plan, Source};
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

/// A directory entry: name and inode number.
pub type Entry = (Box<[u8]>, u64);

#[derive(Debug)]
pub enum NodeKind {
    /// Entries sorted by name.
    Dir {
        entries: Box<[(Box<[u8]>, u64)]>,
    },
    /// `chunks` indexes [`Index::chunks`]; `blocks` are the 512-byte
    /// blocks its content takes (all-zero chunks, a sparse file's holes,
    /// take none).
    File {
        size: u64,
        chunks: Range<usize>,
        blocks: u64,
    },
    Special(Special),
}

#[derive(Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub meta: Meta,
    pub nlink: u32,
    pub parent: u64,
}

#[derive(Debug)]
pub struct Index {
    nodes: Vec<Node>,
    chunks: Vec<ChunkRef>,
    /// Bytes of file content, each inode counted once.
    pub content_bytes: u64,
}

impl Index {
    /// Lays out `plan` (from an flist: file content as `Source::Flist`) with
    /// `blocks`, the chunks of each flist inode.
    pub fn build(plan: &Plan, blocks: &HashMap<i64, Vec<ChunkRef>>) -> Result<Self> {
        let ndirs = plan.dirs.len();
        if plan.dirs.first().is_none_or(|d| !d.path.is_empty()) {
            bail!("the flist's tree has no root directory");
        }
        let mut dir_ino: HashMap<&[u8], u64> = HashMap::with_capacity(ndirs);
        let mut entries: Vec<Vec<Entry>> = vec![Vec::new(); ndirs];
        let mut nodes: Vec<Node> = Vec::with_capacity(ndirs + plan.inodes.len());
        for (i, dir) in plan.dirs.iter().enumerate() {
            let ino = i as u64 + 1;
            let parent = if i == 0 {
                ROOT
            } else {
                link(&dir_ino, &mut entries, &dir.path, ino)?
            };
            dir_ino.insert(&dir.path, ino);
            nodes.push(Node {
                kind: NodeKind::Dir {
                    entries: Box::new([]),
                },
                meta: dir.meta.clone(),
                nlink: 2,
                parent,
            });
        }
        let mut chunks = Vec::new();
        let mut content_bytes = 0;
        for (i, inode) in plan.inodes.iter().enumerate() {
            let ino = (ndirs + i) as u64 + 1;
            let mut parent = ROOT;
            for path in &inode.paths {
                parent = link(&dir_ino, &mut entries, path, ino)?;
            }
            let kind = match &inode.kind {
                InodeKind::File { size, source } => {
                    let refs = match source {
                        Some(Source::Flist { ino }) => blocks.get(ino).map(Vec::as_slice).unwrap_or(&[]),
                        _ => &[],
                    };
                    content_bytes += size;
                    let start = chunks.len();
                    chunks.extend_from_slice(refs);
                    NodeKind::File {
                        size: *size,
                        chunks: start..chunks.len(),
                        blocks: allocated(*size, refs).div_ceil(512),
                    }
                }
                InodeKind::Dir => bail!("a directory among the flist's other inodes"),
                InodeKind::Special(special) => NodeKind::Special(special.clone()),
            };
            nodes.push(Node {
                kind,
                meta: inode.meta.clone(),
                nlink: inode.paths.len() as u32,
                parent,
            });
        }
        for (i, mut list) in entries.into_iter().enumerate() {
            list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            list.dedup_by(|a, b| a.0 == b.0);
            let subdirs = list.iter().filter(|(_, ino)| (*ino as usize) <= ndirs).count();
            nodes[i].nlink = 2 + subdirs as u32;
            nodes[i].kind = NodeKind::Dir {
                entries: list.into_boxed_slice(),
            };
        }
        Ok(Index {
            nodes,
            chunks,
            content_bytes,
        })
    }

    /// How many inodes (the root included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    /// The inode number of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<u64> {
        let NodeKind::Dir { entries } = &self.node(parent)?.kind else {
            return None;
        };
        entries
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|i| entries[i].1)
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
                NodeKind::Dir { .. } => dir = ino,
                _ => return None,
            }
        }
        Some(dir)
    }

    /// A path for log messages (hard-linked files: one of their names);
    /// walks up the tree, so it is for the rare paths, not every request.
    pub fn path_of(&self, mut ino: u64) -> String {
        let mut parts: Vec<String> = Vec::new();
        while ino != ROOT {
            let Some(node) = self.node(ino) else { break };
            let Some(NodeKind::Dir { entries }) = self.node(node.parent).map(|p| &p.kind) else {
                break;
            };
            match entries.iter().find(|(_, i)| *i == ino) {
                Some((name, _)) => parts.push(String::from_utf8_lossy(name).into_owned()),
                None => break,
            }
            ino = node.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    pub fn chunks(&self, range: &Range<usize>) -> &[ChunkRef] {
        &self.chunks[range.clone()]
    }

    /// The size of every chunk, by key.
    pub fn chunk_sizes(&self) -> HashMap<[u8; 32], u64> {
        self.distinct_chunks()
            .into_iter()
            .map(|(c, n)| (c.key, n))
            .collect()
    }

    /// Every file's chunks with their sizes, each distinct chunk once, in
    /// inode order.
    pub fn distinct_chunks(&self) -> Vec<(ChunkRef, u64)> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for node in &self.nodes {
            let NodeKind::File { size, chunks, .. } = &node.kind else {
                continue;
            };
            let count = chunks.len();
            for (i, chunk) in self.chunks[chunks.clone()].iter().enumerate() {
                if seen.insert(chunk.key) {
                    let bytes = crate::flist::chunkcache::expected_len(*size, i, count)
                        .unwrap_or(crate::store::CHUNK_SIZE);
                    out.push((*chunk, bytes as u64));
                }
            }
        }
        out
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

/// Adds `path` as a name of `ino` to its parent directory's entries, and
/// returns the parent's inode number.
fn link(dir_ino: &HashMap<&[u8], u64>, entries: &mut [Vec<Entry>], path: &[u8], ino: u64) -> Result<u64> {
    let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], path),
    };
    let parent = *dir_ino
        .get(parent)
        .with_context(|| format!("{} has no parent directory", String::from_utf8_lossy(path)))?;
    entries[(parent - 1) as usize].push((name.into(), ino));
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tree::{PlanDir, PlanInode};

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }

    #[test]
    fn layout_links_and_lookup() {
        let plan = Plan {
            dirs: vec![
                PlanDir {
                    path: vec![],
                    meta: meta(0o755),
                    implicit: false,
                    opaque: false,
                },
                PlanDir {
                    path: b"etc".to_vec(),
                    meta: meta(0o755),
                    implicit: false,
                    opaque: false,
                },
            ],
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
        let index = Index::build(&plan, &blocks).unwrap();
        assert_eq!(index.node_count(), 4);
        let etc = index.lookup(ROOT, b"etc").unwrap();
        let a = index.lookup(etc, b"a").unwrap();
        assert_eq!(index.lookup(ROOT, b"b"), Some(a), "hard links share an inode");
        assert_eq!(index.node(a).unwrap().nlink, 2);
        assert_eq!(index.node(ROOT).unwrap().nlink, 3, "root holds one subdirectory");
        assert_eq!(index.lookup(ROOT, b"missing"), None);
        assert_eq!(index.lookup(a, b"x"), None, "a file has no entries");
        assert!(index.node(0).is_none() && index.node(99).is_none());
        let NodeKind::File { chunks, size, .. } = &index.node(a).unwrap().kind else {
            panic!()
        };
        assert_eq!((*size, index.chunks(chunks)), (3, &[chunk][..]));
        let null = index.lookup(etc, b"null").unwrap();
        assert!(matches!(
            index.node(null).unwrap().kind,
            NodeKind::Special(Special::CharDev { major: 1, minor: 3 })
        ));
        assert_eq!(index.content_bytes, 3);
        assert_eq!(index.path_of(null), "/etc/null");
        assert!(["/etc/a", "/b"].contains(&index.path_of(a).as_str()));
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
        let dir = |path: &str| PlanDir {
            path: path.as_bytes().to_vec(),
            meta: meta(0o755),
            implicit: false,
            opaque: false,
        };
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
        let index = Index::build(&plan, &HashMap::new()).unwrap();
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
