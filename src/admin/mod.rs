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
            i.tag,
            i.digest.short(),
            human_bytes(i.size),
            age(i.last_used)
        )?;
    }
    Ok(())
}

/// `flmount images rm REF...`: forgets images (their refs).
pub fn forget_images(workdir: &Workdir, refs: &[crate::image::reference::ImageRef]) -> Result<()> {
    for r in refs {
        if !workdir.remove_ref(r)? {
            return Err(not_found(format!(
                "{r} is not a cached image (see flmount images)"
            )));
        }
        tracing::info!("forgot {r}; `flmount gc` removes what only it used");
    }
    Ok(())
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

/// `flmount content path DIGEST`: where a blob is.
pub fn content_path(workdir: &Workdir, digest: &str) -> Result<()> {
    let digest = Digest::parse(digest)?;
    let path = workdir.blob_path(&digest);
    if !path.is_file() {
        return Err(not_found(format!("no blob {digest} in the workdir")));
    }
    println!("{}", path.display());
    Ok(())
}

/// `flmount content rm DIGEST...`: removes blobs (an image that needs one
/// fetches it again on its next use).
pub fn content_rm(workdir: &Workdir, digests: &[String]) -> Result<()> {
    let roles = inventory::blobs(workdir)?;
    for d in digests {
        let digest = Digest::parse(d)?;
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
    tracing::info!(
        "{} {} blobs, {} overlay layer dirs, {} flists, {} chunks, {} temporary files: {}",
        if dry_run { "would remove" } else { "removed" },
        stats.blobs,
        stats.overlay_layers,
        stats.flists,
        stats.chunks,
        stats.temporary,
        human_bytes(stats.bytes)
    );
    Ok(())
}

/// `flmount inspect REF`: manifest, config and layers.
pub fn inspect(image: &PulledImage, as_json: bool) -> Result<()> {
    let config: serde_json::Value = serde_json::from_slice(&image.config)?;
    let layers: Vec<_> = image
        .manifest
        .layers
        .iter()
        .map(|l| json!({ "digest": l.digest.to_string(), "size": l.size, "mediaType": l.media_type }))
        .collect();
    let size: u64 = image.manifest.layers.iter().map(|l| l.size).sum();
    if as_json {
        return print_json(&json!({
            "reference": image.reference.to_string(),
            "digest": image.manifest_digest.to_string(),
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
    writeln!(out, "digest:      {}", image.manifest_digest)?;
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
    writeln!(out, "layers:      {} ({})", layers.len(), human_bytes(size))?;
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
        60..=3599 => format!("{} minutes ago", ago / 60),
        3600..=86_399 => format!("{} hours ago", ago / 3600),
        _ => format!("{} days ago", ago / 86_400),
    }
}

fn not_found(message: String) -> anyhow::Error {
    anyhow::Error::new(crate::image::registry::RegistryError::new(
        crate::image::registry::ErrorKind::NotFound,
        message,
    ))
}
