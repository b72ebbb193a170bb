//! Decoding a layer blob (gzip, zstd or plain tar) into entries, and
//! classifying each entry as an addition, a whiteout (`.wh.NAME`) or an
//! opaque-directory marker (`.wh..wh..opq`).
//!
//! Layers are untrusted input: names are kept as raw bytes (non-UTF-8 names
//! are legal), split into components with `.` and empty parts dropped, and
//! lengths bounded. What a name *resolves to* (`..`, symlinks on the way) is
//! decided by the tree, never here, and never by the `tar` crate's unpacker.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use serde::{Deserialize, Serialize};

use crate::fs::node::Special;

/// Longest path accepted (bytes): Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;

/// A timestamp with nanoseconds, as PAX headers carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// An extended attribute: name and value.
pub type Xattr = (Box<[u8]>, Box<[u8]>);

/// Ownership, permissions, times and extended attributes of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// `SCHILY.xattr.*` records, in header order.
    pub xattrs: Vec<Xattr>,
}

/// What an entry creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File {
        size: u64,
        /// Stored sparse: the tar says where its holes are.
        sparse: bool,
    },
    Dir,
    /// A hard link to the (layer-relative) path `target`.
    Hardlink {
        target: Box<[u8]>,
    },
    Special(Special),
}

/// One tar entry that adds something to the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position of the entry in the layer's tar stream (0-based, counting
    /// only real entries): how the writer finds the entry's content again.
    pub index: u32,
    /// Normalised path: components joined by `/`, no `.` or empty parts; may
    /// still hold `..` (the tree resolves those, clamped at the root).
    pub path: Box<[u8]>,
    pub kind: Kind,
    pub meta: Meta,
}

