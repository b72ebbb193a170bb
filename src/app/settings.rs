//! What a run does, validated: built once by the command line (`cli`)
//! from flags and the config file, then carried out by [`super::run`].
//! Plain data, no parsing here.

use std::path::PathBuf;

use crate::flist::chunkcache::CacheOptions;
use crate::flist::fuse::MountOptions;
use crate::image::pull::PullOptions;
use crate::image::reference::ImageRef;
use crate::image::source::Source;
use crate::store::StoreSpec;

pub use crate::admin::InspectView;

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
        stores: Vec<StoreSpec>,
        target: PathBuf,
        force: bool,
        cache: CacheOptions,
    },
    /// Serve an flist through FUSE until unmounted.
    Serve {
        flist: PathBuf,
        stores: Vec<StoreSpec>,
        mount: MountOptions,
    },
    Flist(FlistOp),
    Images,
    ForgetImages(Vec<crate::admin::inventory::ImageSelector>),
    Content(ContentOp),
    Gc {
        dry_run: bool,
    },
    Pack {
        flist: PathBuf,
        stores: Vec<StoreSpec>,
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
    /// Serve through FUSE straight from the layer blobs, by the image's
    /// seek index (the workdir's, or `index`).
    Lazy {
        mount: MountOptions,
        index: Option<PathBuf>,
    },
    /// Build the image's seek index (into the workdir, or `path`).
    Index {
        path: Option<PathBuf>,
        /// Also push it to the registry, as an artifact referring to the
        /// image.
        push: bool,
    },
    /// Show the manifest, config and layers (`inspect`).
    Inspect(InspectView),
    /// An OCI runtime bundle: `dir/rootfs` and `dir/config.json`.
    Bundle {
        dir: PathBuf,
        force: bool,
    },
    /// Index into an flist, content into the stores.
    Flist {
        path: PathBuf,
        stores: Vec<StoreSpec>,
    },
}

/// `flmount content ...`
#[derive(Debug, Clone)]
pub enum ContentOp {
    Ls,
    Path { digest: String },
    Rm { digests: Vec<String> },
}

/// `flmount flist ...`
#[derive(Debug)]
pub enum FlistOp {
    Ls {
        flist: PathBuf,
    },
    Inspect {
        flist: PathBuf,
    },
    Tag {
        flist: PathBuf,
        set: Vec<String>,
        delete: Vec<String>,
    },
    Store {
        flist: PathBuf,
        routes: Vec<String>,
    },
    /// `flist trace F -- CMD`: stores as given (passed to the mount).
    Trace {
        flist: PathBuf,
        stores: Vec<String>,
        cache: Option<PathBuf>,
        command: Vec<String>,
        /// Flags the traced mount is given too (-timeout, -cache-size,
        /// -cache-store).
        forward: Vec<String>,
    },
}
