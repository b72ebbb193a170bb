//! Pulling an image into the workdir: resolve the reference to a manifest
//! (through an index when the image is multi-platform), then fetch the
//! config and the layers in parallel, each verified by digest. Whatever is
//! already cached is not fetched again; with nothing missing and the
//! reference pinned by digest, no network is used at all.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::image::digest::Digest;
use crate::image::manifest::{self, Descriptor, ImageManifest, Manifest, Platform};
use crate::image::reference::ImageRef;
use crate::image::registry::{Credentials, ErrorKind, RegistryClient, RegistryError, Transport};
use crate::image::workdir::Workdir;
use crate::progress::{human_bytes, Progress};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub transport: Transport,
    pub credentials: Option<Credentials>,
    /// The platform to choose from an index; the host's by default.
    pub platform: Option<Platform>,
    /// Blobs downloaded at once.
    pub parallel_downloads: usize,
    /// Re-hash cached blobs and re-fetch the bad ones.
    pub validate_cache: bool,
    /// Fetch the manifest and config only, not the layers (`inspect`).
    pub config_only: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            transport: Transport::default(),
            credentials: None,
            platform: None,
            parallel_downloads: 4,
            validate_cache: false,
            config_only: false,
        }
    }
}

/// A pulled image: everything it needs is in the workdir, verified.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: ImageRef,
    /// The digest the reference names (an index's, for a multi-platform
    /// image): what `images` shows.
    pub top_digest: Digest,
    /// For a multi-platform image, its index's entries: platform and
    /// manifest digest.
    pub platforms: Vec<(String, Digest)>,
    /// The digest of the platform-specific image manifest.
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    /// The image config JSON.
    pub config: Vec<u8>,
    pub stats: PullStats,
}

impl PulledImage {
    /// The image's layer blobs in the workdir, lowest first.
    pub fn layer_blobs(&self, workdir: &Workdir) -> Result<Vec<crate::fs::layer::LayerBlob>> {
        self.manifest
            .layers
            .iter()
            .map(|l| {
                Ok(
                    crate::fs::layer::LayerBlob::new(&workdir.blob_path(&l.digest), l.layer_compression()?)
                        .with_index(workdir.index_path(&l.digest))
                        .with_seek_points(workdir.seek_points_path(&l.digest)),
                )
            })
            .collect()
    }
}

/// What a pull did, for the summary line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStats {
    pub layers: usize,
    pub layers_fetched: usize,
    pub bytes_total: u64,
    pub bytes_fetched: u64,
    pub seconds: f64,
    /// The registry could not be reached and the cached tag was used.
    pub offline: bool,
}

impl PulledImage {
    /// One line for people: what was pulled, and what it cost.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{} {} ({}, {}; fetched {}, {}; {:.2}s{})",
            self.reference,
            self.manifest_digest,
            plural(s.layers, "layer"),
            human_bytes(s.bytes_total),
            plural(s.layers_fetched, "layer"),
            human_bytes(s.bytes_fetched),
            s.seconds,
            if s.offline {
                "; registry unreachable, used the cache"
            } else {
                ""
            }
        )
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Pulls `image` into `workdir`.
pub async fn pull(
    workdir: &Workdir,
    image: &ImageRef,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PulledImage> {
    let start = Instant::now();
    let puller = Puller {
        workdir,
        image,
        opts,
        client: OnceCell::new(),
    };
    let (top, offline) = puller.resolve_top().await?;
    let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
    let resolved = top.clone();
    let mut platforms = Vec::new();
    let (manifest_digest, manifest) = match puller.manifest(&top)? {
        Manifest::Image(m) => {
            if let Some(p) = &opts.platform {
                tracing::debug!(platform = %p, "image is single-platform; -platform ignored");
            }
            (top, m)
        }
        Manifest::Index(entries) => {
            platforms = entries
                .iter()
                .map(|e| {
                    let p = e
                        .platform
                        .as_ref()
                        .map_or("unknown".to_owned(), |p| p.to_string());
                    (p, e.descriptor.digest.clone())
                })
                .collect();
            let entry = manifest::choose_platform(&entries, &wanted)
                .with_context(|| format!("choosing a platform of {image}"))?;
            let digest = entry.descriptor.digest.clone();
            tracing::debug!(platform = %wanted, manifest = %digest.short(), "platform chosen from index");
            if !workdir.has_blob(&digest) {
                let (bytes, actual) = puller
                    .client()
                    .await?
                    .fetch_manifest(&image.with_digest(&digest))
                    .await?;
                store_manifest(workdir, &digest, &actual, &bytes)?;
            }
            match puller.manifest(&digest)? {
                Manifest::Image(m) => (digest, m),
                Manifest::Index(_) => bail!(
                    "index entry {digest} of {image} is itself an index; nested indexes are not supported"
                ),
            }
        }
    };

    let config_desc = &manifest.config;
    if config_desc.size > manifest::MAX_MANIFEST_BYTES {
        bail!("config of {image} claims {} bytes; refusing", config_desc.size);
    }
    let mut blobs: Vec<&Descriptor> = vec![config_desc];
    if !opts.config_only {
        blobs.extend(manifest.layers.iter());
    }
    let fetched = stream::iter(blobs.iter().copied())
        .map(|desc| puller.ensure_blob(desc, progress))
        .buffered(opts.parallel_downloads.max(1))
        .try_collect::<Vec<u64>>()
        .await?;
    let config = workdir.read_blob(&config_desc.digest, manifest::MAX_MANIFEST_BYTES)?;
    serde_json::from_slice::<serde_json::Value>(&config)
        .with_context(|| format!("the config of {image} is not valid JSON"))?;
    // Every pulled image has a ref: what `images` lists and `gc` keeps.
    let top_digest = match image.digest() {
        Some(d) => d.clone(),
        None => workdir
            .read_ref(image)?
            .unwrap_or_else(|| manifest_digest.clone()),
    };
    if !opts.config_only {
        workdir.write_ref(image, &top_digest)?;
    }
    let stats = PullStats {
        layers: manifest.layers.len(),
        layers_fetched: fetched.iter().skip(1).filter(|&&n| n > 0).count(),
        bytes_total: manifest.layers.iter().map(|l| l.size).sum(),
        bytes_fetched: fetched.iter().sum(),
        seconds: start.elapsed().as_secs_f64(),
        offline,
    };
    Ok(PulledImage {
        reference: image.clone(),
        top_digest: resolved,
        platforms,
        manifest_digest,
        manifest,
        config,
        stats,
    })
}

struct Puller<'a> {
    workdir: &'a Workdir,
    image: &'a ImageRef,
    opts: &'a PullOptions,
    /// Connected on first need: a fully cached, digest-pinned pull never connects.
    client: OnceCell<Arc<RegistryClient>>,
}