/// What an entry means for the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Add(Entry),
    /// `.wh.NAME`: delete `path` from lower layers.
    Whiteout {
        path: Box<[u8]>,
    },
    /// `.wh..wh..opq`: hide every lower-layer child of `dir`.
    Opaque {
        dir: Box<[u8]>,
    },
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer blob is compressed (from its media type, see `image::manifest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer blob in the workdir and how it is compressed.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub path: PathBuf,
    pub compression: Compression,
    /// Where the layer's changes are cached (see [`LayerBlob::changes`]).
    pub index: Option<PathBuf>,
    /// Where a gzip layer's seek points are cached (see [`SeekPoint`]).
    pub seek: Option<PathBuf>,
}

/// A place a gzip layer's tar stream can be read from, without inflating
/// what comes before it: a checkpoint (see `fs::gzindex`) and the first
/// member whose headers start at or after it. Recorded while the layer's
/// changes are first read; what lets one layer be read by several threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeekPoint {
    pub checkpoint: crate::fs::gzindex::Checkpoint,
    /// The member's position in the layer (as [`Entry::index`] counts)
    /// and the offset of its first header in the tar stream.
    pub member: (u32, u64),
}

/// Where an entry is in its layer's tar stream.
#[derive(Debug, Clone, Copy)]
pub struct At {
    /// As [`Entry::index`].
    pub index: u32,
    /// Where its first header starts.
    pub header: u64,
    /// Where its stored content starts.
    pub content: u64,
}

/// A layer's changes as postcard encodes them, one after another: about a
/// third of the memory of the decoded list (a million-entry layer holds
/// tens of megabytes, not hundreds), decoded one at a time when applied.
/// Its payload is what the change index stores: the count, then the
/// changes (postcard's encoding of the list).
/// Held in blocks of about [`LOG_BLOCK`] (each change whole in one), so
/// that applying the log frees it as it goes; a log made with
/// [`ChangeLog::spilling_to`] writes its full blocks to an unnamed
/// temporary file instead, and holds one block in memory.
#[derive(Debug, Default)]
pub struct ChangeLog {
    /// The temporary file, and the length of each block written to it
    /// (those come before the blocks in memory).
    spill: Option<(File, Vec<u32>)>,
    blocks: std::collections::VecDeque<Vec<u8>>,
    count: usize,
}

/// The size past which a change log starts a new block.
const LOG_BLOCK: usize = 1 << 20;

impl ChangeLog {
    /// An empty log whose full blocks go to a temporary file in `dir`.
    pub fn spilling_to(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file =
            tempfile::tempfile_in(dir).with_context(|| format!("a temporary file in {}", dir.display()))?;
        Ok(ChangeLog {
            spill: Some((file, Vec::new())),
            ..ChangeLog::default()
        })
    }

    pub fn push(&mut self, change: &Change) -> Result<()> {
        if self.blocks.back().is_none_or(|b| b.len() >= LOG_BLOCK) {
            match (&mut self.spill, self.blocks.back_mut()) {
                // The full block is written out and its buffer reused.
                (Some((file, lens)), Some(full)) => {
                    std::io::Write::write_all(file, full).context("spilling a change log")?;
                    lens.push(u32::try_from(full.len()).expect("a block under 4 GiB"));
                    full.clear();
                }
                _ => self.blocks.push_back(Vec::with_capacity(LOG_BLOCK + (4 << 10))),
            }
        }
        let last = self.blocks.back_mut().expect("a block");
        *last = postcard::to_extend(change, std::mem::take(last))?;
        self.count += 1;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Block `i` of those written to the temporary file.
    fn spilled_block(&self, i: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let (file, lens) = self.spill.as_ref().context("a change log cut short")?;
        let offset: u64 = lens[..i].iter().map(|&l| u64::from(l)).sum();
        let mut block = vec![0; lens[i] as usize];
        file.read_exact_at(&mut block, offset)
            .context("reading a change log back")?;
        Ok(block)
    }

    fn spilled_count(&self) -> usize {
        self.spill.as_ref().map_or(0, |(_, lens)| lens.len())
    }

    /// The changes, decoded one at a time, in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Change>> + '_ {
        let spilled = (0..self.spilled_count()).map(|i| self.spilled_block(i).map(Cow::Owned));
        let held = self.blocks.iter().map(|b| Ok(Cow::Borrowed(&b[..])));
        decode_blocks(spilled.chain(held), self.count)
    }

    /// The changes, decoded one at a time, each block freed once read.
    pub fn into_changes(mut self) -> impl Iterator<Item = Result<Change>> {
        let count = self.count;
        let mut next_spilled = 0;
        let blocks = std::iter::from_fn(move || {
            if next_spilled < self.spilled_count() {
                next_spilled += 1;
                return Some(self.spilled_block(next_spilled - 1).map(Cow::Owned));
            }
            self.blocks.pop_front().map(|b| Ok(Cow::Owned(b)))
        });
        decode_blocks(blocks, count)
    }

    fn payload(&self) -> Result<Vec<u8>> {
        let mut payload = postcard::to_allocvec(&self.count).expect("a count encodes");
        for i in 0..self.spilled_count() {
            payload.extend_from_slice(&self.spilled_block(i)?);
        }
        for block in &self.blocks {
            payload.extend_from_slice(block);
        }
        Ok(payload)
    }

    fn from_payload(mut payload: Vec<u8>) -> Option<ChangeLog> {
        let (count, rest) = postcard::take_from_bytes::<usize>(&payload).ok()?;
        let header = payload.len() - rest.len();
        payload.drain(..header);
        Some(ChangeLog {
            blocks: std::collections::VecDeque::from([payload]),
            count,
            spill: None,
        })
    }
}

/// The `count` changes encoded in `blocks` (each change whole in one
/// block), decoded one at a time; an error when there are fewer.
fn decode_blocks<'a>(
    mut blocks: impl Iterator<Item = Result<Cow<'a, [u8]>>> + 'a,
    count: usize,
) -> impl Iterator<Item = Result<Change>> + 'a {
    let mut block: Cow<'a, [u8]> = Cow::Borrowed(&[]);
    let mut pos = 0;
    (0..count).map(move |_| {
        while pos == block.len() {
            block = blocks.next().context("a change log cut short")??;
            pos = 0;
        }
        let (change, tail) =
            postcard::take_from_bytes::<Change>(&block[pos..]).context("a damaged change log")?;
        pos = block.len() - tail.len();
        Ok(change)
    })
}

/// The seek points file's header, then the SHA-256 of the payload (a
/// zstd-compressed postcard list).
const SEEK_MAGIC: &[u8] = b"flmount-seek-1\n";

/// The change index's header: a format tag, then the SHA-256 of the
/// payload (so a torn or damaged index is never used), then the payload.
const INDEX_MAGIC: &[u8] = b"flmount-changes-3\n";

impl LayerBlob {
    pub fn new(path: &Path, compression: Compression) -> Self {
        LayerBlob {
            path: path.to_owned(),
            compression,
            index: None,
            seek: None,
        }
    }

    /// The same blob, with its seek points cached at `seek`.
    pub fn with_seek_points(mut self, seek: PathBuf) -> Self {
        self.seek = Some(seek);
        self
    }

    /// The cached seek points of a gzip layer, if an intact file exists.
    pub fn seek_points(&self) -> Option<Vec<SeekPoint>> {
        let payload = read_checked(self.seek.as_ref()?, SEEK_MAGIC)?;
        let bytes = zstd::bulk::decompress(&payload, 256 << 20).ok()?;
        postcard::from_bytes(&bytes).ok()
    }

    fn save_seek_points(&self, points: &[SeekPoint]) {
        let Some(path) = &self.seek else { return };
        let result = postcard::to_allocvec(points)
            .map_err(anyhow::Error::new)
            .and_then(|bytes| Ok(zstd::bulk::compress(&bytes, 3)?))
            .and_then(|payload| write_checked(path, SEEK_MAGIC, &payload));
        if let Err(e) = result {
            tracing::debug!("not caching the seek points of {}: {e:#}", self.path.display());
        }
    }

    /// The same blob, with its changes cached at `index`.
    pub fn with_index(mut self, index: PathBuf) -> Self {
        self.index = Some(index);
        self
    }

    /// The cached changes, if an intact index exists.
    pub fn cached_changes(&self) -> Option<Vec<Change>> {
        postcard::from_bytes(&read_checked(self.index.as_ref()?, INDEX_MAGIC)?).ok()
    }

    /// The cached changes, encoded, if an intact index exists.
    pub fn cached_change_log(&self) -> Option<ChangeLog> {
        ChangeLog::from_payload(read_checked(self.index.as_ref()?, INDEX_MAGIC)?)
    }

    /// Caches the layer's changes (read by a caller that also wanted the
    /// content).
    pub fn save_changes(&self, changes: &[Change]) {
        match postcard::to_allocvec(changes) {
            Ok(payload) => self.save_payload(&payload),
            Err(e) => tracing::debug!("not caching the changes of {}: {e}", self.path.display()),
        }
    }

    /// As [`Self::save_changes`], from a change log.
    pub fn save_change_log(&self, log: &ChangeLog) {
        match log.payload() {
            Ok(payload) => self.save_payload(&payload),
            Err(e) => tracing::debug!("not caching the changes of {}: {e:#}", self.path.display()),
        }
    }

    fn save_payload(&self, payload: &[u8]) {
        let Some(index) = &self.index else { return };
        if let Err(e) = write_checked(index, INDEX_MAGIC, payload) {
            tracing::debug!("not caching the changes of {}: {e:#}", self.path.display());
        }
    }

    /// The decompressed tar stream.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        let file =
            File::open(&self.path).with_context(|| format!("opening layer {}", self.path.display()))?;
        let buffered = BufReader::with_capacity(256 << 10, file);
        Ok(match self.compression {
            Compression::None => Box::new(buffered),
            Compression::Gzip => Box::new(BufReader::with_capacity(
                256 << 10,
                flate2::read::MultiGzDecoder::new(buffered),
            )),
            Compression::Zstd => Box::new(BufReader::with_capacity(
                256 << 10,
                zstd::stream::read::Decoder::with_buffer(buffered).context("starting zstd decompression")?,
            )),
        })
    }

    /// The tar stream from a seek point's member on (offsets in it count
    /// from that member's headers).
    pub fn open_at(&self, point: &SeekPoint) -> Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let c = &point.checkpoint;
        let mut file =
            File::open(&self.path).with_context(|| format!("opening layer {}", self.path.display()))?;
        file.seek(SeekFrom::Start(c.first_byte()))?;
        let resumed = crate::fs::gzindex::Resumed::new(c, BufReader::with_capacity(256 << 10, file))
            .with_context(|| self.reading())?;
        let mut reader = BufReader::with_capacity(256 << 10, resumed);
        let skip = point
            .member
            .1
            .checked_sub(c.out)
            .context("a seek point's member before its checkpoint")?;
        let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
            .with_context(|| self.reading())?;
        if skipped != skip {
            bail!("{}: the stream ends before a seek point's member", self.reading());
        }
        Ok(Box::new(reader))
    }

    /// Calls `f` for every change in the layer, in order, with a reader of
    /// the entry's content (empty for anything but regular files; a sparse
    /// file's holes read as zeros).
    pub fn for_each(&self, mut f: impl FnMut(Change, &mut dyn Read) -> Result<()>) -> Result<()> {
        self.for_each_in(self.open()?, |change, _, content| f(change, content))
    }

    /// As [`Self::for_each`], from the layer's tar stream decoded by the
    /// caller (`tar`), with where each entry is in that stream.
    pub fn for_each_in(
        &self,
        tar: impl Read,
        f: impl FnMut(Change, At, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        self.for_each_from(tar, 0, f)
    }

    /// As [`Self::for_each_in`], from a reader of the tar stream that
    /// starts at the headers of member `first` (a [`SeekPoint`]'s);
    /// offsets are counted from there.
    pub fn for_each_from(
        &self,
        tar: impl Read,
        first: u32,
        mut f: impl FnMut(Change, At, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let mut archive = crate::fs::tarstream::TarReader::new(tar);
        let mut index = first;
        loop {
            let member = archive.next_member().with_context(|| self.reading())?;
            let Some(member) = member else { return Ok(()) };
            let this = index;
            index = index
                .checked_add(1)
                .context("more than 2^32 entries in one layer")?;
            let Some(change) = classify(member, this)
                .with_context(|| format!("entry {} of layer {}", this, self.path.display()))?
            else {
                continue;
            };
            let at = At {
                index: this,
                header: archive.member_start(),
                content: archive.position(),
            };
            f(change, at, &mut archive.content())?;
        }
    }

    /// "reading the zstd layer PATH", for error messages: decompression
    /// errors (e.g. zstd's "Frame requires too much memory") do not say
    /// what they decompress.
    pub fn reading(&self) -> String {
        let kind = match self.compression {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        };
        format!("reading the {kind} layer {}", self.path.display())
    }

    /// All changes of the layer: from the index when one is cached, else
    /// read from the headers (content skipped) and cached. A layer is
    /// immutable (named by its digest), so its changes never go stale.
    ///
    /// A gzip layer's seek points are recorded on the way (when it has a
    /// place to cache them).
    pub fn changes(&self) -> Result<Vec<Change>> {
        if let Some(changes) = self.cached_changes() {
            return Ok(changes);
        }
        let mut out = Vec::new();
        if self.compression == Compression::Gzip && self.seek.is_some() {
            let points = self.read_recording_seek_points(&mut out)?;
            self.save_seek_points(&points);
        } else {
            self.for_each(|c, _| {
                out.push(c);
                Ok(())
            })?;
        }
        self.save_changes(&out);
        Ok(out)
    }

    /// Reads a gzip layer's changes into `out`, and returns its seek
    /// points.
    fn read_recording_seek_points(&self, out: &mut Vec<Change>) -> Result<Vec<SeekPoint>> {
        use crate::fs::gzindex::{IndexingReader, SPAN};
        let file =
            File::open(&self.path).with_context(|| format!("opening layer {}", self.path.display()))?;
        let reader = IndexingReader::new(BufReader::with_capacity(256 << 10, file), SPAN)
            .with_context(|| self.reading())?
            .without_hashes();
        let mut reader = BufReader::with_capacity(256 << 10, reader);
        let mut members = Vec::new();
        self.for_each_in(&mut reader, |change, at, _| {
            members.push((at.index, at.header));
            out.push(change);
            Ok(())
        })?;
        // Read to the end of the stream: every checkpoint, and the CRC. A
        // layer with bytes after its last gzip member (padding), which tar
        // readers ignore, keeps the checkpoints found before them.
        if let Err(e) = std::io::copy(&mut reader, &mut std::io::sink()) {
            tracing::debug!("{}: after the archive's end: {e}", self.reading());
        }
        let (checkpoints, _) = reader.into_inner().into_checkpoints();
        // Each checkpoint with the first member whose headers start at or
        // after it (none after the last member: nothing to start there).
        let mut points = Vec::new();
        let mut next = members.iter().peekable();
        for checkpoint in checkpoints {
            while next.next_if(|m| m.1 < checkpoint.out).is_some() {}
            let Some(&&member) = next.peek() else { break };
            points.push(SeekPoint { checkpoint, member });
        }
        Ok(points)
    }
}

/// The changes of every layer, read in parallel (one thread per core).
pub fn read_all(layers: &[LayerBlob]) -> Result<Vec<Vec<Change>>> {
    let threads = crate::fs::threads::cores();
    let mut out = Vec::with_capacity(layers.len());
    for batch in layers.chunks(threads) {
        let results: Vec<Result<Vec<Change>>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|l| s.spawn(move || l.changes())).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("layer reader panicked"))
                .collect()
        });
        for r in results {
            out.push(r?);
        }
    }
    Ok(out)
}

/// The xattr namespace overlayfs acts on in the layer directories of a
/// root `-mount`: image content must not set it (a layer marking a
/// directory `trusted.overlay.opaque` would hide the lower layers' content),
/// so it is dropped with a warning, as umoci drops it. `user.overlay.*`
/// is kept, as umoci keeps it: overlayfs reads it only on mounts with
/// `userxattr`, which flmount does not make.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";

/// Whether an xattr name is one overlayfs acts on.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTRS)
}

/// Turns a tar member into a change, or `None` for members flmount
/// ignores (global PAX headers, aufs metadata, unknown types).
fn classify(member: crate::fs::tarstream::Member, index: u32) -> Result<Option<Change>> {
    let raw_path = member.path;
    if raw_path.len() > MAX_PATH {
        bail!("path of {} bytes is longer than {MAX_PATH}", raw_path.len());
    }
    if raw_path.contains(&0) {
        bail!("path contains a NUL byte");
    }
    let path = normalize(&raw_path);
    let (parent, name) = split_last(&path);
    if member.kind == b'g' {
        return Ok(None);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if name == OPAQUE_MARKER {
            return Ok(Some(Change::Opaque { dir: parent.into() }));
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // `.wh..wh.plnk`, `.wh..wh.aufs`: aufs bookkeeping, not content.
            tracing::debug!(path = %String::from_utf8_lossy(&path), "ignoring aufs metadata entry");
            return Ok(None);
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            bail!("invalid whiteout name {:?}", String::from_utf8_lossy(name));
        }
        let mut target = parent.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(hidden);
        return Ok(Some(Change::Whiteout { path: target.into() }));
    }

    let link = || -> Result<Box<[u8]>> {
        let target = &member.link;
        if target.is_empty() {
            bail!("link entry without a target");
        }
        if target.len() > MAX_PATH || target.contains(&0) {
            bail!("invalid link target");
        }
        Ok(target.as_slice().into())
    };
    let (major, minor) = (member.dev_major, member.dev_minor);
    let kind = match member.kind {
        b'0' | b'7' => Kind::File {
            size: member.size,
            sparse: member.sparse,
        },
        b'5' => Kind::Dir,
        b'2' => Kind::Special(Special::Symlink { target: link()? }),
        b'1' => Kind::Hardlink { target: link()? },
        b'3' => Kind::Special(Special::CharDev { major, minor }),
        b'4' => Kind::Special(Special::BlockDev { major, minor }),
        b'6' => Kind::Special(Special::Fifo),
        other => {
            tracing::warn!(
                path = %String::from_utf8_lossy(&path),
                "skipping tar entry of unsupported type {:?}",
                other as char
            );
            return Ok(None);
        }
    };
    let mut meta = Meta {
        mode: member.mode & 0o7777,
        uid: u32::try_from(member.uid).context("uid out of range")?,
        gid: u32::try_from(member.gid).context("gid out of range")?,
        mtime: Timestamp {
            sec: member.mtime,
            nsec: 0,
        },
        xattrs: Vec::new(),
    };
    for (key, value) in member.pax {
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            if name.is_empty() || name.contains(&0) {
                bail!("an invalid xattr name {:?}", String::from_utf8_lossy(name));
            }
            if is_overlay_xattr(name) {
                tracing::warn!(
                    path = %String::from_utf8_lossy(&path),
                    "dropping the xattr {} the layer sets: overlayfs would act on it",
                    String::from_utf8_lossy(name)
                );
                continue;
            }
            meta.xattrs.push((name.into(), value.into()));
        } else if key == b"mtime" {
            meta.mtime = parse_pax_time(&value).context("invalid PAX mtime")?;
        }
    }
    Ok(Some(Change::Add(Entry {
        index,
        path: path.into(),
        kind,
        meta,
    })))
}

/// Drops leading `/`, `.` and empty components: `/./a//b/` → `a/b`.
pub fn normalize(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for part in components(raw) {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

/// The non-empty, non-`.` components of a path.
pub fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `1700000000.123456789` or `-12.5` → seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Result<Timestamp> {
    let s = std::str::from_utf8(v)?.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        bail!("not a number: {s}");
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse()?;
    if sec < 0 && nsec > 0 {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        return Ok(Timestamp {
            sec: sec - 1,
            nsec: 1_000_000_000 - nsec,
        });
    }
    Ok(Timestamp { sec, nsec })
}

/// A cache file's payload, if the file is intact: `magic`, the SHA-256
/// of the payload, the payload (a torn or damaged file is never used).
fn read_checked(path: &Path, magic: &[u8]) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(magic)?;
    let (sum, payload) = rest.split_at_checked(32)?;
    if sha256(payload) != sum {
        tracing::warn!("ignoring the damaged cache file {}", path.display());
        return None;
    }
    Some(payload.to_vec())
}

fn write_checked(path: &Path, magic: &[u8], payload: &[u8]) -> Result<()> {
    let mut bytes = Vec::with_capacity(magic.len() + 32 + payload.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&sha256(payload));
    bytes.extend_from_slice(payload);
    crate::owned::output::replace_file(path, &bytes, false)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {

    #[test]
    fn changes_are_cached_and_a_damaged_index_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        builder.append_data(&mut h, "etc/a", &b"abc"[..]).unwrap();
        let blob_path = dir.path().join("blob");
        std::fs::write(&blob_path, builder.into_inner().unwrap()).unwrap();
        let index = dir.path().join("index/sha256-x");
        let blob = LayerBlob::new(&blob_path, Compression::None).with_index(index.clone());
        let first = blob.changes().unwrap();
        assert_eq!(first.len(), 1);
        assert!(index.is_file());
        // The blob is no longer read: the index answers.
        std::fs::write(&blob_path, b"not a tar").unwrap();
        assert_eq!(blob.changes().unwrap(), first);
        // A damaged index is not trusted.
        let mut bytes = std::fs::read(&index).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&index, bytes).unwrap();
        assert!(blob.cached_changes().is_none());
    }

    #[test]
    fn a_change_log_is_the_list_the_index_stores() {
        let changes = vec![
            Change::Whiteout {
                path: Box::from(&b"gone"[..]),
            },
            Change::Add(Entry {
                index: 7,
                path: Box::from(&b"etc/\xffname"[..]),
                kind: Kind::File {
                    size: 3,
                    sparse: false,
                },
                meta: Meta {
                    mode: 0o4755,
                    uid: 1,
                    gid: 2,
                    mtime: Timestamp { sec: -5, nsec: 9 },
                    xattrs: vec![(Box::from(&b"user.x"[..]), Box::from(&b"\0v"[..]))],
                },
            }),
            Change::Opaque {
                dir: Box::from(&b"d"[..]),
            },
        ];
        let mut log = ChangeLog::default();
        for c in &changes {
            log.push(c).unwrap();
        }
        assert_eq!(log.len(), 3);
        let back: Vec<Change> = log.iter().collect::<Result<_>>().unwrap();
        assert_eq!(back, changes);
        // Saved, it reads back both ways: as the list and as a log.
        let dir = tempfile::tempdir().unwrap();
        let blob =
            LayerBlob::new(&dir.path().join("blob"), Compression::None).with_index(dir.path().join("i"));
        blob.save_change_log(&log);
        assert_eq!(blob.cached_changes().unwrap(), changes);
        let again: Vec<Change> = blob
            .cached_change_log()
            .unwrap()
            .iter()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(again, changes);
        // A log cut short is an error, not fewer changes.
        let mut cut = blob.cached_change_log().unwrap();
        let block = cut.blocks.back_mut().unwrap();
        block.truncate(block.len() - 4);
        assert!(cut.iter().any(|c| c.is_err()));
        // Over many blocks, read and consumed alike.
        let mut big = ChangeLog::default();
        let many: Vec<Change> = (0..60_000u32)
            .map(|i| Change::Whiteout {
                path: format!("dir/{i:08}/name").into_bytes().into(),
            })
            .collect();
        for c in &many {
            big.push(c).unwrap();
        }
        assert!(big.blocks.len() > 1);
        assert_eq!(big.iter().collect::<Result<Vec<_>>>().unwrap(), many);
        assert_eq!(big.into_changes().collect::<Result<Vec<_>>>().unwrap(), many);
        // Spilled to a file but for one block: the same changes, the same
        // payload, one block in memory.
        let mut spilled = ChangeLog::spilling_to(dir.path()).unwrap();
        for c in &many {
            spilled.push(c).unwrap();
        }
        assert_eq!(spilled.blocks.len(), 1);
        assert!(spilled.spilled_count() >= 1);
        assert_eq!(spilled.iter().collect::<Result<Vec<_>>>().unwrap(), many);
        blob.save_change_log(&spilled);
        assert_eq!(blob.cached_changes().unwrap(), many);
        assert_eq!(spilled.into_changes().collect::<Result<Vec<_>>>().unwrap(), many);
        // A spilled log whose file was cut short is an error.
        let mut short = ChangeLog::spilling_to(dir.path()).unwrap();
        for c in &many {
            short.push(c).unwrap();
        }
        short.spill.as_ref().unwrap().0.set_len(100).unwrap();
        assert!(short.into_changes().any(|c| c.is_err()));
    }

    use super::*;

    #[test]
    fn normalises_names() {
        assert_eq!(normalize(b"/./a//b/"), b"a/b");
        assert_eq!(normalize(b"./"), b"");
        assert_eq!(normalize(b"../x"), b"../x");
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_pax_time(b"1700000000.5").unwrap(),
            Timestamp {
                sec: 1_700_000_000,
                nsec: 500_000_000
            }
        );
        assert_eq!(parse_pax_time(b"12").unwrap(), Timestamp { sec: 12, nsec: 0 });
        assert_eq!(
            parse_pax_time(b"-1.25").unwrap(),
            Timestamp {
                sec: -2,
                nsec: 750_000_000
            }
        );
        assert!(parse_pax_time(b"1.x").is_err());
    }

    fn layer_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> (tempfile::TempDir, LayerBlob) {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar");
        std::fs::write(&path, data).unwrap();
        (dir, LayerBlob::new(&path, Compression::None))
    }

    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1000);
        h
    }

    #[test]
    fn classifies_whiteouts_and_entries() {
        let (_d, layer) = layer_of(|b| {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0o755),
                "etc/",
                std::io::empty(),
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644),
                "etc/.wh.passwd",
                std::io::empty(),
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644),
                "var/.wh..wh..opq",
                std::io::empty(),
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 0o644),
                ".wh..wh.plnk/1",
                std::io::empty(),
            )
            .unwrap();
            let mut h = header(tar::EntryType::Regular, 0o4755);
            h.set_size(3);
            b.append_data(&mut h, "./bin/su", &b"abc"[..]).unwrap();
            b.append_link(&mut header(tar::EntryType::Link, 0o755), "bin/su2", "bin/su")
                .unwrap();
        });
        let changes = layer.changes().unwrap();
        assert_eq!(changes.len(), 6, "{changes:?}");
        assert!(matches!(&changes[0], Change::Add(e) if &*e.path == b"etc" && e.kind == Kind::Dir));
        assert_eq!(
            changes[1],
            Change::Whiteout {
                path: b"etc/passwd".to_vec().into()
            }
        );
        assert_eq!(
            changes[2],
            Change::Opaque {
                dir: b"var".to_vec().into()
            }
        );
        // `.wh..wh.plnk/1` is a regular entry below an aufs dir name, kept as is.
        let Change::Add(su) = &changes[4] else { panic!() };
        assert_eq!((&*su.path, su.meta.mode, su.index), (&b"bin/su"[..], 0o4755, 4));
        assert_eq!(
            su.kind,
            Kind::File {
                size: 3,
                sparse: false
            }
        );
        let Change::Add(link) = &changes[5] else { panic!() };
        assert_eq!(
            link.kind,
            Kind::Hardlink {
                target: b"bin/su".to_vec().into()
            }
        );
    }

    #[test]
    fn reads_pax_xattrs_and_long_names() {
        let long = format!("{}/file", "d".repeat(200));
        let (_d, layer) = layer_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_pax_extensions([
                ("SCHILY.xattr.security.capability", &b"\x01\x00\x00\x02"[..]),
                ("mtime", &b"1700000000.25"[..]),
                ("uid", &b"3000000"[..]),
            ])
            .unwrap();
            b.append_data(&mut h, &long, std::io::empty()).unwrap();
        });
        let changes = layer.changes().unwrap();
        let Change::Add(e) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(&*e.path, long.as_bytes());
        assert_eq!(e.meta.xattrs[0].0.as_ref(), b"security.capability");
        assert_eq!(
            e.meta.mtime,
            Timestamp {
                sec: 1_700_000_000,
                nsec: 250_000_000
            }
        );
        assert_eq!(e.meta.uid, 3_000_000);
    }
}
