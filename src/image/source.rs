//! Where an image comes from, spelled as skopeo spells it:
//! `docker://REF` (or a bare reference: a registry), `oci:DIR[:TAG]` (an
//! OCI image layout), `oci-archive:FILE[:TAG]` (a layout in a tar file) and
//! `docker-archive:FILE[:REF]` (what `docker save` writes, in its legacy
//! form or with an OCI layout inside).
//!
//! A local source is imported into the workdir: the chosen manifest, its
//! config and its layers, each checked against its digest (and size) before
//! it is renamed into `blobs/`. What comes back is a reference pinned to
//! the manifest's digest, whose pull is then served from the cache with no
//! network, through the same path as a registry pull. Archives are
//! unpacked into the workdir's `tmp/` first (regular files under safe
//! relative names only) and their blobs moved, not copied.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::image::digest::{Digest, Hasher};
use crate::image::manifest::{self, Descriptor, Manifest, Platform};
use crate::image::reference::ImageRef;
use crate::image::workdir::Workdir;

/// Where `-image` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Registry(String),
    OciDir { dir: PathBuf, tag: Option<String> },
    OciArchive { file: PathBuf, tag: Option<String> },
    DockerArchive { file: PathBuf, tag: Option<String> },
}

impl Source {
    pub fn parse(s: &str) -> Source {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            // `PATH:TAG`, unless what follows the last `:` looks like a path.
            match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.is_empty() && !tag.contains('/') && !path.is_empty() => {
                    (PathBuf::from(path), Some(tag.to_owned()))
                }
                _ => (PathBuf::from(rest), None),
            }
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            return Source::Registry(rest.to_owned());
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split(rest);
            return Source::OciDir { dir, tag };
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split(rest);
            return Source::OciArchive { file, tag };
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // The optional part is a reference, which may hold a `:` itself.
            let (file, tag) = match rest.split_once(':') {
                Some((f, r)) if !r.is_empty() => (PathBuf::from(f), Some(r.to_owned())),
                _ => (PathBuf::from(rest), None),
            };
            return Source::DockerArchive { file, tag };
        }
        Source::Registry(s.to_owned())
    }

    /// The reference to pull: the registry's, or the imported image's.
    pub fn resolve(&self, workdir: &Workdir, platform: &Platform) -> Result<ImageRef> {
        match self {
            Source::Registry(r) => ImageRef::parse(r),
            Source::OciDir { dir, tag } => {
                let digest = import_layout(workdir, dir, tag.as_deref(), platform, Mode::Copy)
                    .with_context(|| format!("importing the OCI layout {}", dir.display()))?;
                pinned("oci.local", dir, &digest)
            }
            Source::OciArchive { file, tag } => {
                let digest = with_unpacked(workdir, file, |dir| {
                    import_layout(workdir, dir, tag.as_deref(), platform, Mode::Move)
                })
                .with_context(|| format!("importing the OCI archive {}", file.display()))?;
                pinned("oci-archive.local", file, &digest)
            }
            Source::DockerArchive { file, tag } => {
                let digest = with_unpacked(workdir, file, |dir| {
                    if dir.join("index.json").is_file() && !dir.join("manifest.json").is_file() {
                        import_layout(workdir, dir, tag.as_deref(), platform, Mode::Move)
                    } else {
                        import_docker_save(workdir, dir, tag.as_deref())
                    }
                })
                .with_context(|| format!("importing the docker archive {}", file.display()))?;
                pinned("docker-archive.local", file, &digest)
            }
        }
    }
}

