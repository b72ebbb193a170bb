//! Writing an output file (`-saveconfig`, `-lxcconfig`, `-flist`, a
//! bundle's `config.json`) without harming what is at its path:
//!
//! | at the path | what happens |
//! | --- | --- |
//! | nothing, or a regular file | written to a temporary beside it, renamed into place |
//! | a symlink | followed: what it points to is treated by these rules |
//! | a character device, a FIFO, a socket; or `-` | written through (`-` is standard output) |
//! | a directory, or a symlink to nothing | refused |
//!
//! A regular file is replaced only if it is still the file that was
//! checked (device and inode) at the moment of the rename, and a missing
//! path is created only if it is still missing (`RENAME_NOREPLACE`).

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::FileId;

/// Where an output goes.
#[derive(Debug)]
pub enum Destination {
    /// Standard output (`-`).
    Stdout,
    /// A device, FIFO or socket, written through (opened when written).
    Special(PathBuf),
    /// A file to create or replace; `existing` is the regular file there now.
    File { path: PathBuf, existing: Option<FileId> },
}

/// Symlinks followed before giving up (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// Decides where writing `path` goes.
pub fn destination(path: &Path) -> Result<Destination> {
    if path.as_os_str() == "-" {
        return Ok(Destination::Stdout);
    }
    let mut path = path.to_owned();
    for _ in 0..MAX_LINKS {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Destination::File { path, existing: None });
            }
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            trusted_link(&path, &meta)?;
            let target = std::fs::read_link(&path).with_context(|| format!("reading {}", path.display()))?;
            let next = match path.parent() {
                Some(parent) => parent.join(&target),
                None => target,
            };
            if std::fs::symlink_metadata(&next).is_err() {
                // A dangling link: where it leads was never made.
                crate::refuse!(
                    "{} is a symlink to {}, which does not exist; give the path to write",
                    path.display(),
                    next.display()
                );
            }
            path = next;
            continue;
        }
        if kind.is_file() {
            return Ok(Destination::File {
                existing: Some(FileId::from(&meta)),
                path,
            });
        }
        if kind.is_char_device() || kind.is_fifo() || kind.is_socket() {
            return Ok(Destination::Special(path));
        }
        crate::refuse!(
            "{} is a {}; an output is written to a file, a device or a FIFO, never over a {}",
            path.display(),
            describe(&meta),
            describe(&meta)
        );
    }
    crate::refuse!("{}: too many levels of symbolic links", path.display())
}

/// A symlink is followed only if this user or the owner of the directory
/// holding it made it, as the kernel's `protected_symlinks` rule has it:
/// another user's link in a shared directory could lead anywhere.
fn trusted_link(link: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let dir_owner = std::fs::metadata(parent_of(link)).map(|m| m.uid()).ok();
    if meta.uid() == me || Some(meta.uid()) == dir_owner {
        return Ok(());
    }
    crate::refuse!(
        "{} is a symlink made by uid {}, neither this user nor the directory's owner; not following it",
        link.display(),
        meta.uid()
    )
}

fn describe(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Writes `data` to the output `path` (see the module's rules). Regular
/// files are fsynced before they are renamed into place.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    match destination(path)? {
        Destination::Stdout => write_stream(&mut std::io::stdout().lock(), data, path),
        Destination::Special(path) => write_stream(&mut open_special(&path)?, data, &path),
        Destination::File { path, existing } => {
            let mut tmp = temporary_beside(&path)?.into_inner();
            tmp.write_all(data)?;
            tmp.as_file().sync_all()?;
            place(tmp, &path, existing)
        }
    }
}

