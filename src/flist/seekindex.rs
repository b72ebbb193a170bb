//! The seek index of an image: an flist whose files are spans of the
//! image's own layer blobs, so that a mount can read them from the
//! registry as they are (`-lazy`), with no conversion and no store.
//!
//! It is a plain flist (the same tables, the same reader, FUSE included):
//! the merged tree of the layers, with each regular file cut into the
//! usual 512 KiB pieces. A piece's `block` row holds
//! - `key`: the BLAKE2b-256 of the piece, as in every flist: what a read
//!   is checked against, whoever answered it;
//! - `id`: not a store's blob name but the span itself ([`Span`]): the
//!   layer, the offset in its uncompressed tar stream and the length.
//!   An rfs reader finds no such chunk in any store and fails that read
//!   cleanly; the tree, the metadata and the symlinks it reads fine.
//!
//! Two more tables say how to reach a span in a layer blob:
//!
//! ```sql
//! fl_layer(idx INTEGER PRIMARY KEY, digest TEXT, media_type TEXT,
//!          size INTEGER, tar_size INTEGER)       -- the image's layers, lowest first
//! fl_checkpoint(layer INTEGER, out INTEGER, input INTEGER, bits INTEGER,
//!          window BLOB, hash BLOB)               -- gzip seek points (fs::gzindex),
//!                                                -- windows zstd-compressed; hash:
//!                                                -- BLAKE2b-256 of the output up to
//!                                                -- the next one
//! ```
//!
//! and the tags `image` (the reference it was built from) and `manifest`
//! (the manifest digest), which a mount checks against the image it is
//! asked to serve.
//!
//! Built in one pass over each layer, the layers in parallel: the layer is
//! inflated once, recording checkpoints, while its headers become changes
//! for the tree and its files' content is hashed piece by piece. A zstd
//! layer gets no checkpoints (a zstd frame cannot be read from its
//! middle): a mount fetches it whole, once.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rusqlite::params;

use crate::flist::format;
use crate::fs::gzindex::{self, Checkpoint, IndexingReader};
use crate::fs::layer::{At, Change, Compression, Kind, LayerBlob};
use crate::fs::threads;
use crate::fs::tree::{InodeKind, Source, Tree};
use crate::image::digest::Digest;
use crate::image::manifest::Descriptor;
use crate::store::codec::blake2b256;
use crate::store::{ChunkId, ChunkRef, CHUNK_SIZE};

/// The artifact type of a seek index pushed next to its image, and the
/// media type of its one layer (the flist file).
pub const ARTIFACT_TYPE: &str = "application/vnd.flmount.seekindex.v1";
pub const MEDIA_TYPE: &str = "application/vnd.flmount.seekindex.v1+sqlite";

/// The most output between two checkpoints (what one read inflates).
pub const MAX_INTERVAL: u64 = 64 << 20;

/// The least output between two checkpoints (an index records one every
/// [`gzindex::SPAN`]): what keeps an index's windows few.
pub const MIN_INTERVAL: u64 = 1 << 20;

/// The most checkpoints an index may hold (their windows are kept in
/// memory: 32 KiB each, 128 MiB in all; 16 GiB of tar streams at 4 MiB).
pub const MAX_CHECKPOINTS: usize = 4096;

/// The largest seek index fetched from a registry.
pub const MAX_INDEX_BYTES: u64 = 4 << 30;

/// The first bytes of a span's chunk id (no BLAKE2b output starts with
/// them by design, and a store named by them holds nothing).
const SPAN_MAGIC: &[u8; 4] = b"flsp";

/// A piece of a layer's uncompressed tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// The layer's position in the manifest.
    pub layer: u32,
    pub offset: u64,
    pub len: u32,
}

impl Span {
    /// The chunk id that names it: magic, layer, offset, length, zeros.
    pub fn id(&self) -> ChunkId {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(SPAN_MAGIC);
        id[4..8].copy_from_slice(&self.layer.to_be_bytes());
        id[8..16].copy_from_slice(&self.offset.to_be_bytes());
        id[16..20].copy_from_slice(&self.len.to_be_bytes());
        id
    }