/// A name for an imported image, for logs: `<kind>.local/<file name>@<digest>`.
fn pinned(kind: &str, path: &Path, digest: &Digest) -> Result<ImageRef> {
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        name = "image".into();
    }
    ImageRef::parse(&format!("{kind}/{name}@{digest}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The source is the user's: copy its blobs, checking them on the way.
    Copy,
    /// The source was unpacked by us: check its blobs, then move them.
    Move,
    /// Unpacked by us and named by the digest just computed from it: move.
    Adopt,
}

#[derive(Deserialize)]
struct LayoutIndex {
    manifests: Vec<LayoutEntry>,
}

#[derive(Deserialize)]
struct LayoutEntry {
    #[serde(flatten)]
    descriptor: Descriptor,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports the image `tag` names in the layout at `dir` (the only one when
/// no tag is given); returns the image manifest's digest.
fn import_layout(
    workdir: &Workdir,
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
    mode: Mode,
) -> Result<Digest> {
    let index: LayoutIndex = serde_json::from_slice(&read_small(&dir.join("index.json"))?)
        .context("index.json is not an OCI image index")?;
    let tags = || {
        let names: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let entry = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|m| {
                m.annotations
                    .get(REF_NAME)
                    .is_some_and(|n| n == tag || n.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            })
            .with_context(|| format!("no image tagged {tag:?} (tags: {})", tags()))?,
        None if index.manifests.len() == 1 => &index.manifests[0],
        None => bail!(
            "the layout holds {} images: name one with :TAG (tags: {})",
            index.manifests.len(),
            tags()
        ),
    };
    let mut digest = entry.descriptor.digest.clone();
    let mut bytes = import_small(workdir, dir, &entry.descriptor)?;
    let image = loop {
        match Manifest::parse(&bytes, Some(&entry.descriptor.media_type))? {
            Manifest::Image(m) => break m,
            Manifest::Index(entries) => {
                let chosen = manifest::choose_platform(&entries, platform)?;
                digest = chosen.descriptor.digest.clone();
                bytes = import_small(workdir, dir, &chosen.descriptor)?;
                if matches!(Manifest::parse(&bytes, None)?, Manifest::Index(_)) {
                    bail!("index {digest} holds another index; nested indexes are not supported");
                }
            }
        }
    };
    import_small(workdir, dir, &image.config)?;
    for layer in &image.layers {
        import_blob(
            workdir,
            &layer_path(dir, &layer.digest),
            &layer.digest,
            Some(layer.size),
            mode,
        )?;
    }
    Ok(digest)
}

fn layer_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().name())
        .join(digest.hex())
}

/// Imports a manifest or config (bounded in size) and returns its bytes.
fn import_small(workdir: &Workdir, dir: &Path, desc: &Descriptor) -> Result<Vec<u8>> {
    if desc.size > manifest::MAX_MANIFEST_BYTES {
        bail!("{} claims {} bytes; refusing", desc.digest, desc.size);
    }
    let bytes = read_small(&layer_path(dir, &desc.digest))?;
    if bytes.len() as u64 != desc.size {
        bail!(
            "{} is {} bytes, its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        );
    }
    workdir.put_blob(&desc.digest, &bytes)?;
    Ok(bytes)
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(manifest::MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > manifest::MAX_MANIFEST_BYTES {
        bail!(
            "{} is larger than {} bytes",
            path.display(),
            manifest::MAX_MANIFEST_BYTES
        );
    }
    Ok(bytes)
}

/// Puts the file at `src` into the workdir as blob `digest`, after checking
/// its content (and size, when known). Returns the digest.
fn import_blob(workdir: &Workdir, src: &Path, digest: &Digest, size: Option<u64>, mode: Mode) -> Result<()> {
    if workdir.has_blob(digest) {
        return Ok(());
    }
    let mismatch = || {
        anyhow::anyhow!(
            "{} does not match its descriptor ({digest}, {size:?} bytes)",
            src.display()
        )
    };
    let dest = workdir.blob_path(digest);
    fs::create_dir_all(dest.parent().unwrap())?;
    if mode != Mode::Copy {
        if mode == Mode::Move {
            let (actual, n) = hash_file(src, digest.algorithm())?;
            if &actual != digest || size.is_some_and(|s| s != n) {
                return Err(mismatch());
            }
        }
        if fs::rename(src, &dest).is_ok() {
            return Ok(());
        }
    }
    // A copy is checked as it is written (the user's source may change).
    let tmp = workdir
        .root()
        .join("tmp")
        .join(format!(".import-{}", digest.hex()));
    let result = (|| -> Result<()> {
        let mut hasher = Hasher::new(digest.algorithm());
        let mut input = File::open(src)?;
        let mut out = File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = input.read(&mut buf)?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            out.write_all(&buf[..k])?;
            n += k as u64;
        }
        out.sync_all()?;
        if hasher.finish() != *digest || size.is_some_and(|s| s != n) {
            return Err(mismatch());
        }
        fs::rename(&tmp, &dest)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("importing {}", src.display()))
}

fn hash_file(path: &Path, algorithm: crate::image::digest::Algorithm) -> Result<(Digest, u64)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    crate::image::digest::hash_reader(algorithm, file).with_context(|| format!("reading {}", path.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports an image of a legacy `docker save` archive (unpacked in `dir`):
/// its config and layer tars become blobs, under an OCI manifest written
/// for them. Returns the manifest's digest.
fn import_docker_save(workdir: &Workdir, dir: &Path, tag: Option<&str>) -> Result<Digest> {
    let entries: Vec<SaveEntry> = serde_json::from_slice(&read_small(&dir.join("manifest.json"))?)
        .context("manifest.json is not a docker save manifest")?;
    let all_tags = || {
        entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = match tag {
        Some(tag) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            })
            .with_context(|| format!("no image tagged {tag:?} (tags: {})", all_tags()))?,
        None if entries.len() == 1 => &entries[0],
        None => bail!(
            "the archive holds {} images: name one with :REF (tags: {})",
            entries.len(),
            all_tags()
        ),
    };
    let config_path = safe_join(dir, &entry.config)?;
    let config = read_small(&config_path)?;
    let config_digest = Digest::sha256_of(&config);
    workdir.put_blob(&config_digest, &config)?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let path = safe_join(dir, name)?;
        let (digest, size) = hash_file(&path, crate::image::digest::Algorithm::Sha256)?;
        let media_type = match sniff(&path)? {
            manifest::Compression::None => "application/vnd.oci.image.layer.v1.tar",
            manifest::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            manifest::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        import_blob(workdir, &path, &digest, Some(size), Mode::Adopt)?;
        layers.push(json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers,
    }))?;
    let digest = Digest::sha256_of(&manifest);
    workdir.put_blob(&digest, &manifest)?;
    Ok(digest)
}

/// A layer's compression, from its first bytes.
fn sniff(path: &Path) -> Result<manifest::Compression> {
    let mut magic = [0u8; 4];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => manifest::Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => manifest::Compression::Zstd,
        _ => manifest::Compression::None,
    })
}

/// `dir/name` for a name from an archive: relative, no `..`.
fn safe_join(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("the archive names {name:?}, outside the archive");
    }
    Ok(dir.join(rel))
}

