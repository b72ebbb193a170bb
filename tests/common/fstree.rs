//! Directory trees on disk: unpacked with GNU tar ([`untar`]), their files
//! and bytes, and an independent description for comparing two
//! extractions (flmount vs umoci, overlay mount vs flat directory): type,
//! mode, owner, size, content digest, link target, device numbers, xattrs,
//! hard-link groups and mtimes of every entry.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use super::run::run_ok;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: String,
    pub rdev: (u64, u64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) of the entry's hard-link group.
    pub link_group: String,
    pub mtime: (i64, i64),
}

/// What to leave out of a comparison.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// Directory mtimes (they change when a mount point or an overlay is involved).
    pub dir_mtimes: bool,
    /// xattrs whose names start with one of these.
    pub xattr_prefixes: Vec<&'static str>,
}

pub type Listing = BTreeMap<String, Info>;

/// Describes every entry below `root` (the root itself as `/`).
pub fn describe(root: &Path) -> Listing {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut paths = Vec::new();
    walk(root, root, &mut paths);
    paths.sort();
    for (rel, full) in paths {
        let md = std::fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let content = match kind {
            "file" => hex::encode(sha2::Sha256::digest(std::fs::read(&full).unwrap())),
            "symlink" => String::from_utf8_lossy(std::fs::read_link(&full).unwrap().as_os_str().as_bytes())
                .into_owned(),
            _ => String::new(),
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(&full) {
            for name in names {
                let value = xattr::get(&full, &name).ok().flatten().unwrap_or_default();
                xattrs.insert(name.to_string_lossy().into_owned(), value);
            }
        }
        let link_group = if kind == "dir" {
            rel.clone()
        } else {
            inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        };
        let rdev = md.rdev();
        out.insert(
            rel.clone(),
            Info {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == "dir" { 0 } else { md.size() },
                content,
                rdev: if kind == "char" || kind == "block" {
                    (libc::major(rdev) as u64, libc::minor(rdev) as u64)
                } else {
                    (0, 0)
                },
                xattrs,
                link_group,
                mtime: (md.mtime(), md.mtime_nsec()),
            },
        );
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let rel = dir.strip_prefix(root).unwrap();
    let name = format!("/{}", String::from_utf8_lossy(rel.as_os_str().as_bytes()));
    out.push((name, dir.to_owned()));
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        } else {
            let rel = p.strip_prefix(root).unwrap();
            out.push((
                format!("/{}", String::from_utf8_lossy(rel.as_os_str().as_bytes())),
                p,
            ));
        }
    }
}

/// Every difference between two listings, one line each.
pub fn differences(a: &Listing, b: &Listing, ignore: &Ignore) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, x) in a {
        let Some(y) = b.get(path) else {
            diffs.push(format!("{path}: only in the first ({})", x.kind));
            continue;
        };
        let clean = |i: &Info| {
            let mut i = i.clone();
            i.xattrs
                .retain(|k, _| !ignore.xattr_prefixes.iter().any(|p| k.starts_with(p)));
            if ignore.dir_mtimes && i.kind == "dir" {
                i.mtime = (0, 0);
            }
            i
        };
        let (x, y) = (clean(x), clean(y));
        if x != y {
            diffs.push(format!("{path}:\n   first:  {x:?}\n   second: {y:?}"));
        }
    }
    for (path, y) in b {
        if !a.contains_key(path) {
            diffs.push(format!("{path}: only in the second ({})", y.kind));
        }
    }
    diffs
}

/// Asserts two trees are equal, entry by entry.
pub fn assert_same_tree(first: &Path, second: &Path, ignore: &Ignore) {
    let (a, b) = (describe(first), describe(second));
    let diffs = differences(&a, &b, ignore);
    assert!(
        diffs.is_empty(),
        "{} differs from {} in {} of {} entries:\n{}",
        first.display(),
        second.display(),
        diffs.len(),
        a.len().max(b.len()),
        diffs.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Unpacks a tar file with GNU tar, keeping owners, modes and xattrs.
pub fn untar(tarball: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    run_ok(
        Command::new("tar")
            .args(["-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(dest)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"]),
    );
}

/// Every non-directory entry below `dir` (symlinks not followed); none
/// when `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The largest entry directly in `dir` (in a blob directory: a layer).
pub fn largest_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap()
}

/// The bytes of the regular files below `dir`.
pub fn bytes_under(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