    /// The span a chunk id names, if it names one.
    pub fn from_id(id: &ChunkId) -> Option<Span> {
        if &id[..4] != SPAN_MAGIC || id[20..].iter().any(|&b| b != 0) {
            return None;
        }
        let span = Span {
            layer: u32::from_be_bytes(id[4..8].try_into().ok()?),
            offset: u64::from_be_bytes(id[8..16].try_into().ok()?),
            len: u32::from_be_bytes(id[16..20].try_into().ok()?),
        };
        // Its end is a number (ids come from untrusted flists).
        span.offset.checked_add(u64::from(span.len))?;
        Some(span)
    }

    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// What the index holds of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerIndex {
    pub digest: Digest,
    pub media_type: String,
    pub compression: Compression,
    /// The blob's size.
    pub size: u64,
    /// The size of its tar stream.
    pub tar_size: u64,
    /// Gzip seek points, in order (none for a plain tar); the first is the
    /// stream's start.
    pub checkpoints: Vec<Checkpoint>,
    /// What each checkpoint's interval decodes to: its BLAKE2b-256.
    pub hashes: Vec<[u8; 32]>,
}

impl LayerIndex {
    /// The checkpoint to start from for output `offset`, and the output
    /// offset where the next one starts (or the stream's end).
    pub fn interval(&self, offset: u64) -> Option<(usize, u64)> {
        let i = self
            .checkpoints
            .partition_point(|c| c.out <= offset)
            .checked_sub(1)?;
        let end = self.checkpoints.get(i + 1).map_or(self.tar_size, |c| c.out);
        Some((i, end))
    }

    /// Whether a reader can use it in bounded memory: a gzip layer's
    /// intervals (what one read inflates and holds) at most
    /// [`MAX_INTERVAL`] of output, from not much more input (deflate
    /// expands incompressible data by a few bytes per 64 KiB).
    fn check(&self) -> Result<()> {
        if self.compression != Compression::Gzip {
            return Ok(());
        }
        if self.checkpoints.is_empty() || self.hashes.len() != self.checkpoints.len() {
            bail!("a gzip layer without its checkpoints");
        }
        for (i, c) in self.checkpoints.iter().enumerate() {
            let (out_end, in_end) = self
                .checkpoints
                .get(i + 1)
                .map_or((self.tar_size, self.size), |n| (n.out, n.input));
            let out = out_end.saturating_sub(c.out);
            if i + 1 < self.checkpoints.len() && out < MIN_INTERVAL {
                bail!(
                    "checkpoints {} bytes apart (at {}), fewer than {MIN_INTERVAL}",
                    out,
                    c.out
                );
            }
            if out > MAX_INTERVAL {
                bail!(
                    "{out} bytes of the tar stream from offset {} without a place to start decoding (gzip written with very large deflate blocks), more than the {MAX_INTERVAL} a read may inflate",
                    c.out
                );
            }
            if in_end.saturating_sub(c.input) > out + out / 64 + (1 << 20) {
                bail!("checkpoint {i} is followed by more compressed bytes than its output can take");
            }
        }
        Ok(())
    }

    /// The compressed bytes `[start, end)` that decode checkpoint `i`'s
    /// interval.
    pub fn compressed_range(&self, i: usize) -> (u64, u64) {
        let start = self.checkpoints[i].first_byte();
        // The next checkpoint's bit-exact start lies in its first byte.
        let end = self
            .checkpoints
            .get(i + 1)
            .map_or(self.size, |c| (c.input + 1).min(self.size));
        (start, end)
    }
}

/// What building an index gave.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IndexStats {
    pub layers: usize,
    pub files: u64,
    pub bytes: u64,
    pub checkpoints: u64,
    /// The index file's size.
    pub index_bytes: u64,
}

/// One layer read: its changes, the content of its files (the offset of
/// each entry's content and its pieces' keys) and its seek points.
struct Scanned {
    changes: Vec<Change>,
    files: HashMap<u32, (u64, Vec<[u8; 32]>)>,
    sparse: HashMap<u32, Box<[u8]>>,
    index: LayerIndex,
}

