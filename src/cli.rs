//! The command line: tosi-compatible flags (each accepted with one dash or
//! two), turned once into validated settings (with the config file's
//! defaults), then handed to `app::run`. Errors are printed with their
//! context chain and mapped to documented exit codes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};

use crate::chunkcache::CacheOptions;
use crate::config::Config;
use crate::fuse::MountOptions;
use crate::manifest::Platform;
use crate::pull::PullOptions;
use crate::reference::ImageRef;
use crate::registry::{Credentials, ErrorKind, Transport};
use crate::source::Source;
use crate::store::{ChunkError, ChunkFailure, StoreError};
use crate::workdir::Workdir;

/// Decoded chunks a reader keeps in memory (512 KiB each).
const MEMORY_CHUNKS: usize = 32;

const EXAMPLES: &str = "\
Examples:
  flmount -image alpine                                 pull alpine into the workdir cache
  flmount -image nginx:1.27 -extractto /srv/nginx       a flat rootfs for chroot / nspawn / lxc
  flmount -image alpine -mount /run/rootfs              overlayfs over cached layers
  flmount -image alpine -mount /run/rootfs -fuse        FUSE, content fetched as it is read
  flmount -image alpine -flist a.fl -store dir:///srv/chunks    index into an flist and a store
  flmount -flist a.fl -mount /run/rootfs -cache-size 8G serve an flist through FUSE
  flmount -umount /run/rootfs                           unmount (overlay or FUSE)
  flmount -image 127.0.0.1:5000/app:1 -saveconfig app.json
  flmount -image ghcr.io/org/app -username me -password \"$TOKEN\" -platform linux/arm64

Credentials: -username/-password (or FLMOUNT_PASSWORD), else REGISTRY_AUTH_FILE,
else $DOCKER_CONFIG/config.json or ~/.docker/config.json (auths, credHelpers, credsStore).
Registries on localhost / 127.0.0.0/8 may use plain HTTP, as with Docker.

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found (image, blob, chunk),
4 authentication, 5 registry, store or network unavailable, 6 integrity
(digest mismatch), 7 local I/O (disk full, permissions).";

/// flmount: container images as live filesystems.
///
/// Pulls an image from any OCI / Docker registry into a verified workdir
/// cache (reused across runs and images), and extracts it to a directory,
/// mounts it (overlayfs, or FUSE over an flist), or indexes it into an
/// flist whose content goes to chunk stores. Every flag works with one dash or two (`-image` = `--image`).
#[derive(Debug, Parser)]
#[command(name = "flmount", version, about, long_about, after_help = EXAMPLES, max_term_width = 100)]
pub struct Args {
    /// Image to use, as Docker names it (alpine, nginx:1.27, host:5000/repo:tag, repo@sha256:<hex>), or as skopeo does: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Cache directory for blobs and layers [default: /var/lib/flmount as root, ~/.cache/flmount otherwise]
    #[arg(long, value_name = "DIR", env = "FLMOUNT_WORKDIR", global = true)]
    pub workdir: Option<PathBuf>,

    /// With -image: index the image into this flist (e.g. -flist app.fl -store dir:///srv/chunks)
    #[arg(long, value_name = "FILE")]
    pub flist: Option<PathBuf>,

    /// A chunk store, [xx-yy=]URL: dir:///path, zdb://host:port/ns, s3://key:secret@host:port/bucket, http(s)://host/path; repeat to shard (00-7f=..., 80-ff=...) or replicate
    #[arg(long = "store", value_name = "URL")]
    pub stores: Vec<String>,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Extract the image's root filesystem into DIR (e.g. -extractto /srv/rootfs); `-` writes it as a tar stream to stdout
    #[arg(long, value_name = "DIR")]
    pub extractto: Option<PathBuf>,

    /// With -extractto: extract over a non-empty DIR, replacing entries in the way
    #[arg(long)]
    pub force: bool,

    /// Mount the image at DIR with overlayfs over cached layers (e.g. -mount /run/rootfs); with -flist and no -image, serve that flist through FUSE
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,

    /// With -image and -mount: serve through FUSE instead of overlayfs, from an flist packed into the workdir's own store
    #[arg(long)]
    pub fuse: bool,

