//! The mount table, and unmounting with proof.
//!
//! A mount is found by the canonical path of its mount point (the parent
//! resolved, so a dead FUSE mount, which fails every lookup, is still
//! found) and confirmed by its device: the entry of `/proc/self/mountinfo`
//! whose mount point and device number are those `path` shows. Nothing is
//! unmounted unless that entry is flmount's by the [`Proof`] given.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::FileId;

/// The type flmount's FUSE mounts show in the mount table.
pub const FUSE_TYPE: &str = "fuse.flmount";

/// One entry of `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountEntry {
    /// The mount's id (unique among mounts that exist).
    pub id: u64,
    /// The device number of the mounted filesystem (`st_dev` below it).
    pub dev: u64,
    /// Which directory of the filesystem is mounted here (`/` unless a
    /// bind mount of a subdirectory).
    pub root: Vec<u8>,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: Vec<u8>,
    /// The filesystem's own options (unescaped).
    pub super_options: Vec<u8>,
}

impl MountEntry {
    /// The value of a filesystem option (`upperdir=...`), with the
    /// backslash escapes of mount options removed.
    pub fn option(&self, key: &str) -> Option<Vec<u8>> {
        split_options(&self.super_options)
            .into_iter()
            .find_map(|o| o.strip_prefix(format!("{key}=").as_bytes()).map(unescape_option))
    }
}

