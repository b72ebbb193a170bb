//! The flist: rfs's `.fl` format, a plain SQLite file (journal mode DELETE)
//! describing a tree whose file content lives as chunks in stores.
//!
//! rfs's tables, which rfs reads:
//!
//! ```sql
//! inode(ino INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER, name VARCHAR(255),
//!       size INTEGER, uid INTEGER, gid INTEGER, mode INTEGER, rdev INTEGER,
//!       ctime INTEGER, mtime INTEGER)   -- root: ino 1, name '/', parent 0;
//!                                       -- mode is st_mode with the type bits
//! extra(ino INTEGER PRIMARY KEY, data VARCHAR(4096))   -- symlink targets
//! block(ino INTEGER, id VARCHAR(32), key VARCHAR(32))  -- chunks in order, raw 32-byte blobs
//! tag(key VARCHAR(10) PRIMARY KEY, value VARCHAR(255))
//! route(start INTEGER, end INTEGER, url VARCHAR(2048)) -- first id byte range -> store
//! ```
//!
//! flmount's extra tables, which rfs ignores (so the file stays readable by
//! rfs), for what rfs's tables cannot hold:
//!
//! ```sql
//! fl_xattr(ino INTEGER, name BLOB, value BLOB)  -- extended attributes (security.capability, ...)
//! fl_link(ino INTEGER PRIMARY KEY, target INTEGER)
//!     -- hard links: this row is another name of the file whose first row is
//!     -- `target`; each name keeps its own inode and block rows, so rfs can
//!     -- read it (the chunks are shared in the store anyway)
//! fl_time(ino INTEGER PRIMARY KEY, mtime_nsec INTEGER)  -- sub-second mtimes
//! fl_trace(seq INTEGER PRIMARY KEY, id BLOB, key BLOB)
//!     -- a start-up trace: the chunks a recorded start read, in order
//!     -- (`flmount flist trace`); a mount fetches them first
//! ```
//!
//! Names and link targets are TEXT when they are UTF-8 and BLOB otherwise.
//! Store URLs in `route` never carry passwords or secret keys.
//!
//! An flist is untrusted input too: the reader walks it from the root by
//! parent links, refuses names that are empty, `.`, `..` or hold `/` or
//! NUL, ignores rows not reachable from the root (so parent loops cannot
//! hang it), and bounds sizes.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection};

use super::sql::{self, value_bytes};
use crate::fs::layer::{Meta, Timestamp, Xattr};
use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Plan, PlanDir, PlanInode, Tree};
use crate::store::ChunkRef;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS inode (
    ino INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER,
    name VARCHAR(255),
    size INTEGER,
    uid INTEGER,
    gid INTEGER,
    mode INTEGER,
    rdev INTEGER,
    ctime INTEGER,
    mtime INTEGER
);
CREATE INDEX IF NOT EXISTS parents ON inode (parent);
CREATE INDEX IF NOT EXISTS names ON inode (name);
CREATE TABLE IF NOT EXISTS extra (ino INTEGER PRIMARY KEY, data VARCHAR(4096));
CREATE TABLE IF NOT EXISTS block (ino INTEGER, id VARCHAR(32), key VARCHAR(32));
CREATE INDEX IF NOT EXISTS block_ino ON block (ino);
CREATE TABLE IF NOT EXISTS tag (key VARCHAR(10) PRIMARY KEY, value VARCHAR(255));
CREATE TABLE IF NOT EXISTS route (start INTEGER, end INTEGER, url VARCHAR(2048));
CREATE TABLE IF NOT EXISTS fl_xattr (ino INTEGER, name BLOB, value BLOB);
CREATE INDEX IF NOT EXISTS fl_xattr_ino ON fl_xattr (ino);
CREATE TABLE IF NOT EXISTS fl_link (ino INTEGER PRIMARY KEY, target INTEGER);
CREATE TABLE IF NOT EXISTS fl_time (ino INTEGER PRIMARY KEY, mtime_nsec INTEGER);
CREATE TABLE IF NOT EXISTS fl_trace (seq INTEGER PRIMARY KEY, id BLOB, key BLOB);
";

/// A route as the flist records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub start: u8,
    pub end: u8,
    pub url: String,
}

fn name_value(bytes: &[u8]) -> rusqlite::types::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => rusqlite::types::Value::Text(s.to_owned()),
        Err(_) => rusqlite::types::Value::Blob(bytes.to_vec()),
    }
}