    /// FUSE mounts and unpack: where fetched chunks are cached [default for mounts: WORKDIR/cache/chunks, none when every store is a local dir://]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Size limit of the chunk cache, least recently used chunks evicted first (e.g. 512M, 20G) [default: 4G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, global = true)]
    pub cache_size: Option<u64>,

    /// FUSE mounts: fetch every chunk of the flist into the cache in the background
    #[arg(long)]
    pub prefetch: bool,

    /// FUSE mounts: let other users use the mount (file modes still hold)
    #[arg(long)]
    pub allow_other: bool,

    /// Network patience in seconds: how long one chunk fetch may take, retries included, before a read fails (EIO on a FUSE mount); and how long a registry transfer may stall before it is retried (resuming where it stopped)
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub timeout: u64,

    /// Where the overlay's writable upper and work dirs go [default: inside the workdir]
    #[arg(long, value_name = "DIR")]
    pub overlaydir: Option<PathBuf>,

    /// Unmount a mount made with -mount and remove its state (e.g. -umount /run/rootfs)
    #[arg(long, value_name = "DIR")]
    pub umount: Option<PathBuf>,

    /// With -umount: only clear a dead flmount FUSE mount (its server gone), leaving a live one
    /// mounted; nothing mounted is no error (e.g. ExecStopPost=flmount -umount DIR -stale)
    #[arg(long, requires = "umount")]
    pub stale: bool,

    /// How many blobs to download at once (e.g. -parallel-downloads 8)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel_downloads: u16,

    /// Registry user name (e.g. -username alice)
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,

    /// Registry password or token; prefer the FLMOUNT_PASSWORD environment variable, which `ps` does not show
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "FLMOUNT_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// Write the image config JSON to FILE (e.g. -saveconfig image.json)
    #[arg(long, value_name = "FILE")]
    pub saveconfig: Option<PathBuf>,

    /// Also write an LXC config for the image's process (lxc.init.cmd from entrypoint + cmd, cwd, uid, environment)
    #[arg(long, value_name = "FILE")]
    pub lxcconfig: Option<PathBuf>,

    /// Write an OCI runtime bundle into DIR: the rootfs in DIR/rootfs and DIR/config.json, for runc / crun
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Re-hash the image's cached blobs and re-fetch any that are corrupt
    #[arg(long)]
    pub validate_cache: bool,

    /// Platform to pick from a multi-platform image (e.g. -platform linux/arm64/v8) [default: this host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,

    /// Accept a registry's invalid TLS certificate, and fall back to plain HTTP if it has no TLS
    #[arg(long)]
    pub insecure: bool,

    /// Talk to the registry over plain HTTP
    #[arg(long)]
    pub plain_http: bool,

    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only warnings and errors; no progress bars
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print JSON on standard output: the listing (images, content ls, inspect), or a summary of what was done
    #[arg(long, global = true)]
    pub json: bool,
}

