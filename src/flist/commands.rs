//! The flist commands: pack an image into an flist and stores, unpack an
//! flist, and `flmount flist ls | inspect | tag | store`. Each is plumbing
//! between the modules that do the work (tree, pack, flist, extract, store).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::runtime::Handle;

use crate::flist::chunkcache::{CacheOptions, ChunkCache};
use crate::flist::format::{self, Flist, RouteRow};
use crate::flist::fuse::{self, MountOptions};
use crate::flist::known::{KnownChunks, Reusable};
use crate::flist::pack::{self, ChunkContent};
use crate::fs::content::{self, ContentSource};
use crate::fs::layer::{Change, ChangeLog, Kind, LayerBlob};
use crate::fs::threads;
use crate::fs::tree::{InodeKind, Source, Tree};
use crate::image::digest::Digest;
use crate::image::workdir::Workdir;
use crate::progress::human_bytes;
use crate::store::{self, Router, Store, StoreSpec};
use crate::write::extract::{self, WriteOptions};

/// The routes an flist records for `router`: public URLs, no secrets.
fn route_rows(router: &Router) -> Vec<RouteRow> {
    router
        .routes()
        .iter()
        .map(|r| RouteRow {
            start: r.start,
            end: r.end,
            url: r.store.public_url().to_owned(),
        })
        .collect()
}

/// The key of a layer's packed entries in the chunk index: the layer's
/// digest and the version of the reading of its entries (version 2 reads
/// PAX sparse files expanded, where version 1 read their raw data).
fn entries_key(digest: &Digest) -> String {
    format!("{digest} entries-v2")
}

/// `-image REF -flist OUT -store URL...`: index the image's merged tree into
/// an flist, its content into the stores.
///
/// One pass over each layer: its headers become changes for the tree while
/// its files' content is packed as it streams by (a layer is inflated
/// once). Content a later layer deletes is stored too, a small price for
/// not reading the layers twice. Layer entries packed before (same blob,
/// same entry) whose chunks the stores still hold are not hashed again.
pub fn pack_image(
    workdir: &Workdir,
    digests: &[Digest],
    layers: &[LayerBlob],
    out: &Path,
    stores: &[StoreSpec],
) -> Result<pack::PackStats> {
    let started = Instant::now();
    let router = open_writing_router(stores)?;
    let known = KnownChunks::load(&workdir.chunk_index_path(), &router, &Handle::current())?;
    let keys: Vec<String> = digests.iter().map(entries_key).collect();
    let mut reused: Vec<Reusable> = (keys.iter())
        .map(|key| known.reusable_entries(key, &router, &workdir.tmp_dir()))
        .collect::<Result<_>>()?;
    tracing::debug!("packed entries reusable: {:.2}s", started.elapsed().as_secs_f64());
    // Each layer's changes, encoded (a third of the decoded size) and
    // spilled to the workdir's tmp/ as they are read.
    let changes: Vec<std::sync::Mutex<ChangeLog>> = layers.iter().map(|_| Default::default()).collect();
    let indices: Vec<usize> = (0..layers.len()).collect();
    let (mut packed, stats) = pack::pack(
        |sink| {
            threads::for_each_parallel(&indices, layers.len(), |&layer| {
                // Every file of the layer packed before: its cached changes
                // are all that is needed, and the layer is not read at all.
                let cached = layers[layer].cached_change_log();
                let indexed = cached.is_some();
                let all_reused = |changes: &ChangeLog| {
                    changes.iter().all(|c| match c {
                        Ok(Change::Add(e)) => match e.kind {
                            Kind::File { size, .. } if size > 0 => reused[layer].has(e.index, size),
                            _ => true,
                        },
                        Ok(_) => true,
                        Err(_) => false,
                    })
                };
                if let Some(cached) = cached.filter(all_reused) {
                    *changes[layer].lock().unwrap() = cached;
                    return Ok(());
                }
                let mut list = ChangeLog::spilling_to(&workdir.tmp_dir())?;
                layers[layer]
                    .for_each(|change, reader| {
                        if let Change::Add(e) = &change {
                            if let Kind::File { size, .. } = e.kind {
                                if size > 0 && !reused[layer].has(e.index, size) {
                                    sink((layer as u32, e.index), size, reader).with_context(|| {
                                        format!("packing {}", String::from_utf8_lossy(&e.path))
                                    })?;
                                }
                            }
                        }
                        list.push(&change)
                    })
                    .with_context(|| format!("reading layer {}", digests[layer]))?;
                if !indexed {
                    layers[layer].save_change_log(&list);
                }
                *changes[layer].lock().unwrap() = list;
                Ok(())
            })
        },
        &router,
        &known,
        &Handle::current(),
        threads::io_workers(),
        &workdir.tmp_dir(),
    )?;
    // Each stage's input is dropped as soon as the next is built, and the
    // flist is written from the tree itself (no plan of it beside it): a
    // million-entry image holds a few hundred bytes per entry at each.
    tracing::debug!("content packed: {:.2}s", started.elapsed().as_secs_f64());
    let tree = Tree::from_logs(changes.into_iter().map(|c| c.into_inner().unwrap()).collect())?;
    known.save_layer_entries(|save| {
        packed.for_each(|&(layer, entry), chunks| save(&keys[layer as usize], entry, &chunks))
    })?;
    tracing::debug!(
        "tree merged, chunk lists saved: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    write_flist(
        out,
        |w, named| {
            format::tree_rows(w, &tree, |kind| {
                let chunks = match *kind {
                    InodeKind::File {
                        size,
                        source: Some(Source::Layer { layer, entry }),
                    } => match packed.take(&(layer as u32, entry))? {
                        Some(chunks) => chunks,
                        None => reused[layer].take(entry, size)?,
                    },
                    _ => Vec::new(),
                };
                named.count(kind);
                Ok(chunks)
            })
        },
        &router,
        stats,
        started,
    )
}

