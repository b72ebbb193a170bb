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
  flmount mount -m a.fl -d /run/rootfs                  rfs's spelling; returns once mounted
  flmount -umount /run/rootfs                           unmount (overlay or FUSE)
  flmount -image 127.0.0.1:5000/app:1 -saveconfig app.json
  flmount -image ghcr.io/org/app -username me -password \"$TOKEN\" -platform linux/arm64

Credentials: -username/-password (or FLMOUNT_PASSWORD), else REGISTRY_AUTH_FILE,
else $DOCKER_CONFIG/config.json or ~/.docker/config.json (auths, credHelpers, credsStore).
Registries on localhost / 127.0.0.0/8 may use plain HTTP, as with Docker.

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found (image, tag, platform, blob,
flist, bucket, chunk), 4 authentication, 5 registry, store or network unavailable,
6 integrity (digest mismatch), 7 local I/O (disk full, permissions, busy),
8 refused (something flmount did not make), 128+N killed by signal N.";

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

    /// With -image and -mount: serve through FUSE straight from the image's registry, reading parts of its layers as files are read (nothing converted, no layer downloaded), by the image's seek index: -index FILE, else the workdir's, else the one pushed next to the image (`flmount index REF -push`)
    #[arg(long)]
    pub lazy: bool,

    /// The seek index file: where `flmount index` writes it, and what -lazy reads [default: in the workdir]
    #[arg(long = "index", value_name = "FILE", global = true)]
    pub index_file: Option<PathBuf>,

    /// FUSE mounts and unpack: where fetched chunks are cached [default for mounts: WORKDIR/cache/chunks, none when every store is a local dir://]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Size limit of the chunk cache, least recently used chunks evicted first (e.g. 512M, 20G) [default: 4G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, global = true)]
    pub cache_size: Option<u64>,

    /// FUSE mounts and unpack: a chunk store shared by many readers (e.g. a zdb or HTTP cache near them, in front of S3), read before the flist's stores and filled on a miss; [xx-yy=]URL, repeatable. Chunks are verified whichever store gave them
    #[arg(long = "cache-store", value_name = "URL", global = true)]
    pub cache_store: Vec<String>,

    /// FUSE mounts: fetch every chunk of the flist into the cache in the background
    #[arg(long)]
    pub prefetch: bool,

    /// FUSE mounts: return once the mount is ready, the server going on in the background (as rfs -d), e.g. flmount -flist a.fl -mount /mnt -daemon; stop it with flmount -umount /mnt
    #[arg(long, short = 'd', global = true)]
    pub daemon: bool,

    /// FUSE mounts: let other users use the mount (file modes still hold)
    #[arg(long)]
    pub allow_other: bool,

    /// FUSE mounts: write the chunks read, in order, to FILE when unmounted (what `flist trace` records with)
    #[arg(long, value_name = "FILE", hide = true)]
    pub record_trace: Option<PathBuf>,

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
    #[arg(long, value_name = "USER", global = true)]
    pub username: Option<String>,

    /// Registry password or token; prefer the FLMOUNT_PASSWORD environment variable, which `ps` does not show
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "FLMOUNT_PASSWORD",
        hide_env_values = true,
        global = true
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
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", global = true)]
    pub platform: Option<String>,

    /// Accept a registry's invalid TLS certificate, and fall back to plain HTTP if it has no TLS
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Talk to the registry over plain HTTP
    #[arg(long, global = true)]
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
        /// The flist to restore (e.g. -flist app.fl; rfs's -m too)
        #[arg(long, short = 'm', value_name = "FILE")]
        flist: PathBuf,
        /// Stores to read from instead of the flist's routes ([xx-yy=]URL; adds credentials; rfs's -s too)
        #[arg(long = "store", short = 's', value_name = "URL")]
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
        /// The flist to write (e.g. -flist app.fl; rfs's -m too)
        #[arg(long, short = 'm', value_name = "FILE")]
        flist: PathBuf,
        /// Chunk stores, [xx-yy=]URL (see -store above; rfs's -s too) [default: the config file's stores]
        #[arg(long = "store", short = 's', value_name = "URL")]
        stores: Vec<String>,
        /// The directory to pack
        dir: PathBuf,
    },
    /// Serve an flist through FUSE at TARGET, as rfs mounts it (flmount mount -m app.fl -d /mnt = flmount -flist app.fl -mount /mnt -daemon)
    Mount {
        /// The flist to serve (e.g. -m app.fl)
        #[arg(long, short = 'm', value_name = "FILE")]
        flist: PathBuf,
        /// Stores to read from instead of the flist's routes ([xx-yy=]URL; adds credentials)
        #[arg(long = "store", short = 's', value_name = "URL")]
        stores: Vec<String>,
        /// Where fetched chunks are cached (as -cache)
        #[arg(long, short = 'c', value_name = "DIR")]
        cache: Option<PathBuf>,
        /// The mount point
        target: PathBuf,
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
    /// Build an image's seek index, so that -mount -lazy serves it straight from its registry (reads the layers once), e.g. flmount index nginx -push; -index FILE writes it there
    Index {
        /// The image, as -image takes it
        image: String,
        /// Also push the index to the image's repository, as an artifact that refers to the image (OCI referrers), where every -lazy mount of the image finds it
        #[arg(long)]
        push: bool,
    },
    /// Show an image's digests, platforms, process and layers (fetches no layers), e.g. flmount inspect alpine -platform linux/arm64
    Inspect {
        /// The image, as -image takes it (or a cached image's digest, as `images` shows it)
        image: String,
        /// Print the manifest or index the reference names, as the registry or source gave it (skopeo inspect --raw)
        #[arg(long)]
        raw: bool,
        /// Print the image config JSON (skopeo inspect --config)
        #[arg(long)]
        config: bool,
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
    /// Record which chunks a start reads, in order, into the flist; later mounts fetch them first (e.g. flist trace app.fl -- chroot {} python3 -c pass; {} is the mount point)
    Trace {
        flist: PathBuf,
        /// Stores to read from instead of the flist's routes ([xx-yy=]URL)
        #[arg(long = "store", short = 's', value_name = "URL")]
        stores: Vec<String>,
        /// Where fetched chunks are cached (as -cache)
        #[arg(long, short = 'c', value_name = "DIR")]
        cache: Option<PathBuf>,
        /// The command to trace, after --; {} stands for the mount point
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
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
            FlistCmd::Trace {
                flist,
                stores,
                cache,
                command,
            } => FlistOp::Trace {
                flist,
                stores,
                cache,
                command,
                forward: Vec::new(),
            },
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
            Document::Completions(clap_complete::Shell::Bash) => {
                let mut script = Vec::new();
                clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "flmount", &mut script);
                out.write_all(single_dash_bash(&String::from_utf8_lossy(&script)).as_bytes())?;
            }
            Document::Completions(shell) => clap_complete::generate(shell, &mut cmd, "flmount", out),
            Document::Man => man_page(cmd, out)?,
        }
        Ok(())
    }
}