/// Unpacks the tar archive `file` into a fresh directory under the
/// workdir's `tmp/` (regular files and directories only, under safe
/// relative names), runs `f` on it, and removes it.
fn with_unpacked<T>(workdir: &Workdir, file: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(workdir.tmp_dir())
        .context("creating a directory for the archive")?;
    let input = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = crate::fs::tarstream::TarReader::new(std::io::BufReader::with_capacity(1 << 20, input));
    while let Some(member) = archive.next_member()? {
        let name = String::from_utf8_lossy(&member.path).into_owned();
        if member.kind == b'5' {
            continue;
        }
        if !matches!(member.kind, b'0' | b'7') {
            tracing::debug!("skipping {name:?} in the archive (not a regular file)");
            continue;
        }
        let dest = safe_join(tmp.path(), &name)?;
        fs::create_dir_all(dest.parent().unwrap())?;
        let mut out = File::create(&dest).with_context(|| format!("unpacking {name}"))?;
        std::io::copy(&mut archive.content(), &mut out).with_context(|| format!("unpacking {name}"))?;
    }
    f(tmp.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        assert_eq!(Source::parse("alpine"), Source::Registry("alpine".into()));
        assert_eq!(
            Source::parse("docker://host:5000/a:1"),
            Source::Registry("host:5000/a:1".into())
        );
        assert_eq!(
            Source::parse("oci:/srv/layout:v1"),
            Source::OciDir {
                dir: "/srv/layout".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci:layout"),
            Source::OciDir {
                dir: "layout".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("oci-archive:/tmp/a.tar"),
            Source::OciArchive {
                file: "/tmp/a.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/tmp/s.tar:nginx:1.27"),
            Source::DockerArchive {
                file: "/tmp/s.tar".into(),
                tag: Some("nginx:1.27".into())
            }
        );
    }

    #[test]
    fn archive_names_stay_inside() {
        let dir = Path::new("/x");
        assert!(safe_join(dir, "blobs/sha256/ab").is_ok());
        assert!(safe_join(dir, "../etc/passwd").is_err());
        assert!(safe_join(dir, "/etc/passwd").is_err());
        assert!(safe_join(dir, "a/../../b").is_err());
    }
}
