//! Writing a tree [`Plan`] to a directory, safely and fast.
//!
//! Safety: every operation is relative to a directory file descriptor
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` below the
//! target root, and final components are created with `O_EXCL |
//! O_NOFOLLOW` or the `*at` calls that never follow them. The plan has no
//! `..` and no symlink on any parent path (the tree resolved those), so a
//! hostile layer cannot make flmount write outside the target, and a
//! symlink already in a target (with `-force`) is never followed.
//!
//! Speed (creating files costs more than inflating on this kind of machine):
//! each file is created exactly once, at its final path, and nothing a
//! later layer deletes is ever written. Directories are made first; then
//! one thread per layer inflates and parses while a pool of workers creates
//! files (small contents travel to the workers, large ones are streamed by
//! the layer's thread); last, directory metadata is set children-first so
//! mtimes stick.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use lru::LruCache;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::fs::content::{ContentSource, LayerContent};
use crate::fs::layer::{LayerBlob, Meta, Timestamp};
use crate::fs::node::Special;
use crate::fs::tree::{InodeKind, Plan, PlanInode};

/// Content up to this size is read by the layer's thread and handed to a
/// worker; larger files are streamed to disk by the layer's thread itself.
const SMALL_FILE: u64 = 64 << 10;
/// Jobs waiting for a worker (bounds memory: at most this many small files).
const QUEUE: usize = 128;

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Set owners (needs root; otherwise files belong to the caller).
    pub owners: bool,
    /// Create device nodes (needs root; otherwise skipped with a warning).
    pub devices: bool,
    /// Worker threads creating files.
    pub workers: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        let root = nix::unistd::geteuid().is_root();
        WriteOptions {
            owners: root,
            devices: root,
            workers: crate::fs::threads::io_workers(),
        }
    }
}

/// What was written.
#[derive(Debug, Default, serde::Serialize)]
pub struct WriteStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub bytes: u64,
    pub skipped_devices: u64,
}

impl std::fmt::Display for WriteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} directories, {} files ({}), {} symlinks, {} hard links, {} special files",
            self.dirs,
            self.files,
            crate::progress::human_bytes(self.bytes),
            self.symlinks,
            self.hardlinks,
            self.specials
        )
    }
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    symlinks: AtomicU64,
    hardlinks: AtomicU64,
    specials: AtomicU64,
    bytes: AtomicU64,
    skipped_devices: AtomicU64,
}

/// The target directory, as a file descriptor everything is relative to.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", path.display()))?;
        Ok(Root {
            fd,
            path: path.to_owned(),
        })
    }

    /// Opens the directory `rel` below the root; no symlink is followed and
    /// nothing outside the root can be reached.
    fn open_dir(&self, rel: &[u8], flags: OFlag) -> Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let rel_path = if rel.is_empty() { b".".as_slice() } else { rel };
        nix::fcntl::openat2(&self.fd, std::ffi::OsStr::from_bytes_compat(rel_path), how)
            .map_err(|e| anyhow!("opening {} inside {}: {e}", show(rel), self.path.display()))
    }
}

/// `OsStr::from_bytes` without importing the Unix extension trait everywhere.
trait OsStrCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl OsStrCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Per-thread cache of open parent directories (`O_PATH`).
struct Dirs<'r> {
    root: &'r Root,
    cache: LruCache<Vec<u8>, OwnedFd>,
}

impl<'r> Dirs<'r> {
    fn new(root: &'r Root) -> Self {
        Dirs {
            root,
            cache: LruCache::new(std::num::NonZeroUsize::new(64).unwrap()),
        }
    }

    /// The parent directory of `path` and its final name.
    fn parent(&mut self, path: &[u8]) -> Result<(RawFd, CString)> {
        let (dir, name) = crate::fs::layer::split_last(path);
        let name = CString::new(name).map_err(|_| anyhow!("NUL in name {}", show(path)))?;
        if let Some(fd) = self.cache.get(dir) {
            return Ok((fd.as_raw_fd(), name));
        }
        let fd = self.root.open_dir(dir, OFlag::O_PATH)?;
        let raw = fd.as_raw_fd();
        self.cache.put(dir.to_vec(), fd);
        Ok((raw, name))
    }
}

