//! Serving an flist through FUSE: load its tree, mount it read-only, tell
//! systemd once the mount is up, serve until unmounted (by `flmount
//! -umount`, `umount`, or SIGTERM / SIGINT / SIGHUP), then report.
//!
//! The mount is `ro` with `default_permissions` (the kernel enforces the
//! files' modes for every caller); only the user who mounted it may use it
//! unless `-allow-other`. Root mounts it directly as type `fuse.flmount`
//! (the proof `-umount` asks for); other users through fusermount3. It
//! disappears even if the process is killed: flmount's own [`watcher`]
//! takes it down (fusermount3's `auto_unmount` for a user's `allow_other`
//! mount); a dead mount that still slips through (a server killed while
//! mounting) is cleared by the next server at that mount point. A
//! mount made by root allows setuid programs and device nodes, as the
//! overlay mount does: the tree is the image's root filesystem.

mod ahead;
mod elf;
mod fs;
pub mod index;
pub mod recorder;
pub mod watcher;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle;

use crate::flist::chunkcache::{CacheOptions, ChunkCache};
use crate::flist::fetch::Priority;
use crate::flist::format::Flist;
use crate::flist::rows::chunk_len;
use crate::owned::mounts;
use crate::progress::human_bytes;
use crate::store::{ChunkRef, Router};
use fs::FlistFs;
use index::Index;
use recorder::Recorder;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// Let every user use the mount (`allow_other`); file modes still hold.
    pub allow_other: bool,
    /// Fetch every chunk into the disk cache in the background.
    pub prefetch: bool,
    /// `cache.dir` is where chunks are cached if the user named a place;
    /// otherwise this, unless every store is a local directory (which is
    /// a cache of its own: a second copy would only cost disk and time).
    pub cache: CacheOptions,
    pub default_cache_dir: PathBuf,
    /// Record the chunks read, in order, into this file when unmounted
    /// (see `flist::trace`).
    pub record_trace: Option<PathBuf>,
}

