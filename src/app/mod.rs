//! Running validated settings: the subcommands, and for `-image` the pull
//! (through a configured mirror first) followed by what to do with the
//! image (cache it, inspect, extract, export, bundle, overlay or FUSE mount,
//! flist) and the hand-off files (`-saveconfig`, `-lxcconfig`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

pub mod settings;

use crate::image::pull::{self, PulledImage};
use crate::image::reference::ImageRef;
use crate::image::registry::RegistryClient;
use crate::image::workdir::Workdir;
use crate::owned::{output, signals};
use crate::progress::{human_bytes, Progress};
use crate::{admin, flist::commands, flist::fuse, flist::seekindex, runtime, write::extract, write::overlay};
use settings::{Action, ContentOp, FlistOp, ImageJob, Output, Settings};

/// Runs `s`. Synchronous: the caller has entered a tokio runtime, which
/// the network parts (pulls, stores, FUSE reads) run on.
pub fn run(s: Settings) -> Result<()> {
    let workdir =
        Workdir::open(&s.workdir).with_context(|| format!("opening workdir {}", s.workdir.display()))?;
    let print_json = |value: serde_json::Value| {
        if s.json {
            println!("{value}");
        }
    };
    // Interrupted work removes its temporaries; a FUSE server watches the
    // signals itself (they unmount), so serving drops this first.
    let watch = signals::watch();
    match s.action {
        Action::Image(job) => run_image(workdir, job, s.quiet, s.json, watch),
        Action::Umount { target, stale_only } => {
            let kind = umount(&workdir, &target, stale_only)?;
            print_json(serde_json::json!({ "target": target, "unmounted": kind }));
            Ok(())
        }
        Action::Unpack {
            flist,
            stores,
            target,
            force,
            cache,
        } => {
            let stats = commands::unpack(&flist, &stores, &cache, &target, force)?;
            print_json(serde_json::json!({ "flist": flist, "target": target, "written": stats }));
            Ok(())
        }
        Action::Pack { flist, stores, dir } => {
            let stats = commands::pack_dir(&workdir, &dir, &flist, &stores)?;
            print_json(serde_json::json!({ "flist": flist, "dir": dir, "packed": stats }));
            Ok(())
        }
        Action::Serve { flist, stores, mount } => {
            // A mount lives long: it must not keep `gc` waiting (gc spares
            // what live FUSE mounts use).
            drop(workdir);
            drop(watch);
            commands::serve(&flist, &stores, &mount)
        }
        Action::Flist(op) => match op {
            FlistOp::Ls { flist } => admin::flists::ls(&flist, s.json),
            FlistOp::Inspect { flist } => admin::flists::inspect(&flist, s.json),
            FlistOp::Tag { flist, set, delete } => admin::flists::tag(&flist, &set, &delete, s.json),
            FlistOp::Store { flist, routes } => admin::flists::store(&flist, &routes, s.json),
            FlistOp::Trace {
                flist,
                stores,
                cache,
                command,
                forward,
            } => {
                let options = crate::flist::trace::TraceOptions {
                    workdir: s.workdir.clone(),
                    stores,
                    cache,
                    command,
                    forward,
                };
                let (chunks, bytes) = crate::flist::trace::record(&flist, &options)?;
                print_json(
                    serde_json::json!({ "flist": flist, "trace": { "chunks": chunks, "bytes": bytes } }),
                );
                Ok(())
            }
        },
        Action::Images => admin::images(&workdir, s.json),
        Action::ForgetImages(refs) => admin::forget_images(&workdir, &refs, s.json),
        Action::Content(ContentOp::Ls) => admin::content_ls(&workdir, s.json),
        Action::Content(ContentOp::Path { digest }) => admin::content_path(&workdir, &digest),
        Action::Content(ContentOp::Rm { digests }) => admin::content_rm(&workdir, &digests),
        Action::Gc { dry_run } => {
            drop(workdir);
            let workdir = Workdir::open_exclusive(&s.workdir)?;
            admin::gc(&workdir, dry_run, s.json)
        }
    }
}