/// Writes `plan` into the existing directory `target`. Regular-file content
/// comes from `layers[source.layer]`. Entries already present (only with
/// `-force`) are replaced.
pub fn write_plan(
    plan: &Plan,
    content: &dyn ContentSource,
    target: &Path,
    opts: &WriteOptions,
) -> Result<WriteStats> {
    let root = Root::open(target)?;
    let counters = Counters::default();
    let mut dirs = Dirs::new(&root);

    for dir in plan.dirs.iter().filter(|d| !d.path.is_empty()) {
        crate::owned::signals::check()?;
        let (parent, name) = dirs.parent(&dir.path)?;
        mkdir(parent, &name).with_context(|| format!("creating directory {}", show(&dir.path)))?;
    }
    if !plan.whiteouts.is_empty() {
        if !opts.devices {
            bail!("overlay whiteouts are character devices and need root to create");
        }
        for path in &plan.whiteouts {
            let (parent, name) = dirs.parent(path)?;
            replace_existing(parent, &name)?;
            mknod(parent, &name, libc::S_IFCHR, 0)
                .with_context(|| format!("creating whiteout {}", show(path)))?;
        }
    }

    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        stop.store(true, Ordering::SeqCst);
        let mut f = failure.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
    };
    let workers = opts.workers.max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
        .map(|_| mpsc::sync_channel::<Job>(QUEUE / workers + 1))
        .unzip();
    let shards = Shards { plan, senders };

    std::thread::scope(|scope| {
        for rx in receivers {
            let (root, stop, fail, counters) = (&root, &stop, &fail, &counters);
            scope.spawn(move || {
                let mut dirs = Dirs::new(root);
                while let Ok((index, data, holes)) = rx.recv() {
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = crate::owned::signals::check() {
                        fail(e);
                        continue;
                    }
                    let content = data.as_deref().map(Content::Bytes);
                    let inode = &plan.inodes[index];
                    if let Err(e) = create_inode(&mut dirs, inode, content, holes, opts, counters) {
                        fail(e);
                    }
                }
            });
        }
        // Inodes without content: symlinks, devices, empty files.
        let plain = shards.clone();
        scope.spawn(move || {
            for (i, inode) in plan.inodes.iter().enumerate() {
                if !matches!(inode.kind, InodeKind::File { source: Some(_), .. })
                    && plain.send((i, None, false)).is_err()
                {
                    break;
                }
            }
        });
        // Content, from wherever it lives: small files go to the workers,
        // large ones are streamed by the source's own thread.
        let sink = |index: usize, reader: &mut dyn Read| -> Result<()> {
            if stop.load(Ordering::Relaxed) {
                bail!(crate::fs::content::Finished);
            }
            crate::owned::signals::check()?;
            let inode = &plan.inodes[index];
            let InodeKind::File { size, .. } = inode.kind else {
                return Ok(());
            };
            let holes = crate::fs::content::holes_wanted();
            if size <= SMALL_FILE {
                let mut data = Vec::with_capacity(size as usize);
                reader.take(size).read_to_end(&mut data)?;
                shards
                    .send((index, Some(data), holes))
                    .map_err(|_| anyhow!("writers stopped"))
            } else {
                create_inode(
                    &mut Dirs::new(&root),
                    inode,
                    Some(Content::Stream(reader)),
                    holes,
                    opts,
                    &counters,
                )
            }
        };
        match content.deliver(plan, &sink) {
            Err(e) if e.is::<crate::fs::content::Finished>() => {}
            Err(e) => fail(e),
            Ok(()) => {}
        }
        drop(shards);
    });
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }

    // Directory metadata last, deepest first, so children do not disturb mtimes.
    for dir in plan.dirs.iter().rev() {
        let fd = root.open_dir(&dir.path, OFlag::O_RDONLY)?;
        let fd = fd.as_raw_fd();
        if dir.opaque {
            set_xattr_fd(fd, b"trusted.overlay.opaque", b"y")
                .with_context(|| format!("marking {} opaque", show(&dir.path)))?;
        }
        if dir.implicit {
            // A parent no entry names: 0755 and root's, as umoci and
            // containerd create it (mkdir made it 0700).
            // SAFETY: valid fd.
            check(unsafe { libc::fchmod(fd, dir.meta.mode & 0o7777) })
                .with_context(|| format!("setting the mode of {}", show(&dir.path)))?;
            continue;
        }
        apply_meta_fd(fd, &dir.meta, opts, None)
            .with_context(|| format!("setting metadata of {}", show(&dir.path)))?;
    }

    let c = counters;
    let stats = WriteStats {
        dirs: plan.dirs.len() as u64,
        files: c.files.into_inner(),
        symlinks: c.symlinks.into_inner(),
        hardlinks: c.hardlinks.into_inner(),
        specials: c.specials.into_inner(),
        bytes: c.bytes.into_inner(),
        skipped_devices: c.skipped_devices.into_inner(),
    };
    if stats.skipped_devices > 0 {
        tracing::warn!(
            "skipped {} device nodes: creating them needs root",
            stats.skipped_devices
        );
    }
    Ok(stats)
}