/// clap's bash completion, taught the single-dash spellings the README
/// uses: `-ima<TAB>` completes to `-image`, and a flag's value completes
/// after `-extractto` as after `--extractto` (paths, not flags).
fn single_dash_bash(script: &str) -> String {
    let mut out = String::with_capacity(script.len() * 2);
    for line in script.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(list) = trimmed.strip_prefix("opts=\"").and_then(|l| l.strip_suffix('"')) {
            let words: Vec<String> = list
                .split_whitespace()
                .flat_map(|w| match w.strip_prefix("--") {
                    Some(name) if name.len() > 1 => vec![format!("-{name}"), w.to_owned()],
                    _ => vec![w.to_owned()],
                })
                .collect();
            out.push_str(&format!("{indent}opts=\"{}\"\n", words.join(" ")));
            continue;
        }
        // A value branch of `case "${prev}"`: `--name)` or `--name|-n)`.
        if let Some(branch) = trimmed.strip_prefix("--").and_then(|b| b.strip_suffix(')')) {
            let (name, rest) = branch.split_once('|').map_or((branch, ""), |(n, r)| (n, r));
            if name.len() > 1 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
                let rest = if rest.is_empty() {
                    String::new()
                } else {
                    format!("|{rest}")
                };
                out.push_str(&format!("{indent}--{name}|-{name}{rest})\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The man page: one page holding every command with its options (no
/// `flmount-pack(1)` pages that do not exist), a synopsis with values,
/// examples as written, and the files and environment flmount reads.
fn man_page(mut cmd: clap::Command, out: &mut dyn std::io::Write) -> Result<()> {
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    out.write_all(MAN_SYNOPSIS.as_bytes())?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    let shown = |c: &&clap::Command| !c.is_hide_set() && c.get_name() != "help";
    for sub in cmd.get_subcommands().filter(shown) {
        man_command(out, &format!("flmount {}", sub.get_name()), sub)?;
        for nested in sub.get_subcommands().filter(shown) {
            man_command(
                out,
                &format!("flmount {} {}", sub.get_name(), nested.get_name()),
                nested,
            )?;
        }
    }
    out.write_all(MAN_TAIL.as_bytes())?;
    writeln!(out, ".nf")?;
    for line in EXAMPLES.lines() {
        writeln!(out, "{}", roff_text(line))?;
    }
    writeln!(out, ".fi")?;
    man.render_version_section(out)?;
    Ok(())
}

/// One command: its usage line, what it does, its own options.
fn man_command(out: &mut dyn std::io::Write, name: &str, cmd: &clap::Command) -> Result<()> {
    let mut usage = name.to_owned();
    for arg in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
    {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| id.to_uppercase());
        let takes_value = arg.get_action().takes_values();
        usage.push(' ');
        match (arg.get_long(), arg.is_positional(), takes_value) {
            (_, true, _) => usage.push_str(&value),
            (Some(long), _, true) if arg.is_required_set() => usage.push_str(&format!("-{long} {value}")),
            (Some(long), _, true) => usage.push_str(&format!("[-{long} {value}]")),
            (Some(long), _, false) => usage.push_str(&format!("[-{long}]")),
            (None, _, _) => {}
        }
    }
    writeln!(out, ".SS \\fB{}\\fR", roff_text(&usage))?;
    if let Some(about) = cmd.get_about() {
        writeln!(out, "{}", roff_text(&about.to_string()))?;
    }
    for arg in cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
    {
        let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
            continue;
        };
        if long == "help" {
            continue;
        }
        writeln!(
            out,
            ".TP\n\\fB\\-{}\\fR\n{}",
            roff_text(long),
            roff_text(&help.to_string())
        )?;
    }
    Ok(())
}

/// Text for a roff line: backslashes escaped, no line starting a request.
fn roff_text(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

const MAN_SYNOPSIS: &str = r#".SH SYNOPSIS
.nf
\fBflmount\fR \-image \fIREF\fR [\-extractto \fIDIR\fR|\-] [\-mount \fIDIR\fR [\-fuse] [\-daemon]] [\-flist \fIFILE\fR \-store \fIURL\fR...] [\-bundle \fIDIR\fR] [\-saveconfig \fIFILE\fR] [\-lxcconfig \fIFILE\fR] [\fIOPTIONS\fR]
\fBflmount\fR \-flist \fIFILE\fR \-mount \fIDIR\fR [\-store \fIURL\fR...] [\-cache \fIDIR\fR] [\-daemon] [\fIOPTIONS\fR]
\fBflmount\fR \-umount \fIDIR\fR [\-stale]
\fBflmount\fR \fICOMMAND\fR ... (pack, unpack, mount, flist, images, content, gc, inspect, completions, man)
.fi
Every flag works with one dash or two (\-image = \-\-image).
"#;

const MAN_TAIL: &str = r#".SH FILES
.TP
\fI/var/lib/flmount\fR
The workdir as root (\fI~/.cache/flmount\fR otherwise): verified blobs, refs, layer indexes, overlay layers, mount records, flists, the chunk index and caches. See \-workdir.
.TP
\fI/etc/flmount/config.toml\fR, \fI$XDG_CONFIG_HOME/flmount/config.toml\fR (\fI~/.config/flmount/config.toml\fR)
Defaults (workdir, stores, cache_size, mirrors, insecure registries), the user's over the system's; flags override both.
.TP
\fI$DOCKER_CONFIG/config.json\fR, \fI~/.docker/config.json\fR
Registry credentials (auths, credHelpers, credsStore), as Docker reads them.
.SH ENVIRONMENT
.TP
\fBFLMOUNT_CONFIG\fR
One config file instead of the two above.
.TP
\fBFLMOUNT_WORKDIR\fR
The workdir, as \-workdir.
.TP
\fBFLMOUNT_PASSWORD\fR
The registry password, as \-password (which ps shows).
.TP
\fBREGISTRY_AUTH_FILE\fR
A credentials file read before Docker's.
.TP
\fBDOCKER_CONFIG\fR
Where Docker's config.json is.
.TP
\fBAWS_ACCESS_KEY_ID\fR, \fBAWS_SECRET_ACCESS_KEY\fR
S3 credentials when a store URL carries none.
.TP
\fBNOTIFY_SOCKET\fR
Where a FUSE mount reports READY=1 (systemd Type=notify units).
.TP
\fBRUST_LOG\fR
Log filter, over \-v and \-q.
.SH EXIT STATUS
0 ok, 1 other error, 2 usage, 3 not found, 4 authentication, 5 unavailable (registry, store, network), 6 integrity, 7 local I/O, 8 refused (something flmount did not make), 128+N killed by signal N.
.SH EXAMPLES
"#;

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
