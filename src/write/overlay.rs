//! `-mount`: an overlayfs over per-layer directories cached in the workdir.
//!
//! ```text
//! WORKDIR/
//! ├── overlays/<chain>/diff     one layer in overlayfs form (whiteouts are
//! │                             0/0 character devices, opaque directories
//! │                             carry trusted.overlay.opaque=y)
//! ├── l/<SHORT> -> ../overlays/<chain>/diff
//! │                             short names, so 100+ lowerdirs fit in the
//! │                             one page mount(2) takes for its options
//! └── mounts/<id>/              one per mount point (id from its path):
//!     ├── mount.json            what is mounted there
//!     ├── upper/, work/         the writable layer (unless -overlaydir)
//! ```
//!
//! A layer's directory depends on the layers below it (a path through a
//! lower symlink lands where the symlink points; a hard link to a lower
//! file copies that file up, as applying the layer onto a mounted overlay
//! would), so it is keyed by the *chain*: the hash of the layer's digest
//! and the chain below, as containerd keys its snapshots. Images that share
//! their lower layers share those directories. A layer directory is built
//! in a staging directory and renamed into place, so one that exists is
//! complete; a second mount of a cached image does no extraction.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::fs::layer::LayerBlob;
use crate::fs::tree::Tree;
use crate::image::digest::Digest;
use crate::image::workdir::{write_atomic, Workdir};
use crate::owned::mounts::{self, Proof};
use crate::owned::temp::Staging;
use crate::owned::FileId;
use crate::write::extract::{self, WriteOptions};

/// The most mount(2) accepts for its option string (one page).
const MOUNT_OPTIONS_MAX: usize = 4096;

/// What `mount.json` records about a mount: written once the mount exists,
/// it is the proof `-umount` asks for (the mount's device and its upper
/// directory's identity), and it binds the upper directory to the image.
#[derive(Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    pub image: String,
    pub manifest: String,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Upper and work live in the workdir (not a user's -overlaydir).
    pub owned_upper: bool,
    /// The overlay's device number, as `stat` shows it below the mount.
    #[serde(default)]
    pub mount_dev: Option<u64>,
    /// The upper directory's identity.
    #[serde(default)]
    pub upper_id: Option<FileId>,
    /// The mount's id in the mount table.
    #[serde(default)]
    pub mount_id: Option<u64>,
}

/// The image a user's `-overlaydir` holds the writable layer of.
const OVERLAYDIR_MARKER: &str = ".flmount-overlay.json";

/// What mounting did.
#[derive(Debug, Default)]
pub struct MountStats {
    pub layers: usize,
    pub layers_extracted: usize,
}

/// Chain keys of `layers` (lowest first).
pub fn chain_ids(layers: &[Digest]) -> Vec<String> {
    let mut out = Vec::with_capacity(layers.len());
    let mut prev = String::new();
    for d in layers {
        let mut h = Sha256::new();
        // The version of the layer directories' form: a new one never
        // reuses directories an older flmount wrote differently.
        h.update(b"flmount-overlay-2 ");
        h.update(prev.as_bytes());
        h.update(b" ");
        h.update(d.to_string().as_bytes());
        prev = hex::encode(h.finalize());
        out.push(prev.clone());
    }
    out
}

/// The short link name of a chain: 10 characters, `l/` + 10 + `:` = 13
/// bytes a layer, so about 290 layers fit in the mount options (the kernel
/// stacks at most 500; images rarely pass 127).
fn short_name(chain: &str) -> String {
    chain[..10].to_ascii_uppercase()
}