/// Mounts `flist_path` at `options.mountpoint`, reading chunks through
/// `router`, and serves it until it is unmounted.
pub fn serve(flist_path: &Path, router: Router, options: &MountOptions, rt: Handle) -> Result<()> {
    let started = Instant::now();
    limit_malloc_arenas();
    let mountpoint = &options.mountpoint;
    clear_stale_mount(mountpoint)?;
    std::fs::create_dir_all(mountpoint).with_context(|| format!("creating {}", mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("the mount point {} is not a directory", mountpoint.display());
    }
    // Held while serving: `gc` keeps an flist that a live mount holds.
    let _serving = hold_flist(flist_path)?;
    let (index, trace) = {
        let fl = Flist::open(flist_path)?;
        let index =
            Arc::new(Index::open(flist_path).with_context(|| format!("loading {}", flist_path.display()))?);
        let trace = fl.trace().unwrap_or_else(|e| {
            tracing::warn!("{}: ignoring its start-up trace: {e:#}", flist_path.display());
            Vec::new()
        });
        (index, trace)
    };
    let mut cache_options = options.cache.clone();
    if cache_options.dir.is_none() && !router.is_local() {
        cache_options.dir = Some(options.default_cache_dir.clone());
        cache_options.adopt_dir = true;
    }
    let cache = Arc::new(ChunkCache::new(router, &cache_options)?);
    let root = nix::unistd::geteuid().is_root();
    let mut config = Config::default();
    config.mount_options = vec![
        // The source names no path: a comma or backslash in one would be
        // read as an option separator. The type is what proves the mount
        // is flmount's (see owned::mounts).
        MountOption::FSName("flmount".into()),
        MountOption::Subtype("flmount".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if root {
        // As with the overlay mount: the image's setuid programs and device
        // nodes work, as they would in its container.
        config.mount_options.extend([MountOption::Suid, MountOption::Dev]);
    }
    // Who may use the mount is the kernel's decision alone: `allow_other`
    // only with -allow-other (file modes then decide), otherwise only the
    // user who mounted it. flmount's own watcher takes the mount down if
    // the server dies (fusermount3's auto_unmount where a user's mount has
    // allow_other).
    let auto_unmount = !root && options.allow_other && which_fusermount();
    config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    if auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    config.n_threads = Some(2);
    config.clone_fd = true;

    let signals = {
        let _runtime = rt.enter();
        Signals::new()
    };
    let recorder = options
        .record_trace
        .as_ref()
        .map(|_| Arc::new(Recorder::default()));
    let fs = FlistFs::new(index.clone(), cache.clone(), rt.clone(), recorder.clone());
    let session = if root {
        // Mounted by flmount itself, as type `fuse.flmount`: fuser's own
        // mount(2) would drop the subtype, and fusermount3 is not needed.
        let fd = mount_directly(mountpoint, flist_path, options.allow_other)?;
        Session::from_fd(fs, fd, config.acl, config)
    } else {
        Session::new(fs, mountpoint, &config)
    }
    .with_context(|| format!("mounting {} at {}", flist_path.display(), mountpoint.display()))?;
    let _watcher = if auto_unmount {
        None
    } else {
        match watcher::spawn(mountpoint) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "{e:#}: if flmount is killed, run `flmount -umount {}`",
                    mountpoint.display()
                );
                None
            }
        }
    };
    tracing::info!(
        "mounted {} at {} in {} ms",
        flist_path.display(),
        mountpoint.display(),
        started.elapsed().as_millis()
    );
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("telling systemd the mount is ready: {e}");
    }
    let target = mountpoint.clone();
    rt.spawn(async move {
        let signal = signals.wait().await;
        tracing::info!("{signal}: unmounting {}", target.display());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        match tokio::task::spawn_blocking(move || unmount(&target)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e:#}"),
            Err(e) => tracing::warn!("unmounting: {e}"),
        }
    });
    if !trace.is_empty() && cache.fetches_ahead() {
        rt.spawn(fetch_trace(index.clone(), cache.clone(), trace));
    }
    if options.prefetch {
        rt.spawn(prefetch(index.clone(), cache.clone()));
    }
    session.run().context("serving the FUSE mount")?;
    rt.block_on(cache.flush());
    if let (Some(recorder), Some(path)) = (&recorder, &options.record_trace) {
        let n = recorder.save(path)?;
        tracing::info!("recorded a trace of {n} chunks");
    }
    let stats = &cache.stats;
    tracing::info!(
        "unmounted {}: {} chunks ({}) fetched, {} of them from the cache store, {} from the disk cache, {} from memory",
        mountpoint.display(),
        stats.fetched.load(Ordering::Relaxed),
        human_bytes(stats.fetched_bytes.load(Ordering::Relaxed)),
        stats.tier_hits.load(Ordering::Relaxed),
        stats.disk_hits.load(Ordering::Relaxed),
        stats.memory_hits.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Background fetches handed to the scheduler at once (more than it ever
/// runs, so it always has the next ones).
const BACKGROUND_QUEUED: usize = 1024;

/// Fetches the chunks of the flist's start-up trace that are among its
/// chunks, in the trace's order, above `-prefetch`.
async fn fetch_trace(index: Arc<Index>, cache: Arc<ChunkCache>, trace: Vec<ChunkRef>) {
    let keys = trace.iter().map(|c| c.key).collect();
    let sizes = match tokio::task::spawn_blocking(move || index.chunk_sizes(&keys)).await {
        Ok(Ok(sizes)) => sizes,
        Ok(Err(e)) => return tracing::warn!("the start-up trace: {e:#}"),
        Err(e) => return tracing::warn!("the start-up trace: {e}"),
    };
    let chunks = trace
        .into_iter()
        .filter_map(|c| sizes.get(&c.key).map(|&n| (c, n)));
    fetch_all(
        cache,
        futures_util::stream::iter(chunks),
        Priority::Trace,
        "the start-up trace",
    )
    .await;
}

/// Fetches every chunk of the flist into the disk cache: the chunks are
/// read from the flist as they are fetched, each once.
async fn prefetch(index: Arc<Index>, cache: Arc<ChunkCache>) {
    let Some(limit) = cache.disk_limit() else {
        tracing::info!(
            "-prefetch: the stores are local directories and no -cache was given: nothing to fetch"
        );
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::channel(BACKGROUND_QUEUED);
    let reader = tokio::task::spawn_blocking(move || {
        let (_, bytes) = index.totals();
        if bytes > limit {
            tracing::warn!(
                "-prefetch: the flist holds {} but the cache may keep {}: \
                 early chunks will be evicted again",
                human_bytes(bytes),
                human_bytes(limit)
            );
        }
        // Chunks already sent, by the first 8 bytes of their key (a
        // collision only leaves a chunk to be fetched when read).
        let mut sent = std::collections::HashSet::new();
        index.each_file(|size, chunks| {
            for (i, chunk) in chunks.iter().enumerate() {
                let prefix = u64::from_le_bytes(chunk.key[..8].try_into().expect("8 bytes"));
                if sent.insert(prefix)
                    && tx
                        .blocking_send((*chunk, chunk_len(size, i, chunks.len())))
                        .is_err()
                {
                    return false;
                }
            }
            true
        })
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|c| (c, rx)) });
    fetch_all(cache, chunks, Priority::Prefetch, "prefetched").await;
    match reader.await {
        Ok(Err(e)) => tracing::warn!("-prefetch: reading the flist: {e:#}"),
        Err(e) => tracing::warn!("-prefetch: reading the flist: {e}"),
        Ok(Ok(())) => {}
    }
}

/// Fills the cache with `chunks` at `priority`; logs the outcome.
async fn fetch_all(
    cache: Arc<ChunkCache>,
    chunks: impl futures_util::Stream<Item = (ChunkRef, u64)>,
    priority: Priority,
    what: &str,
) {
    use futures_util::StreamExt;
    let started = Instant::now();
    let (mut total, mut failed, mut first) = (0usize, 0usize, None);
    let results = chunks
        .map(|(chunk, bytes)| {
            let cache = cache.clone();
            async move { cache.fill(&chunk, priority, bytes).await.err() }
        })
        // The fetch scheduler decides how many run; these only wait in
        // its queue, below demand reads (and read-ahead).
        .buffer_unordered(BACKGROUND_QUEUED);
    let mut results = std::pin::pin!(results);
    while let Some(result) = results.next().await {
        total += 1;
        if let Some(e) = result {
            failed += 1;
            first.get_or_insert(e);
        }
    }
    if let Some(first) = first {
        tracing::warn!("{what}: {failed} of {total} chunks could not be fetched (first: {first:#})");
    } else {
        tracing::info!(
            "{what}: {total} chunks in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The signals that unmount, watched from before the mount exists.
struct Signals(Option<[tokio::signal::unix::Signal; 3]>);

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some([term, int, hup])),
            _ => {
                tracing::warn!("cannot watch for signals: SIGTERM will not unmount cleanly");
                Signals(None)
            }
        }
    }

    async fn wait(self) -> &'static str {
        let Some([mut term, mut int, mut hup]) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        }
    }
}

