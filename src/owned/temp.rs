//! Temporaries: staging trees and files that become something else when
//! complete, and are removed when they do not.
//!
//! A staging directory is named `.<name>.flmount-<pid>-<random>` beside
//! what it becomes, and its creator holds an exclusive `flock` on it for
//! its whole life. It is removed when dropped (work failed or was
//! interrupted), and registered with [`super::signals`] meanwhile so a
//! signal removes it too. A later run removes one left by a killed process
//! only when no process holds its lock and the process named in it is gone
//! ([`remove_stale`]); the identity (device, inode) checked before removal
//! is the one that was locked.
//!
//! Files that are complete or absent, never partial (chunks in a `dir://`
//! store or a cache), are written with [`write_new_file`]: an unnamed
//! `O_TMPFILE` linked into place, so a killed writer leaves nothing.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

use super::FileId;

/// What every temporary name flmount makes carries.
pub const PREFIX: &str = ".flmount-";

/// A staging directory: removed on drop unless [`Staging::persist`]ed.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    id: FileId,
    _lock: Flock<File>,
    kept: bool,
}

impl Staging {
    /// Creates `.<name>.flmount-<pid>-<random>` in `parent` and locks it.
    pub fn new_in(parent: &Path, name: &str) -> Result<Staging> {
        // A signal between making the directory and registering it would
        // exit with it left behind: it waits until it is registered.
        let _creating = super::signals::critical();
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}{PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)
            .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
        let path = dir.keep();
        let locked = File::open(&path)
            .map_err(anyhow::Error::from)
            .and_then(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into()))
            .and_then(|lock| Ok((FileId::following(&path)?, lock)));
        let (id, lock) = match locked {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(e.context(format!("locking {}", path.display())));
            }
        };
        super::signals::register(&path, id);
        Ok(Staging {
            path,
            id,
            _lock: lock,
            kept: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staging directory to `target` (a missing path or an
    /// empty directory); it is no longer a temporary.
    pub fn persist(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Removed before it is unregistered: a signal's watcher exits the
        // process once nothing is registered.
        if !self.kept {
            super::remove_if_same(&self.path, self.id);
        }
        super::signals::unregister(&self.path);
    }
}

/// A temporary file, registered for removal on a signal while it lives.
pub struct TempFile {
    file: Option<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl TempFile {
    /// A new temporary file with flmount's prefix in `dir`.
    /// Named `.flmount-<pid>-<random>` and locked while it lives, so a
    /// later run can tell one a killed flmount left, and removes those.
    pub fn new_in(dir: &Path) -> Result<TempFile> {
        remove_stale_prefixed(dir, PREFIX);
        // As for a staging directory: registered before a signal exits.
        let _creating = super::signals::critical();
        let file = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an fd this process owns.
        if unsafe { libc::flock(file.as_file().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking a temporary file");
        }
        let path = file.path().to_owned();
        super::signals::register(&path, FileId::of(&path)?);
        Ok(TempFile {
            file: Some(file),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, no longer registered (the caller places or drops it).
    pub fn into_inner(mut self) -> tempfile::NamedTempFile {
        self.file.take().expect("present until taken")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Removed (if not taken) before it is unregistered, as for Staging.
        drop(self.file.take());
        super::signals::unregister(&self.path);
    }
}

/// Removes the staging directories of `name` in `parent` (as [`Staging`]
/// names them) that a killed flmount left: no process holds their lock
/// and the process that made them is gone. Returns how many.
pub fn remove_stale(parent: &Path, name: &str) -> usize {
    remove_stale_prefixed(parent, &format!(".{name}{PREFIX}"))
}

/// Removes what a killed flmount left in `parent` under `prefix` followed
/// by `<pid>-`: staging directories and temporary files whose process is
/// gone and whose lock nobody holds.
fn remove_stale_prefixed(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if remove_unheld(&path, pid) {
            tracing::info!("removed {}, left by an interrupted flmount", path.display());
            removed += 1;
        }
    }
    removed
}

/// Removes the staging directory or temporary file `path` made by process
/// `pid` if that process is gone and nobody holds its lock.
fn remove_unheld(path: &Path, pid: i32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !(meta.is_dir() || meta.is_file()) || process_alive(pid) {
        return false;
    }
    let Ok(file) = File::open(path) else { return false };
    let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return false;
    };
    super::remove_if_same(path, FileId::from(&meta));
    !path.exists()
}

fn process_alive(pid: i32) -> bool {
    pid == std::process::id() as i32 || Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes a file that must be whole or absent: an unnamed temporary file
/// in `dir` (`O_TMPFILE`), linked as `name` once written. A name already
/// there is kept (the content is addressed by its name). `dir` itself is
/// never a symlink (a planted one would lead the write elsewhere). Where
/// the filesystem has no `O_TMPFILE`, a prefixed temporary is linked into
/// place the same way.
pub fn write_new_file(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let dirfd = open_dir_nofollow(dir)?;
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd >= 0 {
        // SAFETY: a new fd owned from here on.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(data)?;
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        // SAFETY: NUL-terminated paths; AT_SYMLINK_FOLLOW links the open
        // file's inode through its /proc name.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                dirfd.as_raw_fd(),
                cname.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        return exists_is_ok(rc);
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)) {
        return Err(e);
    }
    let mut tmp = tempfile::Builder::new().prefix(PREFIX).tempfile_in(dir)?;
    tmp.write_all(data)?;
    let tmp_name =
        std::ffi::CString::new(tmp.path().file_name().unwrap().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated names relative to a valid directory fd.
    let rc = unsafe {
        libc::linkat(
            dirfd.as_raw_fd(),
            tmp_name.as_ptr(),
            dirfd.as_raw_fd(),
            cname.as_ptr(),
            0,
        )
    };
    exists_is_ok(rc)
}

fn exists_is_ok(rc: libc::c_int) -> std::io::Result<()> {
    let e = std::io::Error::last_os_error();
    match rc {
        0 => Ok(()),
        _ if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        _ => Err(e),
    }
}

/// Opens a directory that is not a symlink.
fn open_dir_nofollow(dir: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map(Into::into)
}

/// Removes the file `name` from `dir`, `dir` not being a symlink.
pub fn remove_in(dir: &Path, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dirfd = open_dir_nofollow(dir)?;
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    if unsafe { libc::unlinkat(dirfd.as_raw_fd(), cname.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The name a staging directory of `name` would start with (for tests and
/// listings).
pub fn staging_prefix(name: &str) -> OsString {
    OsString::from_vec(format!(".{name}{PREFIX}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_removed_unless_persisted_and_stale_ones_only_when_unheld() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staging::new_in(dir.path(), "t").unwrap();
        std::fs::write(s.path().join("f"), b"x").unwrap();
        let path = s.path().to_owned();
        // Held by this (live) process: not stale.
        assert_eq!(remove_stale(dir.path(), "t"), 0);
        drop(s);
        assert!(!path.exists());

        let s = Staging::new_in(dir.path(), "t").unwrap();
        s.persist(&dir.path().join("t")).unwrap();
        assert!(dir.path().join("t").is_dir());

        // Left by a process that is gone (pid far beyond pid_max).
        let stale = dir.path().join(".t.flmount-999999999-abc");
        std::fs::create_dir_all(stale.join("sub")).unwrap();
        let other = dir.path().join(".u.flmount-999999999-abc");
        std::fs::create_dir(&other).unwrap();
        assert_eq!(remove_stale(dir.path(), "t"), 1);
        assert!(!stale.exists());
        assert!(other.exists(), "another name's staging was removed");
    }

    #[test]
    fn temporary_files_left_by_a_dead_process_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".flmount-999999999-abc");
        std::fs::write(&dead, b"left by a kill").unwrap();
        let live = TempFile::new_in(dir.path()).unwrap();
        assert!(!dead.exists(), "a dead process's temporary was kept");
        // Another temporary in the same directory: the live one is locked.
        let _second = TempFile::new_in(dir.path()).unwrap();
        assert!(live.path().exists(), "a live temporary was removed");
        let theirs = dir.path().join(".flmount-notes");
        std::fs::write(&theirs, b"not ours").unwrap();
        let _third = TempFile::new_in(dir.path()).unwrap();
        assert!(theirs.exists());
    }

    #[test]
    fn new_files_are_whole_and_existing_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_new_file(dir.path(), "a", b"one").unwrap();
        write_new_file(dir.path(), "a", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
