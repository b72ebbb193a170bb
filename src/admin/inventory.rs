//! What the workdir holds, and what references what: cached images (one
//! ref per pulled tag or digest), their manifests, configs and layers, the
//! overlay layer directories built from them, the flists packed for `-fuse`
//! mounts and their chunks in the workdir's own store. `images`, `content`
//! and `gc` read it.
//!
//! `gc` removes what no cached image and no live mount references. It
//! holds the workdir's lock exclusively, so no pull, extraction or pack runs
//! meanwhile; it keeps the layers of overlay mounts that have a record
//! (`-umount` removes the record) and the flists and chunks of FUSE mounts
//! that are up.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::image::digest::Digest;
use crate::image::manifest::{self, Manifest};
use crate::image::workdir::Workdir;
use crate::write::overlay;

/// One ref: a tag (or a pinned digest) of a repository, and what it names.
#[derive(Debug, Clone, Serialize)]
pub struct ImageEntry {
    /// `registry/repository`.
    pub name: String,
    /// The tag, or `@sha256-<hex>` for a pull by digest.
    pub tag: String,
    pub digest: Digest,
    /// Bytes of the layers (of every cached platform's manifest).
    pub size: u64,
    /// When the ref was last written (the last pull), seconds since the epoch.
    pub last_used: u64,
}

/// A blob and what it is to the cached images.
#[derive(Debug, Clone, Serialize)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
    pub role: Role,
}

/// What a blob is to the cached images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manifest,
    Index,
    Config,
    Layer,
    /// No cached image or recorded mount needs it (`gc` removes it).
    Unreferenced,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manifest => "manifest",
            Role::Index => "index",
            Role::Config => "config",
            Role::Layer => "layer",
            Role::Unreferenced => "unreferenced",
        })
    }
}

/// A ref file: `registry/repository`, tag, the digest it names, its path.
struct Ref {
    name: String,
    tag: String,
    digest: Digest,
    path: PathBuf,
}

/// Every ref file in the workdir.
fn refs(workdir: &Workdir) -> Result<Vec<Ref>> {
    let mut out = Vec::new();
    for (rel, path) in files_below(&workdir.refs_dir())? {
        let Some((name, tag)) = rel.rsplit_once('/') else {
            continue;
        };
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let Ok(digest) = Digest::parse(text.trim()) else {
            tracing::warn!("ignoring corrupt ref {}", path.display());
            continue;
        };
        out.push(Ref {
            name: name.to_owned(),
            tag: tag.to_owned(),
            digest,
            path,
        });
    }
    Ok(out)
}

/// Which cached images an argument of `images rm` (or `inspect`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    /// A registry reference (its tag, or its pinned digest).
    Ref(crate::image::reference::ImageRef),
    /// An imported image by the name it is cached under; every tag when
    /// none is given.
    Local { name: String, tag: Option<String> },
    /// A digest or a prefix of one, as `images` prints it
    /// (`sha256:0123456789ab`, or 12 or more hex digits).
    Digest(String),
}

impl ImageSelector {
    pub fn parse(s: &str) -> Result<ImageSelector> {
        if let Some(prefix) = digest_prefix(s) {
            return Ok(ImageSelector::Digest(prefix));
        }
        let source = crate::image::source::Source::parse(s)?;
        Ok(match source.local_name() {
            Some((name, tag)) => ImageSelector::Local { name, tag },
            None => ImageSelector::Ref(crate::image::reference::ImageRef::parse(
                s.trim_start_matches("docker://"),
            )?),
        })
    }
}

