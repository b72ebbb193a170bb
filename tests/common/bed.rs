//! The bed a test starts from: a registry of its own, a scratch directory
//! (where its layouts, flists, stores and mount points go), and flmount
//! with its own workdir. All of it goes away when the bed is dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::oci::Compression;
use super::registry::Registry;
use super::run::{s, Flmount};

pub struct Bed {
    pub reg: Registry,
    pub tmp: tempfile::TempDir,
    pub fl: Flmount,
}

impl Bed {
    /// A bed whose scratch directory only root may enter (0700).
    pub fn new() -> Bed {
        Bed {
            reg: Registry::start(),
            tmp: tempfile::tempdir().unwrap(),
            fl: Flmount::new(),
        }
    }

    /// A bed whose scratch directory other users may enter (0755): for
    /// checks run as `nobody`, and for what another user plants there.
    pub fn open_to_others() -> Bed {
        let bed = Bed::new();
        std::fs::set_permissions(bed.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        bed
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Pushes `layers`, each gzipped, as `repo:t`, its OCI layout written at
    /// `layout` in the scratch directory; returns the image reference.
    pub fn push_gzip(&self, repo: &str, layout: &str, layers: Vec<Vec<u8>>) -> String {
        let layers = layers.into_iter().map(|t| (Compression::Gzip, t)).collect();
        self.reg.push_layers(repo, layers, &self.path(layout))
    }

    /// Packs `image` into the flist `flist`, its chunks in the dir store at
    /// `store`.
    pub fn pack(&self, image: &str, flist: &Path, store: &Path) {
        self.fl.ok(&[
            "-image",
            image,
            "-flist",
            s(flist),
            "-store",
            &format!("dir://{}", s(store)),
        ]);
    }
}
