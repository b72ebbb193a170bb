//! Start-up traces: which chunks a real start of the image reads, in order,
//! kept in the flist (its `fl_trace` table, which rfs ignores) so that every
//! later mount, on any machine, fetches them first and in parallel (as
//! nydus and eStargz prefetch a recorded file list).
//!
//! `flmount flist trace F -- CMD...` records one: it serves F through FUSE
//! at a private mount point (a child `flmount -flist F -mount DIR
//! -record-trace FILE`), runs CMD with every `{}` replaced by that mount
//! point (e.g. `chroot {} python3 -c pass`), unmounts, and writes the
//! chunks the reads asked for into F, each once, in the order first read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::format::Flist;
use crate::progress::human_bytes;

/// What `flist trace` needs to serve the flist as a mount would.
pub struct TraceOptions {
    pub workdir: PathBuf,
    /// `-store` arguments, passed on as given.
    pub stores: Vec<String>,
    pub cache: Option<PathBuf>,
    /// The command; `{}` stands for the mount point.
    pub command: Vec<String>,
    /// Flags for the mount as given (`-timeout`, `-cache-size`,
    /// `-cache-store`).
    pub forward: Vec<String>,
}

/// `flmount flist trace F -- CMD...`: records CMD's reads into F's trace.
/// Returns the number of chunks and their bytes.
pub fn record(flist: &Path, options: &TraceOptions) -> Result<(usize, u64)> {
    let Some(program) = options.command.first() else {
        bail!("flist trace needs a command after --, e.g. flist trace F -- chroot {{}} python3 -c pass");
    };
    // Opened for writing first: a file flmount cannot edit fails now, not
    // after the command ran.
    let mut fl = Flist::open_rw(flist)?;
    let rows = super::rows::Rows::open(flist)?;
    let private = Private::new()?;
    let mountpoint = private.dir.join("mnt");
    let trace_file = private.dir.join("trace");
    std::fs::create_dir(&mountpoint)?;
    let mut server = Server(
        Command::new(std::env::current_exe().context("finding flmount's own binary")?)
            .arg("-workdir")
            .arg(&options.workdir)
            .arg("-flist")
            .arg(flist)
            .arg("-mount")
            .arg(&mountpoint)
            .arg("-record-trace")
            .arg(&trace_file)
            .args(options.stores.iter().flat_map(|s| ["-store", s.as_str()]))
            .args(
                options
                    .cache
                    .iter()
                    .flat_map(|c| [Path::new("-cache"), c.as_path()]),
            )
            .spawn()
            .context("starting the mount to trace")?,
    );
    server.wait_mounted(&mountpoint)?;
    let mnt = mountpoint.to_string_lossy();
    let args: Vec<String> = options.command[1..]
        .iter()
        .map(|a| a.replace("{}", &mnt))
        .collect();
    let program = program.replace("{}", &mnt);
    tracing::info!("tracing `{program} {}`", args.join(" "));
    let status = Command::new(&program)
        .args(&args)
        .env("FLMOUNT_MOUNT", &mountpoint)
        .status()
        .with_context(|| format!("running {program}"));
    server.stop(&mountpoint)?;
    let status = status?;
    if !status.success() {
        tracing::warn!("{program} exited with {status}: its reads are recorded all the same");
    }
    let mut trace = super::fuse::recorder::load(&trace_file)?;
    let sizes = rows.chunk_sizes(&trace.iter().map(|c| c.key).collect())?;
    trace.retain(|c| sizes.contains_key(&c.key));
    fl.set_trace(&trace)?;
    let total = trace.iter().map(|c| sizes[&c.key]).sum();
    tracing::info!(
        "{}: a trace of {} chunks ({}) recorded",
        flist.display(),
        trace.len(),
        human_bytes(total)
    );
    Ok((trace.len(), total))
}

/// A private directory (0700, named `.flmount-trace-*`) for the mount
/// point and the trace file; removed entry by entry, never recursively
/// (the mount point may still be one), and only while the path is still
/// the directory made here (by device and inode).
struct Private {
    dir: PathBuf,
    id: crate::owned::FileId,
}

impl Private {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(".flmount-trace-")
            .tempdir()
            .context("making a private mount point")?
            .keep();
        let id = crate::owned::FileId::of(&dir)?;
        Ok(Private { dir, id })
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        if crate::owned::FileId::of(&self.dir).ok() != Some(self.id) {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join("trace"));
        let _ = std::fs::remove_dir(self.dir.join("mnt"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The child serving the traced mount; stopped (and its mount gone) when
/// dropped, even if recording fails.
struct Server(Child);

impl Server {
    fn wait_mounted(&mut self, mountpoint: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !super::fuse::is_mounted_at(mountpoint) {
            if let Some(status) = self.0.try_wait()? {
                bail!("the mount to trace ended before it was up ({status})");
            }
            if Instant::now() > deadline {
                bail!("the mount to trace was not up after 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// SIGTERM: the server unmounts, saves the trace and exits.
    fn stop(&mut self, mountpoint: &Path) -> Result<()> {
        if self.0.try_wait()?.is_none() {
            terminate(&self.0);
        }
        let status = self.0.wait()?;
        if super::fuse::is_mounted_at(mountpoint) {
            super::fuse::unmount(mountpoint)?;
        }
        if !status.success() {
            bail!("the traced mount's server failed ({status})");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            terminate(&self.0);
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGTERM to the child (it unmounts and exits).
fn terminate(child: &Child) {
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}
