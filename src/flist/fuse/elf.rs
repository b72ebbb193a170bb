//! Read-ahead of shared libraries: when an ELF executable or library is
//! first read from a far store, the libraries the dynamic loader is about
//! to open (its interpreter, its `DT_NEEDED` entries and theirs) are found
//! in the tree and fetched at once, instead of one round trip each in the
//! loader's order. A program's start (`python3`: the loader, its cache,
//! libm, libz, libexpat, libc) then costs one round trip, not six.
//!
//! The ELF is untrusted input like the rest of the flist: every offset is
//! checked, and a file that does not parse simply gets no read-ahead.
//! Libraries are looked up as the loader does for a program with an empty
//! environment: `DT_RPATH`/`DT_RUNPATH` (with `$ORIGIN`), then the
//! multiarch and default directories (the loader's cache, built from them,
//! lists the same files).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;

use super::ahead::{fill, push_chunks};
use super::index::{Index, NodeKind};
use crate::flist::chunkcache::{assemble, ChunkCache};
use crate::flist::fetch::Priority;
use crate::store::CHUNK_SIZE;

/// Libraries fetched for one program at most.
const MAX_LIBRARIES: usize = 128;
/// Bytes of a library fetched whole at most; of a larger one, the chunks
/// the loader reads first (its headers) come with the parse.
const WHOLE_LIBRARY: u64 = 16 << 20;
/// The largest dynamic section and string table parsed.
const MAX_TABLE: u64 = 1 << 20;

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_LOAD: u32 = 1;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// Whether `bytes` (a file's start) is an ELF object.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// An ELF file's identity and program headers.
#[derive(Debug)]
pub struct Header {
    wide: bool,
    little: bool,
    machine: u16,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// What a dynamic section asks of the loader: the offsets of its strings
/// in the string table at `strtab` (a virtual address) of `strsz` bytes.
#[derive(Debug, Default)]
pub struct Dynamic {
    needed: Vec<u64>,
    paths: Vec<u64>,
    strtab: Option<u64>,
    strsz: u64,
}

/// Reads the fields of one ELF file's byte order and class.
struct Fields<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Fields<'_> {
    fn uint(&self, at: u64, len: usize) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        let raw = self.bytes.get(at..at.checked_add(len)?)?;
        let mut buf = [0u8; 8];
        if self.little {
            buf[..len].copy_from_slice(raw);
            Some(u64::from_le_bytes(buf))
        } else {
            buf[8 - len..].copy_from_slice(raw);
            Some(u64::from_be_bytes(buf))
        }
    }
}

impl Header {
    /// Parses the header and program headers from the file's first bytes
    /// (`None`: not an ELF file, or its headers are not in `first`).
    pub fn parse(first: &[u8]) -> Option<Header> {
        if !is_elf(first) || first.len() < 64 {
            return None;
        }
        let wide = match first[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match first[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let f = Fields { bytes: first, little };
        let machine = f.uint(18, 2)? as u16;
        let (phoff, entsize, count) = if wide {
            (f.uint(32, 8)?, f.uint(54, 2)?, f.uint(56, 2)?)
        } else {
            (f.uint(28, 4)?, f.uint(42, 2)?, f.uint(44, 2)?)
        };
        if entsize < if wide { 56 } else { 32 } {
            return None;
        }
        let mut segments = Vec::new();
        for i in 0..count {
            let at = phoff.checked_add(i.checked_mul(entsize)?)?;
            let segment = if wide {
                Segment {
                    kind: f.uint(at, 4)? as u32,
                    offset: f.uint(at + 8, 8)?,
                    vaddr: f.uint(at + 16, 8)?,
                    filesz: f.uint(at + 32, 8)?,
                }
            } else {
                Segment {
                    kind: f.uint(at, 4)? as u32,
                    offset: f.uint(at + 4, 4)?,
                    vaddr: f.uint(at + 8, 4)?,
                    filesz: f.uint(at + 16, 4)?,
                }
            };
            segments.push(segment);
        }
        Some(Header {
            wide,
            little,
            machine,
            segments,
        })
    }

    /// Where the interpreter's path is: file offset and length.
    pub fn interp(&self) -> Option<(u64, u64)> {
        self.segment(PT_INTERP).map(|s| (s.offset, s.filesz.min(4096)))
    }

    /// Where the dynamic section is: file offset and length.
    pub fn dynamic(&self) -> Option<(u64, u64)> {
        self.segment(PT_DYNAMIC)
            .filter(|s| s.filesz <= MAX_TABLE)
            .map(|s| (s.offset, s.filesz))
    }

    fn segment(&self, kind: u32) -> Option<&Segment> {
        self.segments.iter().find(|s| s.kind == kind)
    }

    /// The file offset of virtual address `vaddr`, through the loadable
    /// segments.
    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.kind == PT_LOAD)
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
            .and_then(|s| s.offset.checked_add(vaddr - s.vaddr))
    }