/// Detaches the flmount FUSE mount at `mountpoint`: the mount disappears
/// at once, files still open keep working until closed, and the serving
/// process exits when the last one is. Any other mount there is refused.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    mounts::unmount(mountpoint, &mounts::Proof::Fuse, true)
}

/// Whether an flmount FUSE mount is at `mountpoint` (live or dead).
pub fn is_mounted_at(mountpoint: &Path) -> bool {
    matches!(mounts::mount_at(mountpoint), Ok(Some(m)) if m.fstype == mounts::FUSE_TYPE)
}

/// What asking the server of a FUSE mount tells.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    Answers,
    /// Its server is gone (ENOTCONN).
    Dead,
    /// No answer within 5 s.
    Hung,
}

/// Asks the server of the FUSE mount at `mountpoint`: `statfs` always
/// reaches it (attributes may be answered from the kernel's cache).
pub fn health(mountpoint: &Path) -> Health {
    // A live server that hangs would hang statfs too: ask from a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = mountpoint.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(nix::sys::statfs::statfs(&probe).map(drop));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(Err(nix::errno::Errno::ENOTCONN)) => Health::Dead,
        Err(_) => Health::Hung,
        Ok(_) => Health::Answers,
    }
}

/// Clears the mount a killed server left at `mountpoint` (fusermount3's
/// auto_unmount can miss it when the server dies while fusermount3 is
/// mounting); refuses a live one, and any mount that is not flmount's.
fn clear_stale_mount(mountpoint: &Path) -> Result<()> {
    let Some(m) = mounts::mount_at(mountpoint)? else {
        return Ok(());
    };
    if m.fstype != mounts::FUSE_TYPE {
        bail!(
            "{} is already a mount point ({}); flmount mounts over nothing",
            mountpoint.display(),
            m.fstype
        );
    }
    match health(mountpoint) {
        Health::Dead => {
            tracing::warn!(
                "{}: unmounting what a killed flmount server left mounted there",
                mountpoint.display()
            );
            unmount(mountpoint)
        }
        Health::Hung => bail!(
            "{} is an flmount FUSE mount whose server does not answer; unmount it first (flmount -umount {})",
            mountpoint.display(),
            mountpoint.display()
        ),
        Health::Answers => bail!(
            "{} is already an flmount FUSE mount; unmount it first (flmount -umount {})",
            mountpoint.display(),
            mountpoint.display()
        ),
    }
}

/// Mounts `/dev/fuse` at `mountpoint` as root: type `fuse.flmount`,
/// read-only, `default_permissions`, `allow_other` only if asked. Returns
/// the device for the session to serve.
fn mount_directly(mountpoint: &Path, flist: &Path, allow_other: bool) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse")?;
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id=0,group_id=0,default_permissions",
        dev.as_raw_fd()
    );
    if allow_other {
        data.push_str(",allow_other");
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        // The source is not parsed as options: any path is fine.
        Some(format!("flmount:{}", flist.display()).as_str()),
        mountpoint,
        Some(mounts::FUSE_TYPE),
        MsFlags::MS_RDONLY | MsFlags::MS_NOATIME,
        Some(data.as_str()),
    )
    .with_context(|| format!("mount(2) of FUSE at {}", mountpoint.display()))?;
    Ok(dev.into())
}

/// A shared lock on the flist file while it is served.
pub fn hold_flist(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening flist {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))
}

/// Whether a live FUSE mount serves the flist at `path` (it holds the
/// file's lock).
pub fn is_served(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// Chunks are allocated on one thread and freed on another; glibc's
/// per-thread arenas then hold on to memory a long-running server does not
/// need. Two arenas keep the peak low at no measurable cost here.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Whether a fusermount3 (or fusermount) binary is on the PATH.
fn which_fusermount() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .any(|dir| dir.join("fusermount3").is_file() || dir.join("fusermount").is_file())
}
