//! The workdir's record of chunks known to be in each store
//! (`chunks.db`): a cache that saves uploads, never one that decides what
//! a store holds.
//!
//! It keeps three things: which chunks each store was given (`known`),
//! which chunk a piece of content became (`encoded`, so a re-pack hashes a
//! piece once and skips compressing and encrypting it), and the chunk
//! lists of layer entries packed before (`layer_entry`, so a re-pack does
//! not read those entries at all).
//!
//! Nothing of it is loaded whole: a million-chunk index is hundreds of
//! megabytes in memory, so every question is a point query on the file,
//! through a few read connections the packing threads share, and the
//! reusable entries' lists are copied to a temporary file as they are
//! checked.
//!
//! Each store is known by its URL and its identity (see
//! `Store::identity`): a store that lost its content lost its identity
//! too, and is then treated as empty. A remote store found to have lost
//! chunks it kept its identity for is not trusted at all for the pack. A
//! local directory store is asked instead (a `stat`), as it costs nothing.
//! A `chunks.db` that SQLite cannot read is set aside and rebuilt.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::runtime::Handle;

use crate::flist::spill::{self, ChunkLists};
use crate::store::{ChunkId, ChunkRef, Router};

pub struct KnownChunks {
    path: PathBuf,
    /// The key of each route's store in the index (`url#identity`), in
    /// the router's order, and whether what the index remembers of it is
    /// trusted (not when it lost some).
    keys: Vec<(String, bool)>,
    /// Idle read connections (one per thread asking at a time).
    readers: Mutex<Vec<Connection>>,
    /// Whether the index knew any content when opened (a first pack asks
    /// nothing of it).
    any_encoded: bool,
}

/// A layer's entries packed before whose chunks every store still holds,
/// their chunk lists copied out of the index when they were checked (so
/// the lists used are the lists checked) into a temporary file.
pub struct Reusable(ChunkLists<u32>);

impl Reusable {
    /// Whether entry `entry` of `size` bytes can be taken from the index.
    pub fn has(&self, entry: u32, size: u64) -> bool {
        self.0
            .count(&entry)
            .is_some_and(|n| u64::from(n) == chunk_count(size))
    }

    /// The chunks of entry `entry` of `size` bytes (taken out: each is
    /// read once).
    pub fn take(&mut self, entry: u32, size: u64) -> Result<Vec<ChunkRef>> {
        match self.0.take(&entry)? {
            Some(chunks) if chunks.len() as u64 == chunk_count(size) => Ok(chunks),
            _ => anyhow::bail!("entry {entry} was neither packed nor packed before"),
        }
    }
}

