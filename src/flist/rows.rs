//! Reading an flist's tree a directory at a time, for a mount that loads
//! only what is used (`fuse::index`): the rows of one directory's
//! children or of one inode, decoded and checked as [`Flist::plan`] checks
//! them, and the chunks of every file in one pass over the `block` table.
//!
//! A row that does not decode (an invalid name, a size beyond
//! [`MAX_FILE_SIZE`](super::sql::MAX_FILE_SIZE), a type flmount does not serve, a value of the wrong
//! type) is left out with a warning that names it; the rest of its
//! directory is served.
//!
//! [`Flist::plan`]: super::format::Flist::plan

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};

use super::sql::{self, check_name, chunk_ref, kind_of, value_bytes, xattr_kept};
use crate::fs::layer::{Meta, Timestamp};
use crate::fs::tree::InodeKind;
use crate::store::ChunkRef;

/// Connections to the flist: request threads and read-ahead tasks query at
/// once. All are opened at the start, so every one reads the file that
/// was opened even if the path is replaced while it is served.
const CONNECTIONS: usize = 3;

/// One row of the `inode` table, decoded.
#[derive(Debug)]
pub struct Row {
    pub ino: u64,
    pub parent: u64,
    pub name: Box<[u8]>,
    pub kind: InodeKind,
    pub meta: Meta,
    /// This row is another name of the file whose first row is `link`
    /// (`fl_link`).
    pub link: Option<u64>,
}

/// An flist opened for reading its tree on demand.
pub struct Rows {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// Whether flmount's own tables (`fl_xattr`, `fl_link`, `fl_time`)
    /// are there (rfs writes none of them).
    extended: bool,
    /// The queries of one directory's rows and of one inode's (see
    /// [`select`]), written once.
    children_sql: String,
    inode_sql: String,
}

/// The query of rows with `filter`, `i` being `inode`.
fn select(extended: bool, filter: &str) -> String {
    if extended {
        format!(
            "SELECT i.ino, i.parent, i.name, i.size, i.uid, i.gid, i.mode, i.rdev, i.mtime, \
                    t.mtime_nsec, l.target, e.data \
             FROM inode i LEFT JOIN fl_time t ON t.ino = i.ino LEFT JOIN fl_link l ON l.ino = i.ino \
                  LEFT JOIN extra e ON e.ino = i.ino WHERE {filter}"
        )
    } else {
        format!(
            "SELECT i.ino, i.parent, i.name, i.size, i.uid, i.gid, i.mode, i.rdev, i.mtime, \
                    NULL, NULL, e.data \
             FROM inode i LEFT JOIN extra e ON e.ino = i.ino WHERE {filter}"
        )
    }
}

impl Rows {
    /// Opens `path` (the first connection checked by [`sql::open`]).
    pub fn open(path: &Path) -> Result<Self> {
        let first = sql::open(path)?;
        let extended = sql::has_table(&first, "fl_link")?;
        let mut conns = Vec::with_capacity(CONNECTIONS);
        let mut first = Some(first);
        for _ in 0..CONNECTIONS {
            let conn = match first.take() {
                Some(conn) => conn,
                None => Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .with_context(|| format!("opening flist {}", path.display()))?,
            };
            // The file is in the kernel's page cache anyway: 1 MiB of
            // SQLite's own cache per connection, not its default 2 MiB.
            conn.pragma_update(None, "cache_size", -1024)?;
            conns.push(Mutex::new(conn));
        }
        Ok(Rows {
            conns,
            next: AtomicUsize::new(0),
            extended,
            children_sql: select(extended, "i.parent = ?1"),
            inode_sql: select(extended, "i.ino = ?1"),
        })
    }