/// Makes sure every layer has its overlay directory and short link.
pub fn prepare_layers(
    workdir: &Workdir,
    digests: &[Digest],
    blobs: &[LayerBlob],
) -> Result<(Vec<String>, MountStats)> {
    let chains = chain_ids(digests);
    let overlays = workdir.overlays_dir();
    let links = workdir.links_dir();
    std::fs::create_dir_all(&overlays)?;
    std::fs::create_dir_all(&links)?;
    let missing: Vec<usize> = (0..chains.len())
        .filter(|&i| !overlays.join(&chains[i]).is_dir())
        .collect();
    let mut stats = MountStats {
        layers: chains.len(),
        layers_extracted: 0,
    };
    if !missing.is_empty() {
        // The tree must be built through the lowest missing layer.
        let upto = *missing.last().unwrap();
        let changes = crate::fs::layer::read_all(&blobs[..=upto])?;
        let mut tree = Tree::new();
        let opts = WriteOptions::default();
        for i in 0..=upto {
            let diff = tree.apply_layer(i, &changes[i])?;
            if !missing.contains(&i) {
                continue;
            }
            let plan = tree.plan_diff(&diff);
            // A staging tree a killed preparation left is removed first.
            crate::owned::temp::remove_stale(&overlays, &chains[i][..12]);
            let staging = Staging::new_in(&overlays, &chains[i][..12])?;
            let diff_dir = staging.path().join("diff");
            std::fs::create_dir(&diff_dir)?;
            extract::write_plan(
                &plan,
                &crate::fs::content::LayerContent(&blobs[..=i]),
                &diff_dir,
                &opts,
            )
            .with_context(|| format!("preparing the overlay directory of layer {}", digests[i]))?;
            let dest = overlays.join(&chains[i]);
            match staging.persist(&dest) {
                Ok(()) => stats.layers_extracted += 1,
                // Another flmount made it meanwhile: theirs is as good as ours
                // (ours is removed as the staging directory drops).
                Err(_) if dest.is_dir() => {}
                Err(e) => return Err(e).context("moving an overlay layer into place"),
            }
        }
    }
    for chain in &chains {
        let link = links.join(short_name(chain));
        let target = PathBuf::from("../overlays").join(chain).join("diff");
        if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
            continue;
        }
        let tmp = links.join(format!(".{}.{}", short_name(chain), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)?;
        std::fs::rename(&tmp, &link).with_context(|| format!("creating {}", link.display()))?;
    }
    Ok((chains, stats))
}

/// Where a mount point's state lives in the workdir (keyed by the mount
/// point's canonical path).
pub fn state_dir(workdir: &Workdir, mountpoint: &Path) -> PathBuf {
    let id = hex::encode(&Sha256::digest(mountpoint.as_os_str().as_bytes())[..8]);
    workdir.mounts_dir().join(id)
}

