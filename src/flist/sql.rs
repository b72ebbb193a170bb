//! Reading an flist's SQLite file safely, for both of its readers (the
//! whole tree at once, [`super::format`]; a directory at a time,
//! [`super::rows`]): opening it (missing, truncated, not an flist) and
//! decoding the values of its rows, checked (names, types, sizes, chunk
//! references, xattrs).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Source};
use crate::store::ChunkRef;

/// Opens the flist at `path` read-only: a missing file is "not found"
/// (named), a truncated or non-SQLite file or one without an inode table
/// is refused.
pub fn open(path: &Path) -> Result<Connection> {
    exists(path)?;
    not_truncated(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening flist {}", path.display()))?;
    let ok: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'inode'",
            [],
            |r| r.get(0),
        )
        .optional()
        .with_context(|| format!("{} is not an flist (not an SQLite database)", path.display()))?;
    if ok.is_none() {
        bail!("{} is not an flist: it has no inode table", path.display());
    }
    Ok(conn)
}

/// Refuses a file shorter than the database its SQLite header describes
/// (a partial copy or download): SQLite itself would notice only when it
/// reads a missing page, and a mount reads pages long after it started.
fn not_truncated(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).with_context(|| format!("opening flist {}", path.display()))?;
    let len = file.metadata()?.len();
    if file.read_exact(&mut header).is_err() || !header.starts_with(b"SQLite format 3\0") {
        // Not SQLite at all: SQLite's own error says so.
        return Ok(());
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes(header[28..32].try_into().expect("4 bytes")));
    // The page count is valid when the change counter matches the
    // version-valid-for number (SQLite 3.7.0 and later).
    let valid = header[24..28] == header[92..96];
    if valid && pages * page_size > len {
        bail!(
            "{} is truncated: {len} bytes, where its header describes {} pages of {page_size}",
            path.display(),
            pages
        );
    }
    Ok(())
}

/// A missing flist is "not found" (exit 3), named; SQLite's own words for
/// it ("unable to open database file") say neither.
pub fn exists(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(crate::image::registry::RegistryError::new(
                crate::image::registry::ErrorKind::NotFound,
                format!("no flist {}: no such file", path.display()),
            )
            .into())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("opening flist {}", path.display()))),
        Ok(_) => Ok(()),
    }
}

pub fn value_bytes(v: rusqlite::types::ValueRef) -> Result<Vec<u8>> {
    Ok(match v {
        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
        rusqlite::types::ValueRef::Null => Vec::new(),
        other => bail!("unexpected value {other:?} where a name was expected"),
    })
}

/// Files larger than this are refused when reading an flist (1 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Checks a directory entry's name: not empty, `.` or `..`, no `/` or NUL.
pub fn check_name(name: &[u8], ino: i64) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        bail!(
            "the flist holds an invalid name {:?} (inode {ino})",
            String::from_utf8_lossy(name)
        );
    }
    Ok(())
}

/// What a row of `mode` is (`extra`: its symlink target); `None` for a
/// type flmount does not serve (logged).
pub fn kind_of(
    ino: i64,
    mode: u32,
    size: u64,
    rdev: u64,
    extra: Option<Vec<u8>>,
) -> Result<Option<InodeKind>> {
    Ok(Some(match mode & libc::S_IFMT {
        libc::S_IFDIR => InodeKind::Dir,
        libc::S_IFREG => {
            if size > MAX_FILE_SIZE {
                bail!("inode {ino} claims {size} bytes");
            }
            InodeKind::File {
                size,
                source: Some(Source::Flist { ino }),
            }
        }
        libc::S_IFLNK => InodeKind::Special(Special::Symlink {
            target: extra.unwrap_or_default().into(),
        }),
        libc::S_IFCHR => InodeKind::Special(Special::CharDev {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        }),
        libc::S_IFBLK => InodeKind::Special(Special::BlockDev {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        }),
        libc::S_IFIFO => InodeKind::Special(Special::Fifo),
        other => {
            tracing::warn!(ino, "skipping an entry of unsupported type {other:o}");
            return Ok(None);
        }
    }))
}

/// Whether an xattr the flist holds for `ino` is served: overlayfs's own
/// are not (overlayfs would act on them), with a warning.
pub fn xattr_kept(ino: i64, name: &[u8]) -> bool {
    if crate::fs::layer::is_overlay_xattr(name) {
        tracing::warn!(
            ino,
            "ignoring the xattr {} the flist holds: overlayfs would act on it",
            String::from_utf8_lossy(name)
        );
        return false;
    }
    true
}

/// A chunk from its `id` and `key` columns; `None` if either is not 32
/// bytes.
pub fn chunk_ref(id: rusqlite::types::ValueRef, key: rusqlite::types::ValueRef) -> Result<Option<ChunkRef>> {
    let (id, key) = (value_bytes(id)?, value_bytes(key)?);
    Ok(
        match (
            <[u8; 32]>::try_from(id.as_slice()),
            <[u8; 32]>::try_from(key.as_slice()),
        ) {
            (Ok(id), Ok(key)) => Some(ChunkRef { id, key }),
            _ => None,
        },
    )
}

/// Whether `conn` has table `name`.
pub fn has_table(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