/// `flmount pack -flist OUT -store URL... DIR`: the same from a directory.
pub fn pack_dir(workdir: &Workdir, dir: &Path, out: &Path, stores: &[StoreSpec]) -> Result<pack::PackStats> {
    let started = Instant::now();
    let plan = crate::fs::scan::scan(dir)?;
    let content = crate::fs::scan::DiskContent {
        root: dir.to_owned(),
        threads: threads::io_workers(),
    };
    let router = open_writing_router(stores)?;
    let known = KnownChunks::load(&workdir.chunk_index_path(), &router, &Handle::current())?;
    let (mut blocks, stats) = pack::pack(
        |sink| {
            content.deliver(&plan, &|i, reader| {
                let InodeKind::File { size, .. } = plan.inodes[i].kind else {
                    return Ok(());
                };
                sink(i, size, reader)
                    .with_context(|| format!("packing {}", extract::show(&plan.inodes[i].paths[0])))
            })
        },
        &router,
        &known,
        &Handle::current(),
        threads::io_workers(),
        &workdir.tmp_dir(),
    )
    .with_context(|| format!("packing {}", dir.display()))?;
    write_flist(
        out,
        |w, named| {
            format::plan_rows(w, &plan, |i| {
                let chunks = blocks.take(&i)?.unwrap_or_default();
                named.count(&plan.inodes[i].kind);
                Ok(chunks)
            })
        },
        &router,
        stats,
        started,
    )
}

fn open_writing_router(stores: &[StoreSpec]) -> Result<Router> {
    let router = Router::open(stores, store::DEFAULT_TIMEOUT)?;
    router.check_coverage()?;
    Ok(router)
}

/// What an flist holds, counted as its rows are written: its files (each
/// once, however many names) and their bytes.
#[derive(Default)]
struct Named {
    files: u64,
    bytes: u64,
}

impl Named {
    fn count(&mut self, kind: &InodeKind) {
        if let InodeKind::File { size, .. } = kind {
            self.files += 1;
            self.bytes += size;
        }
    }
}