/// `-umount DIR`: an flmount FUSE mount, or an overlay this workdir
/// recorded; anything else is left mounted. With `stale_only`, only a FUSE
/// mount whose server is gone. Returns what was unmounted (`fuse`,
/// `overlay`), if anything.
fn umount(workdir: &Workdir, target: &Path, stale_only: bool) -> Result<Option<&'static str>> {
    let mount = crate::owned::mounts::mount_at(target)?;
    let fuse = mount
        .as_ref()
        .is_some_and(|m| m.fstype == crate::owned::mounts::FUSE_TYPE);
    if stale_only {
        if fuse && fuse::health(target) == fuse::Health::Dead {
            fuse::unmount(target)?;
            tracing::info!("cleared the dead mount at {}", target.display());
            return Ok(Some("fuse"));
        }
        tracing::debug!("{}: no dead flmount mount to clear", target.display());
        return Ok(None);
    }
    if mount.is_none() {
        // Nothing to unmount: not found (exit 3).
        return Err(crate::image::registry::RegistryError::new(
            crate::image::registry::ErrorKind::NotFound,
            format!(
                "{} is not mounted by flmount: nothing is mounted there",
                target.display()
            ),
        )
        .into());
    }
    if fuse {
        fuse::unmount(target)?;
    } else {
        overlay::umount(workdir, target)?;
    }
    tracing::info!("unmounted {}", target.display());
    Ok(Some(if fuse { "fuse" } else { "overlay" }))
}

/// `-image REF ...`: pull, then the output and the hand-off files.
fn run_image(workdir: Workdir, job: ImageJob, quiet: bool, json: bool, watch: signals::Watch) -> Result<()> {
    let progress = Progress::new(quiet);
    let image = tokio::runtime::Handle::current().block_on(pull_image(&workdir, &job, &progress))?;
    if let Some(path) = &job.saveconfig {
        output::write(path, &image.config)
            .with_context(|| format!("saving the image config to {}", path.display()))?;
        tracing::info!("saved image config to {}", path.display());
    }
    let started = Instant::now();
    let (kind, target) = describe(&job.output);
    // inspect prints its own JSON.
    let summarise = json && !matches!(job.output, Output::Inspect(_));
    let rootfs = match &job.output {
        Output::Extract { target, .. } | Output::Overlay { target, .. } => Some(target.clone()),
        Output::Bundle { dir, .. } => Some(dir.join("rootfs")),
        _ => None,
    };
    if rootfs.is_none() {
        // No tree to read users from (and serving lasts until unmounted):
        // written first, users looked up in the layers.
        write_lxc_config(&workdir, &image, job.lxcconfig.as_deref())?;
    }
    let layer_files: Vec<_> = image
        .manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), workdir.blob_path(&l.digest)))
        .collect();
    let details = produce(workdir, &image, job.output, json, started, watch, &job.pull)
        .map_err(|e| corrupt_layer(e, &layer_files))?;
    if let Some(rootfs) = &rootfs {
        let path = job.lxcconfig.as_deref();
        write_lxc_config_from(&image, path, runtime::ImageFiles::Rootfs(rootfs))?;
    }
    if summarise {
        let summary = serde_json::json!({
            "image": image.reference.to_string(),
            "digest": image.manifest_digest.to_string(),
            "pull": image.stats,
            "output": kind,
            "target": target,
            "packed": details,
            "seconds": started.elapsed().as_secs_f64(),
        });
        println!("{summary}");
    }
    Ok(())
}

/// Resolves the source and pulls it, from the mirror when one answers.
async fn pull_image(workdir: &Workdir, job: &ImageJob, progress: &Progress) -> Result<PulledImage> {
    let wanted = job
        .pull
        .platform
        .clone()
        .unwrap_or_else(crate::image::manifest::Platform::host);
    // Blocking is fine here: this runs on the caller's thread (block_on).
    let image = match cached_by_digest(workdir, &job.source)? {
        Some(image) => image,
        None => job.source.resolve(workdir, &wanted, job.pull.config_only)?,
    };
    if let Some(mirror) = &job.mirror {
        match pull::pull(workdir, mirror, &job.pull, progress).await {
            Ok(pulled) => {
                tracing::info!("pulled {}", pulled.summary());
                return Ok(pulled);
            }
            Err(e) => tracing::warn!(
                "mirror {}: {e:#}; pulling from {}",
                mirror.registry(),
                image.registry()
            ),
        }
    }
    let pulled = pull::pull(workdir, &image, &job.pull, progress).await?;
    tracing::info!("pulled {}", pulled.summary());
    Ok(pulled)
}

