//! The flags and subcommands (clap), as users type them; turned into
//! settings by `cli::settings`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, Parser};

use crate::app::settings::{ContentOp, FlistOp};

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
        op: FlistCmd,
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
        op: ContentCmd,
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
pub enum ContentCmd {
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
pub enum FlistCmd {
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

impl From<ContentCmd> for ContentOp {
    fn from(c: ContentCmd) -> Self {
        match c {
            ContentCmd::Ls => ContentOp::Ls,
            ContentCmd::Path { digest } => ContentOp::Path { digest },
            ContentCmd::Rm { digests } => ContentOp::Rm { digests },
        }
    }
}

impl From<FlistCmd> for FlistOp {
    fn from(c: FlistCmd) -> Self {
        match c {
            FlistCmd::Ls { flist } => FlistOp::Ls { flist },
            FlistCmd::Inspect { flist } => FlistOp::Inspect { flist },
            FlistCmd::Tag { flist, set, delete } => FlistOp::Tag { flist, set, delete },
            FlistCmd::Store { flist, routes } => FlistOp::Store { flist, routes },
        }
    }
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

/// A size with an optional binary unit: 4096, 512K, 512M, 20G, 1T.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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
