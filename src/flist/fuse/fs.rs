//! The FUSE filesystem over a mounted flist: metadata requests are answered
//! from the [`Index`] (the flist's rows, read a directory at a time and
//! cached); reads are answered from the
//! [`ChunkCache`], on the request thread when every chunk is in memory and
//! otherwise from a task on the async runtime, so a slow fetch for one file
//! never holds up requests for others.
//!
//! The tree is immutable, so the kernel is told to cache everything: long
//! entry and attribute timeouts, `open`/`opendir`/`flush` declined (the
//! kernel then keeps the page cache and directory cache across opens
//! without asking, and closes without a round trip),
//! symlink caching, and readdirplus so a walk needs no separate lookups.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use tokio::runtime::Handle;

use super::ahead::{self, ReadAhead};
use super::elf::{self, Libraries};
use super::index::{Entries, Index, Node, NodeKind};
use super::recorder::Recorder;
use crate::flist::chunkcache::{self, ChunkCache, Piece};
use crate::fs::layer::Timestamp;
use crate::fs::node::Special;
use crate::store::{ChunkRef, CHUNK_SIZE};

/// How long the kernel may trust entries and attributes: the tree never
/// changes while mounted.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct FlistFs {
    index: Arc<Index>,
    cache: Arc<ChunkCache>,
    rt: Handle,
    ahead: Arc<ReadAhead>,
    /// Records what is read, for `flist trace`.
    recorder: Option<Arc<Recorder>>,
    /// Set where libraries are read ahead (as whole files are).
    starts: Option<Arc<Starts>>,
}