/// Builds the seek index of the image whose layers are `layers` (described
/// by `descriptors`, lowest first) into `out`.
pub fn build(
    image: &str,
    manifest: &Digest,
    descriptors: &[Descriptor],
    layers: &[LayerBlob],
    out: &Path,
) -> Result<IndexStats> {
    let slots: Vec<Mutex<Option<Scanned>>> = layers.iter().map(|_| Mutex::new(None)).collect();
    let indices: Vec<usize> = (0..layers.len()).collect();
    threads::for_each_parallel(&indices, layers.len(), |&i| {
        let scanned = scan(&descriptors[i], &layers[i])
            .with_context(|| format!("indexing layer {} ({})", i + 1, descriptors[i].digest))?;
        *slots[i].lock().unwrap() = Some(scanned);
        Ok(())
    })?;
    let scanned: Vec<Scanned> = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap().expect("every layer scanned"))
        .collect();
    let mut scanned = scanned;
    let changes: Vec<Vec<Change>> = scanned
        .iter_mut()
        .map(|s| std::mem::take(&mut s.changes))
        .collect();
    let tree = Tree::from_layers(&changes)?;
    drop(changes);
    for (i, s) in scanned.iter().enumerate() {
        s.index
            .check()
            .with_context(|| format!("layer {} ({})", i + 1, s.index.digest))?;
    }
    let (contents, indexes): (Vec<_>, Vec<_>) = scanned
        .into_iter()
        .map(|s| ((s.files, s.sparse), s.index))
        .unzip();
    let (mut files, mut bytes) = (0u64, 0u64);
    // A file's pieces: spans of the layer its content is in.
    let mut blocks_of = |kind: &InodeKind| -> Result<Vec<ChunkRef>> {
        let InodeKind::File { size, source } = *kind else {
            return Ok(Vec::new());
        };
        files += 1;
        bytes += size;
        let Some(Source::Layer { layer, entry }) = source else {
            return Ok(Vec::new());
        };
        let (stored, sparse) = &contents[layer];
        let Some((offset, keys)) = stored.get(&entry) else {
            let path = sparse.get(&entry).map(|p| crate::write::extract::show(p));
            bail!(
                "{} in layer {} is a sparse file: a seek index serves files stored whole; mount this image without -lazy",
                path.unwrap_or_else(|| format!("entry {entry}")),
                layer + 1
            );
        };
        let pieces = keys.iter().enumerate().map(|(k, key)| {
            let start = k as u64 * CHUNK_SIZE as u64;
            ChunkRef {
                id: Span {
                    layer: layer as u32,
                    offset: offset + start,
                    len: (size - start).min(CHUNK_SIZE as u64) as u32,
                }
                .id(),
                key: *key,
            }
        });
        Ok(pieces.collect())
    };
    let mut tags = format::standard_tags();
    tags.push(("image".to_owned(), image.to_owned()));
    tags.push(("manifest".to_owned(), manifest.to_string()));
    format::write_with(
        out,
        |w| format::tree_rows(w, &tree, &mut blocks_of),
        &[],
        &tags,
        |tx| write_layers(tx, &indexes),
    )?;
    Ok(IndexStats {
        layers: layers.len(),
        files,
        bytes,
        checkpoints: indexes.iter().map(|l| l.checkpoints.len() as u64).sum(),
        index_bytes: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    })
}

