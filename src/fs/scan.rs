//! A directory tree on disk as a [`Plan`] (for `flmount pack DIR`), and
//! the content source that reads its files back.
//!
//! The scan never follows symlinks; hard links (same device and inode) become
//! one inode with several names; sockets are skipped with a warning. Files
//! are opened for reading with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! so a tree changed under the scan cannot lead the packer outside it, and a
//! file whose size changed between scan and read is an error.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use crate::fs::content::ContentSource;
use crate::fs::layer::{Meta, Timestamp, Xattr};
use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Plan, PlanDir, PlanInode, Source};

fn meta_of(path: &Path, md: &std::fs::Metadata) -> Meta {
    let mut xattrs: Vec<Xattr> = Vec::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(value)) = xattr::get(path, &name) {
                xattrs.push((name.as_bytes().into(), value.into()));
            }
        }
    }
    Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: Timestamp {
            sec: md.mtime(),
            nsec: md.mtime_nsec() as u32,
        },
        xattrs,
    }
}

/// Describes the tree below `root`.
pub fn scan(root: &Path) -> Result<Plan> {
    let md = std::fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !md.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut plan = Plan::default();
    plan.dirs.push(PlanDir {
        path: Vec::new(),
        meta: meta_of(root, &md),
        implicit: false,
        opaque: false,
    });
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![(root.to_owned(), Vec::<u8>::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let path = e.path();
            let md =
                std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(e.file_name().as_bytes());
            let ft = md.file_type();
            let meta = meta_of(&path, &md);
            let rdev = || (libc::major(md.rdev()), libc::minor(md.rdev()));
            let kind = if ft.is_dir() {
                plan.dirs.push(PlanDir {
                    path: child.clone(),
                    meta,
                    implicit: false,
                    opaque: false,
                });
                stack.push((path, child));
                continue;
            } else if ft.is_file() {
                InodeKind::File {
                    size: md.len(),
                    source: (md.len() > 0).then_some(Source::Disk),
                }
            } else if ft.is_symlink() {
                InodeKind::Special(Special::Symlink {
                    target: std::fs::read_link(&path)?.as_os_str().as_bytes().into(),
                })
            } else if ft.is_char_device() {
                let (major, minor) = rdev();
                InodeKind::Special(Special::CharDev { major, minor })
            } else if ft.is_block_device() {
                let (major, minor) = rdev();
                InodeKind::Special(Special::BlockDev { major, minor })
            } else if ft.is_fifo() {
                InodeKind::Special(Special::Fifo)
            } else {
                tracing::warn!("skipping socket {}", path.display());
                continue;
            };
            if md.nlink() > 1 {
                if let Some(&i) = links.get(&(md.dev(), md.ino())) {
                    plan.inodes[i].paths.push(child);
                    continue;
                }
                links.insert((md.dev(), md.ino()), plan.inodes.len());
            }
            plan.inodes.push(PlanInode {
                paths: vec![child],
                kind,
                meta,
            });
        }
    }
    plan.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(plan)
}

/// Content of a scanned tree's files, read from disk below `root`.
pub struct DiskContent {
    pub root: PathBuf,
    pub threads: usize,
}

impl ContentSource for DiskContent {
    fn deliver(&self, plan: &Plan, sink: &(dyn Fn(usize, &mut dyn Read) -> Result<()> + Sync)) -> Result<()> {
        let root =
            std::fs::File::open(&self.root).with_context(|| format!("opening {}", self.root.display()))?;
        let files: Vec<usize> = (0..plan.inodes.len())
            .filter(|&i| {
                matches!(
                    plan.inodes[i].kind,
                    InodeKind::File {
                        source: Some(Source::Disk),
                        ..
                    }
                )
            })
            .collect();
        crate::fs::threads::for_each_parallel(&files, self.threads, |&i| {
            let inode = &plan.inodes[i];
            let InodeKind::File { size, .. } = inode.kind else {
                return Ok(());
            };
            let rel = std::ffi::OsStr::from_bytes(&inode.paths[0]);
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            let fd = nix::fcntl::openat2(&root, rel, how)
                .with_context(|| format!("opening {}", Path::new(rel).display()))?;
            let file = std::fs::File::from(fd);
            if file.metadata()?.len() != size {
                bail!("{} changed while it was being packed", Path::new(rel).display());
            }
            sink(i, &mut file.take(size))
        })
    }
}