fn type_bits(kind: &InodeKind) -> u32 {
    match kind {
        InodeKind::File { .. } => libc::S_IFREG,
        InodeKind::Dir => libc::S_IFDIR,
        InodeKind::Special(s) => s.type_bits(),
    }
}

/// Writes `plan` as an flist at `path` (atomically: a temporary file in the
/// same directory, renamed when complete). `blocks[i]` are the chunks of
/// plan inode `i`.
pub fn write(
    path: &Path,
    plan: &Plan,
    blocks: &HashMap<usize, Vec<ChunkRef>>,
    routes: &[RouteRow],
    tags: &[(String, String)],
) -> Result<()> {
    let chunks_of = |i: usize| Ok(blocks.get(&i).cloned().unwrap_or_default());
    write_with(path, |w| plan_rows(w, plan, chunks_of), routes, tags, |_| Ok(()))
}

/// As [`write`], the rows written by `rows` (from a plan, or straight
/// from the merged tree: [`tree_rows`]), and `more` writing tables of its
/// own in the same transaction (a seek index's layers).
pub fn write_with(
    path: &Path,
    rows: impl FnOnce(&mut RowWriter) -> Result<()>,
    routes: &[RouteRow],
    tags: &[(String, String)],
    more: impl FnOnce(&rusqlite::Transaction) -> Result<()>,
) -> Result<()> {
    // Built beside where it goes (or in the temporary directory when it
    // goes to a device or a pipe), then published by the output rules.
    let dir = match crate::owned::output::destination(path)? {
        crate::owned::output::Destination::File { path, .. } => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned(),
        _ => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = crate::owned::temp::TempFile::new_in(&dir)?;
    {
        let mut conn = Connection::open(tmp.path())?;
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.execute_batch(SCHEMA)?;
        let tx = conn.transaction()?;
        rows(&mut RowWriter::new(&tx)?)?;
        for r in routes {
            tx.execute(
                "INSERT INTO route (start, end, url) VALUES (?1, ?2, ?3)",
                params![r.start, r.end, r.url],
            )?;
        }
        for (k, v) in tags {
            tx.execute(
                "INSERT OR REPLACE INTO tag (key, value) VALUES (?1, ?2)",
                params![k, v],
            )?;
        }
        more(&tx)?;
        tx.commit()?;
    }
    crate::owned::output::publish(tmp.into_inner(), path)
}

/// The tags every flist flmount writes carries: rfs's format version and
/// the writer.
pub fn standard_tags() -> Vec<(String, String)> {
    vec![
        ("version".to_owned(), "v2".to_owned()),
        (
            "author".to_owned(),
            concat!("flmount ", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ]
}

/// A regular file's content, for [`RowWriter::add`].
pub enum Content<'c> {
    /// The chunks of its first name.
    Chunks(&'c [ChunkRef]),
    /// Another name of the file whose first name has this ino: its rows
    /// and chunks are that name's (a hard link).
    LinkTo(i64),
}

/// Writes an flist's rows, a name at a time, parents first.
pub struct RowWriter<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    insert: rusqlite::Statement<'t>,
    xattr: rusqlite::Statement<'t>,
    time: rusqlite::Statement<'t>,
    extra: rusqlite::Statement<'t>,
    block: rusqlite::Statement<'t>,
    copy_blocks: rusqlite::Statement<'t>,
    link: rusqlite::Statement<'t>,
}

impl<'t> RowWriter<'t> {
    fn new(tx: &'t rusqlite::Transaction<'t>) -> Result<Self> {
        Ok(RowWriter {
            tx,
            insert: tx.prepare(
                "INSERT INTO inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            xattr: tx.prepare("INSERT INTO fl_xattr (ino, name, value) VALUES (?1, ?2, ?3)")?,
            time: tx.prepare("INSERT INTO fl_time (ino, mtime_nsec) VALUES (?1, ?2)")?,
            extra: tx.prepare("INSERT INTO extra (ino, data) VALUES (?1, ?2)")?,
            block: tx.prepare("INSERT INTO block (ino, id, key) VALUES (?1, ?2, ?3)")?,
            copy_blocks: tx.prepare(
                "INSERT INTO block (ino, id, key) SELECT ?1, id, key FROM block WHERE ino = ?2 ORDER BY rowid",
            )?,
            link: tx.prepare("INSERT INTO fl_link (ino, target) VALUES (?1, ?2)")?,
        })
    }

    /// Writes the name `name` in the directory whose ino is `parent` (the
    /// root: parent 0, any name); returns its ino.
    pub fn add(
        &mut self,
        parent: i64,
        name: &[u8],
        kind: &InodeKind,
        meta: &Meta,
        content: Content,
    ) -> Result<i64> {
        let (size, rdev) = match kind {
            InodeKind::File { size, .. } => (*size, 0),
            InodeKind::Special(Special::Symlink { target }) => (target.len() as u64, 0),
            InodeKind::Special(s) => (0, s.rdev()),
            InodeKind::Dir => (0, 0),
        };
        let name = if parent == 0 { &b"/"[..] } else { name };
        self.insert.execute(params![
            parent,
            name_value(name),
            size as i64,
            meta.uid,
            meta.gid,
            type_bits(kind) | meta.mode,
            rdev as i64,
            meta.mtime.sec,
            meta.mtime.sec
        ])?;
        let ino = self.tx.last_insert_rowid();
        for (k, v) in &meta.xattrs {
            self.xattr.execute(params![ino, &k[..], &v[..]])?;
        }
        if meta.mtime.nsec != 0 {
            self.time.execute(params![ino, meta.mtime.nsec])?;
        }
        if let InodeKind::Special(Special::Symlink { target }) = kind {
            self.extra.execute(params![ino, name_value(target)])?;
        }
        match content {
            Content::Chunks(chunks) => {
                for c in chunks {
                    self.block.execute(params![ino, &c.id[..], &c.key[..]])?;
                }
            }
            Content::LinkTo(first) => {
                self.copy_blocks.execute(params![ino, first])?;
                self.link.execute(params![ino, first])?;
            }
        }
        Ok(ino)
    }
}

/// The rows of `plan`: its directories, then every other inode with all
/// its names; `chunks_of(i)` gives inode `i`'s chunks, once.
pub fn plan_rows(
    w: &mut RowWriter,
    plan: &Plan,
    mut chunks_of: impl FnMut(usize) -> Result<Vec<ChunkRef>>,
) -> Result<()> {
    let mut dir_ino: HashMap<&[u8], i64> = HashMap::new();
    for d in &plan.dirs {
        let (parent_path, name) = crate::fs::layer::split_last(&d.path);
        let parent = match d.path.is_empty() {
            true => 0,
            false => *dir_ino
                .get(parent_path)
                .context("a directory before its parent")?,
        };
        let ino = w.add(parent, name, &InodeKind::Dir, &d.meta, Content::Chunks(&[]))?;
        dir_ino.insert(&d.path, ino);
    }
    for (i, inode) in plan.inodes.iter().enumerate() {
        let mut first = None;
        for path in &inode.paths {
            let (parent_path, name) = crate::fs::layer::split_last(path);
            let parent = *dir_ino
                .get(parent_path)
                .context("an entry before its directory")?;
            let ino = match first {
                None => {
                    let chunks = chunks_of(i)?;
                    w.add(parent, name, &inode.kind, &inode.meta, Content::Chunks(&chunks))?
                }
                Some(target) => w.add(parent, name, &inode.kind, &inode.meta, Content::LinkTo(target))?,
            };
            first.get_or_insert(ino);
        }
    }
    Ok(())
}

/// The rows of the merged tree itself, depth first (no plan of it held
/// beside it); `chunks(kind)` gives a regular file's chunks, once per
/// file (its other names are linked to its first).
pub fn tree_rows(
    w: &mut RowWriter,
    tree: &Tree,
    mut chunks: impl FnMut(&InodeKind) -> Result<Vec<ChunkRef>>,
) -> Result<()> {
    // Each file's first ino (0: none written yet); u32 as a million-entry
    // tree has a million inodes.
    let mut first: Vec<u32> = vec![0; tree.inode_count()];
    tree.for_each_name(|parent, name, entry| {
        let parent = parent as i64;
        if entry.kind == &InodeKind::Dir {
            return Ok(w.add(parent, name, entry.kind, entry.meta, Content::Chunks(&[]))? as u64);
        }
        let ino = match first[entry.inode] {
            0 => {
                let chunks = match entry.kind {
                    InodeKind::File { .. } => chunks(entry.kind)?,
                    _ => Vec::new(),
                };
                let ino = w.add(parent, name, entry.kind, entry.meta, Content::Chunks(&chunks))?;
                first[entry.inode] = u32::try_from(ino).context("more than 2^32 rows")?;
                ino
            }
            target => w.add(
                parent,
                name,
                entry.kind,
                entry.meta,
                Content::LinkTo(i64::from(target)),
            )?,
        };
        Ok(ino as u64)
    })
}

/// An open flist.
pub struct Flist {
    conn: Connection,
}

/// A row of the inode table.
struct Row {
    ino: i64,
    parent: i64,
    name: Vec<u8>,
    size: u64,
    uid: u32,
    gid: u32,
    mode: u32,
    rdev: u64,
    mtime: i64,
}

impl Flist {
    /// Opens an flist read-only.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Flist {
            conn: sql::open(path)?,
        })
    }

    /// Opens an flist for editing tags and routes.
    pub fn open_rw(path: &Path) -> Result<Self> {
        // Edited in place: only a regular file (a symlink to one is followed).
        sql::exists(path)?;
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            crate::refuse!(
                "{} is not a regular file; flists are edited in place",
                path.display()
            );
        }
        Flist::open(path)?;
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Flist { conn })
    }

    fn has_table(&self, name: &str) -> Result<bool> {
        sql::has_table(&self.conn, name)
    }

    pub fn routes(&self) -> Result<Vec<RouteRow>> {
        let mut stmt = self.conn.prepare("SELECT start, end, url FROM route")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (start, end, url) = row?;
            let (Ok(start), Ok(end)) = (u8::try_from(start), u8::try_from(end)) else {
                bail!("route {start}-{end} is out of range 0-255");
            };
            out.push(RouteRow { start, end, url });
        }
        Ok(out)
    }

    pub fn tags(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare("SELECT key, value FROM tag ORDER BY key")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_tag(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO tag (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn delete_tag(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM tag WHERE key = ?1", params![key])?;
        Ok(())
    }

    pub fn replace_routes(&self, routes: &[RouteRow]) -> Result<()> {
        self.conn.execute("DELETE FROM route", [])?;
        for r in routes {
            self.conn.execute(
                "INSERT INTO route (start, end, url) VALUES (?1, ?2, ?3)",
                params![r.start, r.end, r.url],
            )?;
        }
        Ok(())
    }

    /// The tree as a plan (every inode's content marked `Source::Flist`),
    /// and the chunks of each flist inode.
    pub fn plan(&self) -> Result<(Plan, HashMap<i64, Vec<ChunkRef>>)> {
        let mut children: HashMap<i64, Vec<Row>> = HashMap::new();
        let mut root = None;
        let mut stmt = self
            .conn
            .prepare("SELECT ino, parent, name, size, uid, gid, mode, rdev, mtime FROM inode ORDER BY ino")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let row = Row {
                ino: r.get(0)?,
                parent: r.get(1)?,
                name: value_bytes(r.get_ref(2)?)?,
                size: u64::try_from(r.get::<_, i64>(3)?).context("negative size")?,
                uid: r.get(4)?,
                gid: r.get(5)?,
                mode: r.get(6)?,
                rdev: r.get::<_, i64>(7)? as u64,
                mtime: r.get(8)?,
            };
            if row.ino == 1 {
                root = Some(row);
            } else {
                children.entry(row.parent).or_default().push(row);
            }
        }
        let root = root.context("the flist has no root (inode 1)")?;
        let extras = self.map_bytes("SELECT ino, data FROM extra")?;
        let mut xattrs: HashMap<i64, Vec<Xattr>> = HashMap::new();
        let mut nsecs: HashMap<i64, u32> = HashMap::new();
        let mut links: HashMap<i64, i64> = HashMap::new();
        if self.has_table("fl_xattr")? {
            let mut stmt = self.conn.prepare("SELECT ino, name, value FROM fl_xattr")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (ino, name, value) = (
                    r.get::<_, i64>(0)?,
                    value_bytes(r.get_ref(1)?)?,
                    value_bytes(r.get_ref(2)?)?,
                );
                if !sql::xattr_kept(ino, &name) {
                    continue;
                }
                xattrs.entry(ino).or_default().push((name.into(), value.into()));
            }
            let mut stmt = self.conn.prepare("SELECT ino, mtime_nsec FROM fl_time")?;
            for r in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, u32>(1)?)))? {
                let (ino, ns) = r?;
                nsecs.insert(ino, ns.min(999_999_999));
            }
            let mut stmt = self.conn.prepare("SELECT ino, target FROM fl_link")?;
            for r in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
                let (ino, target) = r?;
                links.insert(ino, target);
            }
        }
        let meta = |row: &Row| Meta {
            mode: row.mode & 0o7777,
            uid: row.uid,
            gid: row.gid,
            mtime: Timestamp {
                sec: row.mtime,
                nsec: nsecs.get(&row.ino).copied().unwrap_or(0),
            },
            xattrs: xattrs.get(&row.ino).cloned().unwrap_or_default(),
        };

        let mut plan = Plan::default();
        let mut by_ino: HashMap<i64, usize> = HashMap::new();
        let mut pending_links: Vec<(usize, i64, Vec<u8>)> = Vec::new();
        plan.dirs.push(PlanDir {
            path: Vec::new(),
            meta: meta(&root),
            implicit: false,
            opaque: false,
        });
        let mut stack = vec![(root.ino, Vec::<u8>::new())];
        let mut seen = std::collections::HashSet::from([root.ino]);
        while let Some((dir, dir_path)) = stack.pop() {
            let Some(mut kids) = children.remove(&dir) else {
                continue;
            };
            kids.sort_by(|a, b| a.name.cmp(&b.name));
            for row in kids {
                if !seen.insert(row.ino) {
                    continue;
                }
                sql::check_name(&row.name, row.ino)?;
                let mut path = dir_path.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&row.name);
                let extra = extras.get(&row.ino).cloned();
                let Some(kind) = sql::kind_of(row.ino, row.mode, row.size, row.rdev, extra)? else {
                    continue;
                };
                if let InodeKind::Dir = kind {
                    plan.dirs.push(PlanDir {
                        path: path.clone(),
                        meta: meta(&row),
                        implicit: false,
                        opaque: false,
                    });
                    stack.push((row.ino, path));
                    continue;
                }
                if let Some(&target) = links.get(&row.ino) {
                    pending_links.push((0, target, path));
                    continue;
                }
                by_ino.insert(row.ino, plan.inodes.len());
                plan.inodes.push(PlanInode {
                    paths: vec![path],
                    kind,
                    meta: meta(&row),
                });
            }
        }
        for (_, target, path) in pending_links {
            match by_ino.get(&target) {
                Some(&i) => plan.inodes[i].paths.push(path),
                None => bail!(
                    "hard link {:?} names missing inode {target}",
                    String::from_utf8_lossy(&path)
                ),
            }
        }
        let mut blocks: HashMap<i64, Vec<ChunkRef>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT ino, id, key FROM block ORDER BY rowid")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let ino: i64 = r.get(0)?;
            if !by_ino.contains_key(&ino) {
                continue;
            }
            let Some(chunk) = sql::chunk_ref(r.get_ref(1)?, r.get_ref(2)?)? else {
                bail!("inode {ino} has a block whose id or key is not 32 bytes");
            };
            blocks.entry(ino).or_default().push(chunk);
        }
        Ok((plan, blocks))
    }

    /// The id of every chunk the flist references.
    pub fn chunk_ids(&self) -> Result<std::collections::HashSet<[u8; 32]>> {
        let mut out = std::collections::HashSet::new();
        let mut stmt = self.conn.prepare("SELECT DISTINCT id FROM block")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if let Ok(id) = <[u8; 32]>::try_from(value_bytes(r.get_ref(0)?)?.as_slice()) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// The start-up trace: chunks in the order a recorded start read them
    /// (empty if none was recorded).
    pub fn trace(&self) -> Result<Vec<ChunkRef>> {
        if !self.has_table("fl_trace")? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare("SELECT id, key FROM fl_trace ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let Some(chunk) = sql::chunk_ref(r.get_ref(0)?, r.get_ref(1)?)? else {
                bail!("the flist's trace holds an id or key that is not 32 bytes");
            };
            out.push(chunk);
        }
        Ok(out)
    }

    /// Replaces the start-up trace (an flist opened with [`Flist::open_rw`]).
    pub fn set_trace(&mut self, chunks: &[ChunkRef]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM fl_trace", [])?;
        {
            let mut insert = tx.prepare("INSERT INTO fl_trace (seq, id, key) VALUES (?1, ?2, ?3)")?;
            for (seq, chunk) in chunks.iter().enumerate() {
                insert.execute(params![seq as i64, &chunk.id[..], &chunk.key[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn map_bytes(&self, sql: &str) -> Result<HashMap<i64, Vec<u8>>> {
        let mut out = HashMap::new();
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            out.insert(r.get(0)?, value_bytes(r.get_ref(1)?)?);
        }
        Ok(out)
    }
}
