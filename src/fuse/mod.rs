//! Serving an flist through FUSE: load its tree, mount it read-only, tell
//! systemd once the mount is up, serve until unmounted (by `flmount
//! -umount`, `umount`, or SIGTERM / SIGINT / SIGHUP), then report.
//!
//! The mount is `ro` with `default_permissions` (the kernel enforces the
//! files' modes for every caller) and `auto_unmount` where fusermount3 can
//! provide it, so the mount disappears even if the process is killed; a
//! dead mount that still slips through (a server killed while fusermount3
//! was mounting) is cleared by the next server at that mount point. A
//! mount made by root allows setuid programs and device nodes, as the
//! overlay mount does: the tree is the image's root filesystem.

mod fs;
pub mod index;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use tokio::runtime::Handle;

use crate::chunkcache::{CacheOptions, ChunkCache};
use crate::flist::Flist;
use crate::progress::human_bytes;
use crate::store::Router;
use fs::FlistFs;
use index::Index;

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
}

/// Mounts `flist_path` at `options.mountpoint`, reading chunks through
/// `router`, and serves it until it is unmounted.
pub fn serve(flist_path: &Path, router: Router, options: &MountOptions, rt: Handle) -> Result<()> {
    let started = Instant::now();
    limit_malloc_arenas();
    let mountpoint = &options.mountpoint;
    clear_stale_mount(mountpoint)?;
    if !mountpoint.is_dir() {
        bail!("the mount point {} is not a directory", mountpoint.display());
    }
    let index = {
        let (plan, blocks) = Flist::open(flist_path)?.plan()?;
        Arc::new(Index::build(&plan, &blocks).with_context(|| format!("loading {}", flist_path.display()))?)
    };
    let mut cache_options = options.cache.clone();
    if cache_options.dir.is_none() && !router.is_local() {
        cache_options.dir = Some(options.default_cache_dir.clone());
    }
    let cache = Arc::new(ChunkCache::new(router, &cache_options)?);
    let root = nix::unistd::geteuid().is_root();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("flmount:{}", flist_path.display())),
        MountOption::Subtype("flmount".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    // auto_unmount goes through fusermount3, which needs allow_other (or,
    // for root, fuser's own root-and-owner check on top of it).
    if root {
        // As with the overlay mount: the image's setuid programs and device
        // nodes work, as they would in its container.
        config.mount_options.extend([MountOption::Suid, MountOption::Dev]);
    }
    config.acl = match (options.allow_other, root) {
        (true, _) => SessionACL::All,
        (false, true) => SessionACL::RootAndOwner,
        (false, false) => SessionACL::Owner,
    };
    if config.acl != SessionACL::Owner && which_fusermount() {
        config.mount_options.push(MountOption::AutoUnmount);
    } else {
        tracing::warn!(
            "no auto_unmount (needs fusermount3, and -allow-other when not root): \
             if flmount is killed, run `flmount -umount {}`",
            mountpoint.display()
        );
    }
    config.n_threads = Some(2);
    config.clone_fd = true;

    let signals = {
        let _runtime = rt.enter();
        Signals::new()
    };
    let session = Session::new(
        FlistFs::new(index.clone(), cache.clone(), rt.clone()),
        mountpoint,
        &config,
    )
    .with_context(|| format!("mounting {} at {}", flist_path.display(), mountpoint.display()))?;
    tracing::info!(
        "mounted {} at {} ({} entries, {} of content) in {} ms",
        flist_path.display(),
        mountpoint.display(),
        index.node_count(),
        human_bytes(index.content_bytes),
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
    if options.prefetch {
        rt.spawn(prefetch(index.clone(), cache.clone()));
    }
    session.run().context("serving the FUSE mount")?;
    rt.block_on(cache.flush());
    let stats = &cache.stats;
    tracing::info!(
        "unmounted {}: {} chunks ({}) fetched, {} from the disk cache, {} from memory",
        mountpoint.display(),
        stats.fetched.load(Ordering::Relaxed),
        human_bytes(stats.fetched_bytes.load(Ordering::Relaxed)),
        stats.disk_hits.load(Ordering::Relaxed),
        stats.memory_hits.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Fetches every chunk of the flist into the disk cache, a few at a time.
async fn prefetch(index: Arc<Index>, cache: Arc<ChunkCache>) {
    use futures_util::StreamExt;
    let started = Instant::now();
    let chunks: Vec<_> = index.distinct_chunks().into_iter().cloned().collect();
    let total = chunks.len();
    let Some(limit) = cache.disk_limit() else {
        tracing::info!(
            "-prefetch: the stores are local directories and no -cache was given: nothing to fetch"
        );
        return;
    };
    if index.content_bytes > limit {
        tracing::warn!(
            "-prefetch: the flist holds {} but the cache may keep {}: \
             early chunks will be evicted again",
            human_bytes(index.content_bytes),
            human_bytes(limit)
        );
    }
    let failed = futures_util::stream::iter(chunks)
        .map(|chunk| {
            let cache = cache.clone();
            async move { cache.fill(&chunk).await.is_err() }
        })
        .buffer_unordered(8)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failed > 0 {
        tracing::warn!("prefetch: {failed} of {total} chunks could not be fetched");
    } else {
        tracing::info!(
            "prefetched {total} chunks in {:.1}s",
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

/// Detaches the FUSE mount at `mountpoint`: the mount disappears at once,
/// files still open keep working until closed, and the serving process
/// exits when the last one is. Root unmounts directly; other users go
/// through fusermount3, as the kernel allows only root to unmount.
pub fn unmount(mountpoint: &Path) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(mountpoint)
                .output()
                .context("running fusermount3 -u")?;
            if !out.status.success() {
                bail!(
                    "unmounting {}: {}",
                    mountpoint.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("unmounting {}", mountpoint.display())),
    }
}

/// Whether an flmount FUSE mount is at `mountpoint` (read from
/// /proc/self/mounts, so a mount whose server died still counts).
pub fn is_mounted_at(mountpoint: &Path) -> bool {
    live_mounts().iter().any(|m| m.mountpoint == mountpoint)
}

/// Clears the mount a killed server left at `mountpoint` (fusermount3's
/// auto_unmount can miss it when the server dies while fusermount3 is
/// mounting); refuses a live one. `statfs` tells them apart: it always
/// asks the server (attributes may be answered from the kernel's cache),
/// and a dead mount answers ENOTCONN.
fn clear_stale_mount(mountpoint: &Path) -> Result<()> {
    if !is_mounted_at(mountpoint) {
        return Ok(());
    }
    // A live server that hangs would hang statfs too: ask from a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = mountpoint.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(nix::sys::statfs::statfs(&probe).map(drop));
    });
    let answer = rx.recv_timeout(std::time::Duration::from_secs(5));
    match answer {
        Ok(Err(nix::errno::Errno::ENOTCONN)) => {
            tracing::warn!(
                "{}: unmounting what a killed flmount server left mounted there",
                mountpoint.display()
            );
            unmount(mountpoint)
        }
        Err(_) => bail!(
            "{} is an flmount FUSE mount whose server does not answer; unmount it first (flmount -umount {})",
            mountpoint.display(),
            mountpoint.display()
        ),
        Ok(_) => bail!(
            "{} is already an flmount FUSE mount; unmount it first (flmount -umount {})",
            mountpoint.display(),
            mountpoint.display()
        ),
    }
}

/// An flmount FUSE mount that is up: where, and the flist it serves.
pub struct LiveMount {
    pub mountpoint: PathBuf,
    pub flist: PathBuf,
}

/// The flmount FUSE mounts in /proc/self/mounts (their source is
/// `flmount:<flist>`).
pub fn live_mounts() -> Vec<LiveMount> {
    use std::os::unix::ffi::OsStringExt;
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let path = |field: &str| PathBuf::from(std::ffi::OsString::from_vec(unescape_mount_field(field)));
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (source, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "fuse.flmount").then_some(())?;
            Some(LiveMount {
                mountpoint: path(dir),
                flist: path(source.strip_prefix("flmount:")?),
            })
        })
        .collect()
}

/// /proc/mounts writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(super::unescape_mount_field(r"/run/my\040root"), b"/run/my root");
        assert_eq!(super::unescape_mount_field(r"/a\134b"), b"/a\\b");
        assert_eq!(super::unescape_mount_field("/plain"), b"/plain");
    }
}