/// `sha256:<4 to 64 hex>` or 12 to 64 bare hex digits: a digest prefix
/// (`algorithm:hex`).
pub fn digest_prefix(s: &str) -> Option<String> {
    let hex = |h: &str, min: usize| {
        (min..=64).contains(&h.len())
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match s.split_once(':') {
        Some(("sha256", h)) if hex(h, 4) => Some(format!("sha256:{h}")),
        None if hex(s, 12) => Some(format!("sha256:{s}")),
        _ => None,
    }
}

/// The refs `selector` names: (`name`, `tag`, digest, ref file).
pub fn select(workdir: &Workdir, selector: &ImageSelector) -> Result<Vec<(String, String, Digest, PathBuf)>> {
    let all = refs(workdir)?;
    let chosen: Vec<Ref> = match selector {
        ImageSelector::Ref(r) => {
            let tag = match (r.tag(), r.digest()) {
                (Some(t), _) => t.to_owned(),
                (None, Some(d)) => format!("@{}-{}", d.algorithm().name(), d.hex()),
                (None, None) => return Ok(Vec::new()),
            };
            let name = format!("{}/{}", r.registry(), r.repository());
            all.into_iter()
                .filter(|x| x.name == name && x.tag == tag)
                .collect()
        }
        ImageSelector::Local { name, tag } => all
            .into_iter()
            .filter(|x| &x.name == name && tag.as_ref().is_none_or(|t| &x.tag == t))
            .collect(),
        ImageSelector::Digest(prefix) => {
            let chosen: Vec<Ref> = all
                .into_iter()
                .filter(|x| x.digest.to_string().starts_with(prefix.as_str()))
                .collect();
            let distinct: HashSet<&Digest> = chosen.iter().map(|x| &x.digest).collect();
            if distinct.len() > 1 {
                anyhow::bail!(
                    "{prefix} is ambiguous: it begins {} cached images' digests; give more of it",
                    distinct.len()
                );
            }
            chosen
        }
    };
    Ok(chosen
        .into_iter()
        .map(|r| (r.name, r.tag, r.digest, r.path))
        .collect())
}

/// The one blob whose digest begins with `prefix` (`algorithm:hex`).
pub fn blob_by_prefix(workdir: &Workdir, prefix: &str) -> Result<Option<Digest>> {
    let found: Vec<Digest> = blob_files(workdir)?
        .into_iter()
        .map(|(d, _)| d)
        .filter(|d| d.to_string().starts_with(prefix))
        .collect();
    match found.len() {
        0 | 1 => Ok(found.into_iter().next()),
        n => anyhow::bail!("{prefix} is ambiguous: it begins {n} blobs' digests; give more of it"),
    }
}

/// Every ref in the workdir, with its image's size and last use.
pub fn images(workdir: &Workdir) -> Result<Vec<ImageEntry>> {
    let mut out = Vec::new();
    for r in refs(workdir)? {
        let mut roles = BTreeMap::new();
        mark(workdir, &r.digest, &mut roles);
        let size = roles
            .iter()
            .filter(|(_, role)| **role == Role::Layer)
            .filter_map(|(d, _)| fs::metadata(workdir.blob_path(d)).ok())
            .map(|m| m.len())
            .sum();
        let last_used = fs::metadata(&r.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        out.push(ImageEntry {
            name: r.name,
            tag: r.tag,
            digest: r.digest,
            size,
            last_used,
        });
    }
    out.sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
    Ok(out)
}

/// Every blob, with its role for the cached images.
pub fn blobs(workdir: &Workdir) -> Result<Vec<BlobEntry>> {
    let roles = referenced(workdir)?;
    let mut out = Vec::new();
    for (digest, path) in blob_files(workdir)? {
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let role = roles.get(&digest).copied().unwrap_or(Role::Unreferenced);
        out.push(BlobEntry { digest, size, role });
    }
    Ok(out)
}

/// The blobs the cached images and recorded overlay mounts reference.
fn referenced(workdir: &Workdir) -> Result<BTreeMap<Digest, Role>> {
    let mut roles = BTreeMap::new();
    for r in refs(workdir)? {
        mark(workdir, &r.digest, &mut roles);
    }
    for record in overlay_records(workdir) {
        if let Ok(d) = Digest::parse(&record.manifest) {
            mark(workdir, &d, &mut roles);
        }
    }
    Ok(roles)
}

/// Marks a manifest (or index) and everything it references that is cached.
fn mark(workdir: &Workdir, digest: &Digest, roles: &mut BTreeMap<Digest, Role>) {
    let Ok(bytes) = workdir.read_blob(digest, manifest::MAX_MANIFEST_BYTES) else {
        return;
    };
    match Manifest::parse(&bytes, None) {
        Ok(Manifest::Index(entries)) => {
            roles.insert(digest.clone(), Role::Index);
            for e in entries {
                mark(workdir, &e.descriptor.digest, roles);
            }
        }
        Ok(Manifest::Image(m)) => {
            roles.insert(digest.clone(), Role::Manifest);
            roles.insert(m.config.digest.clone(), Role::Config);
            for l in m.layers {
                roles.insert(l.digest, Role::Layer);
            }
        }
        Err(_) => {}
    }
}

fn overlay_records(workdir: &Workdir) -> Vec<overlay::MountRecord> {
    let Ok(dirs) = fs::read_dir(workdir.mounts_dir()) else {
        return Vec::new();
    };
    dirs.filter_map(|d| fs::read(d.ok()?.path().join("mount.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

fn blob_files(workdir: &Workdir) -> Result<Vec<(Digest, PathBuf)>> {
    let mut out = Vec::new();
    for algorithm in ["sha256", "sha512"] {
        let dir = workdir.blobs_dir(algorithm);
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries {
            let e = e?;
            let name = e.file_name();
            match Digest::parse(&format!("{algorithm}:{}", name.to_string_lossy())) {
                Ok(d) => out.push((d, e.path())),
                Err(_) => tracing::debug!("ignoring {} in the blob store", e.path().display()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Regular files below `dir`, by path relative to it.
fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !e.file_name().to_string_lossy().starts_with(".flmount-") {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, e.path()));
            }
        }
    }
    Ok(out)
}

/// What `gc` removed (or would remove).
#[derive(Debug, Default, Serialize)]
pub struct GcStats {
    /// Each path removed (or that would be).
    pub paths: Vec<PathBuf>,
    pub blobs: usize,
    pub overlay_layers: usize,
    pub flists: usize,
    pub chunks: usize,
    /// Change indexes of layers no longer cached.
    pub indexes: usize,
    pub temporary: usize,
    pub bytes: u64,
}

/// Removes what nothing references. With `dry_run`, only counts it.
pub fn gc(workdir: &Workdir, dry_run: bool) -> Result<GcStats> {
    let mut stats = GcStats::default();
    let roles = referenced(workdir)?;
    let remove = |path: &Path, counter: fn(&mut GcStats) -> &mut usize, stats: &mut GcStats| -> Result<()> {
        let bytes = du(path);
        *counter(stats) += 1;
        stats.bytes += bytes;
        stats.paths.push(path.to_owned());
        if !dry_run {
            let md = fs::symlink_metadata(path)?;
            if md.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            }
            .with_context(|| format!("removing {}", path.display()))?;
        }
        tracing::debug!(
            "gc: {}{}",
            if dry_run { "would remove " } else { "removed " },
            path.display()
        );
        Ok(())
    };

    // Blobs.
    for (digest, path) in blob_files(workdir)? {
        if !roles.contains_key(&digest) {
            remove(&path, |s| &mut s.blobs, &mut stats)?;
        }
    }

    // Change indexes of layers no longer cached.
    if let Ok(entries) = fs::read_dir(workdir.index_dir()) {
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // `<algo>-<hex>` (changes) or `<algo>-<hex>.seek` (seek points).
            let keep = (name.strip_suffix(".seek").unwrap_or(&name))
                .split_once('-')
                .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok())
                .is_some_and(|d| roles.get(&d) == Some(&Role::Layer));
            if !keep {
                remove(&e.path(), |s| &mut s.indexes, &mut stats)?;
            }
        }
    }

    // Overlay layer directories: those of referenced images stay.
    let mut chains = HashSet::new();
    for (digest, role) in &roles {
        if *role != Role::Manifest {
            continue;
        }
        if let Ok(Manifest::Image(m)) = workdir
            .read_blob(digest, manifest::MAX_MANIFEST_BYTES)
            .and_then(|b| Manifest::parse(&b, None))
        {
            let layers: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
            chains.extend(overlay::chain_ids(&layers));
        }
    }
    let overlays = workdir.overlays_dir();
    let mut removed_chains = HashSet::new();
    if let Ok(entries) = fs::read_dir(&overlays) {
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !chains.contains(&name) {
                remove(&e.path(), |s| &mut s.overlay_layers, &mut stats)?;
                removed_chains.insert(name);
            }
        }
    }
    // Short links to removed (or missing) layer directories.
    if let Ok(entries) = fs::read_dir(workdir.links_dir()) {
        for e in entries {
            let e = e?;
            let target = fs::read_link(e.path()).unwrap_or_default();
            let chain = target
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if (removed_chains.contains(&chain) || !e.path().exists()) && !dry_run {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    // Flists packed for -fuse mounts, and the chunks only they reference.
    // The flists FUSE mounts are serving right now.
    let flists = workdir.flists_dir();
    let mut kept_flists = Vec::new();
    if let Ok(entries) = fs::read_dir(&flists) {
        for e in entries {
            let e = e?;
            let path = e.path();
            // `<hex>.fl` (packed) or `<hex>.index.fl` (a seek index).
            let manifest = path.file_stem().and_then(|s| {
                let s = s.to_string_lossy();
                Digest::parse(&format!("sha256:{}", s.strip_suffix(".index").unwrap_or(&s))).ok()
            });
            let wanted = manifest.is_some_and(|d| roles.get(&d) == Some(&Role::Manifest))
                || crate::flist::fuse::is_served(&path);
            if wanted {
                kept_flists.push(path);
            } else {
                remove(&path, |s| &mut s.flists, &mut stats)?;
            }
        }
    }
    let store = workdir.store_dir();
    if store.is_dir() {
        let mut keep = HashSet::new();
        for fl in &kept_flists {
            keep.extend(crate::flist::format::Flist::open(fl)?.chunk_ids()?);
        }
        let mut removed = Vec::new();
        for (rel, path) in files_below(&store)? {
            if rel == crate::store::IDENTITY_KEY {
                continue;
            }
            let Some(hex) = rel.rsplit('/').next() else {
                continue;
            };
            let mut id = [0u8; 32];
            if hex::decode_to_slice(hex, &mut id).is_err() || !keep.contains(&id) {
                remove(&path, |s| &mut s.chunks, &mut stats)?;
                removed.push(id);
            }
        }
        if !dry_run && !removed.is_empty() {
            let url = crate::store::StoreUrl::dir(&store).public();
            crate::flist::known::KnownChunks::forget(&workdir.chunk_index_path(), &url, &removed)?;
        }
    }

    // Leftovers of interrupted runs (no run is active: the lock is ours).
    if let Ok(entries) = fs::read_dir(workdir.tmp_dir()) {
        for e in entries {
            remove(&e?.path(), |s| &mut s.temporary, &mut stats)?;
        }
    }
    Ok(stats)
}

/// Bytes below a path (a file's size, or a tree's).
fn du(path: &Path) -> u64 {
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    fs::read_dir(path)
        .map(|es| es.filter_map(|e| e.ok()).map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}