/// An output that failed reading the image's cached layers, not for a
/// reason of this machine (a disk, a signal): when a layer no longer
/// matches its digest, that is the error (exit 6), with the way out.
fn corrupt_layer(e: anyhow::Error, layers: &[(crate::image::digest::Digest, PathBuf)]) -> anyhow::Error {
    let local = e.chain().any(|c| {
        c.is::<signals::Interrupted>()
            || c.is::<crate::owned::Refused>()
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error().is_some())
    });
    // Only a failure while reading a layer is worth re-hashing them for.
    if local || !format!("{e:#}").contains("layer") {
        return e;
    }
    for (digest, path) in layers {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        match crate::image::digest::hash_reader(digest.algorithm(), reader) {
            Ok((actual, _)) if &actual == digest => {}
            Ok(_) => {
                return crate::image::registry::RegistryError::new(
                    crate::image::registry::ErrorKind::Integrity,
                    format!(
                        "the cached layer {digest} ({}) is corrupt: it no longer matches its digest; \
                         run again with -validate-cache to fetch it again ({e:#})",
                        path.display()
                    ),
                )
                .into()
            }
            Err(_) => {}
        }
    }
    e
}

/// A cached image named by (the start of) its digest, as `images` prints
/// it: its name and tag, pinned to that digest (no network is needed).
fn cached_by_digest(workdir: &Workdir, source: &crate::image::source::Source) -> Result<Option<ImageRef>> {
    let crate::image::source::Source::Registry(text) = source else {
        return Ok(None);
    };
    let Some(prefix) = admin::inventory::digest_prefix(text) else {
        return Ok(None);
    };
    let selector = admin::inventory::ImageSelector::Digest(prefix);
    let Some((name, tag, digest, _)) = admin::inventory::select(workdir, &selector)?.into_iter().next()
    else {
        return Ok(None);
    };
    let tag = if tag.starts_with('@') {
        String::new()
    } else {
        format!(":{tag}")
    };
    Ok(Some(ImageRef::parse(&format!("{name}{tag}@{digest}"))?))
}

/// The output's name and place, for the JSON summary.
fn describe(output: &Output) -> (&'static str, Option<PathBuf>) {
    match output {
        Output::Cache => ("cache", None),
        Output::Inspect(_) => ("inspect", None),
        Output::Extract { target, .. } => ("extract", Some(target.clone())),
        Output::Export => ("export", None),
        Output::Overlay { target, .. } => ("overlay", Some(target.clone())),
        Output::Fuse { mount } => ("fuse", Some(mount.mountpoint.clone())),
        Output::Bundle { dir, .. } => ("bundle", Some(dir.clone())),
        Output::Flist { path, .. } => ("flist", Some(path.clone())),
        Output::Lazy { mount, .. } => ("lazy", Some(mount.mountpoint.clone())),
        Output::Index { path, .. } => ("index", path.clone()),
    }
}

/// `-lxcconfig FILE` without a tree: users are looked up in the layers.
fn write_lxc_config(workdir: &Workdir, image: &PulledImage, path: Option<&Path>) -> Result<()> {
    if path.is_none() {
        return Ok(());
    }
    let layers = image.layer_blobs(workdir)?;
    write_lxc_config_from(image, path, runtime::ImageFiles::Layers(&layers))
}

/// `-lxcconfig FILE`, user names looked up in `files`.
fn write_lxc_config_from(image: &PulledImage, path: Option<&Path>, files: runtime::ImageFiles) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let process = runtime::Process::from_image_config(&image.config, files)?;
    output::write(path, process.lxc_config(&image.reference.to_string())?.as_bytes())
        .with_context(|| format!("writing the LXC config {}", path.display()))?;
    tracing::info!("wrote LXC config {}", path.display());
    Ok(())
}