impl FlistFs {
    pub fn new(
        index: Arc<Index>,
        cache: Arc<ChunkCache>,
        rt: Handle,
        recorder: Option<Arc<Recorder>>,
    ) -> Self {
        // Whole files, walks and directories are read ahead from far
        // stores into a disk cache; from local stores (fast already, and
        // a second copy costs) only a sequential reader's next chunks.
        let ahead = Arc::new(ReadAhead::new(cache.fetches_ahead()));
        ahead.start_walk(index.clone());
        let starts = cache.fetches_ahead().then(|| {
            Arc::new(Starts {
                libraries: Libraries::new(cache.clone(), index.clone()),
                ahead: ahead.clone(),
                rt: rt.clone(),
            })
        });
        FlistFs {
            index,
            cache,
            rt,
            starts,
            ahead,
            recorder,
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let mut blocks = None;
        let (kind, size, rdev) = match &node.kind {
            NodeKind::Dir => (FileType::Directory, 4096, 0),
            NodeKind::File { size, blocks: b, .. } => {
                blocks = Some(*b);
                (FileType::RegularFile, *size, 0)
            }
            NodeKind::Special(s) => {
                let size = match s {
                    Special::Symlink { target } => target.len() as u64,
                    _ => 0,
                };
                (file_type(node.kind.type_bits()), size, s.fuse_rdev())
            }
        };
        let time = system_time(node.meta.mtime);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: blocks.unwrap_or(size.div_ceil(512)),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm: (node.meta.mode & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.meta.uid,
            gid: node.meta.gid,
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The parent and entries of directory `ino`.
    fn dir(&self, ino: u64) -> Option<(u64, Entries)> {
        let parent = self.index.node(ino)?.parent;
        Some((parent, self.index.entries(ino)?))
    }

    /// Starts fetching what the reader of `[offset, end)` of `ino` (`size`
    /// bytes) will want next (see [`ReadAhead`]), below demand reads.
    fn read_ahead(&self, ino: u64, size: u64, offset: u64, end: u64, last: usize, chunks: &[ChunkRef]) {
        // A library the loader opens was foreseen by the library rule: it
        // says nothing of the rest of its directory.
        let foreseen = (self.starts.as_ref()).is_some_and(|s| s.libraries.foreseen(ino));
        let mut wanted = self
            .ahead
            .after_read(&self.index, ino, size, offset, end, last, chunks, foreseen);
        wanted.retain(|(chunk, _)| !self.cache.is_cached(chunk));
        ahead::fill(&self.cache, &self.rt, wanted);
    }
}

/// What the bytes a read returns start: the library read-ahead.
struct Starts {
    libraries: Arc<Libraries>,
    ahead: Arc<ReadAhead>,
    rt: Handle,
}

impl Starts {
    /// After a read of `data` at `offset` of `ino`: if it is the start of
    /// an ELF object that a walk is not just passing through, the
    /// libraries the loader will open are fetched.
    fn after(&self, ino: u64, offset: u64, data: &[u8]) {
        if offset == 0 && elf::is_elf(data) && !self.ahead.in_walk(ino) {
            self.rt.spawn(self.libraries.clone().fetch_for(ino));
        }
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nsec = Duration::from_nanos(t.nsec.min(999_999_999) as u64);
    if t.sec >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nsec
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

/// The file type of `S_IFMT` bits `kind`.
fn file_type(kind: u32) -> FileType {
    match kind {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        _ => FileType::RegularFile,
    }
}

/// A directory's entries as readdir lists them: `.`, `..`, then the
/// children (inode, name, type); the offset of entry `i` is `i + 1`.
fn dir_entries(ino: u64, parent: u64, entries: &Entries) -> impl Iterator<Item = (u64, &[u8], u32)> {
    let dots = [
        (ino, &b"."[..], libc::S_IFDIR),
        (parent, &b".."[..], libc::S_IFDIR),
    ];
    dots.into_iter()
        .chain(entries.iter().map(|e| (e.ino, e.name.as_ref(), e.kind)))
}

impl Filesystem for FlistFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_NO_OPEN_SUPPORT,
            InitFlags::FUSE_NO_OPENDIR_SUPPORT,
            // The kernel enforces the files' ACLs (system.posix_acl_*
            // xattrs) along with their modes (default_permissions).
            InitFlags::FUSE_POSIX_ACL,
        ] {
            if config.add_capabilities(flag).is_err() {
                if flag == InitFlags::FUSE_POSIX_ACL {
                    tracing::warn!("the kernel does not offer FUSE_POSIX_ACL: ACLs are shown, not enforced");
                } else {
                    tracing::debug!("the kernel does not offer {flag:?}");
                }
            }
        }
        // Concurrent background reads (readahead): enough to keep the
        // stores busy, bounded by the cache's own fetch limit anyway.
        let _ = config.set_max_background(32);
        let _ = config.set_congestion_threshold(24);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.index.lookup(parent.0, name.as_bytes()) {
            Some(ino) => match self.index.node(ino) {
                Some(node) => reply.entry(&TTL, &self.attr(ino, &node), Generation(0)),
                None => reply.error(Errno::EIO),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.index.node(ino.0) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, &node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.index.node(ino.0).as_ref().map(|n| &n.kind) {
            Some(NodeKind::Special(Special::Symlink { target })) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Declined: the kernel stops asking, and keeps the page cache.
        reply.error(Errno::ENOSYS);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        // Nothing to flush in a read-only tree; declined, the kernel stops
        // sending one on every close.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = ino.0;
        let (file_size, chunks) = match self.index.node(ino).as_ref().map(|n| &n.kind) {
            Some(NodeKind::File { size, chunks, .. }) => (*size, chunks.clone()),
            Some(NodeKind::Dir) => return reply.error(Errno::EISDIR),
            Some(_) => return reply.error(Errno::EINVAL),
            None => return reply.error(Errno::ENOENT),
        };
        let end = offset.saturating_add(size as u64).min(file_size);
        if offset >= end {
            return reply.data(&[]);
        }
        let first = (offset / CHUNK_SIZE as u64) as usize;
        let last = ((end - 1) / CHUNK_SIZE as u64) as usize;
        if last >= chunks.len() {
            tracing::warn!(
                "{}: the flist lists {} chunks for {file_size} bytes",
                self.index.path_of(ino),
                chunks.len()
            );
            return reply.error(Errno::EIO);
        }
        let wanted = &chunks[first..=last];
        if let Some(recorder) = &self.recorder {
            recorder.record(wanted);
        }
        let count = chunks.len();
        if let Some(pieces) = self.cache.get_all_in_memory(wanted) {
            self.read_ahead(ino, file_size, offset, end, last, &chunks);
            return match chunkcache::assemble(file_size, count, first, &pieces, offset, end) {
                Ok(data) => {
                    if let Some(starts) = &self.starts {
                        starts.after(ino, offset, &data);
                    }
                    reply.data(&data)
                }
                Err(e) => {
                    tracing::warn!("reading {}: {e}", self.index.path_of(ino));
                    reply.error(Errno::EIO)
                }
            };
        }
        // The read's own fetches go out before what it reads ahead.
        let wanted = wanted.to_vec();
        let (cache, index, starts) = (self.cache.clone(), self.index.clone(), self.starts.clone());
        self.rt.spawn(async move {
            let fetched = futures_util::future::join_all(wanted.iter().map(|c| cache.get(c))).await;
            let result = fetched
                .into_iter()
                .collect::<anyhow::Result<Vec<Piece>>>()
                .map_err(|e| format!("{e:#}"))
                .and_then(|pieces| chunkcache::assemble(file_size, count, first, &pieces, offset, end));
            match result {
                Ok(data) => {
                    if let Some(starts) = starts {
                        starts.after(ino, offset, &data);
                    }
                    reply.data(&data)
                }
                Err(e) => {
                    tracing::warn!("reading {}: {e}", index.path_of(ino));
                    reply.error(Errno::EIO)
                }
            }
        });
        self.read_ahead(ino, file_size, offset, end, last, &chunks);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some((parent, entries)) = self.dir(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (child, name, kind)) in dir_entries(ino.0, parent, &entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(
                INodeNo(child),
                i as u64 + 1,
                file_type(kind),
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some((parent, entries)) = self.dir(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (child, name, _)) in dir_entries(ino.0, parent, &entries)
            .enumerate()
            .skip(offset as usize)
        {
            let Some(child_node) = self.index.node(child) else {
                continue;
            };
            let attr = self.attr(child, &child_node);
            if reply.add(
                INodeNo(child),
                i as u64 + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    /// No ioctl is supported: ENOTTY, as a file system without them
    /// answers (`lsattr`, systemd-nspawn's `FS_IOC_GETFLAGS`), quietly.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        tracing::trace!("ioctl {cmd:#x}: ENOTTY");
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (entries, bytes) = self.index.totals();
        reply.statfs(bytes.div_ceil(4096), 0, 0, entries, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.index.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Some((_, value)) = node
            .meta
            .xattrs
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
        else {
            return reply.error(Errno::NO_XATTR);
        };
        reply_xattr(reply, size, value);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.index.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for (name, _) in &node.meta.xattrs {
            names.extend_from_slice(name);
            names.push(0);
        }
        reply_xattr(reply, size, &names);
    }
}

/// The xattr protocol: size 0 asks for the length; too small a buffer is
/// ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_subsecond_times() {
        let t = system_time(Timestamp { sec: -1, nsec: 5 });
        assert_eq!(
            SystemTime::UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_nanos(999_999_995)
        );
    }
}