fn read_record(state: &Path) -> Option<MountRecord> {
    std::fs::read(state.join("mount.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Mounts the overlay of `chains` (lowest first) at `mountpoint`, with
/// the writable layer of `record` (image, manifest digest).
pub fn mount(
    workdir: &Workdir,
    chains: &[String],
    mountpoint: &Path,
    overlaydir: Option<&Path>,
    record: (&str, &str),
) -> Result<()> {
    let (image, manifest) = record;
    std::fs::create_dir_all(mountpoint).with_context(|| format!("creating {}", mountpoint.display()))?;
    let mountpoint = &mounts::canonical(mountpoint)?;
    if let Some(m) = mounts::mount_at(mountpoint)? {
        bail!(
            "{} is already a mount point ({}); unmount it first (flmount -umount {} if flmount mounted it)",
            mountpoint.display(),
            m.fstype,
            mountpoint.display()
        );
    }
    let state = state_dir(workdir, mountpoint);
    let (base, owned) = match overlaydir {
        Some(d) => (std::path::absolute(d)?, false),
        None => (state.clone(), true),
    };
    let upper = base.join("upper");
    let work = base.join("work");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)
            .with_context(|| format!("creating {}", base.display()))?;
    }
    // A user's -overlaydir is checked (the workdir's own is flmount's).
    let check = |dir: &Path| if owned { Ok(()) } else { own_directory(dir) };
    check(&base)?;
    for dir in [&upper, &work] {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).with_context(|| format!("creating {}", dir.display()));
            }
            _ => check(dir)?,
        }
    }
    let upper_empty = std::fs::read_dir(&upper)?.next().is_none();
    check_upper_is_for(manifest, mountpoint, &state, &base, owned, upper_empty)?;
    if upper_empty {
        // The mount's root shows the upper directory's metadata: give it the
        // merged image root's (xattrs included), which every layer's
        // directory carries.
        let top = chains
            .last()
            .context("an image without layers cannot be mounted")?;
        copy_dir_meta(&workdir.overlays_dir().join(top).join("diff"), &upper)?;
    }
    let lowers: Vec<String> = chains
        .iter()
        .rev()
        .map(|c| format!("l/{}", short_name(c)))
        .collect();
    let mut options = format!("lowerdir={},upperdir=", lowers.join(":")).into_bytes();
    options.extend(mounts::escape_option(&upper));
    options.extend(b",workdir=");
    options.extend(mounts::escape_option(&work));
    if options.len() >= MOUNT_OPTIONS_MAX {
        bail!(
            "{} layers need {} bytes of mount options, more than the {MOUNT_OPTIONS_MAX} the kernel takes",
            chains.len(),
            options.len()
        );
    }
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    let data = CString::new(options.clone())?;
    // A signal between the mount and its record would leave a mount that
    // -umount cannot prove is flmount's: the two are done together.
    let _critical = crate::owned::signals::critical();
    // The lowerdirs are short paths relative to the workdir: mount(2) runs
    // on a thread of its own that stops sharing the process's working
    // directory (unshare(CLONE_FS)) and moves into the workdir, so no other
    // thread sees its working directory change.
    let root = workdir.root().to_owned();
    let mounted = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
        std::env::set_current_dir(&root)?;
        // SAFETY: NUL-terminated strings; the data is the overlay option string.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the mounting thread panicked"))?;
    if let Err(err) = mounted {
        let hint = if err.raw_os_error() == Some(libc::EPERM) {
            " (mounting needs root)"
        } else {
            ""
        };
        bail!("mounting overlayfs at {}: {err}{hint}", mountpoint.display());
    }
    // The record exists only for a mount that exists.
    let recorded = (|| -> Result<()> {
        let record = MountRecord {
            mountpoint: mountpoint.to_owned(),
            image: image.to_owned(),
            manifest: manifest.to_owned(),
            upper: upper.clone(),
            work: work.clone(),
            owned_upper: owned,
            mount_dev: Some(FileId::following(mountpoint)?.dev),
            upper_id: Some(FileId::following(&upper)?),
            mount_id: mounts::mount_at(mountpoint)?.map(|m| m.id),
        };
        let json = serde_json::to_vec_pretty(&record)?;
        if !owned {
            write_atomic(&base.join(OVERLAYDIR_MARKER), &json)?;
        }
        write_atomic(&state.join("mount.json"), &json)
    })();
    if let Err(e) = recorded {
        let _ = nix::mount::umount2(
            mountpoint,
            nix::mount::MntFlags::UMOUNT_NOFOLLOW | nix::mount::MntFlags::MNT_DETACH,
        );
        return Err(e.context(format!("recording the mount at {}", mountpoint.display())));
    }
    tracing::debug!(options = %String::from_utf8_lossy(&options), "mounted");
    Ok(())
}

/// `dir` is a real directory (not a symlink) of this user's that nobody
/// else may write: the writable layer's place, whose contents are trusted.
fn own_directory(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    if !m.is_dir() {
        crate::refuse!(
            "{} is not a directory (a symlink?); the overlay's writable layer needs one of its own",
            dir.display()
        );
    }
    if m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        crate::refuse!(
            "{} is owned by uid {} or writable by others (mode {:o}); -overlaydir must be the mounting user's own",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        );
    }
    Ok(())
}