/// Every mount this process sees.
pub fn table() -> Result<Vec<MountEntry>> {
    let text = std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text.split(|&b| b == b'\n').filter_map(parse_line).collect())
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    let (major, minor) = std::str::from_utf8(fields.get(2)?).ok()?.split_once(':')?;
    let dev = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
    Some(MountEntry {
        id: std::str::from_utf8(fields.first()?).ok()?.parse().ok()?,
        dev,
        root: unescape_octal(fields.get(3)?),
        mount_point: PathBuf::from(OsString::from_vec(unescape_octal(fields.get(4)?))),
        fstype: String::from_utf8_lossy(&unescape_octal(fields.get(sep + 1)?)).into_owned(),
        source: unescape_octal(fields.get(sep + 2)?),
        super_options: unescape_octal(fields.get(sep + 3)?),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo`.
pub fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Splits mount options on the commas that no backslash escapes.
fn split_options(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < s.len() {
        match s[i] {
            b'\\' => i += 1,
            b',' => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

fn unescape_option(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&b) = it.next() {
        out.push(if b == b'\\' {
            *it.next().unwrap_or(&b'\\')
        } else {
            b
        });
    }
    out
}

/// A path for a mount option: backslash, comma and colon escaped, as
/// overlayfs and fusermount3 read them.
pub fn escape_option(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The canonical path of a mount point: its parent resolved (symlinks,
/// `..`), its own name kept, so that a mount whose server is dead (every
/// lookup of it fails) is still named as the mount table names it.
pub fn canonical(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) if !matches!(name.as_bytes(), b"." | b"..") => {
            let parent =
                std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
            let joined = parent.join(name);
            // A mount point is never a symlink, and is not asked (a FUSE
            // server may be dead, hung, or this very process, not yet
            // serving).
            if table()?.iter().any(|m| m.mount_point == joined) {
                return Ok(joined);
            }
            // A symlink as the last component: where it leads.
            match std::fs::symlink_metadata(&joined) {
                Ok(m) if m.file_type().is_symlink() => {
                    std::fs::canonicalize(&joined).with_context(|| format!("resolving {}", joined.display()))
                }
                _ => Ok(joined),
            }
        }
        _ => std::fs::canonicalize(&absolute).with_context(|| format!("resolving {}", path.display())),
    }
}

/// The mount whose root is at `path`, if any: the top-most entry with that
/// mount point, confirmed by the device `path` shows (when it can be
/// asked: a dead FUSE mount answers nothing).
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    // A path whose parent does not exist is no mount point.
    if path
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        return Ok(None);
    }
    let point = canonical(path)?;
    let entries: Vec<MountEntry> = table()?.into_iter().filter(|m| m.mount_point == point).collect();
    let Some(top) = entries.last() else {
        return Ok(None);
    };
    // A FUSE mount is not asked: its server may be dead or hung.
    if top.fstype.starts_with("fuse") {
        return Ok(Some(top.clone()));
    }
    match std::fs::metadata(&point) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            Ok(entries.iter().rev().find(|e| e.dev == m.dev()).cloned())
        }
        Err(e) => Err(e).with_context(|| format!("checking {}", point.display())),
    }
}

/// What makes a mount flmount's to unmount.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A FUSE mount that flmount served: type `fuse.flmount`, source
    /// `flmount...`, the filesystem's root (not a bind of a part of it).
    Fuse,
    /// An overlay flmount mounted: the mount's id (when recorded), the
    /// device it got and its upper directory, as recorded right after
    /// mounting.
    Overlay {
        id: Option<u64>,
        dev: u64,
        upper: FileId,
    },
}

/// Whether `entry` is the mount `proof` describes.
pub fn proves(entry: &MountEntry, proof: &Proof) -> bool {
    match proof {
        Proof::Fuse => {
            entry.fstype == FUSE_TYPE && entry.root == b"/" && entry.source.starts_with(b"flmount")
        }
        Proof::Overlay { id, dev, upper } => {
            entry.fstype == "overlay"
                && id.is_none_or(|id| id == entry.id)
                && entry.dev == *dev
                && entry
                    .option("upperdir")
                    .and_then(|u| FileId::following(Path::new(&OsString::from_vec(u))).ok())
                    == Some(*upper)
        }
    }
}

/// Unmounts the mount at `path` if it is the one `proof` describes; with
/// `detach`, lazily (open files keep working until closed). Anything else
/// mounted there is left alone and refused.
pub fn unmount(path: &Path, proof: &Proof, detach: bool) -> Result<()> {
    let point = canonical(path)?;
    let Some(entry) = mount_at(&point)? else {
        bail!("{} is not a mount point", point.display());
    };
    if !proves(&entry, proof) {
        crate::refuse!(
            "{} is a {} mount that flmount did not make; leaving it mounted",
            point.display(),
            entry.fstype
        );
    }
    // Bound elsewhere too (or onto itself): unmounting here would pull the
    // filesystem from under those mounts' users, and its state with it.
    let others: Vec<String> = table()?
        .into_iter()
        .filter(|m| m.dev == entry.dev && m.id != entry.id)
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if !others.is_empty() {
        crate::refuse!(
            "{} is also mounted at {}; unmount those first",
            point.display(),
            others.join(", ")
        );
    }
    use nix::mount::{umount2, MntFlags};
    let mut flags = MntFlags::UMOUNT_NOFOLLOW;
    if detach {
        flags |= MntFlags::MNT_DETACH;
    }
    match umount2(&point, flags) {
        Ok(()) => Ok(()),
        // The kernel lets only root unmount; a user's own FUSE mount goes
        // through fusermount3, which checks it is theirs.
        Err(nix::errno::Errno::EPERM) if matches!(proof, Proof::Fuse) => {
            let out = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&point)
                .output()
                .context("running fusermount3 -u")?;
            if !out.status.success() {
                bail!(
                    "unmounting {}: {}",
                    point.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
        Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("unmounting {}", point.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let line = br"47 27 0:40 / /run/my\040root rw,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/x/a\134\054b/u,workdir=/w";
        let m = parse_line(line).unwrap();
        assert_eq!((m.id, m.root.as_slice()), (47, &b"/"[..]));
        assert_eq!(m.dev, libc::makedev(0, 40));
        assert_eq!(m.mount_point, Path::new("/run/my root"));
        assert_eq!(m.fstype, "overlay");
        assert_eq!(m.option("upperdir").unwrap(), b"/x/a,b/u");
        assert_eq!(m.option("lowerdir").unwrap(), b"l/A:l/B");
        assert_eq!(m.option("workdir").unwrap(), b"/w");
        let fuse = b"50 27 0:52 / /mnt rw,nosuid - fuse.flmount flmount ro,user_id=0";
        assert_eq!(parse_line(fuse).unwrap().fstype, FUSE_TYPE);
    }

    #[test]
    fn option_paths_are_escaped() {
        assert_eq!(escape_option(Path::new(r"/a,b:c\d")), br"/a\,b\:c\\d");
        assert_eq!(
            unescape_option(&escape_option(Path::new(r"/a,b:c\d"))),
            br"/a,b:c\d"
        );
    }

    #[test]
    fn mount_points_resolve_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("m")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let canon = std::fs::canonicalize(&real).unwrap().join("m");
        assert_eq!(canonical(&dir.path().join("link/m")).unwrap(), canon);
        assert_eq!(canonical(&dir.path().join("link/m/../m")).unwrap(), canon);
        assert!(mount_at(&real.join("m")).unwrap().is_none());
    }
}