    /// Runs `f` on a free connection (or waits for the next in turn).
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        for conn in &self.conns {
            if let Ok(conn) = conn.try_lock() {
                return f(&conn);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let conn = self.conns[i].lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }

    /// The rows whose parent is `dir`, in no order, with their xattrs.
    pub fn children(&self, dir: u64) -> Result<Vec<Row>> {
        self.with(|conn| {
            let mut rows = query_rows(conn, &self.children_sql, dir, true)?;
            if self.extended && !rows.is_empty() {
                let xattrs = conn.prepare_cached(
                    "SELECT x.ino, x.name, x.value FROM inode i JOIN fl_xattr x ON x.ino = i.ino \
                     WHERE i.parent = ?1 ORDER BY x.rowid",
                )?;
                add_xattrs(xattrs, dir, &mut rows)?;
            }
            Ok(rows)
        })
    }

    /// The row of inode `ino`, if there is one that decodes.
    pub fn inode(&self, ino: u64) -> Result<Option<Row>> {
        self.with(|conn| {
            let mut rows = query_rows(conn, &self.inode_sql, ino, false)?;
            if self.extended && !rows.is_empty() {
                let xattrs = conn
                    .prepare_cached("SELECT ino, name, value FROM fl_xattr WHERE ino = ?1 ORDER BY rowid")?;
                add_xattrs(xattrs, ino, &mut rows)?;
            }
            Ok(rows.pop())
        })
    }

    /// How many directories `dir` holds.
    pub fn subdirs(&self, dir: u64) -> Result<u32> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT count(*) FROM inode WHERE parent = ?1 AND (mode & 61440) = 16384 AND ino != 1",
            )?;
            Ok(stmt.query_row([dir as i64], |r| r.get(0))?)
        })
    }

    /// The chunks of each file among `dir`'s children, in order.
    pub fn children_chunks(&self, dir: u64) -> Result<HashMap<u64, Vec<ChunkRef>>> {
        self.with(|conn| {
            let stmt = conn.prepare_cached(
                "SELECT b.ino, b.id, b.key FROM inode i JOIN block b ON b.ino = i.ino \
                 WHERE i.parent = ?1 ORDER BY b.rowid",
            )?;
            collect_chunks(stmt, dir)
        })
    }

    /// The chunks of file `ino`, in order.
    pub fn chunks(&self, ino: u64) -> Result<Vec<ChunkRef>> {
        self.with(|conn| {
            let stmt = conn.prepare_cached("SELECT ino, id, key FROM block WHERE ino = ?1 ORDER BY rowid")?;
            Ok(collect_chunks(stmt, ino)?.remove(&ino).unwrap_or_default())
        })
    }

    /// For each hard-linked file (the target of `fl_link` rows), how many
    /// other names it has.
    pub fn link_counts(&self) -> Result<HashMap<u64, u32>> {
        if !self.extended {
            return Ok(HashMap::new());
        }
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT target, count(*) FROM fl_link GROUP BY target")?;
            let mut out = HashMap::new();
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (target, count) = (r.get::<_, i64>(0)?, r.get::<_, u32>(1)?);
                if let Ok(target) = u64::try_from(target) {
                    out.insert(target, count);
                }
            }
            Ok(out)
        })
    }

    /// How many rows the tree has, and the bytes of its files (each
    /// hard-linked file once). Reads the whole `inode` table.
    pub fn totals(&self) -> Result<(u64, u64)> {
        let links = if self.extended {
            "AND ino NOT IN (SELECT ino FROM fl_link)"
        } else {
            ""
        };
        self.with(|conn| {
            let sql = format!(
                "SELECT count(*), (SELECT total(size) FROM inode WHERE (mode & 61440) = 32768 {links}) FROM inode"
            );
            let (count, bytes): (i64, f64) = conn.query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((count.max(0) as u64, bytes.max(0.0) as u64))
        })
    }

    /// Calls `f(size, chunks)` for every regular file that has chunks (a
    /// hard-linked file once per name), in inode order, until it returns
    /// false. Reads the whole `block` table, one file's chunks at a time.
    pub fn each_file(&self, mut f: impl FnMut(u64, &[ChunkRef]) -> bool) -> Result<()> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT b.ino, b.id, b.key, i.size FROM block b JOIN inode i ON i.ino = b.ino \
                 WHERE (i.mode & 61440) = 32768 ORDER BY b.ino, b.rowid",
            )?;
            let mut rows = stmt.query([])?;
            let mut file: Option<(i64, u64)> = None;
            let mut chunks = Vec::new();
            while let Some(r) = rows.next()? {
                let ino: i64 = r.get(0)?;
                if file.is_some_and(|(i, _)| i != ino) {
                    if !f(file.expect("checked").1, &chunks) {
                        return Ok(());
                    }
                    chunks.clear();
                }
                let Some(chunk) = chunk_ref(r.get_ref(1)?, r.get_ref(2)?)? else {
                    bail!("inode {ino} has a block whose id or key is not 32 bytes");
                };
                file = Some((ino, r.get::<_, i64>(3)?.max(0) as u64));
                chunks.push(chunk);
            }
            if let Some((_, size)) = file {
                f(size, &chunks);
            }
            Ok(())
        })
    }
}