/// Commands beyond the tosi-style flags.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Restore the whole tree of an flist into TARGET, fetching its chunks from the stores
    Unpack {
        /// The flist to restore (e.g. -flist app.fl)
        #[arg(long, value_name = "FILE")]
        flist: PathBuf,
        /// Stores to read from instead of the flist's routes ([xx-yy=]URL; adds credentials)
        #[arg(long = "store", value_name = "URL")]
        stores: Vec<String>,
        /// Write over a non-empty TARGET
        #[arg(long)]
        force: bool,
        /// Cache fetched chunks in DIR (reused by later unpacks and mounts)
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Where to restore the tree
        target: PathBuf,
    },
    /// Index a directory tree into an flist, its content into the stores
    Pack {
        /// The flist to write (e.g. -flist app.fl)
        #[arg(long, value_name = "FILE")]
        flist: PathBuf,
        /// Chunk stores, [xx-yy=]URL (see -store above) [default: the config file's stores]
        #[arg(long = "store", value_name = "URL")]
        stores: Vec<String>,
        /// The directory to pack
        dir: PathBuf,
    },
    /// Inspect or edit an flist: ls, inspect, tag, store
    Flist {
        #[command(subcommand)]
        op: FlistOp,
    },
    /// Print shell completions (e.g. flmount completions bash > /etc/bash_completion.d/flmount)
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the man page (e.g. flmount man | man -l -)
    Man,
    /// List the cached images (name, tag, digest, size, last pulled), or forget some: images rm REF...
    Images {
        #[command(subcommand)]
        op: Option<ImagesOp>,
    },
    /// The workdir's blobs: ls, path DIGEST, rm DIGEST...
    Content {
        #[command(subcommand)]
        op: ContentOp,
    },
    /// Remove what no cached image and no mount references (blobs, overlay layers, flists, chunks)
    Gc {
        /// Only say what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Show an image's manifest, config and layers (fetches no layers), e.g. flmount inspect alpine
    Inspect {
        /// The image, as -image takes it
        image: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImagesOp {
    /// Forget cached images (their refs); `gc` then removes what only they used
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ContentOp {
    /// Every blob: digest, size, role (manifest, index, config, layer, unreferenced)
    Ls,
    /// Print the path of a blob
    Path { digest: String },
    /// Remove blobs (a cached image that needs one fetches it again)
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum FlistOp {
    /// List every entry: type and mode, owner, size, path
    Ls { flist: PathBuf },
    /// Show tags, routes, and the number and size of entries and chunks
    Inspect { flist: PathBuf },
    /// Show tags, or set (KEY=VALUE) and delete (-delete KEY) them
    Tag {
        flist: PathBuf,
        /// KEY=VALUE pairs to set
        set: Vec<String>,
        /// Keys to delete
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Show the store routes, or replace them with [xx-yy=]URL routes (secrets are not written)
    Store { flist: PathBuf, routes: Vec<String> },
}

#[derive(Debug, Clone, Copy)]
pub enum Document {
    Completions(clap_complete::Shell),
    Man,
}

impl Document {
    /// Writes the completion script or man page, generated from the flags.
    pub fn write(self, out: &mut dyn std::io::Write) -> Result<()> {
        let mut cmd = Args::command();
        match self {
            Document::Completions(shell) => clap_complete::generate(shell, &mut cmd, "flmount", out),
            Document::Man => clap_mangen::Man::new(cmd).render(out)?,
        }
        Ok(())
    }
}

/// What to do, validated.
#[derive(Debug)]
pub struct Settings {
    pub workdir: PathBuf,
    pub quiet: bool,
    /// Machine-readable output where a command has it.
    pub json: bool,
    pub action: Action,
}

/// Pull an image, then do `output` with it.
#[derive(Debug)]
pub struct ImageJob {
    pub source: Source,
    pub pull: PullOptions,
    pub saveconfig: Option<PathBuf>,
    pub lxcconfig: Option<PathBuf>,
    /// The same image on a configured mirror, tried first.
    pub mirror: Option<ImageRef>,
    pub output: Output,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one value per run
pub enum Action {
    /// Pull an image, then do `output` with it.
    Image(ImageJob),
    /// Unmount a mount made by flmount and clean up after it.
    Umount {
        target: PathBuf,
        /// Only a mount whose flmount server is gone (for a unit's stop).
        stale_only: bool,
    },
    Unpack {
        flist: PathBuf,
        stores: Vec<String>,
        target: PathBuf,
        force: bool,
        cache: CacheOptions,
    },
    /// Serve an flist through FUSE until unmounted.
    Serve {
        flist: PathBuf,
        stores: Vec<String>,
        mount: MountOptions,
    },
    Flist(FlistOp),
    /// Print shell completions or the man page (no workdir needed).
    Document(Document),
    Images,
    ForgetImages(Vec<ImageRef>),
    Content(ContentOp),
    Gc {
        dry_run: bool,
    },
    Pack {
        flist: PathBuf,
        stores: Vec<String>,
        dir: PathBuf,
    },
}

#[derive(Debug)]
pub enum Output {
    /// Only cache the image.
    Cache,
    Extract {
        target: PathBuf,
        force: bool,
    },
    /// The flattened rootfs as a tar stream on stdout.
    Export,
    Overlay {
        target: PathBuf,
        overlaydir: Option<PathBuf>,
    },
    /// Pack into the workdir's own store, then serve through FUSE.
    Fuse {
        mount: MountOptions,
    },
    /// Show the manifest, config and layers (`inspect`).
    Inspect,
    /// An OCI runtime bundle: `dir/rootfs` and `dir/config.json`.
    Bundle {
        dir: PathBuf,
        force: bool,
    },
    /// Index into an flist, content into the stores.
    Flist {
        path: PathBuf,
        stores: Vec<String>,
    },
}

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
        let simple = |action: Action| Settings {
            workdir: workdir.clone(),
            quiet,
            json,
            action,
        };
        let mut inspect = false;
        match self.command.take() {
            Some(Command::Images { op: None }) => return Ok(simple(Action::Images)),
            Some(Command::Images {
                op: Some(ImagesOp::Rm { images }),
            }) => {
                let refs = images
                    .iter()
                    .map(|i| ImageRef::parse(i))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(simple(Action::ForgetImages(refs)));
            }
            Some(Command::Content { op }) => return Ok(simple(Action::Content(op))),
            Some(Command::Gc { dry_run }) => return Ok(simple(Action::Gc { dry_run })),
            Some(Command::Inspect { image }) => {
                if self.image.is_some() {
                    bail!("inspect takes the image as its argument, not -image");
                }
                self.image = Some(image);
                inspect = true;
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
                    stores,
                    target: absolute(target)?,
                    force,
                    cache: CacheOptions {
                        dir: cache.map(absolute).transpose()?,
                        size_limit: cache_size,
                        memory_chunks: MEMORY_CHUNKS,
                        timeout: Duration::from_secs(self.timeout),
                        adopt_dir: false,
                    },
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
                    stores,
                    dir: absolute(dir)?,
                };
                return Ok(simple(action));
            }
            Some(Command::Completions { shell }) => {
                return Ok(simple(Action::Document(Document::Completions(shell))));
            }
            Some(Command::Man) => {
                return Ok(simple(Action::Document(Document::Man)));
            }
            Some(Command::Flist { op }) => {
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
                default_cache_dir: workdir.join("cache/chunks"),
                allow_other: self.allow_other,
                prefetch: self.prefetch,
                cache: CacheOptions {
                    dir: self.cache.clone().map(absolute).transpose()?,
                    size_limit: cache_size,
                    memory_chunks: MEMORY_CHUNKS,
                    timeout: Duration::from_secs(self.timeout),
                    adopt_dir: false,
                },
            })
        };
        let fuse_only = self.cache.is_some() || self.prefetch || self.allow_other;
        if self.image.is_none() {
            if let (Some(flist), Some(target)) = (&self.flist, &self.mount) {
                if self.extractto.is_some() {
                    bail!("-flist with -mount serves the flist: it takes no -extractto");
                }
                return Ok(simple(Action::Serve {
                    flist: absolute(flist.clone())?,
                    stores: self.stores.clone(),
                    mount: mount_options(target.clone())?,
                }));
            }
        }
        let Some(image) = self.image.as_deref() else {
            bail!("nothing to do: give -image REF, -flist FILE -mount DIR, or -umount DIR (see flmount -h)");
        };
        let image = Source::parse(image);
        let mut insecure = self.insecure;
        let mut mirror = None;
        if let Source::Registry(r) = &image {
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
                    stores: self.stores.clone(),
                }
            }
            (Some(target), None) if target.as_os_str() == "-" => Output::Export,
            (Some(target), None) => Output::Extract {
                target: absolute(target)?,
                force: self.force,
            },
            (None, Some(target)) if self.fuse => Output::Fuse {
                mount: mount_options(target)?,
            },
            (None, Some(target)) => Output::Overlay {
                target: mount_point(target)?,
                overlaydir: self.overlaydir.map(absolute).transpose()?,
            },
            (None, None) if inspect => Output::Inspect,
            (None, None) => Output::Cache,
        };
        if self.json && matches!(output, Output::Export) {
            bail!("-json does not go with -extractto -: standard output is the tar stream");
        }
        if inspect && !matches!(output, Output::Inspect) {
            bail!("inspect only shows an image: no -extractto, -mount, -flist or -bundle");
        }
        if self.force && !matches!(output, Output::Extract { .. } | Output::Bundle { .. }) {
            bail!("-force goes with -extractto or -bundle");
        }
        if self.fuse && !matches!(output, Output::Fuse { .. }) {
            bail!("-fuse goes with -mount");
        }
        if fuse_only && !matches!(output, Output::Fuse { .. }) {
            bail!("-cache, -prefetch and -allow-other go with FUSE mounts (-mount with -fuse or -flist)");
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
                    config_only: inspect,
                },
                saveconfig: self.saveconfig,
                lxcconfig: self.lxcconfig.map(absolute).transpose()?,
                mirror,
                output,
            }),
        })
    }
}