/// Reads one layer once: changes, file pieces' keys, checkpoints.
fn scan(desc: &Descriptor, blob: &LayerBlob) -> Result<Scanned> {
    let file = std::fs::File::open(&blob.path).with_context(|| format!("opening {}", blob.path.display()))?;
    let file = BufReader::with_capacity(256 << 10, file);
    let mut files = HashMap::new();
    let mut sparse = HashMap::new();
    let mut changes = Vec::new();
    let mut each = |change: Change, at: At, content: &mut dyn Read| -> Result<()> {
        if let Change::Add(entry) = &change {
            match entry.kind {
                Kind::File { sparse: true, .. } => {
                    sparse.insert(entry.index, entry.path.clone());
                }
                Kind::File { size, .. } if size > 0 => {
                    files.insert(entry.index, (at.content, piece_keys(content, size)?));
                }
                _ => {}
            }
        }
        changes.push(change);
        Ok(())
    };
    let (checkpoints, hashes, size, tar_size) = match blob.compression {
        Compression::Gzip => {
            let mut reader = IndexingReader::new(file, gzindex::SPAN).with_context(|| blob.reading())?;
            blob.for_each_in(&mut reader, &mut each)?;
            // The end of the archive is not the end of the stream: read
            // the rest, so the sizes are whole and the CRC checked (bytes
            // after the last member, which tar readers ignore, end it).
            if let Err(e) = std::io::copy(&mut reader, &mut std::io::sink()) {
                tracing::debug!("{}: after the archive's end: {e}", blob.reading());
            }
            let tar = reader.uncompressed_len();
            let (checkpoints, hashes) = reader.into_checkpoints();
            (checkpoints, hashes, std::fs::metadata(&blob.path)?.len(), tar)
        }
        Compression::None => {
            let mut reader = file;
            blob.for_each_in(&mut reader, &mut each)?;
            let size = std::fs::metadata(&blob.path)?.len();
            (Vec::new(), Vec::new(), size, size)
        }
        Compression::Zstd => {
            // No seek points: a -lazy mount fetches such a layer whole.
            let decoder =
                zstd::stream::read::Decoder::with_buffer(file).context("starting zstd decompression")?;
            let mut reader = crate::fs::tarstream::Counted {
                inner: decoder,
                pos: 0,
            };
            blob.for_each_in(&mut reader, &mut each)?;
            std::io::copy(&mut reader, &mut std::io::sink()).with_context(|| blob.reading())?;
            let size = std::fs::metadata(&blob.path)?.len();
            (Vec::new(), Vec::new(), size, reader.pos)
        }
    };
    if size != desc.size {
        bail!(
            "the layer blob has {size} bytes where the manifest says {}",
            desc.size
        );
    }
    Ok(Scanned {
        changes,
        files,
        sparse,
        index: LayerIndex {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            compression: blob.compression,
            size,
            tar_size,
            checkpoints,
            hashes,
        },
    })
}

/// The BLAKE2b-256 of each 512 KiB piece of `size` bytes of content.
fn piece_keys(content: &mut dyn Read, size: u64) -> Result<Vec<[u8; 32]>> {
    let mut keys = Vec::with_capacity(size.div_ceil(CHUNK_SIZE as u64) as usize);
    let mut piece = vec![0u8; CHUNK_SIZE];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK_SIZE as u64) as usize;
        content
            .read_exact(&mut piece[..n])
            .context("reading a file's content")?;
        keys.push(blake2b256(&piece[..n]));
        left -= n as u64;
    }
    Ok(keys)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fl_layer (idx INTEGER PRIMARY KEY, digest TEXT, media_type TEXT, size INTEGER, tar_size INTEGER);
CREATE TABLE IF NOT EXISTS fl_checkpoint (layer INTEGER, out INTEGER, input INTEGER, bits INTEGER, window BLOB, hash BLOB);
";

fn write_layers(tx: &rusqlite::Transaction, layers: &[LayerIndex]) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    let mut layer = tx.prepare(
        "INSERT INTO fl_layer (idx, digest, media_type, size, tar_size) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut point = tx.prepare(
        "INSERT INTO fl_checkpoint (layer, out, input, bits, window, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (i, l) in layers.iter().enumerate() {
        layer.execute(params![
            i as i64,
            l.digest.to_string(),
            l.media_type,
            l.size as i64,
            l.tar_size as i64
        ])?;
        for (c, hash) in l.checkpoints.iter().zip(&l.hashes) {
            let window = zstd::bulk::compress(&c.window, 3)?;
            point.execute(params![
                i as i64,
                c.out as i64,
                c.input as i64,
                c.bits,
                window,
                &hash[..]
            ])?;
        }
    }
    Ok(())
}

