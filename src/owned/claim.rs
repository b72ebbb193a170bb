//! Directories flmount keeps its own files in (a chunk cache), claimed
//! with a marker file. A directory is claimed when it is new or empty (or
//! the workdir's own, which flmount made); a non-empty directory without
//! the marker belongs to someone else and is refused. The marker is held
//! with a shared lock while in use, so a user can tell (`fuser`) and so a
//! later version can take it exclusively for maintenance.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// The marker of a chunk cache directory.
pub const CHUNK_CACHE: &str = ".flmount-chunk-cache";
/// The identity object of a store (in a `dir://` store, a file at its root).
pub const STORE_IDENTITY: &str = "flmount-store-id";

/// A directory claimed for one use, its marker held (shared).
#[derive(Debug)]
pub struct Claimed {
    pub path: PathBuf,
    _marker: Flock<File>,
}

/// Claims `dir` for `what` (the marker file `marker` inside says so):
/// created if missing, marked if empty or `adopt` (a directory inside the
/// workdir), refused if it holds anything and no marker.
pub fn claim(dir: &Path, marker: &str, what: &str, adopt: bool) -> Result<Claimed> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !meta.is_dir() {
        crate::refuse!(
            "{} is not a directory; give a directory for the {what}",
            dir.display()
        );
    }
    let path = dir.join(marker);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => crate::refuse!(
            "{} is not flmount's {what} marker; not using {}",
            path.display(),
            dir.display()
        ),
        Err(_) => {
            let empty = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_none();
            if !empty && !adopt {
                crate::refuse!(
                    "{} is not empty and is not an flmount {what} (it has no {marker} file); \
                     give a new or empty directory",
                    dir.display()
                );
            }
            super::temp::write_new_file(dir, marker, format!("flmount {what}\n").as_bytes())
                .with_context(|| format!("marking {} as the {what}", dir.display()))?;
        }
    }
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let lock = Flock::lock(file, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| e)
        .with_context(|| format!("{} is in use by flmount maintenance", dir.display()))?;
    Ok(Claimed {
        path: dir.to_owned(),
        _marker: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_or_marked_directories_are_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        claim(&new, ".flmount-cache", "chunk cache", false).unwrap();
        assert!(new.join(".flmount-cache").is_file());
        // Marked: claimed again, whatever it holds.
        std::fs::write(new.join("x"), b"").unwrap();
        claim(&new, ".flmount-cache", "chunk cache", false).unwrap();

        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("data"), b"mine").unwrap();
        let err = claim(&theirs, ".flmount-cache", "chunk cache", false).unwrap_err();
        assert!(err.is::<crate::owned::Refused>(), "{err:#}");
        assert!(!theirs.join(".flmount-cache").exists());
        claim(&theirs, ".flmount-cache", "chunk cache", true).unwrap();
    }
}
