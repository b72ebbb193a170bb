//! The workdir commands: `images`, `content ls | path | rm`, `gc` and
//! `inspect`. They read the inventory (or an image's manifest and config)
//! and print a table, or JSON with `-json`.

pub mod flists;
pub mod inventory;

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::json;

use crate::image::digest::Digest;
use crate::image::pull::PulledImage;
use crate::image::workdir::Workdir;
use crate::progress::human_bytes;

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// `flmount images`: every cached image.
pub fn images(workdir: &Workdir, as_json: bool) -> Result<()> {
    let images = inventory::images(workdir)?;
    if as_json {
        return print_json(&images);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<50} {:<20} {:<19} {:>10}  LAST PULLED",
        "IMAGE", "TAG", "DIGEST", "SIZE"
    )?;
    for i in images {
        writeln!(
            out,
            "{:<50} {:<20} {:<19} {:>10}  {}",
            i.name,
            shown_tag(&i.tag),
            i.digest.short(),
            human_bytes(i.size),
            age(i.last_used)
        )?;
    }
    Ok(())
}

/// `flmount images rm REF...`: forgets images (their refs). A REF is a
/// registry reference, a local source as `-image` took it (`oci:DIR:TAG`,
/// `docker-archive:FILE:REF`...), or a digest as `images` prints it.
pub fn forget_images(workdir: &Workdir, selectors: &[inventory::ImageSelector], as_json: bool) -> Result<()> {
    let mut forgotten = Vec::new();
    for sel in selectors {
        let refs = inventory::select(workdir, sel)?;
        if refs.is_empty() {
            let what = match sel {
                inventory::ImageSelector::Ref(r) => r.to_string(),
                inventory::ImageSelector::Local { name, tag } => match tag {
                    Some(t) => format!("{name}:{t}"),
                    None => name.clone(),
                },
                inventory::ImageSelector::Digest(d) => d.clone(),
            };
            return Err(not_found(format!(
                "{what} is not a cached image (see flmount images)"
            )));
        }
        for (name, tag, digest, path) in refs {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            tracing::info!(
                "forgot {name} {}; `flmount gc` removes what only it used",
                shown_tag(&tag)
            );
            forgotten.push(json!({ "name": name, "tag": tag, "digest": digest.to_string() }));
        }
    }
    if as_json {
        print_json(&json!({ "forgotten": forgotten }))?;
    }
    Ok(())
}

/// A ref's tag as `images` shows it: `<none>` for a pull by digest.
fn shown_tag(tag: &str) -> &str {
    if tag.starts_with('@') {
        "<none>"
    } else {
        tag
    }
}

/// `flmount content ls`: every blob and its role.
pub fn content_ls(workdir: &Workdir, as_json: bool) -> Result<()> {
    let blobs = inventory::blobs(workdir)?;
    if as_json {
        return print_json(&blobs);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<72} {:>10}  ROLE", "DIGEST", "SIZE")?;
    for b in blobs {
        writeln!(
            out,
            "{:<72} {:>10}  {}",
            b.digest.to_string(),
            human_bytes(b.size),
            b.role
        )?;
    }
    Ok(())
}

/// `flmount content path DIGEST`: where a blob is (a digest, or the start
/// of one as `images` and `content ls` print it).
pub fn content_path(workdir: &Workdir, digest: &str) -> Result<()> {
    let digest = match inventory::digest_prefix(digest) {
        Some(prefix) if Digest::parse(digest).is_err() => inventory::blob_by_prefix(workdir, &prefix)?
            .ok_or_else(|| not_found(format!("no blob {prefix}... in the workdir")))?,
        _ => Digest::parse(digest).map_err(usage)?,
    };
    let path = workdir.blob_path(&digest);
    if !path.is_file() {
        return Err(not_found(format!("no blob {digest} in the workdir")));
    }
    println!("{}", path.display());
    Ok(())
}

/// An argument that is not what the command takes: exit 2.
fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    crate::image::source::BadSource(format!("{e:#}")).into()
}