    /// Parses the dynamic section's entries.
    pub fn parse_dynamic(&self, bytes: &[u8]) -> Dynamic {
        let f = Fields {
            bytes,
            little: self.little,
        };
        let word = if self.wide { 8 } else { 4 };
        let mut dynamic = Dynamic::default();
        let mut at = 0u64;
        while let (Some(tag), Some(value)) = (f.uint(at, word), f.uint(at + word as u64, word)) {
            match tag {
                DT_NULL => break,
                DT_NEEDED => dynamic.needed.push(value),
                DT_RPATH | DT_RUNPATH => dynamic.paths.push(value),
                DT_STRTAB => dynamic.strtab = Some(value),
                DT_STRSZ => dynamic.strsz = value,
                _ => {}
            }
            at += 2 * word as u64;
        }
        dynamic
    }

    /// Where the string table is: file offset and length.
    pub fn strings(&self, dynamic: &Dynamic) -> Option<(u64, u64)> {
        let offset = self.file_offset(dynamic.strtab?)?;
        (dynamic.strsz <= MAX_TABLE).then_some((offset, dynamic.strsz))
    }

    /// The multiarch directory name of this machine (Debian's layout).
    fn triple(&self) -> Option<&'static str> {
        Some(match (self.machine, self.wide) {
            (62, true) => "x86_64-linux-gnu",
            (3, false) => "i386-linux-gnu",
            (183, true) => "aarch64-linux-gnu",
            (40, false) => "arm-linux-gnueabihf",
            (21, true) if self.little => "powerpc64le-linux-gnu",
            (22, true) => "s390x-linux-gnu",
            (243, true) => "riscv64-linux-gnu",
            _ => return None,
        })
    }

    /// The directories searched after the object's own paths.
    fn default_dirs(&self) -> Vec<Vec<u8>> {
        let mut dirs = Vec::new();
        if let Some(triple) = self.triple() {
            for prefix in ["/lib/", "/usr/lib/", "/usr/local/lib/"] {
                dirs.push(format!("{prefix}{triple}").into_bytes());
            }
        }
        let lib64: &[&str] = if self.wide { &["/lib64", "/usr/lib64"] } else { &[] };
        for dir in lib64.iter().chain(&["/lib", "/usr/lib", "/usr/local/lib"]) {
            dirs.push(dir.as_bytes().to_vec());
        }
        dirs
    }
}