/// The seek points of the seek index at `path`, which must be the index
/// of the image `manifest` whose layers are `descriptors`.
pub fn open_for(path: &Path, manifest: &Digest, descriptors: &[Descriptor]) -> Result<Vec<LayerIndex>> {
    if !path.exists() {
        return Err(crate::image::registry::RegistryError::new(
            crate::image::registry::ErrorKind::NotFound,
            format!(
                "no seek index at {}: build it with `flmount index IMAGE` (it reads the layers once), or give -index FILE",
                path.display()
            ),
        )
        .into());
    }
    let conn = crate::flist::sql::open(path)?;
    if !is_seek_index(&conn)? {
        bail!(
            "{} is an flist, not a seek index (serve it with -flist FILE -mount DIR)",
            path.display()
        );
    }
    let indexed: Option<String> = conn
        .query_row("SELECT value FROM tag WHERE key = 'manifest'", [], |r| r.get(0))
        .ok();
    if indexed.as_deref() != Some(&manifest.to_string()) {
        bail!(
            "{} is the seek index of manifest {}, not of this image's {manifest}",
            path.display(),
            indexed.unwrap_or_else(|| "(none)".into())
        );
    }
    let layers = read_layers(&conn)?;
    let same = layers.len() == descriptors.len()
        && layers.iter().zip(descriptors).all(|(l, d)| {
            l.digest == d.digest
                && l.size == d.size
                && l.media_type == d.media_type
                && (l.compression != Compression::None || l.tar_size == l.size)
        });
    if !same {
        bail!(
            "the layers of the seek index {} are not the image's",
            path.display()
        );
    }
    Ok(layers)
}

/// Whether the flist at `conn` is a seek index.
pub fn is_seek_index(conn: &rusqlite::Connection) -> Result<bool> {
    crate::flist::sql::has_table(conn, "fl_layer")
}