impl Rows {
    /// The size of each chunk among `keys` that the flist's files hold.
    pub fn chunk_sizes(&self, keys: &std::collections::HashSet<[u8; 32]>) -> Result<HashMap<[u8; 32], u64>> {
        let mut out = HashMap::new();
        self.each_file(|size, chunks| {
            for (i, chunk) in chunks.iter().enumerate() {
                if keys.contains(&chunk.key) {
                    out.insert(chunk.key, chunk_len(size, i, chunks.len()));
                }
            }
            out.len() < keys.len()
        })?;
        Ok(out)
    }
}

/// The expected length of chunk `i` of `count` of a file of `size` bytes
/// (a chunk's full size where the flist's count is wrong: reading it then
/// fails on its length).
pub fn chunk_len(size: u64, i: usize, count: usize) -> u64 {
    crate::flist::chunkcache::expected_len(size, i, count).unwrap_or(crate::store::CHUNK_SIZE) as u64
}

/// Runs `sql` (from [`select`]) with `param`, and decodes its rows
/// (`names`: rows that are directory entries, whose names are checked).
fn query_rows(conn: &Connection, sql: &str, param: u64, names: bool) -> Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([param as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        match decode(r) {
            Ok(Some(row)) => match check_name(&row.name, row.ino as i64) {
                Ok(()) => out.push(row),
                Err(e) if names => tracing::warn!("leaving out an entry: {e:#}"),
                Err(_) => out.push(row),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("the flist's inode table: leaving out a row: {e:#}"),
        }
    }
    Ok(out)
}

/// Decodes a row selected by [`select`]; `None` for a type flmount does
/// not serve (logged).
fn decode(r: &rusqlite::Row) -> Result<Option<Row>> {
    let ino: i64 = r.get(0)?;
    let name = value_bytes(r.get_ref(2)?)?;
    let size =
        u64::try_from(r.get::<_, i64>(3)?).with_context(|| format!("inode {ino} has a negative size"))?;
    let mode: u32 = r.get(6)?;
    let extra = match r.get_ref(11)? {
        rusqlite::types::ValueRef::Null => None,
        v => Some(value_bytes(v)?),
    };
    let Some(kind) = kind_of(ino, mode, size, r.get::<_, i64>(7)? as u64, extra)? else {
        return Ok(None);
    };
    let (Ok(ino), Ok(parent)) = (u64::try_from(ino), u64::try_from(r.get::<_, i64>(1)?)) else {
        bail!("inode {ino}: a negative inode number");
    };
    let nsec = r.get::<_, Option<u32>>(9)?.unwrap_or(0).min(999_999_999);
    let link = r.get::<_, Option<i64>>(10)?.map(|t| t.max(0) as u64);
    Ok(Some(Row {
        ino,
        parent,
        name: name.into(),
        kind,
        meta: Meta {
            mode: mode & 0o7777,
            uid: r.get(4)?,
            gid: r.get(5)?,
            mtime: Timestamp { sec: r.get(8)?, nsec },
            xattrs: Vec::new(),
        },
        link,
    }))
}

/// Adds the xattrs `stmt` selects (ino, name, value) to `rows`; leaves out
/// overlayfs's own (overlayfs would act on them).
fn add_xattrs(mut stmt: rusqlite::CachedStatement, param: u64, rows: &mut [Row]) -> Result<()> {
    let at: HashMap<u64, usize> = rows.iter().enumerate().map(|(i, r)| (r.ino, i)).collect();
    let mut found = stmt.query([param as i64])?;
    while let Some(r) = found.next()? {
        let ino = r.get::<_, i64>(0)?;
        let (name, value) = (value_bytes(r.get_ref(1)?)?, value_bytes(r.get_ref(2)?)?);
        if !xattr_kept(ino, &name) {
            continue;
        }
        if let Some(&i) = u64::try_from(ino).ok().and_then(|ino| at.get(&ino)) {
            rows[i].meta.xattrs.push((name.into(), value.into()));
        }
    }
    Ok(())
}

/// The chunks `stmt` selects (ino, id, key), by inode, in order.
fn collect_chunks(mut stmt: rusqlite::CachedStatement, param: u64) -> Result<HashMap<u64, Vec<ChunkRef>>> {
    let mut out: HashMap<u64, Vec<ChunkRef>> = HashMap::new();
    let mut rows = stmt.query([param as i64])?;
    while let Some(r) = rows.next()? {
        let ino: i64 = r.get(0)?;
        let Some(chunk) = chunk_ref(r.get_ref(1)?, r.get_ref(2)?)? else {
            bail!("inode {ino} has a block whose id or key is not 32 bytes");
        };
        out.entry(ino.max(0) as u64).or_default().push(chunk);
    }
    Ok(out)
}