/// Does what `output` says with the pulled image.
fn produce(
    workdir: Workdir,
    image: &PulledImage,
    output: Output,
    json: bool,
    started: Instant,
    watch: signals::Watch,
    pull: &crate::image::pull::PullOptions,
) -> Result<Option<serde_json::Value>> {
    let validate = pull.validate_cache;
    let layers = image.layer_blobs(&workdir)?;
    let digests: Vec<_> = image.manifest.layers.iter().map(|l| l.digest.clone()).collect();
    let secs = || started.elapsed().as_secs_f64();
    match output {
        Output::Cache => {}
        Output::Inspect(view) => admin::inspect(&workdir, image, view, json)?,
        Output::Extract { target, force } => {
            let stats = extract::extract_layers(&layers, &target, force, &Default::default())
                .with_context(|| format!("extracting {} into {}", image.reference, target.display()))?;
            tracing::info!("extracted {stats} in {:.2}s", secs());
        }
        Output::Bundle { dir, force } => {
            let rootfs = dir.join("rootfs");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let stats = extract::extract_layers(&layers, &rootfs, force, &Default::default())
                .with_context(|| format!("extracting {} into {}", image.reference, rootfs.display()))?;
            let hostname = image
                .reference
                .repository()
                .rsplit('/')
                .next()
                .unwrap_or("flmount");
            let spec =
                runtime::Process::from_image_config(&image.config, runtime::ImageFiles::Rootfs(&rootfs))?
                    .runtime_spec(hostname);
            output::write(&dir.join("config.json"), &serde_json::to_vec_pretty(&spec)?)?;
            tracing::info!(
                "wrote an OCI runtime bundle in {}: rootfs ({stats}) and config.json in {:.2}s",
                dir.display(),
                secs()
            );
        }
        Output::Export => {
            let stdout = std::io::stdout().lock();
            crate::write::export::export_layers(&layers, std::io::BufWriter::with_capacity(1 << 20, stdout))
                .with_context(|| format!("writing {} as a tar stream", image.reference))?;
            tracing::info!("exported the root filesystem in {:.2}s", secs());
        }
        Output::Flist { path, stores } => {
            let stats = commands::pack_image(&workdir, &digests, &layers, &path, &stores)
                .with_context(|| format!("packing {} into {}", image.reference, path.display()))?;
            return Ok(Some(serde_json::to_value(stats)?));
        }
        Output::Fuse { mount } => {
            let flist =
                commands::pack_into_workdir(&workdir, &image.manifest_digest, &digests, &layers, validate)
                    .with_context(|| format!("packing {}", image.reference))?;
            // The flist's lock keeps gc from it before serving holds it.
            let _held = fuse::hold_flist(&flist)?;
            // Read from this workdir's store, wherever the workdir was
            // when the flist was packed (it may have moved).
            let store = crate::store::StoreSpec::dir(&workdir.store_dir());
            // Serving lasts: do not hold the workdir's lock meanwhile.
            drop(workdir);
            drop(watch);
            commands::serve(&flist, &[store], &mount)?
        }
        Output::Index { path, push } => {
            let path = path.unwrap_or_else(|| workdir.seek_index_path(&image.manifest_digest));
            let stats = seekindex::build(
                &image.reference.to_string(),
                &image.manifest_digest,
                &image.manifest.layers,
                &layers,
                &path,
            )
            .with_context(|| format!("indexing {}", image.reference))?;
            tracing::info!(
                "indexed {} ({}, {}) into {}: {} checkpoints, {} in {:.2}s",
                image.reference,
                admin::plural(stats.files as usize, "file"),
                human_bytes(stats.bytes),
                path.display(),
                stats.checkpoints,
                human_bytes(stats.index_bytes),
                secs()
            );
            if push {
                let pushed = push_index(&workdir, image, &path, pull)
                    .with_context(|| format!("pushing the seek index of {}", image.reference))?;
                tracing::info!(
                    "pushed the seek index to {} as {pushed}",
                    image.reference.repository()
                );
            }
            return Ok(Some(serde_json::to_value(stats)?));
        }
        Output::Lazy { mount, index } => {
            let (path, registry) = find_index(&workdir, image, index, pull)?;
            let seek = seekindex::open_for(&path, &image.manifest_digest, &image.manifest.layers)
                .with_context(|| format!("the seek index of {}", image.reference))?;
            // Layers this workdir holds are read from it; the others from
            // the registry.
            let local: std::collections::HashMap<_, _> = (image.manifest.layers.iter())
                .filter(|l| workdir.has_blob(&l.digest))
                .map(|l| (l.digest.clone(), workdir.blob_path(&l.digest)))
                .collect();
            let registry = match registry {
                Some(r) => Some(r),
                None if local.len() < image.manifest.layers.len() => Some(connect(image, pull)?),
                None => None,
            };
            let blobs = crate::flist::layerstore::Blobs {
                local,
                registry,
                url: format!("{}/{}", image.reference.registry(), image.reference.repository()),
            };
            let _held = fuse::hold_flist(&path)?;
            drop(workdir);
            drop(watch);
            commands::serve_lazy(&path, seek, blobs, &mount)?
        }
        Output::Overlay { target, overlaydir } => {
            let (chains, stats) = overlay::prepare_layers(&workdir, &digests, &layers)
                .with_context(|| format!("preparing the layers of {}", image.reference))?;
            overlay::mount(
                &workdir,
                &chains,
                &target,
                overlaydir.as_deref(),
                (&image.reference.to_string(), &image.manifest_digest.to_string()),
            )?;
            tracing::info!(
                "mounted {} at {} ({}, {} extracted now) in {:.2}s",
                image.reference,
                target.display(),
                admin::plural(stats.layers, "layer"),
                stats.layers_extracted,
                secs()
            );
        }
    }
    Ok(None)
}