/// A file to create: the plan's inode index, its content if small, and
/// whether blocks of zeros are to be left as holes.
type Job = (usize, Option<Vec<u8>>, bool);

/// Routes jobs to workers by parent directory: creating entries in one
/// directory serialises on that directory's lock in the kernel, so each
/// directory's files go to one worker and the workers do not queue on it.
#[derive(Clone)]
struct Shards<'p> {
    plan: &'p Plan,
    senders: Vec<mpsc::SyncSender<Job>>,
}

impl Shards<'_> {
    fn send(&self, job: Job) -> Result<(), ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let (parent, _) = crate::fs::layer::split_last(&self.plan.inodes[job.0].paths[0]);
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(parent);
        let shard = (hash % self.senders.len() as u64) as usize;
        self.senders[shard].send(job).map_err(|_| ())
    }
}

enum Content<'a> {
    Bytes(&'a [u8]),
    Stream(&'a mut dyn Read),
}

/// Creates an inode at its first path, then hard links for its other names.
fn create_inode(
    dirs: &mut Dirs,
    inode: &PlanInode,
    content: Option<Content>,
    holes: bool,
    opts: &WriteOptions,
    counters: &Counters,
) -> Result<()> {
    let path = &inode.paths[0];
    let (parent, name) = dirs.parent(path)?;
    let created = create_one(parent, &name, inode, content, holes, opts, counters)
        .with_context(|| format!("creating {}", show(path)))?;
    if !created {
        return Ok(());
    }
    for link in &inode.paths[1..] {
        let (lparent, lname) = dirs.parent(link)?;
        replace_existing(lparent, &lname)?;
        // SAFETY: valid fds and NUL-terminated names; flags 0 never follows `name`.
        let rc = unsafe { libc::linkat(parent, name.as_ptr(), lparent, lname.as_ptr(), 0) };
        check(rc).with_context(|| format!("linking {} to {}", show(link), show(path)))?;
        counters.hardlinks.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Returns false when the inode was skipped (a device without root).
fn create_one(
    parent: RawFd,
    name: &CString,
    inode: &PlanInode,
    content: Option<Content>,
    holes: bool,
    opts: &WriteOptions,
    counters: &Counters,
) -> Result<bool> {
    let meta = &inode.meta;
    match &inode.kind {
        InodeKind::File { .. } => {
            let perms = meta.mode & 0o777;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: valid fd and NUL-terminated name; O_EXCL | O_NOFOLLOW never follow.
            let fd = create_at(parent, name, || unsafe {
                libc::openat(parent, name.as_ptr(), flags, perms)
            })?;
            // SAFETY: openat returned a new fd we own.
            let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let written = match content {
                Some(Content::Bytes(b)) => {
                    let mut out = SparseWriter::new(&file, holes);
                    out.write(b)?;
                    out.finish()?
                }
                Some(Content::Stream(r)) => copy_large(r, &file, holes)?,
                None => 0,
            };
            counters.bytes.fetch_add(written, Ordering::Relaxed);
            counters.files.fetch_add(1, Ordering::Relaxed);
            apply_meta_fd(file.as_raw_fd(), meta, opts, Some(perms & !crate::owned::umask()))?;
        }
        InodeKind::Special(Special::Symlink { target }) => {
            let target = CString::new(target.as_ref()).map_err(|_| anyhow!("NUL in symlink target"))?;
            // SAFETY: valid fd and NUL-terminated strings.
            create_at(parent, name, || unsafe {
                libc::symlinkat(target.as_ptr(), parent, name.as_ptr())
            })?;
            counters.symlinks.fetch_add(1, Ordering::Relaxed);
            apply_meta_at(parent, name, meta, opts, false)?;
        }
        InodeKind::Special(special) => {
            let device = !matches!(special, Special::Fifo);
            if device && !opts.devices {
                counters.skipped_devices.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            mknod(parent, name, special.type_bits(), special.rdev())?;
            counters.specials.fetch_add(1, Ordering::Relaxed);
            apply_meta_at(parent, name, meta, opts, true)?;
        }
        InodeKind::Dir => unreachable!("directories are not inodes of the plan"),
    }
    Ok(true)
}

/// Runs a creating call; when the name is taken (only when writing over an
/// existing tree) removes what is there and tries once more.
fn create_at(parent: RawFd, name: &CString, create: impl Fn() -> libc::c_int) -> Result<libc::c_int> {
    let rc = create();
    if rc >= 0 {
        return Ok(rc);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EEXIST) {
        return Err(err.into());
    }
    replace_existing(parent, name)?;
    let rc = create();
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(rc)
}

/// Streams a large file with few, large writes.
fn copy_large(reader: &mut dyn Read, file: &std::fs::File, holes: bool) -> Result<u64> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut out = SparseWriter::new(file, holes);
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = reader.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return out.finish();
            }
            out.write(&buf[..filled])?;
        }
    })
}

