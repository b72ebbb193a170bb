//! Taking a FUSE mount down when its server dies, where fusermount3's
//! `auto_unmount` cannot (it needs `allow_other`, which would let every
//! user past the kernel's access check).
//!
//! The server starts a small watcher process (flmount itself, told by
//! [`WATCH_ENV`]) in its own process group, holding the read end of a pipe
//! whose write end only the server has. When the server ends, however it
//! ends, the watcher reads end-of-file; if the mount at the mount point is
//! still the one it was given (flmount's type, the same device) and dead,
//! it detaches it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::owned::mounts;

/// Set (to the mount point) in the environment of a watcher process.
pub const WATCH_ENV: &str = "FLMOUNT_WATCH_MOUNT";
const DEV_ENV: &str = "FLMOUNT_WATCH_DEV";

/// The server's side: dropping it (or dying) wakes the watcher.
pub struct Watcher {
    _pipe: std::os::fd::OwnedFd,
    child: std::process::Child,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // The pipe closes after this; the watcher finds the mount gone
        // (unmounted before the server returns) and exits.
        let _ = self.child.try_wait();
    }
}

/// Starts a watcher for the flmount FUSE mount just made at `mountpoint`
/// (a canonical path: it is not resolved again, as asking the mount
/// before it serves would wait forever).
pub fn spawn(mountpoint: &Path) -> Result<Watcher> {
    let point = mountpoint.to_owned();
    // The server does not answer yet (it serves once this returns): the
    // mount table, not stat, gives the device.
    let dev = mounts::table()?
        .into_iter()
        .rfind(|m| m.mount_point == point && m.fstype == mounts::FUSE_TYPE)
        .map(|m| m.dev)
        .context("the new mount is not in the mount table")?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating a pipe")?;
    let exe = std::env::current_exe().context("finding flmount's own executable")?;
    let child = Command::new(exe)
        .arg0("flmount-watch")
        .arg(&point)
        .env(WATCH_ENV, &point)
        .env(DEV_ENV, dev.to_string())
        .stdin(Stdio::from(read))
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting the unmount watcher")?;
    Ok(Watcher { _pipe: write, child })
}

/// The watcher process: waits for the server to end, then detaches the
/// mount if it is still the server's and dead. Returns the exit code.
pub fn run(mountpoint: PathBuf) -> u8 {
    use std::io::Read;
    let Some(dev) = std::env::var(DEV_ENV).ok().and_then(|d| d.parse::<u64>().ok()) else {
        return 2;
    };
    let mut buf = [0u8; 64];
    while !matches!(std::io::stdin().read(&mut buf), Ok(0) | Err(_)) {}
    // The pipe may close a moment before the server's last /dev/fuse
    // descriptor does: until then the mount still looks alive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ours = mounts::table()
            .unwrap_or_default()
            .into_iter()
            .any(|m| m.mount_point == mountpoint && m.fstype == mounts::FUSE_TYPE && m.dev == dev);
        if !ours {
            return 0; // unmounted by its server, or someone else's now
        }
        if super::health(&mountpoint) == super::Health::Dead {
            return if detach(&mountpoint) { 0 } else { 1 };
        }
        if std::time::Instant::now() > deadline {
            eprintln!(
                "flmount: {} still answers after its server ended; leaving it mounted",
                mountpoint.display()
            );
            return 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn detach(mountpoint: &Path) -> bool {
    let flags = nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
    let detached = match nix::mount::umount2(mountpoint, flags) {
        Err(nix::errno::Errno::EPERM) => Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(mountpoint)
            .status()
            .is_ok_and(|s| s.success()),
        other => other.is_ok(),
    };
    if !detached {
        eprintln!(
            "flmount: could not unmount {} after its server died",
            mountpoint.display()
        );
    }
    detached
}