/// A size with an optional binary unit: 4096, 512K, 512M, 20G, 1T.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let shift = match unit.trim_end_matches(['i', 'B']).to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{s:?}: expected a size like 512M or 20G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a size like 512M or 20G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
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

/// Accepts tosi's single-dash long flags: `-image x` becomes `--image x`.
/// Only names that are long flags are rewritten, so `-v` and `-h` keep
/// their short meaning; everything after `--` is left alone.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    fn collect(cmd: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned)),
        );
        for sub in cmd.get_subcommands() {
            collect(sub, out);
        }
    }
    let mut longs = vec!["help".to_owned(), "version".to_owned()];
    collect(&Args::command(), &mut longs);
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let body = s.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
            let name = body.split('=').next().unwrap_or(body);
            (name.len() > 1 && longs.iter().any(|l| l == name)).then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// The program: parse, run, report. `main.rs` calls only this.
pub fn main() -> ExitCode {
    if let Some(mountpoint) = std::env::var_os(crate::fuse::watcher::WATCH_ENV) {
        return ExitCode::from(crate::fuse::watcher::run(mountpoint.into()));
    }
    let args = match Args::try_parse_from(normalize_args(std::env::args_os())) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(args.verbose, args.quiet);
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flmount: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let settings = match args.settings(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flmount: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flmount: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::app::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flmount: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<crate::owned::signals::Interrupted>()) {
        return crate::owned::signals::exit_code();
    }
    if e.chain().any(|c| c.is::<crate::owned::Refused>()) {
        return 8;
    }
    // A chunk from a store, like a blob from a registry: missing (3),
    // unreachable (5), corrupt (6); a local store's disk failing (7).
    match chunk_failure(e) {
        Some(ChunkFailure::Missing) => return 3,
        Some(ChunkFailure::Unreachable) => return 5,
        Some(ChunkFailure::Corrupt) => return 6,
        Some(ChunkFailure::Local) => return 7,
        None => {}
    }
    // A store that failed while storing chunks.
    match e.chain().find_map(|c| c.downcast_ref::<StoreError>()) {
        Some(StoreError::Unavailable { .. }) => return 5,
        Some(StoreError::Local { .. }) => return 7,
        _ => {}
    }
    match crate::registry::error_kind(e) {
        Some(ErrorKind::NotFound) => 3,
        Some(ErrorKind::Auth) => 4,
        Some(ErrorKind::Unavailable) => 5,
        Some(ErrorKind::Integrity) => 6,
        Some(ErrorKind::Protocol) => 1,
        // A local file-system failure: disk full, permissions, I/O errors.
        None if e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.raw_os_error().is_some())
        }) =>
        {
            7
        }
        None => 1,
    }
}