/// Writes a file's content; with `holes`, filesystem blocks of zeros (a
/// sparse file's holes, an flist's all-zero chunks) are skipped, not
/// written, and the file is given its length at the end, as GNU tar does.
/// The content reads the same; the zeros take no space.
pub(crate) struct SparseWriter<'f> {
    file: &'f std::fs::File,
    holes: bool,
    pos: u64,
    /// Where the last write ended.
    written: u64,
}

/// The granularity of holes: a filesystem block.
const HOLE: usize = 4096;

/// Whether `data` is all zeros (compared with zeros, which memcmp does fast).
pub(crate) fn is_zero(data: &[u8]) -> bool {
    static ZEROS: [u8; HOLE] = [0; HOLE];
    data.chunks(HOLE).all(|c| c == &ZEROS[..c.len()])
}

impl<'f> SparseWriter<'f> {
    pub(crate) fn new(file: &'f std::fs::File, holes: bool) -> Self {
        SparseWriter {
            file,
            holes,
            pos: 0,
            written: 0,
        }
    }

    /// Writes the next bytes of the file, skipping whole blocks of zeros.
    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if !self.holes {
            self.file.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            self.written = self.pos;
            return Ok(());
        }
        let mut rest = data;
        while !rest.is_empty() {
            // Up to the next block boundary of the file, then block by block.
            let first = HOLE - (self.pos % HOLE as u64) as usize;
            let mut end = first.min(rest.len());
            let zero = end == HOLE && is_zero(&rest[..end]);
            while end < rest.len() {
                let next = (end + HOLE).min(rest.len());
                let block_zero = next - end == HOLE && is_zero(&rest[end..next]);
                if block_zero != zero {
                    break;
                }
                end = next;
            }
            if !zero {
                self.file.write_all_at(&rest[..end], self.pos)?;
                self.written = self.pos + end as u64;
            }
            self.pos += end as u64;
            rest = &rest[end..];
        }
        Ok(())
    }

    /// Gives the file its length (a final hole); returns it.
    pub(crate) fn finish(self) -> Result<u64> {
        if self.written != self.pos {
            self.file.set_len(self.pos)?;
        }
        Ok(self.pos)
    }
}

