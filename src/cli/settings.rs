//! Turning flags (and the config file's defaults) into validated settings,
//! or a usage error (exit 2).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::args::{parse_size, Args, Command, ImagesOp};
use super::config::Config;
use crate::app::settings::{Action, FlistOp, ImageJob, InspectView, Output, Settings};
use crate::flist::chunkcache::CacheOptions;
use crate::flist::fuse::MountOptions;
use crate::image::manifest::Platform;
use crate::image::pull::PullOptions;
use crate::image::reference::ImageRef;
use crate::image::registry::{Credentials, Transport};
use crate::image::source::Source;
use crate::image::workdir::Workdir;

/// Decoded chunks a reader keeps in memory (512 KiB each).
const MEMORY_CHUNKS: usize = 32;

impl Args {
    /// Turns raw flags into settings, or a usage error.
    pub fn settings(mut self, config: &Config) -> Result<Settings> {
        let workdir = absolute(
            self.workdir
                .clone()
                .or_else(|| config.workdir.clone())
                .unwrap_or_else(Workdir::default_path),
        )?;
        let cache_size = match (self.cache_size, &config.cache_size) {
            (Some(size), _) => size,
            (None, Some(text)) => {
                parse_size(text).map_err(|e| anyhow::anyhow!("cache_size in the config file: {e}"))?
            }
            (None, None) => CacheOptions::DEFAULT_SIZE,
        };
        if self.stores.is_empty() {
            self.stores = config.stores.clone();
        }
        let (quiet, json) = (self.quiet, self.json);
        let tier = specs(&self.cache_store).context("-cache-store")?;
        let timeout = Duration::from_secs(self.timeout);
        let cache_options = |dir: Option<PathBuf>| -> Result<CacheOptions> {
            Ok(CacheOptions {
                dir: dir.map(absolute).transpose()?,
                size_limit: cache_size,
                memory_chunks: MEMORY_CHUNKS,
                timeout,
                adopt_dir: false,
                tier: tier.clone(),
            })
        };
        let simple = |action: Action| Settings {
            workdir: workdir.clone(),
            quiet,
            json,
            action,
        };
        let mut inspect: Option<InspectView> = None;
        let mut index = None;
        match self.command.take() {
            Some(Command::Images { op: None }) => return Ok(simple(Action::Images)),
            Some(Command::Images {
                op: Some(ImagesOp::Rm { images }),
            }) => {
                let refs = images
                    .iter()
                    .map(|i| crate::admin::inventory::ImageSelector::parse(i))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(simple(Action::ForgetImages(refs)));
            }
            Some(Command::Content { op }) => return Ok(simple(Action::Content(op.into()))),
            Some(Command::Gc { dry_run }) => return Ok(simple(Action::Gc { dry_run })),
            Some(Command::Index { image, push }) => {
                if self.image.is_some() {
                    bail!("index takes the image as its argument, not -image");
                }
                self.image = Some(image);
                index = Some(push);
            }
            Some(Command::Inspect { image, raw, config }) => {
                if self.image.is_some() {
                    bail!("inspect takes the image as its argument, not -image");
                }
                self.image = Some(image);
                inspect = Some(match (raw, config) {
                    (true, true) => bail!("inspect: -raw and -config exclude each other"),
                    (true, false) => InspectView::Raw,
                    (false, true) => InspectView::Config,
                    (false, false) => InspectView::Summary,
                });
            }
            Some(Command::Unpack {
                flist,
                stores,
                force,
                cache,
                target,
            }) => {
                let action = Action::Unpack {
                    flist,
                    stores: specs(&stores)?,
                    target: absolute(target)?,
                    force,
                    cache: cache_options(cache)?,
                };
                return Ok(simple(action));
            }
            Some(Command::Pack { flist, stores, dir }) => {
                let stores = if stores.is_empty() {
                    config.stores.clone()
                } else {
                    stores
                };
                if stores.is_empty() {
                    bail!("pack needs at least one -store (or `stores` in the config file)");
                }
                let action = Action::Pack {
                    flist: absolute(flist)?,
                    stores: specs(&stores)?,
                    dir: absolute(dir)?,
                };
                return Ok(simple(action));
            }
            Some(Command::Completions { .. } | Command::Man) => {
                bail!("completions and the man page are printed before settings are made")
            }
            Some(Command::Mount {
                flist,
                stores,
                cache,
                target,
            }) => {
                // rfs's spelling of -flist F -mount DIR.
                if self.image.is_some() || self.mount.is_some() || self.flist.is_some() {
                    bail!("mount takes the flist (-m) and the mount point, not -image, -flist or -mount");
                }
                self.flist = Some(flist);
                self.mount = Some(target);
                if !stores.is_empty() {
                    self.stores = stores;
                }
                if cache.is_some() {
                    self.cache = cache;
                }
            }
            Some(Command::Flist { op }) => {
                let mut op: FlistOp = op.into();
                if let FlistOp::Trace { forward, .. } = &mut op {
                    // The traced mount reads as a mount with these flags would.
                    forward.extend(["-timeout".to_owned(), self.timeout.to_string()]);
                    if let Some(size) = self.cache_size {
                        forward.extend(["-cache-size".to_owned(), size.to_string()]);
                    }
                    for url in &self.cache_store {
                        forward.extend(["-cache-store".to_owned(), url.clone()]);
                    }
                }
                return Ok(simple(Action::Flist(op)));
            }
            None => {}
        }
        if let Some(target) = self.umount {
            if self.image.is_some() || self.extractto.is_some() || self.mount.is_some() {
                bail!("-umount takes no -image, -extractto or -mount");
            }
            return Ok(simple(Action::Umount {
                target: mount_point(target)?,
                stale_only: self.stale,
            }));
        }
        let mount_options = |target: PathBuf| -> Result<MountOptions> {
            Ok(MountOptions {
                mountpoint: mount_point(target)?,
                default_cache_dir: Workdir::chunk_cache_dir(&workdir),
                allow_other: self.allow_other,
                prefetch: self.prefetch,
                record_trace: self.record_trace.clone().map(absolute).transpose()?,
                cache: cache_options(self.cache.clone())?,
            })
        };
        let fuse_only = self.cache.is_some()
            || self.prefetch
            || self.allow_other
            || self.record_trace.is_some()
            || !self.cache_store.is_empty();
        if self.daemon
            && !(self.fuse
                || self.lazy
                || (self.image.is_none() && self.flist.is_some() && self.mount.is_some()))
        {
            bail!("-daemon goes with FUSE mounts (-flist F -mount DIR, -image REF -mount DIR -fuse, flmount mount)");
        }
        if self.image.is_none() {
            if let (Some(flist), Some(target)) = (&self.flist, &self.mount) {
                if self.extractto.is_some() {
                    bail!("-flist with -mount serves the flist: it takes no -extractto");
                }
                return Ok(simple(Action::Serve {
                    flist: absolute(flist.clone())?,
                    stores: specs(&self.stores)?,
                    mount: mount_options(target.clone())?,
                }));
            }
        }
        let Some(image) = self.image.as_deref() else {
            bail!("nothing to do: give -image REF, -flist FILE -mount DIR, or -umount DIR (see flmount -h)");
        };
        let image = Source::parse(image)?;
        let mut insecure = self.insecure;
        let mut mirror = None;
        let registry_name = match &image {
            Source::Registry(r) if crate::admin::inventory::digest_prefix(r).is_none() => Some(r),
            _ => None,
        };
        if let Some(r) = registry_name {
            let parsed = ImageRef::parse(r)?;
            insecure |= config.is_insecure(parsed.registry());
            if let Some(host) = config.mirror(parsed.registry()) {
                mirror = Some(parsed.on_registry(host)?);
            }
        }
        let credentials = match (self.username, self.password) {
            (Some(u), Some(p)) => Some(Credentials::new(u, p)),
            (None, None) => None,
            (Some(_), None) => bail!("-username needs -password (or FLMOUNT_PASSWORD)"),
            (None, Some(_)) => bail!("-password needs -username"),
        };
        if self.insecure && self.plain_http {
            bail!("-insecure and -plain-http exclude each other");
        }
        let platform = self.platform.as_deref().map(Platform::parse).transpose()?;
        if self.flist.is_some() && (self.extractto.is_some() || self.mount.is_some()) {
            bail!("-flist does not go with -extractto or -mount");
        }
        if self.bundle.is_some() && (self.extractto.is_some() || self.mount.is_some() || self.flist.is_some())
        {
            bail!("-bundle does not go with -extractto, -mount or -flist");
        }
        let output = match (self.extractto, self.mount) {
            (Some(_), Some(_)) => bail!("-extractto and -mount exclude each other"),
            (None, None) if self.bundle.is_some() => Output::Bundle {
                dir: absolute(self.bundle.clone().unwrap())?,
                force: self.force,
            },
            (None, None) if self.flist.is_some() => {
                if self.stores.is_empty() {
                    bail!("-flist needs at least one -store for the content (e.g. -store dir:///srv/chunks)");
                }
                Output::Flist {
                    path: absolute(self.flist.clone().unwrap())?,
                    stores: specs(&self.stores)?,
                }
            }
            (Some(target), None) if target.as_os_str() == "-" => Output::Export,
            (Some(target), None) => Output::Extract {
                target: absolute(target)?,
                force: self.force,
            },
            (None, Some(target)) if self.lazy => Output::Lazy {
                mount: mount_options(target)?,
                index: self.index_file.clone().map(absolute).transpose()?,
            },
            (None, None) if index.is_some() => Output::Index {
                path: self.index_file.clone().map(absolute).transpose()?,
                push: index == Some(true),
            },
            (None, Some(target)) if self.fuse => Output::Fuse {
                mount: mount_options(target)?,
            },
            (None, Some(target)) => Output::Overlay {
                target: mount_point(target)?,
                overlaydir: self.overlaydir.map(absolute).transpose()?,
            },
            (None, None) if inspect.is_some() => Output::Inspect(inspect.unwrap()),
            (None, None) => Output::Cache,
        };
        if matches!(output, Output::Export) && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            bail!("-extractto - writes a tar stream: standard output is a terminal; redirect it (> rootfs.tar) or pipe it (| tar -x)");
        }
        if self.json && matches!(output, Output::Export) {
            bail!("-json does not go with -extractto -: standard output is the tar stream");
        }
        if inspect.is_some() && !matches!(output, Output::Inspect(_)) {
            bail!("inspect only shows an image: no -extractto, -mount, -flist or -bundle");
        }
        if self.force && !matches!(output, Output::Extract { .. } | Output::Bundle { .. }) {
            bail!("-force goes with -extractto or -bundle");
        }
        if self.fuse && !matches!(output, Output::Fuse { .. } | Output::Lazy { .. }) {
            bail!("-fuse goes with -mount");
        }
        if self.lazy && !matches!(output, Output::Lazy { .. }) {
            bail!("-lazy goes with -image REF -mount DIR");
        }
        if index.is_some() && !matches!(output, Output::Index { .. }) {
            bail!("index only builds the seek index: no -extractto, -mount, -flist or -bundle");
        }
        if self.index_file.is_some() && !matches!(output, Output::Index { .. } | Output::Lazy { .. }) {
            bail!("-index goes with `flmount index` and with -mount -lazy");
        }
        if fuse_only && !matches!(output, Output::Fuse { .. } | Output::Lazy { .. }) {
            bail!("-cache, -cache-store, -prefetch and -allow-other go with FUSE mounts (-mount with -fuse or -flist)");
        }
        Ok(Settings {
            workdir,
            quiet: self.quiet,
            json: self.json,
            action: Action::Image(ImageJob {
                source: image,
                pull: PullOptions {
                    transport: Transport {
                        insecure,
                        plain_http: self.plain_http,
                        read_timeout: Duration::from_secs(self.timeout),
                        ..Transport::default()
                    },
                    credentials,
                    platform,
                    parallel_downloads: self.parallel_downloads as usize,
                    validate_cache: self.validate_cache,
                    config_only: inspect.is_some() || matches!(output, Output::Lazy { .. }),
                },
                saveconfig: self.saveconfig,
                lxcconfig: self.lxcconfig.map(absolute).transpose()?,
                mirror,
                output,
            }),
        })
    }
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&p).with_context(|| format!("resolving {}", p.display()))
}

/// A mount point as /proc/self/mounts will name it: absolute, its parent's
/// `..` and symlinks resolved (the mount point itself is not followed: a
/// dead FUSE mount there cannot be resolved).
fn mount_point(p: PathBuf) -> Result<PathBuf> {
    let p = absolute(p)?;
    Ok(crate::owned::mounts::canonical(&p).unwrap_or(p))
}

/// Store arguments (`[xx-yy=]URL`), checked before any work is done.
fn specs(args: &[String]) -> Result<Vec<crate::store::StoreSpec>> {
    args.iter()
        .map(|a| {
            crate::store::StoreSpec::parse(a).with_context(|| format!("-store {}", crate::store::redact(a)))
        })
        .collect()
}