/// Writes an flist whose rows `rows` writes (counting what they name) and
/// reports.
fn write_flist(
    out: &Path,
    rows: impl FnOnce(&mut format::RowWriter, &mut Named) -> Result<()>,
    router: &Router,
    mut stats: pack::PackStats,
    started: Instant,
) -> Result<pack::PackStats> {
    let mut counted = Named::default();
    let (mut chunks, mut uploaded, mut uploaded_all) = (0u64, 0u64, 0u64);
    format::write_with(
        out,
        |w| rows(w, &mut counted),
        &route_rows(router),
        &format::standard_tags(),
        // One count of chunks everywhere: the distinct chunks the flist
        // names, counted from its rows (not held in memory), and which of
        // them this pack uploaded.
        |tx| {
            tracing::debug!("rows written: {:.2}s", started.elapsed().as_secs_f64());
            // The uploaded chunks in a temporary table (on disk when
            // large), to be matched with the flist's.
            tx.execute_batch("CREATE TEMP TABLE uploaded (id BLOB PRIMARY KEY) WITHOUT ROWID")?;
            if let Some(stored) = stats.stored.as_mut() {
                let mut insert = tx.prepare("INSERT OR IGNORE INTO temp.uploaded (id) VALUES (?1)")?;
                stored.for_each(|c, up| {
                    if up {
                        insert.execute([&c.id[..]])?;
                        uploaded_all += 1;
                    }
                    Ok(())
                })?;
            }
            (chunks, uploaded) = tx.query_row(
                "SELECT COUNT(*), COUNT(u.id) FROM (SELECT DISTINCT id FROM block) AS b
                 LEFT JOIN temp.uploaded AS u ON u.id = b.id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute_batch("DROP TABLE temp.uploaded")?;
            Ok(())
        },
    )?;
    let Named { files, bytes } = counted;
    stats.chunks = chunks;
    stats.uploaded_replaced = uploaded_all - uploaded;
    stats.uploaded = uploaded;
    stats.skipped = stats.chunks - uploaded;
    let secs = started.elapsed().as_secs_f64();
    let replaced = match stats.uploaded_replaced {
        0 => String::new(),
        n => format!(
            "; {} stored for content later layers replace",
            plural(n, "more chunk")
        ),
    };
    tracing::info!(
        "packed {} ({}) into {}: {} ({} uploaded, {} already stored){replaced}; {:.2}s ({}/s)",
        plural(files, "file"),
        human_bytes(bytes),
        out.display(),
        plural(stats.chunks, "chunk"),
        stats.uploaded,
        stats.skipped,
        secs,
        human_bytes((bytes as f64 / secs.max(1e-3)) as u64)
    );
    stats.files = files;
    stats.bytes = bytes;
    Ok(stats)
}

/// The router for reading an flist. Without `-store`, the flist's own
/// routes. `-store` URLs that are some of those routes with credentials
/// added keep the routes' ranges; any other `-store` set replaces the
/// routes.
fn reading_router(fl: &Flist, stores: &[StoreSpec], timeout: Duration) -> Result<Router> {
    let mut specs = Vec::new();
    for row in fl.routes()? {
        specs.push(StoreSpec {
            start: row.start,
            end: row.end,
            url: store::StoreUrl::parse(&row.url)
                .with_context(|| format!("the flist's route {}", store::redact(&row.url)))?,
        });
    }
    if !stores.is_empty() {
        let adds_credentials = stores
            .iter()
            .all(|s| s.covers_all() && specs.iter().any(|r| r.url.public() == s.url.public()));
        if adds_credentials {
            for route in &mut specs {
                if let Some(s) = stores.iter().find(|s| s.url.public() == route.url.public()) {
                    route.url = s.url.clone();
                }
            }
        } else {
            specs = stores.to_vec();
        }
    }
    if specs.is_empty() {
        bail!("the flist names no stores: give -store URL");
    }
    Router::open(&specs, timeout)
}

/// `flmount unpack -flist F TARGET`: restore the whole tree.
pub fn unpack(
    flist_path: &Path,
    stores: &[StoreSpec],
    cache: &CacheOptions,
    target: &Path,
    force: bool,
) -> Result<extract::WriteStats> {
    let started = Instant::now();
    let fl = Flist::open(flist_path)?;
    let (plan, blocks) = fl.plan()?;
    let cache = ChunkCache::new(reading_router(&fl, stores, cache.timeout)?, cache)?;
    let content = ChunkContent {
        blocks: &blocks,
        cache: &cache,
        rt: Handle::current(),
        threads: threads::io_workers(),
    };
    // The flist's all-zero chunks (a sparse file's holes) stay holes.
    let stats = extract::into_target(target, force, |dir| {
        extract::write_plan(
            &plan,
            &content::KeepHoles(&content),
            dir,
            &WriteOptions::default(),
        )
    })
    .with_context(|| format!("unpacking {} into {}", flist_path.display(), target.display()))?;
    content.rt.block_on(cache.flush());
    tracing::info!("unpacked {stats} in {:.2}s", started.elapsed().as_secs_f64());
    Ok(stats)
}

/// `-flist F -mount DIR`: serve an flist through FUSE until unmounted.
pub fn serve(flist_path: &Path, stores: &[StoreSpec], mount: &MountOptions) -> Result<()> {
    let router = reading_router(&Flist::open(flist_path)?, stores, mount.cache.timeout)?;
    fuse::serve(flist_path, router, mount, Handle::current())
}

/// `-image REF -mount DIR -lazy`: the image's seek index served, its
/// layers read in parts from `blobs`.
pub fn serve_lazy(
    index: &Path,
    layers: Vec<crate::flist::seekindex::LayerIndex>,
    blobs: crate::flist::layerstore::Blobs,
    mount: &MountOptions,
) -> Result<()> {
    let store = crate::flist::layerstore::LayerStore::new(layers, blobs);
    let (stats, url) = (store.stats.clone(), store.public_url().to_owned());
    let router = Router::from_routes(vec![store::Route {
        start: 0,
        end: 255,
        store: std::sync::Arc::new(store),
    }]);
    let served = fuse::serve(index, router, mount, Handle::current());
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        "read {} of the image's layers ({}) from {url}",
        plural(load(&stats.reads), "part"),
        human_bytes(load(&stats.bytes))
    );
    served
}