/// The string at `offset` in a string table (up to its NUL).
fn string(table: &[u8], offset: u64) -> Option<&[u8]> {
    let rest = table.get(usize::try_from(offset).ok()?..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    (end > 0).then(|| &rest[..end])
}

/// Where the loader would find `needed` for the object at `origin` (its
/// directory) with search path strings `paths`: candidate paths in order.
fn candidates(header: &Header, origin: &[u8], paths: &[&[u8]], needed: &[u8]) -> Vec<Vec<u8>> {
    if needed.contains(&b'/') {
        return if needed.first() == Some(&b'/') {
            vec![needed.to_vec()]
        } else {
            Vec::new()
        };
    }
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    for list in paths {
        for dir in list.split(|&b| b == b':').filter(|d| !d.is_empty()) {
            let dir = replace(dir, b"${ORIGIN}", origin);
            let dir = replace(&dir, b"$ORIGIN", origin);
            if dir.first() == Some(&b'/') && !dir.contains(&b'$') {
                dirs.push(dir);
            }
        }
    }
    dirs.extend(header.default_dirs());
    dirs.into_iter()
        .map(|mut dir| {
            dir.push(b'/');
            dir.extend_from_slice(needed);
            dir
        })
        .collect()
}

fn replace(s: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Reads `[offset, offset + len)` of file `ino` through the cache (its
/// chunks fetched at read-ahead priority, their lengths checked).
async fn read_range(cache: &ChunkCache, index: &Index, ino: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
    let node = index.node(ino)?;
    let NodeKind::File { size, chunks, .. } = &node.kind else {
        return None;
    };
    let end = offset.checked_add(len)?.min(*size);
    if offset >= end {
        return Some(Vec::new());
    }
    let first = (offset / CHUNK_SIZE as u64) as usize;
    let mut wanted = Vec::new();
    push_chunks(
        &mut wanted,
        *size,
        chunks,
        first,
        ((end - 1) / CHUNK_SIZE as u64) as usize + 1,
    );
    let mut pieces = Vec::with_capacity(wanted.len());
    for (chunk, bytes) in &wanted {
        cache.fill(chunk, Priority::Ahead, *bytes).await.ok()?;
        pieces.push(cache.get(chunk).await.ok()?);
    }
    assemble(*size, chunks.len(), first, &pieces, offset, end).ok()
}

/// Starts fetching `files`, each whole (a large one: its first chunk).
fn fetch_whole(cache: &Arc<ChunkCache>, index: &Index, files: &[u64]) {
    let mut wanted = Vec::new();
    for &ino in files {
        if let Some(NodeKind::File { size, chunks, .. }) = index.node(ino).as_ref().map(|n| &n.kind) {
            let take = if *size <= WHOLE_LIBRARY { chunks.len() } else { 1 };
            push_chunks(&mut wanted, *size, chunks, 0, take);
        }
    }
    wanted.retain(|(chunk, _)| !cache.is_cached(chunk));
    fill(cache, &Handle::current(), wanted);
}

/// Reads ahead the libraries of the ELF objects a mount's readers start.
pub struct Libraries {
    cache: Arc<ChunkCache>,
    index: Arc<Index>,
    /// The objects already handled: each is parsed once.
    seen: Mutex<HashSet<u64>>,
}

impl Libraries {
    pub fn new(cache: Arc<ChunkCache>, index: Arc<Index>) -> Arc<Self> {
        Arc::new(Libraries {
            cache,
            index,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `ino` was fetched as a library (or parsed as a program).
    pub fn foreseen(&self, ino: u64) -> bool {
        self.seen.lock().unwrap().contains(&ino)
    }

    /// Fetches the libraries the ELF object `exe` will load, and theirs,
    /// breadth first, each level's objects parsed at once; nothing if
    /// `exe` was handled before.
    pub async fn fetch_for(self: Arc<Self>, exe: u64) {
        if !self.seen.lock().unwrap().insert(exe) {
            return;
        }
        let mut level = vec![exe];
        let mut fetched = 0;
        while !level.is_empty() && fetched < MAX_LIBRARIES {
            let parses = level.iter().map(|&ino| self.needs(ino));
            level = futures_util::future::join_all(parses)
                .await
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            fetched += level.len();
        }
    }

    /// Parses the ELF object `ino`: fetches its interpreter (and the
    /// loader's cache) as soon as they are known, then the libraries it
    /// needs; returns what it started to fetch (each file once per mount).
    async fn needs(&self, ino: u64) -> Option<Vec<u64>> {
        let (cache, index) = (&*self.cache, &*self.index);
        let first = read_range(cache, index, ino, 0, 4096).await?;
        let header = Header::parse(&first)?;
        let mut started = Vec::new();
        if let Some((offset, len)) = header.interp() {
            let raw = read_range(cache, index, ino, offset, len).await?;
            let interp = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            if interp.first() == Some(&b'/') {
                // The glibc loader reads its cache before any library.
                let files = [interp, b"/etc/ld.so.cache"]
                    .into_iter()
                    .filter_map(|p| index.resolve(p));
                started.extend(self.start(files.collect()));
            }
        }
        let Some((offset, len)) = header.dynamic() else {
            return Some(started);
        };
        let dynamic = header.parse_dynamic(&read_range(cache, index, ino, offset, len).await?);
        let (offset, len) = header.strings(&dynamic)?;
        let table = read_range(cache, index, ino, offset, len).await?;
        let path = index.path_of(ino).into_bytes();
        let origin = &path[..path.iter().rposition(|&b| b == b'/').unwrap_or(0)];
        let paths: Vec<&[u8]> = dynamic.paths.iter().filter_map(|&o| string(&table, o)).collect();
        // Per needed name, the first candidate that is a file.
        let libraries = dynamic.needed.iter().filter_map(|&o| {
            let needed = string(&table, o)?;
            let found = candidates(&header, origin, &paths, needed).into_iter();
            found
                .filter_map(|p| index.resolve(&p))
                .find(|&i| is_file(index, i))
        });
        started.extend(self.start(libraries.collect()));
        Some(started)
    }

    /// Starts fetching, whole, the files of `files` not handled before;
    /// returns them.
    fn start(&self, mut files: Vec<u64>) -> Vec<u64> {
        files.retain(|&ino| self.seen.lock().unwrap().insert(ino));
        fetch_whole(&self.cache, &self.index, &files);
        files
    }
}

fn is_file(index: &Index, ino: u64) -> bool {
    matches!(
        index.node(ino).as_ref().map(|n| &n.kind),
        Some(NodeKind::File { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flist::chunkcache::testing::{cache_over, Far};
    use crate::fs::layer::Meta;
    use crate::fs::node::Special;
    use crate::fs::tree::{InodeKind, Plan, PlanDir, PlanInode, Source};
    use std::collections::HashMap;
    use std::time::Duration;

    /// A little-endian ELF64 x86-64 object: an interpreter (if any), and a
    /// dynamic section naming `needed` and a `runpath`, its string table in
    /// the one loadable segment at virtual address 0x400000.
    fn elf(interp: Option<&str>, needed: &[&str], runpath: Option<&str>) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut add = |s: &str| {
            let at = strings.len() as u64;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        };
        let mut dynamic: Vec<(u64, u64)> = needed.iter().map(|n| (DT_NEEDED, add(n))).collect();
        if let Some(r) = runpath {
            dynamic.push((DT_RUNPATH, add(r)));
        }
        let interp = interp.map(|i| format!("{i}\0").into_bytes());
        // Layout: header 64, 4 program headers (224), interp, strings, dynamic.
        let phnum = 3 + interp.is_some() as u64;
        let interp_at = 64 + 56 * phnum;
        let strings_at = interp_at + interp.as_ref().map_or(0, |i| i.len() as u64);
        let dynamic_at = (strings_at + strings.len() as u64).next_multiple_of(8);
        let base = 0x400000u64;
        dynamic.push((DT_STRTAB, base + strings_at));
        dynamic.push((DT_STRSZ, strings.len() as u64));
        dynamic.push((DT_NULL, 0));
        let end = dynamic_at + 16 * dynamic.len() as u64;
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        (out[4], out[5], out[6]) = (2, 1, 1);
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut phdr = |kind: u32, offset: u64, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&offset.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            out.extend(p);
        };
        if let Some(i) = &interp {
            phdr(PT_INTERP, interp_at, base + interp_at, i.len() as u64);
        }
        phdr(PT_LOAD, 0, base, end);
        phdr(PT_DYNAMIC, dynamic_at, base + dynamic_at, end - dynamic_at);
        phdr(6, 64, base + 64, 56 * phnum);
        out.extend(interp.unwrap_or_default());
        out.extend(&strings);
        out.resize(dynamic_at as usize, 0);
        for (tag, value) in dynamic {
            out.extend(tag.to_le_bytes());
            out.extend(value.to_le_bytes());
        }
        out
    }

    fn names(header: &Header, bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let (offset, len) = header.dynamic().unwrap();
        let dynamic = header.parse_dynamic(&bytes[offset as usize..(offset + len) as usize]);
        let (offset, len) = header.strings(&dynamic).unwrap();
        let table = &bytes[offset as usize..(offset + len) as usize];
        let text = |o: &u64| String::from_utf8(string(table, *o).unwrap().to_vec()).unwrap();
        (
            dynamic.needed.iter().map(text).collect(),
            dynamic.paths.iter().map(text).collect(),
        )
    }

    #[test]
    fn an_elf_object_names_its_interpreter_libraries_and_search_path() {
        let bytes = elf(
            Some("/lib64/ld-linux-x86-64.so.2"),
            &["libm.so.6", "libc.so.6"],
            Some("$ORIGIN/../lib"),
        );
        let header = Header::parse(&bytes).unwrap();
        let (offset, len) = header.interp().unwrap();
        assert_eq!(
            &bytes[offset as usize..(offset + len) as usize],
            b"/lib64/ld-linux-x86-64.so.2\0"
        );
        let (needed, paths) = names(&header, &bytes);
        assert_eq!(needed, ["libm.so.6", "libc.so.6"]);
        assert_eq!(paths, ["$ORIGIN/../lib"]);
        let found = candidates(&header, b"/opt/app/bin", &[b"$ORIGIN/../lib"], b"libm.so.6");
        let found: Vec<String> = found.into_iter().map(|p| String::from_utf8(p).unwrap()).collect();
        assert_eq!(found[0], "/opt/app/bin/../lib/libm.so.6");
        assert_eq!(found[1], "/lib/x86_64-linux-gnu/libm.so.6");
        assert!(found.contains(&"/usr/lib/libm.so.6".to_string()));
        // A name with a slash is a path; a relative one is not searched.
        assert!(candidates(&header, b"/", &[], b"sub/libx.so").is_empty());
        assert_eq!(
            candidates(&header, b"/", &[], b"/opt/libx.so"),
            [b"/opt/libx.so".to_vec()]
        );
    }

    #[test]
    fn hostile_bytes_parse_to_nothing_without_panicking() {
        let good = elf(Some("/lib/ld.so"), &["liba.so"], None);
        // Every truncation, and every single-byte change of the headers.
        for len in 0..good.len() {
            if let Some(header) = Header::parse(&good[..len]) {
                let _ = header.interp();
                if let Some((o, l)) = header.dynamic() {
                    let end = ((o + l) as usize).min(len);
                    let d = header.parse_dynamic(good.get(o as usize..end).unwrap_or(&[]));
                    let _ = header.strings(&d);
                }
            }
        }
        for at in 0..good.len().min(400) {
            for value in [0u8, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                if let Some(header) = Header::parse(&bad) {
                    if let Some((o, l)) = header.dynamic() {
                        let d = header.parse_dynamic(bad.get(o as usize..(o + l) as usize).unwrap_or(&[]));
                        if let Some((o, l)) = header.strings(&d) {
                            assert!(l <= MAX_TABLE && o < u64::MAX);
                        }
                    }
                }
            }
        }
        // Huge counts and offsets are refused, not allocated or followed.
        let mut huge = good.clone();
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Header::parse(&huge).is_none());
        assert!(Header::parse(b"\x7fELF").is_none());
        assert!(string(b"abc", 1).is_none(), "a string without its NUL");
        assert!(string(b"abc\0", u64::MAX).is_none());
    }

    /// A tree of `files` (path, content) and symlinks (path, target), its
    /// content served from a store 30 ms away.
    fn tree(files: &[(&str, Vec<u8>)], links: &[(&str, &str)]) -> (Arc<Far>, Arc<ChunkCache>, Arc<Index>) {
        let mut plan = Plan::default();
        let mut dirs = std::collections::BTreeSet::new();
        let paths = files.iter().map(|f| f.0).chain(links.iter().map(|l| l.0));
        for path in paths {
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                dirs.insert(&path[..at + i]);
                at += i + 1;
            }
        }
        for dir in [""].into_iter().chain(dirs) {
            plan.dirs.push(PlanDir {
                path: dir.as_bytes().to_vec(),
                meta: Meta::default(),
                implicit: false,
                opaque: false,
            });
        }
        let pieces: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
        let (far, chunks) = Far::holding(&pieces, Duration::from_millis(30), false);
        let mut blocks = HashMap::new();
        for (i, (path, content)) in files.iter().enumerate() {
            plan.inodes.push(PlanInode {
                paths: vec![path.as_bytes().to_vec()],
                kind: InodeKind::File {
                    size: content.len() as u64,
                    source: Some(Source::Flist { ino: i as i64 }),
                },
                meta: Meta::default(),
            });
            blocks.insert(i as i64, vec![chunks[i]]);
        }
        for (path, target) in links {
            plan.inodes.push(PlanInode {
                paths: vec![path.as_bytes().to_vec()],
                kind: InodeKind::Special(Special::Symlink {
                    target: target.as_bytes().into(),
                }),
                meta: Meta::default(),
            });
        }
        let index = Arc::new(super::super::index::testing::index_of_plan(&plan, &blocks));
        let cache = Arc::new(cache_over(&far, Duration::from_secs(30), Vec::new()));
        (far, cache, index)
    }

    /// What the store was asked for, as the tree's paths, sorted.
    fn asked(far: &Far, files: &[(&str, Vec<u8>)]) -> Vec<String> {
        let ids: HashSet<_> = far.asked.lock().unwrap().iter().copied().collect();
        let mut out: Vec<String> = files
            .iter()
            .filter(|(_, content)| ids.contains(&crate::store::codec::encode(content).0.id))
            .map(|(path, _)| path.to_string())
            .collect();
        out.sort();
        out
    }

    /// The start of a program: its interpreter, the loader's cache and its
    /// libraries (through symlinks, its runpath, and the libraries'
    /// own needs) are fetched in one go, and nothing else.
    #[tokio::test(start_paused = true)]
    async fn a_programs_libraries_are_fetched_before_the_loader_asks() {
        // Each file's own bytes after its ELF (one chunk each, none shared).
        let own = |mut bytes: Vec<u8>, tag: &str| {
            bytes.extend_from_slice(tag.as_bytes());
            bytes
        };
        let files = [
            (
                "usr/bin/app",
                elf(
                    Some("/lib64/ld-linux-x86-64.so.2"),
                    &["libapp.so.1", "libc.so.6"],
                    Some("$ORIGIN/../lib/app"),
                ),
            ),
            (
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                own(elf(None, &[], None), "ld-linux-x86-64.so.2"),
            ),
            (
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                elf(Some("/lib64/ld-linux-x86-64.so.2"), &[], None),
            ),
            (
                "usr/lib/x86_64-linux-gnu/libz.so.1.2",
                own(elf(None, &[], None), "libz.so.1.2"),
            ),
            (
                "usr/lib/x86_64-linux-gnu/libunused.so",
                own(elf(None, &[], None), "libunused.so"),
            ),
            (
                "usr/lib/app/libapp.so.1",
                elf(None, &["libz.so.1", "libmissing.so.9"], None),
            ),
            ("etc/ld.so.cache", b"glibc-ld.so.cache1.1".to_vec()),
            ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n".to_vec()),
        ];
        let links = [
            ("lib64", "usr/lib64"),
            ("usr/lib64", "/usr/lib/x86_64-linux-gnu"),
            ("lib", "usr/lib"),
            ("usr/lib/x86_64-linux-gnu/libz.so.1", "libz.so.1.2"),
        ];
        let (far, cache, index) = tree(&files, &links);
        let app = index.resolve(b"/usr/bin/app").unwrap();
        let libraries = Libraries::new(cache.clone(), index.clone());
        let start = tokio::time::Instant::now();
        libraries.clone().fetch_for(app).await;
        let took = start.elapsed();
        cache.flush().await;
        // Let the fetches started last finish.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            asked(&far, &files),
            [
                "etc/ld.so.cache",
                "usr/bin/app",
                "usr/lib/app/libapp.so.1",
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib/x86_64-linux-gnu/libz.so.1.2",
            ]
        );
        // Three levels (the program, its libraries, theirs), one round
        // trip each, whatever the number of libraries.
        assert!(took < Duration::from_millis(150), "{took:?}");
        for path in ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/app/libapp.so.1"] {
            assert!(
                libraries.foreseen(index.resolve(path.as_bytes()).unwrap()),
                "{path}"
            );
        }
        assert!(!libraries.foreseen(index.resolve(b"/etc/passwd").unwrap()));
        // A second start of the program parses nothing again.
        let before = far.gets.load(std::sync::atomic::Ordering::SeqCst);
        libraries.fetch_for(app).await;
        assert_eq!(far.gets.load(std::sync::atomic::Ordering::SeqCst), before);
    }
}