fn connect(image: &PulledImage, pull: &pull::PullOptions) -> Result<RegistryClient> {
    let connect = RegistryClient::connect(&image.reference, &pull.transport, pull.credentials.clone());
    tokio::runtime::Handle::current().block_on(connect)
}

/// The image's seek index for `-lazy`: `-index FILE`; else the workdir's;
/// else the one pushed next to the image, fetched (verified) into the
/// workdir. Returns the registry client when one was needed.
fn find_index(
    workdir: &Workdir,
    image: &PulledImage,
    given: Option<PathBuf>,
    pull: &pull::PullOptions,
) -> Result<(PathBuf, Option<RegistryClient>)> {
    if let Some(path) = given {
        return Ok((path, None));
    }
    let path = workdir.seek_index_path(&image.manifest_digest);
    if path.exists() {
        return Ok((path, None));
    }
    let registry = connect(image, pull)?;
    let rt = tokio::runtime::Handle::current();
    let found = rt.block_on(registry.find_referrer(&image.manifest_digest, seekindex::ARTIFACT_TYPE))?;
    let Some(desc) = found else {
        // open_for says what to do about a missing index.
        return Ok((path, Some(registry)));
    };
    if desc.size > seekindex::MAX_INDEX_BYTES {
        anyhow::bail!(
            "the seek index pushed for {} claims {} bytes, more than the {} accepted",
            image.reference,
            desc.size,
            seekindex::MAX_INDEX_BYTES
        );
    }
    let progress = Progress::new(true).transfer(format!("seek index {}", desc.digest.short()), desc.size);
    rt.block_on(registry.fetch_blob(workdir, &desc, &progress))?;
    // Checked where it landed (a verified blob, left as it is), and copied
    // to the workdir's place for indexes only if it is this image's: a bad
    // one is never where the next run would take it.
    let fetched = workdir.blob_path(&desc.digest);
    seekindex::open_for(&fetched, &image.manifest_digest, &image.manifest.layers)
        .with_context(|| format!("the seek index pushed for {}", image.reference))?;
    std::fs::create_dir_all(workdir.flists_dir())?;
    let tmp = crate::owned::temp::TempFile::new_in(&workdir.flists_dir())?;
    std::fs::copy(&fetched, tmp.path())
        .with_context(|| format!("copying the seek index to {}", path.display()))?;
    output::publish(tmp.into_inner(), &path)?;
    tracing::warn!(
        "using the seek index pushed beside {} ({}): it is trusted as anyone who can push to {} is; give -index FILE to use one you built",
        image.reference,
        human_bytes(desc.size),
        image.reference.repository()
    );
    tracing::info!(
        "fetched the seek index of {} ({})",
        image.reference,
        human_bytes(desc.size)
    );
    Ok((path, Some(registry)))
}

/// `flmount index REF -push`: the index pushed as an artifact referring
/// to the image's manifest.
fn push_index(
    workdir: &Workdir,
    image: &PulledImage,
    path: &Path,
    pull: &pull::PullOptions,
) -> Result<crate::image::digest::Digest> {
    let registry = connect(image, pull)?;
    let content = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let manifest = crate::image::manifest::Descriptor {
        media_type: (image.manifest.media_type.clone())
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned()),
        digest: image.manifest_digest.clone(),
        size: std::fs::metadata(workdir.blob_path(&image.manifest_digest))?.len(),
    };
    tokio::runtime::Handle::current().block_on(registry.push_referrer(
        &manifest,
        seekindex::ARTIFACT_TYPE,
        seekindex::MEDIA_TYPE,
        content,
    ))
}