/// A writable layer left by another image is not put over this one.
fn check_upper_is_for(
    manifest: &str,
    mountpoint: &Path,
    state: &Path,
    base: &Path,
    owned: bool,
    upper_empty: bool,
) -> Result<()> {
    if upper_empty {
        return Ok(());
    }
    let recorded: Option<MountRecord> = if owned {
        read_record(state)
    } else {
        std::fs::read(base.join(OVERLAYDIR_MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    match recorded {
        Some(r) if r.manifest == manifest => Ok(()),
        Some(r) => crate::refuse!(
            "{} holds the writable layer of another image ({}, {}); \
             to discard it run flmount -umount {}, or give this image its own -overlaydir",
            base.join("upper").display(),
            r.image,
            r.manifest,
            mountpoint.display()
        ),
        None if owned => crate::refuse!(
            "{} holds a writable layer flmount has no record of; \
             to discard it run flmount -umount {}, or give -overlaydir",
            base.join("upper").display(),
            mountpoint.display()
        ),
        None => crate::refuse!(
            "-overlaydir {}: its upper/ is not empty and flmount did not make it; give a new directory",
            base.display()
        ),
    }
}

fn copy_dir_meta(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(from).with_context(|| format!("reading {}", from.display()))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid()))?;
    }
    std::fs::set_permissions(to, m.permissions())?;
    for name in xattr::list(from).with_context(|| format!("reading the xattrs of {}", from.display()))? {
        // overlayfs's own markers belong to the layer directory, not the root.
        if crate::fs::layer::is_overlay_xattr(name.as_bytes()) {
            continue;
        }
        if let Some(value) = xattr::get(from, &name)? {
            xattr::set(to, &name, &value).with_context(|| {
                format!("copying the xattr {} to {}", name.to_string_lossy(), to.display())
            })?;
        }
    }
    std::fs::File::open(to)?.set_modified(m.modified()?)?;
    Ok(())
}

/// Unmounts the overlay flmount mounted at `mountpoint` (its record in
/// this workdir is the proof) and removes its state, with its upper and
/// work directories when they live in the workdir. A record whose mount
/// is already gone (a plain `umount`, a reboot) is cleaned up the same way.
/// Anything else mounted there is left alone.
pub fn umount(workdir: &Workdir, mountpoint: &Path) -> Result<()> {
    let mountpoint = &mounts::canonical(mountpoint)?;
    let state = state_dir(workdir, mountpoint);
    let record = read_record(&state);
    match (mounts::mount_at(mountpoint)?, &record) {
        (Some(m), None) => crate::refuse!(
            "{} is a {} mount that flmount did not make (no record of it in {}); leaving it mounted",
            mountpoint.display(),
            m.fstype,
            workdir.root().display()
        ),
        (Some(m), Some(r)) => {
            let proof = Proof::Overlay {
                id: r.mount_id,
                dev: r.mount_dev.unwrap_or(m.dev),
                upper: match r.upper_id {
                    Some(id) => id,
                    None => FileId::following(&r.upper)?,
                },
            };
            mounts::unmount(mountpoint, &proof, false)?;
        }
        (None, Some(_)) => tracing::info!(
            "{} was already unmounted: removing its state",
            mountpoint.display()
        ),
        (None, None) => bail!("{} is not mounted by flmount", mountpoint.display()),
    }
    if let Some(r) = &record {
        if !r.owned_upper {
            // The user's -overlaydir: keep their upper (it is their data).
            let _ = std::fs::remove_dir_all(&r.work);
        }
    }
    if state.exists() {
        std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_depend_on_everything_below() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        let ab = chain_ids(&[a.clone(), b.clone()]);
        let b_alone = chain_ids(std::slice::from_ref(&b));
        assert_eq!(ab[0], chain_ids(std::slice::from_ref(&a))[0]);
        assert_ne!(ab[1], b_alone[0]);
        assert_eq!(short_name(&ab[1]).len(), 10);
    }

    #[test]
    fn options_for_many_layers_fit() {
        let digests: Vec<Digest> = (0..250u32).map(|i| Digest::sha256_of(&i.to_le_bytes())).collect();
        let chains = chain_ids(&digests);
        let lowers: Vec<String> = chains.iter().map(|c| format!("l/{}", short_name(c))).collect();
        assert!(lowers.join(":").len() + 200 < MOUNT_OPTIONS_MAX);
    }
}