/// `-image REF -mount DIR -fuse`: the image's flist in the workdir
/// (`flists/<manifest digest>.fl`, its chunks in the workdir's own dir
/// store), packed on first use.
pub fn pack_into_workdir(
    workdir: &Workdir,
    manifest: &Digest,
    digests: &[Digest],
    layers: &[LayerBlob],
    validate: bool,
) -> Result<PathBuf> {
    let flist = workdir.flist_path(manifest);
    let store_dir = workdir.store_dir();
    let chunk_ids = match flist
        .exists()
        .then(|| Flist::open(&flist).and_then(|f| f.chunk_ids()))
    {
        Some(Ok(ids)) => Some(ids),
        Some(Err(e)) => {
            tracing::warn!("{}: {e:#}; packing the image again", flist.display());
            None
        }
        None => None,
    };
    if let Some(ids) = chunk_ids {
        let chunk_path = |id: &[u8; 32]| {
            let hex = hex::encode(id);
            store_dir.join(&hex[..2]).join(&hex)
        };
        if validate {
            // -validate-cache: every chunk read and hashed; a bad one goes.
            let mut bad = 0;
            for id in &ids {
                let path = chunk_path(id);
                if let Ok(blob) = std::fs::read(&path) {
                    if crate::store::codec::blake2b256(&blob) != *id {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("removing {}", path.display()))?;
                        bad += 1;
                    }
                }
            }
            if bad > 0 {
                tracing::warn!(
                    "{bad} corrupt chunks of {} removed from {}",
                    flist.display(),
                    store_dir.display()
                );
            }
        }
        // The flist is only as good as the store: a chunk gone from it
        // (removed by hand, a disk repaired) means packing again.
        let missing = ids.iter().filter(|id| !chunk_path(id).is_file()).count();
        if missing == 0 {
            tracing::debug!("using {}", flist.display());
            return Ok(flist);
        }
        tracing::warn!(
            "{} chunks of {} are missing from {}: packing the image again",
            missing,
            flist.display(),
            store_dir.display()
        );
    }
    std::fs::create_dir_all(flist.parent().unwrap())?;
    let store = crate::store::StoreSpec::dir(&store_dir);
    pack_image(workdir, digests, layers, &flist, &[store])?;
    Ok(flist)
}

/// "1 chunk", "2 chunks".
fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
