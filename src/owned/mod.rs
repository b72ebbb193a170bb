//! Ownership: the one place that destroys things. Every unmount, every
//! removal of a staging tree or temporary file, every output written over
//! a path and every directory flmount claims as its own (a chunk cache)
//! goes through here, with proof that flmount made the thing:
//!
//! - **mounts** ([`mounts`]): a mount is unmounted only if the mount table
//!   shows flmount's own type (`fuse.flmount`) or an overlay whose device
//!   and upper directory match the record flmount wrote when it mounted it;
//!   identities are compared by device and inode, never by spelled path;
//! - **outputs** ([`output`]): a regular file or a missing path is replaced
//!   atomically, a symlink is followed, a character device or FIFO (and
//!   `-`, standard output) is written through, a directory is refused;
//! - **temporaries** ([`temp`]): staging trees carry flmount's prefix, the
//!   creator's process id and a lock held for their life; only those no
//!   live process holds are ever removed by a later run;
//! - **claimed directories** ([`claim`]): a directory flmount keeps files
//!   in (a chunk cache) carries a marker; a non-empty unmarked directory is
//!   refused, and only names flmount writes are ever deleted in it;
//! - **interruption** ([`signals`]): SIGINT, SIGTERM and SIGHUP make the work
//!   stop and remove its temporaries before the process exits.

pub mod claim;
pub mod mounts;
pub mod output;
pub mod signals;
pub mod temp;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of `path` itself (a symlink is not followed).
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        std::fs::symlink_metadata(path).map(|m| FileId::from(&m))
    }

    /// The identity of what `path` names, symlinks followed.
    pub fn following(path: &Path) -> std::io::Result<FileId> {
        std::fs::metadata(path).map(|m| FileId::from(&m))
    }
}

impl From<&std::fs::Metadata> for FileId {
    fn from(m: &std::fs::Metadata) -> Self {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// Removes the file or tree at `path` if it still is `id`.
pub fn remove_if_same(path: &Path, id: FileId) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if FileId::from(&meta) != id {
        return;
    }
    // std's remove_dir_all never follows symlinks (CVE-2022-21658).
    let removed = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = removed {
        tracing::warn!("removing {}: {e}", path.display());
    }
}

/// The process's umask (read once, without changing it).
pub fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

/// flmount refused to touch something it did not make (exit code 8).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Fails with [`Refused`].
#[macro_export]
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::owned::Refused(format!($($arg)*))))
    };
}