impl Puller<'_> {
    async fn client(&self) -> Result<&RegistryClient> {
        let c = self
            .client
            .get_or_try_init(|| async {
                RegistryClient::connect(self.image, &self.opts.transport, self.opts.credentials.clone())
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(c)
    }

    /// The digest of the manifest or index the reference names, with its
    /// content in the workdir. Returns whether the registry was unreachable
    /// and the cached tag used instead.
    async fn resolve_top(&self) -> Result<(Digest, bool)> {
        if let Some(d) = self.image.digest() {
            if !self.workdir.has_blob(d) {
                let (bytes, actual) = self.client().await?.fetch_manifest(self.image.oci()).await?;
                store_manifest(self.workdir, d, &actual, &bytes)?;
            }
            return Ok((d.clone(), false));
        }
        let fetched = async {
            let client = self.client().await?;
            client.fetch_manifest(self.image.oci()).await
        }
        .await;
        match fetched {
            Ok((bytes, digest)) => {
                store_manifest(self.workdir, &digest, &digest, &bytes)?;
                // `inspect` (config only) leaves the cached images as they are.
                if !self.opts.config_only {
                    self.workdir.write_ref(self.image, &digest)?;
                }
                Ok((digest, false))
            }
            Err(e) if is_unavailable(&e) => match self.workdir.read_ref(self.image)? {
                Some(d) if self.workdir.has_blob(&d) => {
                    tracing::warn!("{e:#}; using the cached {} ({})", self.image, d.short());
                    Ok((d, true))
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Parses a cached manifest, checking it against its digest first.
    fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.workdir.read_blob(digest, manifest::MAX_MANIFEST_BYTES)?;
        if &Digest::of(digest.algorithm(), &bytes) != digest {
            std::fs::remove_file(self.workdir.blob_path(digest))?;
            bail!("cached manifest {digest} was corrupt and has been removed; run again to re-fetch it");
        }
        Manifest::parse(&bytes, None).with_context(|| format!("parsing manifest {digest} of {}", self.image))
    }

    /// Makes sure one blob is cached and verified; returns bytes fetched.
    async fn ensure_blob(&self, desc: &Descriptor, progress: &Progress) -> Result<u64> {
        let cached = if self.opts.validate_cache {
            let (wd, d, size) = (self.workdir, desc.digest.clone(), desc.size);
            let path = wd.blob_path(&d);
            let ok = tokio::task::block_in_place(|| wd.verify_blob(&d, size))
                .with_context(|| format!("validating {}", path.display()))?;
            if !ok && path.exists() {
                bail!("could not remove corrupt blob {}", path.display());
            }
            ok
        } else {
            self.workdir.has_blob(&desc.digest)
        };
        let bar = progress.transfer(desc.digest.short(), desc.size);
        if cached {
            bar.finish(0);
            return Ok(0);
        }
        let n = self.client().await?.fetch_blob(self.workdir, desc, &bar).await?;
        bar.finish(n);
        Ok(n)
    }
}

/// Stores a fetched manifest under the digest it was asked for.
fn store_manifest(workdir: &Workdir, wanted: &Digest, actual: &Digest, bytes: &[u8]) -> Result<()> {
    if wanted != actual {
        return Err(anyhow::Error::new(RegistryError::new(
            ErrorKind::Integrity,
            format!("manifest content does not match its digest: expected {wanted}, got {actual}"),
        )));
    }
    workdir.put_blob(wanted, bytes)
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    crate::image::registry::error_kind(e) == Some(ErrorKind::Unavailable)
}