/// `flmount content rm DIGEST...`: removes blobs (an image that needs one
/// fetches it again on its next use).
pub fn content_rm(workdir: &Workdir, digests: &[String]) -> Result<()> {
    let roles = inventory::blobs(workdir)?;
    for d in digests {
        let digest = Digest::parse(d).map_err(usage)?;
        let path = workdir.blob_path(&digest);
        if !path.is_file() {
            return Err(not_found(format!("no blob {digest} in the workdir")));
        }
        if let Some(b) = roles
            .iter()
            .find(|b| b.digest == digest && b.role != inventory::Role::Unreferenced)
        {
            tracing::warn!(
                "{digest} is a {} of a cached image: it will be fetched again when needed",
                b.role
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        tracing::info!("removed {digest}");
    }
    Ok(())
}

/// `flmount gc`: removes what nothing references.
pub fn gc(workdir: &Workdir, dry_run: bool, as_json: bool) -> Result<()> {
    let stats = inventory::gc(workdir, dry_run)?;
    if as_json {
        return print_json(&json!({ "dry_run": dry_run, "removed": stats }));
    }
    // The result is the command's output (on stdout, also with -q); a dry
    // run lists what it would remove, one path a line.
    let mut out = std::io::stdout().lock();
    if dry_run {
        for p in &stats.paths {
            writeln!(out, "would remove {}", p.display())?;
        }
    }
    writeln!(
        out,
        "{} {}, {}, {}, {}, {}: {}",
        if dry_run { "would remove" } else { "removed" },
        plural(stats.blobs, "blob"),
        plural(stats.overlay_layers, "overlay layer dir"),
        plural(stats.flists, "flist"),
        plural(stats.chunks, "chunk"),
        plural(stats.temporary, "temporary file"),
        human_bytes(stats.bytes)
    )?;
    Ok(())
}

/// What `inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectView {
    /// Digests, platforms, the process, layers.
    Summary,
    /// The manifest (or index) the reference names, as the source gave it.
    Raw,
    /// The image config, as stored.
    Config,
}

/// `flmount inspect REF`: digests (the one `images` shows, and the
/// platform's manifest), the platforms of a multi-platform image, the
/// process and the layers; or the raw manifest or index, or the config.
pub fn inspect(workdir: &Workdir, image: &PulledImage, view: InspectView, as_json: bool) -> Result<()> {
    match view {
        InspectView::Raw => {
            let bytes = workdir.read_blob(&image.top_digest, crate::image::manifest::MAX_MANIFEST_BYTES)?;
            std::io::stdout().lock().write_all(&bytes)?;
            return Ok(());
        }
        InspectView::Config => {
            std::io::stdout().lock().write_all(&image.config)?;
            return Ok(());
        }
        InspectView::Summary => {}
    }
    let config: serde_json::Value = serde_json::from_slice(&image.config)?;
    let layers: Vec<_> = image
        .manifest
        .layers
        .iter()
        .map(|l| json!({ "digest": l.digest.to_string(), "size": l.size, "mediaType": l.media_type }))
        .collect();
    let size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    let platforms: Vec<_> = image
        .platforms
        .iter()
        .map(|(p, d)| json!({ "platform": p, "digest": d.to_string() }))
        .collect();
    if as_json {
        return print_json(&json!({
            "reference": image.reference.to_string(),
            "digest": image.top_digest.to_string(),
            "manifest": image.manifest_digest.to_string(),
            "index": !image.platforms.is_empty(),
            "platforms": platforms,
            "mediaType": image.manifest.media_type,
            "platform": platform(&config),
            "config": config,
            "layers": layers,
            "size": size,
        }));
    }
    let c = &config["config"];
    let show = |v: &serde_json::Value| {
        if v.is_null() {
            "-".to_owned()
        } else {
            v.to_string()
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "image:       {}", image.reference)?;
    writeln!(out, "digest:      {}", image.top_digest)?;
    if !image.platforms.is_empty() {
        writeln!(out, "index:       {}", plural(image.platforms.len(), "platform"))?;
        for (p, d) in &image.platforms {
            let chosen = if *d == image.manifest_digest {
                "  (shown)"
            } else {
                ""
            };
            writeln!(out, "  {p:<20} {d}{chosen}")?;
        }
        writeln!(out, "manifest:    {}", image.manifest_digest)?;
    }
    writeln!(out, "platform:    {}", platform(&config))?;
    writeln!(out, "created:     {}", config["created"].as_str().unwrap_or("-"))?;
    writeln!(out, "entrypoint:  {}", show(&c["Entrypoint"]))?;
    writeln!(out, "cmd:         {}", show(&c["Cmd"]))?;
    writeln!(
        out,
        "workdir:     {}",
        c["WorkingDir"].as_str().filter(|s| !s.is_empty()).unwrap_or("/")
    )?;
    writeln!(
        out,
        "user:        {}",
        c["User"].as_str().filter(|s| !s.is_empty()).unwrap_or("root")
    )?;
    for e in c["Env"].as_array().into_iter().flatten() {
        writeln!(out, "env:         {}", e.as_str().unwrap_or_default())?;
    }
    writeln!(
        out,
        "layers:      {} ({})",
        plural(layers.len(), "layer"),
        human_bytes(size)
    )?;
    for l in &image.manifest.layers {
        writeln!(
            out,
            "  {} {:>10}  {}",
            l.digest,
            human_bytes(l.size),
            l.media_type
        )?;
    }
    Ok(())
}

fn platform(config: &serde_json::Value) -> String {
    let mut p = format!(
        "{}/{}",
        config["os"].as_str().unwrap_or("?"),
        config["architecture"].as_str().unwrap_or("?")
    );
    if let Some(v) = config["variant"].as_str() {
        p.push('/');
        p.push_str(v);
    }
    p
}

/// "3 minutes ago" for a time in seconds since the epoch.
fn age(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = now.saturating_sub(secs);
    match ago {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} ago", plural(ago as usize / 60, "minute")),
        3600..=86_399 => format!("{} ago", plural(ago as usize / 3600, "hour")),
        _ => format!("{} ago", plural(ago as usize / 86_400, "day")),
    }
}

/// "1 layer", "2 layers".
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

fn not_found(message: String) -> anyhow::Error {
    anyhow::Error::new(crate::image::registry::RegistryError::new(
        crate::image::registry::ErrorKind::NotFound,
        message,
    ))
}