/// Why a chunk could not be read, if that is what failed: the error may be
/// in the chain, or inside an I/O error of a reader of chunks.
fn chunk_failure(e: &anyhow::Error) -> Option<ChunkFailure> {
    e.chain()
        .find_map(|c| {
            c.downcast_ref::<ChunkError>().or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<ChunkError>())
            })
        })
        .map(|c| c.failure)
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "flmount=info,warn",
        (false, 1) => "flmount=debug,info",
        (false, _) => "flmount=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(normalize_args(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn single_and_double_dash() {
        let a = parse(&[
            "flmount",
            "-image",
            "alpine",
            "--workdir",
            "/w",
            "-parallel-downloads=8",
            "-v",
            "-validate-cache",
        ]);
        assert_eq!(a.image.as_deref(), Some("alpine"));
        assert_eq!(a.workdir, Some(PathBuf::from("/w")));
        assert_eq!(a.parallel_downloads, 8);
        assert_eq!(a.verbose, 1);
        assert!(a.validate_cache);
    }

    #[test]
    fn passthrough_after_double_dash() {
        let out = normalize_args(["flmount", "-image", "x", "--", "-image"].map(OsString::from));
        assert_eq!(out[1], "--image");
        assert_eq!(out[4], "-image");
    }

    #[test]
    fn settings_validation() {
        let err = |args: &[&str]| parse(args).settings(&Config::default()).unwrap_err().to_string();
        assert!(err(&["flmount"]).contains("nothing to do"));
        assert!(err(&["flmount", "-image", "a", "-username", "u"]).contains("needs -password"));
        assert!(err(&["flmount", "-image", "a", "-platform", "linux"]).contains("os/arch"));
        assert!(err(&["flmount", "-image", "a", "-insecure", "-plain-http"]).contains("exclude"));
        let s = parse(&["flmount", "-image", "a", "-platform", "linux/arm64"])
            .settings(&Config::default())
            .unwrap();
        let Action::Image(ImageJob { pull, .. }) = s.action else {
            panic!()
        };
        assert_eq!(pull.platform.unwrap().to_string(), "linux/arm64");
        assert!(err(&["flmount", "-image", "a", "-extractto", "x", "-mount", "y"]).contains("exclude"));
        assert!(err(&["flmount", "-umount", "x", "-image", "a"]).contains("-umount takes no"));
    }

    #[test]
    fn fuse_settings() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert!(parse_size("5X").is_err() && parse_size("G").is_err());
        let s = parse(&[
            "flmount",
            "-flist",
            "a.fl",
            "-mount",
            "/m",
            "-cache-size",
            "1G",
            "-timeout",
            "5",
        ])
        .settings(&Config::default())
        .unwrap();
        let Action::Serve { mount, .. } = s.action else {
            panic!("{:?}", s.action)
        };
        assert_eq!(mount.mountpoint, PathBuf::from("/m"));
        assert_eq!(mount.cache.size_limit, 1 << 30);
        assert_eq!(mount.cache.timeout, Duration::from_secs(5));
        assert!(mount.cache.dir.is_none() && mount.default_cache_dir.ends_with("cache/chunks"));
        let s = parse(&["flmount", "-image", "a", "-mount", "/m", "-fuse"])
            .settings(&Config::default())
            .unwrap();
        assert!(matches!(
            s.action,
            Action::Image(ImageJob {
                output: Output::Fuse { .. },
                ..
            })
        ));
        let err = |args: &[&str]| parse(args).settings(&Config::default()).unwrap_err().to_string();
        assert!(err(&["flmount", "-image", "a", "-fuse"]).contains("-fuse goes with -mount"));
        assert!(err(&["flmount", "-image", "a", "-mount", "/m", "-prefetch"]).contains("FUSE"));
        assert!(
            err(&["flmount", "-flist", "a.fl", "-mount", "/m", "-extractto", "x"]).contains("no -extractto")
        );
    }

    #[test]
    fn password_is_not_in_debug_settings() {
        let s = parse(&[
            "flmount",
            "-image",
            "a",
            "-username",
            "u",
            "-password",
            "hunter2-secret",
        ])
        .settings(&Config::default())
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn completions_and_man_page_come_from_the_flags() {
        let mut bash = Vec::new();
        Document::Completions(clap_complete::Shell::Bash)
            .write(&mut bash)
            .unwrap();
        let bash = String::from_utf8(bash).unwrap();
        assert!(bash.contains("--extractto") && bash.contains("unpack") && bash.contains("--cache-size"));
        let mut man = Vec::new();
        Document::Man.write(&mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains(".TH flmount") && man.contains("extractto"), "{man}");
        let s = parse(&["flmount", "completions", "zsh"])
            .settings(&Config::default())
            .unwrap();
        assert!(matches!(
            s.action,
            Action::Document(Document::Completions(clap_complete::Shell::Zsh))
        ));
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }
}