/// Opens a device, FIFO or socket for writing: the path is the one just
/// checked (never a symlink), and what was opened is checked again.
fn open_special(path: &Path) -> Result<Box<dyn Write>> {
    use std::os::unix::fs::OpenOptionsExt;
    let m = std::fs::symlink_metadata(path).with_context(|| format!("checking {}", path.display()))?;
    if m.file_type().is_socket() {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        return Ok(Box::new(stream));
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let t = file.metadata()?.file_type();
    if !(t.is_char_device() || t.is_fifo()) {
        crate::refuse!("{} changed while it was opened; not writing it", path.display());
    }
    Ok(Box::new(file))
}

fn write_stream(out: &mut dyn Write, data: &[u8], path: &Path) -> Result<()> {
    out.write_all(data)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {}", path.display()))
}

/// A temporary file beside `path` (flmount's prefix), for [`place`].
pub fn temporary_beside(path: &Path) -> Result<super::temp::TempFile> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    super::temp::TempFile::new_in(dir)
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Moves a complete temporary file to an output [`Destination::File`]:
/// over `existing` only if that is still what the path holds, or to a
/// path that is still free.
pub fn place(tmp: tempfile::NamedTempFile, path: &Path, existing: Option<FileId>) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let now = std::fs::symlink_metadata(path).ok();
    // The file keeps the mode and owner it had; a new one gets the mode
    // the umask allows, as a file created in place would.
    match &now {
        Some(m) if m.file_type().is_file() => {
            if nix::unistd::geteuid().is_root() {
                std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()))?;
            }
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        _ => tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o666 & !super::umask()))?,
    }
    match (existing, &now) {
        (Some(id), Some(m)) if m.file_type().is_file() && FileId::from(m) == id => {
            tmp.persist(path)
                .map_err(|e| e.error)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        (None, None) => {
            let tmp = tmp.into_temp_path();
            rename_noreplace(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            // Renamed: nothing left to delete.
            std::mem::forget(tmp);
        }
        _ => crate::refuse!(
            "{} changed while it was being written; not replacing it",
            path.display()
        ),
    }
    sync_dir(parent_of(path))
}

/// Publishes a complete file (`tmp`, anywhere) as the output `path`.
pub fn publish(mut tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    let copy = |out: &mut dyn Write, tmp: &mut tempfile::NamedTempFile| -> Result<()> {
        let f = tmp.as_file_mut();
        f.rewind()?;
        std::io::copy(f, out)
            .and_then(|_| out.flush())
            .map(drop)
            .with_context(|| format!("writing {}", path.display()))
    };
    match destination(path)? {
        Destination::Stdout => copy(&mut std::io::stdout().lock(), &mut tmp),
        Destination::Special(path) => copy(&mut open_special(&path)?, &mut tmp),
        Destination::File { path, existing } => {
            tmp.as_file().sync_all()?;
            if parent_of(&path) == parent_of(tmp.path()) {
                place(tmp, &path, existing)
            } else {
                let mut beside = temporary_beside(&path)?.into_inner();
                let f = tmp.as_file_mut();
                f.rewind()?;
                std::io::copy(f, &mut beside)?;
                beside.as_file().sync_all()?;
                place(beside, &path, existing)
            }
        }
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: NUL-terminated paths; AT_FDCWD resolves them as given.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Replaces the file at `path` (of flmount's own: a workdir file) with
/// `data` through a temporary beside it; `durable` fsyncs the file and the
/// directory. Readers never see a partial file under the final name.
pub fn replace_file(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".flmount-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(data)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_symlinks_followed_directories_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.json");
        write(&file, b"one").unwrap();
        write(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink("out.json", &link).unwrap();
        write(&link, b"three").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"three");

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = write(&sub, b"x").unwrap_err();
        assert!(err.is::<crate::owned::Refused>(), "{err:#}");
        assert!(sub.is_dir());

        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("/nonexistent-flmount-dir/x", &dangling).unwrap();
        assert!(write(&dangling, b"x").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.as_bytes().starts_with(b".flmount-"))
            .collect();
        assert!(left.is_empty(), "temporaries left: {left:?}");
    }

    #[test]
    fn fifos_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write(&fifo, b"through").unwrap();
        assert_eq!(reader.join().unwrap(), b"through");
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    }
}
