//! The workdir: flmount's on-disk content cache, shared by every run and
//! every image, and safe for several flmount processes at once.
//!
//! ```text
//! WORKDIR/
//! ├── lock                      held shared by every run, exclusive by gc
//! ├── blobs/sha256/<hex>        verified content: manifests, indexes, configs, layers
//! ├── refs/<registry>/<repository>/<tag>
//! │                             the digest (one line) the tag last resolved to
//! ├── tmp/<hex>.partial         a download in progress; resumed by the next try
//! ├── locks/<hex>.lock          one writer per blob at a time (flock)
//! ├── index/<algo>-<hex>        a layer's changes (fs::layer)
//! ├── index/<algo>-<hex>.seek   a gzip layer's seek points (fs::layer)
//! ├── overlays/<chain>/diff     a layer in overlayfs form (write::overlay)
//! ├── l/<SHORT>                 short links to them, for mount options
//! ├── mounts/<id>/              an overlay mount's record, upper/ and work/
//! ├── chunks.db                 chunks known to be in each store (flist::pack)
//! ├── flists/<manifest>.fl      images packed for -mount -fuse
//! ├── flists/<manifest>.index.fl  seek indexes, for -mount -lazy
//! ├── store/                    the workdir's own dir store
//! └── cache/chunks/             FUSE mounts' default chunk cache
//! ```
//!
//! Every path below the root is named by a method here; other modules
//! never spell them.
//!
//! The rule that makes the cache trustworthy: **a file under `blobs/` is
//! complete and verified**. Content is written to `tmp/`, hashed while it is
//! written, checked against its digest and size, fsynced and only then
//! renamed into `blobs/`. A crash or kill leaves at most a `.partial` file,
//! which is never read as content; the next writer of that blob (holding its
//! lock) resumes it and verifies the whole file again.
//!
//! Concurrency: writers of one blob serialise on `locks/<hex>.lock`; the
//! second finds the blob present once it gets the lock and writes nothing.
//! Refs are replaced atomically (temp file + rename), so readers see the old
//! or the new digest, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::image::digest::{self, Digest, Hasher};
use crate::image::reference::ImageRef;

/// An open workdir.
#[derive(Debug)]
pub struct Workdir {
    root: PathBuf,
    /// Shared lock on `WORKDIR/lock` for the life of this handle.
    _lock: File,
}