/// The process umask, read once (from /proc: reading it with umask(2)
/// would change it for a moment under other threads).
fn mkdir(parent: RawFd, name: &CString) -> Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    let rc = unsafe { libc::mkdirat(parent, name.as_ptr(), 0o700) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        if is_dir_at(parent, name)? {
            return Ok(());
        }
        replace_existing(parent, name)?;
        // SAFETY: as above.
        return check(unsafe { libc::mkdirat(parent, name.as_ptr(), 0o700) });
    }
    Err(err.into())
}

fn mknod(parent: RawFd, name: &CString, kind: libc::mode_t, dev: libc::dev_t) -> Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    create_at(parent, name, || unsafe {
        libc::mknodat(parent, name.as_ptr(), kind | 0o600, dev)
    })
    .map(|_| ())
}

fn is_dir_at(parent: RawFd, name: &CString) -> Result<bool> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd, name, and a buffer of the right type.
    let rc = unsafe { libc::fstatat(parent, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    check(rc)?;
    // SAFETY: fstatat succeeded and filled it.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Removes whatever is at `parent/name` (only present when writing over
/// an existing tree); a directory goes with its content.
fn replace_existing(parent: RawFd, name: &CString) -> Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    if unsafe { libc::unlinkat(parent, name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) => {
            // std's remove_dir_all never follows symlinks (CVE-2022-21658).
            let path = PathBuf::from(format!("/proc/self/fd/{parent}"))
                .join(std::ffi::OsStr::from_bytes_compat(name.as_bytes()));
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing existing directory {}", show(name.as_bytes())))
        }
        _ => Err(err.into()),
    }
}

/// Owner, mode, xattrs and mtime on an open file or directory.
/// `created_mode` is the mode the file already has, when known: a chmod
/// that would change nothing is skipped.
fn apply_meta_fd(fd: RawFd, meta: &Meta, opts: &WriteOptions, created_mode: Option<u32>) -> Result<()> {
    let chown = opts.owners && (meta.uid != 0 || meta.gid != 0);
    if chown {
        // SAFETY: valid fd.
        check(unsafe { libc::fchown(fd, meta.uid, meta.gid) }).context("setting the owner")?;
    }
    // chmod after chown: chown clears setuid/setgid.
    if chown || created_mode != Some(meta.mode & 0o7777) {
        // SAFETY: valid fd.
        check(unsafe { libc::fchmod(fd, meta.mode & 0o7777) }).context("setting the mode")?;
    }
    for (name, value) in &meta.xattrs {
        if let Err(e) = set_xattr_fd(fd, name, value) {
            warn_xattr(name, &e);
        }
    }
    let times = timespecs(meta.mtime);
    // SAFETY: valid fd and two timespecs.
    check(unsafe { libc::futimens(fd, times.as_ptr()) }).context("setting the mtime")
}

/// The same for a symlink or special file, by name (never following it).
fn apply_meta_at(parent: RawFd, name: &CString, meta: &Meta, opts: &WriteOptions, chmod: bool) -> Result<()> {
    if opts.owners && (meta.uid != 0 || meta.gid != 0) {
        // SAFETY: valid fd and name.
        check(unsafe {
            libc::fchownat(
                parent,
                name.as_ptr(),
                meta.uid,
                meta.gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .context("setting the owner")?;
    }
    if chmod {
        // SAFETY: valid fd and name; special files are not symlinks, so following is moot.
        check(unsafe { libc::fchmodat(parent, name.as_ptr(), meta.mode & 0o7777, 0) })
            .context("setting the mode")?;
    }
    if !meta.xattrs.is_empty() {
        let path = PathBuf::from(format!("/proc/self/fd/{parent}"))
            .join(std::ffi::OsStr::from_bytes_compat(name.as_bytes()));
        for (xname, value) in &meta.xattrs {
            let key = std::ffi::OsStr::from_bytes_compat(xname);
            if let Err(e) = xattr::set(&path, key, value) {
                warn_xattr(xname, &e.into());
            }
        }
    }
    let times = timespecs(meta.mtime);
    // SAFETY: valid fd, name and two timespecs.
    check(unsafe { libc::utimensat(parent, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .context("setting the mtime")
}

fn set_xattr_fd(fd: RawFd, name: &[u8], value: &[u8]) -> Result<()> {
    let name = CString::new(name).map_err(|_| anyhow!("NUL in xattr name"))?;
    // SAFETY: valid fd, NUL-terminated name, value pointer and length.
    let rc = unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check(rc)
}

fn warn_xattr(name: &[u8], e: &anyhow::Error) {
    tracing::warn!("could not set extended attribute {}: {e:#}", show(name));
}

fn timespecs(t: Timestamp) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: t.sec as libc::time_t,
        tv_nsec: t.nsec as libc::c_long,
    };
    [ts, ts]
}

fn check(rc: libc::c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().into())
    }
}

/// A raw path for messages.
pub fn show(path: &[u8]) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

/// Extracts the merged tree of `layers` (lowest first) into `target`.
///
/// A new or empty `target` is written as a sibling staging directory and
/// renamed into place once complete, so a failure leaves nothing behind. A
/// non-empty `target` is refused unless `force`, and then written in place
/// (entries in the way are replaced). A mount point is written in place.
pub fn extract_layers(
    layers: &[LayerBlob],
    target: &Path,
    force: bool,
    opts: &WriteOptions,
) -> Result<WriteStats> {
    let changes = crate::fs::layer::read_all(layers)?;
    let tree = crate::fs::tree::Tree::from_layers(&changes)?;
    let plan = tree.plan();
    into_target(target, force, |dir| {
        write_plan(&plan, &LayerContent(layers), dir, opts)
    })
}

/// Runs `write` on a staging directory that becomes `target`, or on
/// `target` itself when it cannot be replaced (non-empty with `force`, or a
/// mount point).
pub fn into_target<T>(target: &Path, force: bool, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("checking {}", target.display())),
    };
    let mut in_place = false;
    if let Some(m) = &meta {
        if !m.is_dir() {
            bail!("{} exists and is not a directory", target.display());
        }
        let empty = std::fs::read_dir(target)
            .with_context(|| format!("reading {}", target.display()))?
            .next()
            .is_none();
        if !empty && !force {
            bail!(
                "{} is not empty; remove it, choose another directory, or pass -force to extract over it",
                target.display()
            );
        }
        in_place = !empty || is_mount_point(target)?;
    }
    if in_place {
        return write(target);
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = target
        .file_name()
        .context("the target has no final name")?
        .to_string_lossy()
        .into_owned();
    crate::owned::temp::remove_stale(&parent, &name);
    let staging = crate::owned::temp::Staging::new_in(&parent, &name)?;
    let result = write(staging.path())?;
    staging
        .persist(target)
        .with_context(|| format!("moving the extracted tree into {}", target.display()))?;
    Ok(result)
}

/// Whether `path` is a mount point (the mount table has a mount there).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    Ok(crate::owned::mounts::mount_at(path)?.is_some())
}