/// The layers of a seek index, checked: in manifest order, checkpoints in
/// increasing order inside the blob, windows no larger than deflate's.
pub fn read_layers(conn: &rusqlite::Connection) -> Result<Vec<LayerIndex>> {
    let mut layers: Vec<LayerIndex> = Vec::new();
    let mut stmt =
        conn.prepare("SELECT idx, digest, media_type, size, tar_size FROM fl_layer ORDER BY idx")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let idx: i64 = row.get(0)?;
        if idx != layers.len() as i64 {
            bail!("the seek index's layers are not numbered in order");
        }
        let digest: String = row.get(1)?;
        let media_type: String = row.get(2)?;
        let descriptor = Descriptor {
            media_type: media_type.clone(),
            digest: Digest::parse(&digest)?,
            size: 0,
        };
        let (size, tar_size): (i64, i64) = (row.get(3)?, row.get(4)?);
        if size < 0 || tar_size < 0 {
            bail!("the seek index gives layer {digest} a negative size");
        }
        layers.push(LayerIndex {
            compression: descriptor.layer_compression()?,
            digest: descriptor.digest,
            media_type,
            size: size as u64,
            tar_size: tar_size as u64,
            checkpoints: Vec::new(),
            hashes: Vec::new(),
        });
    }
    if !crate::flist::sql::has_table(conn, "fl_checkpoint")? {
        bail!("the seek index has no checkpoint table");
    }
    let mut checkpoints = 0usize;
    let mut stmt =
        conn.prepare("SELECT layer, out, input, bits, window, hash FROM fl_checkpoint ORDER BY layer, out")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (layer, out, input, bits): (i64, i64, i64, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let window: Vec<u8> = row.get(4)?;
        let hash: [u8; 32] = row
            .get::<_, Vec<u8>>(5)?
            .try_into()
            .ok()
            .context("a checkpoint's hash is not 32 bytes")?;
        let l = usize::try_from(layer)
            .ok()
            .and_then(|l| layers.get_mut(l))
            .context("a seek index checkpoint of no layer")?;
        let window = zstd::bulk::decompress(&window, gzindex::WINDOW).context("a checkpoint's window")?;
        let c = Checkpoint {
            out: u64::try_from(out)?,
            input: u64::try_from(input)?,
            bits: u8::try_from(bits)
                .ok()
                .filter(|&b| b < 8)
                .context("a checkpoint's bits")?,
            window,
        };
        let first = l.checkpoints.is_empty();
        // The stream's start is a member's start; a checkpoint inside a
        // byte has that byte before it.
        if (first && !(c.bits == 0 && c.window.is_empty())) || (c.bits > 0 && c.input == 0) {
            bail!(
                "the seek index's checkpoint at {} of layer {} cannot be started from",
                c.out,
                l.digest
            );
        }
        checkpoints += 1;
        if checkpoints > MAX_CHECKPOINTS {
            bail!("the seek index has more than {MAX_CHECKPOINTS} checkpoints");
        }
        let after_last = l
            .checkpoints
            .last()
            .is_none_or(|p| p.out < c.out && p.input <= c.input);
        if (first && (c.out, c.input) != (0, 0)) || !after_last || c.input > l.size || c.out > l.tar_size {
            bail!(
                "the seek index's checkpoints of layer {} are out of order",
                l.digest
            );
        }
        l.checkpoints.push(c);
        l.hashes.push(hash);
    }
    for l in &layers {
        l.check()
            .with_context(|| format!("the seek index of layer {}", l.digest))?;
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip_layer(checkpoints: &[(u64, u64)], size: u64, tar_size: u64) -> LayerIndex {
        LayerIndex {
            digest: Digest::sha256_of(b"layer"),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            compression: Compression::Gzip,
            size,
            tar_size,
            checkpoints: checkpoints
                .iter()
                .map(|&(out, input)| Checkpoint {
                    out,
                    input,
                    bits: 3,
                    window: vec![0; 16],
                })
                .collect(),
            hashes: vec![[0; 32]; checkpoints.len()],
        }
    }

    #[test]
    fn intervals_a_reader_cannot_hold_are_refused() {
        // 4 MiB intervals from about as much input: fine.
        let ok = gzip_layer(
            &[(0, 0), (4 << 20, 1 << 20), (8 << 20, 2 << 20)],
            3 << 20,
            12 << 20,
        );
        ok.check().unwrap();
        assert_eq!(ok.interval(5 << 20), Some((1, 8 << 20)));
        assert_eq!(ok.interval(9 << 20), Some((2, 12 << 20)));
        // From the byte holding the checkpoint's first bits.
        assert_eq!(ok.compressed_range(1), ((1 << 20) - 1, (2 << 20) + 1));
        // One checkpoint for a terabyte of output: one read would inflate
        // it all.
        let huge = gzip_layer(&[(0, 0)], 1 << 30, 1 << 40);
        assert!(huge
            .check()
            .unwrap_err()
            .to_string()
            .contains("without a place to start"));
        // Gigabytes of input for a small interval.
        let wide = gzip_layer(&[(0, 0), (1 << 20, 4 << 30)], 5 << 30, 2 << 20);
        assert!(wide.check().is_err());
        // Checkpoints closer than an index makes them: windows by the
        // million.
        let dense = gzip_layer(
            &[(0, 0), (64 << 10, 20 << 10), (128 << 10, 40 << 10)],
            1 << 20,
            4 << 20,
        );
        assert!(dense.check().unwrap_err().to_string().contains("apart"));
        // Checkpoints without their hashes.
        let mut bare = ok.clone();
        bare.hashes.pop();
        assert!(bare.check().is_err());
    }

    #[test]
    fn span_ids_round_trip_and_are_not_blob_ids() {
        let s = Span {
            layer: 3,
            offset: 1 << 40,
            len: CHUNK_SIZE as u32,
        };
        assert_eq!(Span::from_id(&s.id()), Some(s));
        assert_eq!(Span::from_id(&blake2b256(b"a chunk")), None);
        let mut odd = s.id();
        odd[31] = 1;
        assert_eq!(Span::from_id(&odd), None);
        // An end past u64::MAX is no span.
        let past = Span {
            layer: 0,
            offset: u64::MAX - 10,
            len: 100,
        };
        assert_eq!(Span::from_id(&past.id()), None);
    }
}