fn chunk_count(size: u64) -> u64 {
    size.div_ceil(crate::store::CHUNK_SIZE as u64)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS known (store TEXT, id BLOB, PRIMARY KEY (store, id)) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS encoded (key BLOB PRIMARY KEY, id BLOB) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS layer_entry (layer TEXT, entry INTEGER, chunks BLOB, PRIMARY KEY (layer, entry)) WITHOUT ROWID;";

impl KnownChunks {
    /// Opens the index for the stores of `router`, giving each store an
    /// identity if it has none yet.
    pub fn load(path: &Path, router: &Router, rt: &Handle) -> Result<Self> {
        let conn = open_checked(path)?;
        let mut keys = Vec::new();
        for route in router.routes() {
            let store = &route.store;
            let identity = match rt.block_on(store.identity())? {
                Some(id) => id,
                None => {
                    let id = crate::store::new_identity();
                    rt.block_on(store.set_identity(&id))?;
                    tracing::debug!("store {} has no identity yet: {id}", store.public_url());
                    id
                }
            };
            let key = format!("{}#{identity}", store.public_url());
            // A remote store may lose chunks and keep its identity (keys
            // evicted, objects expired, a partial restore): a sample of what
            // it is remembered to hold is asked for first, and any miss
            // makes every chunk be checked.
            let mut trusted = true;
            if store.holds_locally(&[0; 32]).is_none() {
                let mut sample = conn.prepare("SELECT id FROM known WHERE store = ?1 LIMIT 16")?;
                let ids: Vec<Vec<u8>> = sample
                    .query_map([&key], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for id in ids
                    .iter()
                    .filter_map(|id| <ChunkId>::try_from(id.as_slice()).ok())
                {
                    if !rt.block_on(store.exists(&id))? {
                        tracing::warn!(
                            "store {} lost chunks flmount stored in it: checking every chunk",
                            store.public_url()
                        );
                        trusted = false;
                        break;
                    }
                }
            }
            keys.push((key, trusted));
        }
        let any_encoded = conn.query_row("SELECT EXISTS (SELECT 1 FROM encoded)", [], |r| r.get(0))?;
        Ok(KnownChunks {
            path: path.to_owned(),
            keys,
            readers: Mutex::new(vec![conn]),
            any_encoded,
        })
    }

    /// Runs `f` on an idle read connection (opened if none is).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let idle = self.readers.lock().unwrap().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path)?,
        };
        let out = f(&conn).with_context(|| format!("reading {}", self.path.display()));
        self.readers.lock().unwrap().push(conn);
        out
    }

    /// Whether every store `id` routes to is known to hold it.
    pub fn all_have(&self, router: &Router, id: &ChunkId) -> Result<bool> {
        let mut any = false;
        for (r, key) in router.routes().iter().zip(&self.keys) {
            if !(r.start <= id[0] && id[0] <= r.end) {
                continue;
            }
            any = true;
            // A local store is asked (a `stat`); what the index remembers
            // of the others is taken when it is trusted.
            let held = match r.store.holds_locally(id) {
                Some(held) => held,
                None => key.1 && self.remembers(&key.0, id)?,
            };
            if !held {
                return Ok(false);
            }
        }
        Ok(any)
    }

    fn remembers(&self, key: &str, id: &ChunkId) -> Result<bool> {
        self.read(|conn| {
            conn.prepare_cached("SELECT 1 FROM known WHERE store = ?1 AND id = ?2")?
                .exists(params![key, &id[..]])
        })
    }

    /// The chunk a piece whose content key is `key` became, if known and
    /// every store it routes to holds it.
    pub fn encoded(&self, router: &Router, key: &[u8; 32]) -> Result<Option<ChunkId>> {
        if !self.any_encoded {
            return Ok(None);
        }
        let id: Option<Vec<u8>> = self.read(|conn| {
            conn.prepare_cached("SELECT id FROM encoded WHERE key = ?1")?
                .query_row([&key[..]], |r| r.get(0))
                .optional()
        })?;
        match id.and_then(|id| <ChunkId>::try_from(id.as_slice()).ok()) {
            Some(id) if self.all_have(router, &id)? => Ok(Some(id)),
            _ => Ok(None),
        }
    }

    /// The entries of `layer` (a blob digest and reading version) packed
    /// before whose chunks every store still holds, their lists kept in
    /// a temporary file in `spill`.
    pub fn reusable_entries(&self, layer: &str, router: &Router, spill: &Path) -> Result<Reusable> {
        let mut lists = ChunkLists::new(spill)?;
        let conn = open(&self.path)?;
        let mut stmt = conn.prepare("SELECT entry, chunks FROM layer_entry WHERE layer = ?1")?;
        let mut rows = stmt.query([layer])?;
        while let Some(row) = rows.next()? {
            let (entry, raw): (u32, Vec<u8>) = (row.get(0)?, row.get(1)?);
            if raw.is_empty() || raw.len() % 64 != 0 {
                continue;
            }
            if self.all_have_each(router, &spill::decode(&raw))? {
                lists.append_raw(entry, &raw)?;
            }
        }
        lists.shrink_to_fit();
        Ok(Reusable(lists))
    }

    fn all_have_each(&self, router: &Router, chunks: &[ChunkRef]) -> Result<bool> {
        for c in chunks {
            if !self.all_have(router, &c.id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records the chunk lists of layer entries just packed.
    pub fn save_layer_entries(
        &self,
        entries: impl FnOnce(&mut dyn FnMut(&str, u32, &[ChunkRef]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let mut conn = open(&self.path)?;
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT OR REPLACE INTO layer_entry (layer, entry, chunks) VALUES (?1, ?2, ?3)")?;
            entries(&mut |layer, entry, chunks| {
                insert.execute(params![layer, entry, spill::encode(chunks)])?;
                Ok(())
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records chunks now in the stores of `router`.
    pub fn save(
        &self,
        router: &Router,
        chunks: impl FnOnce(&mut dyn FnMut(&ChunkRef) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        let mut conn = open(&self.path)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare("INSERT OR IGNORE INTO known (store, id) VALUES (?1, ?2)")?;
            let mut encoded = tx.prepare("INSERT OR IGNORE INTO encoded (key, id) VALUES (?1, ?2)")?;
            chunks(&mut |c| {
                encoded.execute(params![&c.key[..], &c.id[..]])?;
                for (r, (key, _)) in router.routes().iter().zip(&self.keys) {
                    if r.start <= c.id[0] && c.id[0] <= r.end {
                        insert.execute(params![key, &c.id[..]])?;
                    }
                }
                Ok(())
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets chunks removed from the store `url` (by `gc`), whatever its
    /// identity, so a later pack uploads them again.
    pub fn forget(path: &Path, url: &str, ids: &[ChunkId]) -> Result<()> {
        let mut conn = open_checked(path)?;
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare("DELETE FROM known WHERE substr(store, 1, ?1) = ?2 AND id = ?3")?;
            let prefix = format!("{url}#");
            for id in ids {
                delete.execute(params![prefix.len(), prefix, &id[..]])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A connection to the index (its tables made if missing).
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn open(path: &Path) -> Result<Connection> {
    connect(path).with_context(|| format!("opening {}", path.display()))
}

/// [`open`], once a run, after checking every page of the file: damage
/// inside a table shows only when a page is read. A damaged index is set
/// aside and an empty one made.
fn open_checked(path: &Path) -> Result<Connection> {
    let check = || -> rusqlite::Result<Connection> {
        let conn = connect(path)?;
        let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if verdict != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(verdict),
            ));
        }
        Ok(conn)
    };
    match check() {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            let aside = path.with_extension(format!(
                "db.corrupt-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            tracing::warn!(
                "{} is corrupt ({e}); it is only a cache: moved to {} and rebuilt",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside).with_context(|| format!("moving {} aside", path.display()))?;
            check().with_context(|| format!("opening {}", path.display()))
        }
        other => other.with_context(|| format!("opening {}", path.display())),
    }
}