impl Workdir {
    /// Opens (creating if needed) the workdir at `root`, shared with other
    /// flmount processes.
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_locked(root, Lock::Shared)
    }

    /// Opens the workdir for `gc`: no other flmount process may use it
    /// meanwhile (waits for those that do).
    pub fn open_exclusive(root: &Path) -> Result<Self> {
        Self::open_locked(root, Lock::Exclusive)
    }

    fn open_locked(root: &Path, kind: Lock) -> Result<Self> {
        for sub in ["blobs/sha256", "blobs/sha512", "refs", "tmp", "locks"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .with_context(|| format!("creating workdir directory {}", dir.display()))?;
        }
        // One spelling of every path below it, whatever names the workdir
        // (a symlink, `..`): records and the chunk index compare them.
        let root = fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
        let lock = lock_file(&root.join("lock"), kind)?;
        Ok(Workdir { root, _lock: lock })
    }

    /// The default location: `/var/lib/flmount` for root (mounts depend on
    /// it, so it is state), the user's cache directory otherwise.
    pub fn default_path() -> PathBuf {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            PathBuf::from("/var/lib/flmount")
        } else {
            dirs::cache_dir()
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("flmount-{}", unsafe { libc::geteuid() }))
                })
                .join("flmount")
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    // Every path below the workdir is named here (the README's tree).

    /// `blobs/<algorithm>/`
    pub fn blobs_dir(&self, algorithm: &str) -> PathBuf {
        self.root.join("blobs").join(algorithm)
    }
    /// `refs/`: one file per pulled tag or digest.
    pub fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
    /// `tmp/`: downloads in progress and imports being checked.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `index/`: the cached changes of layers.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }
    /// `overlays/<chain>/diff`: layers in overlayfs form.
    pub fn overlays_dir(&self) -> PathBuf {
        self.root.join("overlays")
    }
    /// `l/<SHORT>`: short links to the overlay layer directories (relative
    /// to the root, as mount options name them).
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("l")
    }
    /// `mounts/<id>/`: an overlay mount's record and writable layer.
    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }
    /// `chunks.db`: chunks known to be in each store.
    pub fn chunk_index_path(&self) -> PathBuf {
        self.root.join("chunks.db")
    }
    /// `flists/`: images packed for `-mount -fuse`.
    pub fn flists_dir(&self) -> PathBuf {
        self.root.join("flists")
    }
    /// `flists/<manifest hex>.fl`
    pub fn flist_path(&self, manifest: &Digest) -> PathBuf {
        self.flists_dir().join(format!("{}.fl", manifest.hex()))
    }
    /// `flists/<manifest hex>.index.fl`: the image's seek index (`-lazy`).
    pub fn seek_index_path(&self, manifest: &Digest) -> PathBuf {
        self.flists_dir().join(format!("{}.index.fl", manifest.hex()))
    }
    /// `store/`: the workdir's own dir store.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    /// `cache/chunks/`: the FUSE mounts' default chunk cache, for the
    /// workdir at `root` (named before the workdir is opened).
    pub fn chunk_cache_dir(root: &Path) -> PathBuf {
        root.join("cache").join("chunks")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir(digest.algorithm().name()).join(digest.hex())
    }

    /// Where the change index of layer `digest` is cached.
    pub fn index_path(&self, digest: &Digest) -> PathBuf {
        self.index_dir()
            .join(format!("{}-{}", digest.algorithm().name(), digest.hex()))
    }

    /// Where the seek points of the gzip layer `digest` are cached.
    pub fn seek_points_path(&self, digest: &Digest) -> PathBuf {
        self.index_dir()
            .join(format!("{}-{}.seek", digest.algorithm().name(), digest.hex()))
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir()
            .join(format!("{}-{}.partial", digest.algorithm().name(), digest.hex()))
    }

    fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("locks")
            .join(format!("{}-{}.lock", digest.algorithm().name(), digest.hex()))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a small cached blob (manifest, config) whole, refusing anything
    /// larger than `max` bytes.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).with_context(|| format!("reading cached blob {digest}"))?;
        let mut data = Vec::new();
        file.take(max + 1).read_to_end(&mut data)?;
        if data.len() as u64 > max {
            bail!("cached blob {digest} is larger than {max} bytes");
        }
        Ok(data)
    }

    /// Stores small in-memory content under its digest, after checking it.
    pub fn put_blob(&self, digest: &Digest, data: &[u8]) -> Result<()> {
        let actual = Digest::of(digest.algorithm(), data);
        if &actual != digest {
            bail!("content does not match its digest: expected {digest}, got {actual}");
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        write_atomic(&self.blob_path(digest), data)
    }

    /// Re-hashes a cached blob; removes it and returns false if it is
    /// missing, truncated or wrong.
    pub fn verify_blob(&self, digest: &Digest, size: u64) -> Result<bool> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let (actual, n) = digest::hash_reader(
            digest.algorithm(),
            std::io::BufReader::with_capacity(1 << 20, file),
        )
        .with_context(|| format!("reading {}", path.display()))?;
        if &actual == digest && n == size {
            return Ok(true);
        }
        tracing::warn!(%digest, actual = %actual, bytes = n, expected_bytes = size, "cached blob is corrupt; removing it");
        fs::remove_file(&path).with_context(|| format!("removing corrupt blob {}", path.display()))?;
        Ok(false)
    }

    /// Starts writing the blob `digest` of `size` bytes. Waits for any other
    /// writer of the same blob. Returns `None` when the blob is already
    /// cached (possibly written by that other writer meanwhile).
    pub async fn begin_blob(&self, digest: &Digest, size: u64) -> Result<Option<BlobWriter>> {
        if self.has_blob(digest) {
            return Ok(None);
        }
        let lock_path = self.lock_path(digest);
        let lock = tokio::task::spawn_blocking(move || lock_file(&lock_path, Lock::Exclusive)).await??;
        if self.has_blob(digest) {
            return Ok(None);
        }
        let partial = self.partial_path(digest);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)
            .await
            .with_context(|| format!("opening {}", partial.display()))?;
        // Resume: hash what a previous, interrupted writer left.
        let mut hasher = Hasher::new(digest.algorithm());
        let mut offset = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        let mut writer = BlobWriter {
            digest: digest.clone(),
            size,
            partial,
            final_path: self.blob_path(digest),
            file: BufWriter::with_capacity(1 << 20, file),
            hasher,
            written: offset,
            _lock: lock,
        };
        if offset > size {
            writer.restart().await?;
        }
        Ok(Some(writer))
    }

    /// `refs/<registry>/<repository>/<tag>`, with every component checked.
    fn ref_path(&self, image: &ImageRef, tag: &str) -> Result<PathBuf> {
        let mut path = self.root.join("refs");
        for part in image
            .registry()
            .split('/')
            .chain(image.repository().split('/'))
            .chain([tag])
        {
            if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
                bail!("refusing unsafe name component {part:?} in {image}");
            }
            path.push(part);
        }
        Ok(path)
    }

    /// Records that `image`'s tag resolved to `digest`; a reference pinned
    /// by digest is recorded as `@<algorithm>-<hex>`, so every cached image
    /// has a ref (what `images` lists and `gc` keeps). The file's mtime is
    /// the image's last use.
    pub fn write_ref(&self, image: &ImageRef, digest: &Digest) -> Result<()> {
        let name = match image.tag() {
            Some(tag) => tag.to_owned(),
            None => format!("@{}-{}", digest.algorithm().name(), digest.hex()),
        };
        let path = self.ref_path(image, &name)?;
        write_atomic(&path, format!("{digest}\n").as_bytes())
    }

    /// Forgets `image` (its tag, or its pinned digest); false if it had no ref.
    pub fn remove_ref(&self, image: &ImageRef) -> Result<bool> {
        let name = match (image.tag(), image.digest()) {
            (Some(tag), _) => tag.to_owned(),
            (None, Some(d)) => format!("@{}-{}", d.algorithm().name(), d.hex()),
            (None, None) => return Ok(false),
        };
        match fs::remove_file(self.ref_path(image, &name)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).context("removing the ref"),
        }
    }

    /// The digest `image`'s tag last resolved to, if known.
    pub fn read_ref(&self, image: &ImageRef) -> Result<Option<Digest>> {
        let Some(tag) = image.tag() else { return Ok(None) };
        let path = self.ref_path(image, tag)?;
        match fs::read_to_string(&path) {
            Ok(s) => {
                Ok(Some(Digest::parse(s.trim()).with_context(|| {
                    format!("corrupt ref file {}", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// A blob being written: bytes go to `tmp/`, are hashed on the way, and
/// reach `blobs/` only through [`BlobWriter::commit`] after verification.
pub struct BlobWriter {
    digest: Digest,
    size: u64,
    partial: PathBuf,
    final_path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    hasher: Hasher,
    written: u64,
    _lock: File,
}

impl BlobWriter {
    /// Bytes already present (from an interrupted earlier download): the
    /// offset to resume from.
    pub fn offset(&self) -> u64 {
        self.written
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            self.discard().await;
            bail!(
                "blob {} is larger than its descriptor says ({} bytes); refusing it",
                self.digest.short(),
                self.size
            );
        }
        self.hasher.update(data);
        if let Err(e) = self.file.write_all(data).await {
            // A local failure (disk full): the partial file no longer
            // matches the hash state, so it cannot be resumed.
            self.discard().await;
            return Err(anyhow::Error::new(e)
                .context(format!("writing blob {} into the workdir", self.digest.short())));
        }
        Ok(())
    }

    /// Restarts from zero (the server ignored a range request).
    pub async fn restart(&mut self) -> Result<()> {
        self.file.flush().await?;
        self.file.get_mut().set_len(0).await?;
        self.file.get_mut().rewind_to_start().await?;
        self.hasher = Hasher::new(self.digest.algorithm());
        self.written = 0;
        Ok(())
    }

    /// Flushes what was written so far, so a later attempt can resume it.
    pub async fn suspend(mut self) -> Result<()> {
        self.file.flush().await?;
        Ok(())
    }

    /// Verifies size and digest; on success the blob appears in `blobs/`.
    /// On mismatch the partial file is deleted and an error returned.
    pub async fn commit(mut self) -> Result<()> {
        self.file.flush().await?;
        let actual = std::mem::replace(&mut self.hasher, Hasher::new(self.digest.algorithm())).finish();
        if self.written != self.size || actual != self.digest {
            let (written, size, expected) = (self.written, self.size, self.digest.clone());
            self.discard().await;
            if written != size {
                bail!("blob {expected} is truncated: got {written} of {size} bytes; not cached");
            }
            bail!("blob content does not match its digest: expected {expected}, got {actual}; not cached");
        }
        self.file.get_mut().sync_all().await?;
        tokio::fs::rename(&self.partial, &self.final_path)
            .await
            .with_context(|| format!("moving verified blob into {}", self.final_path.display()))?;
        if let Some(dir) = self.final_path.parent() {
            crate::owned::output::sync_dir(dir)?;
        }
        Ok(())
    }

    async fn discard(&mut self) {
        let _ = tokio::fs::remove_file(&self.partial).await;
    }
}

trait RewindExt {
    async fn rewind_to_start(&mut self) -> std::io::Result<()>;
}

impl RewindExt for tokio::fs::File {
    async fn rewind_to_start(&mut self) -> std::io::Result<()> {
        use tokio::io::AsyncSeekExt;
        self.seek(std::io::SeekFrom::Start(0)).await.map(|_| ())
    }
}

#[derive(Debug, Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

/// Opens (creating) the lock file at `path` and waits for the lock; it is
/// held until the returned file is dropped (or the process dies).
fn lock_file(path: &Path, kind: Lock) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let free = match kind {
        Lock::Shared => file.try_lock_shared(),
        Lock::Exclusive => file.try_lock(),
    };
    if free.is_err() {
        tracing::info!(
            "waiting for other flmount processes to release {}",
            path.display()
        );
        match kind {
            Lock::Shared => file.lock_shared(),
            Lock::Exclusive => file.lock(),
        }
        .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// Writes `data` to `path` atomically: a temp file in the same directory,
/// fsynced, renamed over `path`. Parents are created. For the workdir's
/// own files (refs, records); outputs a user names go through
/// `owned::output`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::owned::output::replace_file(path, data, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wd() -> (tempfile::TempDir, Workdir) {
        let dir = tempfile::tempdir().unwrap();
        let wd = Workdir::open(dir.path()).unwrap();
        (dir, wd)
    }

    #[tokio::test]
    async fn writes_verified_blobs_only() {
        let (_d, wd) = wd();
        let data = b"hello layer".repeat(1000);
        let digest = Digest::sha256_of(&data);
        let mut w = wd.begin_blob(&digest, data.len() as u64).await.unwrap().unwrap();
        w.write(&data[..100]).await.unwrap();
        assert!(!wd.has_blob(&digest), "visible before commit");
        w.write(&data[100..]).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(fs::read(wd.blob_path(&digest)).unwrap(), data);
        assert!(wd.begin_blob(&digest, data.len() as u64).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_wrong_content_and_truncation() {
        let (_d, wd) = wd();
        let digest = Digest::sha256_of(b"right");
        let mut w = wd.begin_blob(&digest, 5).await.unwrap().unwrap();
        w.write(b"wrong").await.unwrap();
        let err = w.commit().await.unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(!wd.has_blob(&digest));
        assert!(!wd.partial_path(&digest).exists());

        let mut w = wd.begin_blob(&digest, 5).await.unwrap().unwrap();
        w.write(b"rig").await.unwrap();
        assert!(w.commit().await.unwrap_err().to_string().contains("truncated"));
        assert!(!wd.has_blob(&digest));

        let mut w = wd.begin_blob(&digest, 5).await.unwrap().unwrap();
        assert!(w.write(b"right!").await.is_err(), "oversize accepted");
        assert!(!wd.has_blob(&digest));
    }

    #[tokio::test]
    async fn resumes_an_interrupted_download() {
        let (_d, wd) = wd();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let digest = Digest::sha256_of(&data);
        let mut w = wd.begin_blob(&digest, data.len() as u64).await.unwrap().unwrap();
        w.write(&data[..123_456]).await.unwrap();
        w.suspend().await.unwrap();
        let mut w = wd.begin_blob(&digest, data.len() as u64).await.unwrap().unwrap();
        assert_eq!(w.offset(), 123_456);
        w.write(&data[123_456..]).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(fs::read(wd.blob_path(&digest)).unwrap(), data);
    }

    #[test]
    fn verify_removes_corrupt_blobs() {
        let (_d, wd) = wd();
        let digest = Digest::sha256_of(b"content");
        wd.put_blob(&digest, b"content").unwrap();
        assert!(wd.verify_blob(&digest, 7).unwrap());
        fs::write(wd.blob_path(&digest), b"CONTENT").unwrap();
        assert!(!wd.verify_blob(&digest, 7).unwrap());
        assert!(!wd.has_blob(&digest));
        assert!(wd.put_blob(&digest, b"other").is_err());
    }

    #[test]
    fn refs_round_trip_and_stay_inside() {
        let (_d, wd) = wd();
        let image = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(wd.read_ref(&image).unwrap(), None);
        let digest = Digest::sha256_of(b"m");
        wd.write_ref(&image, &digest).unwrap();
        assert_eq!(wd.read_ref(&image).unwrap(), Some(digest));
        assert!(wd.root().join("refs/127.0.0.1:5000/team/app/v1").is_file());
    }
}
