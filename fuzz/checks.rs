//! What each fuzz target checks, shared by the fuzz targets
//! (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz.sh`) and by the stable
//! test suite (`tests/robustness.rs`), which runs the same checks over
//! seeded mutations and over every saved crash input in
//! `fuzz/regressions/<target>/`.
//!
//! Each check takes untrusted bytes and panics only when flmount
//! misbehaves: a panic inside flmount, or a broken promise (a write
//! outside the target, a directory loop served).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use flmount::flist::format::Flist;
use flmount::flist::fuse::index::{Index, NodeKind, ROOT};
use flmount::fs::layer::LayerBlob;
use flmount::fs::tree::Tree;
use flmount::image::digest::Digest;
use flmount::image::manifest::{Compression, Manifest, Platform};
use flmount::image::reference::ImageRef;
use flmount::runtime::Process;
use flmount::write::extract::{extract_layers, WriteOptions};

/// The layer reader: bytes read as an uncompressed layer tarball give
/// changes or an error; the changes, applied on their own and over
/// themselves, give a plan or an error. Returns whether the layer parsed.
pub fn layer(data: &[u8]) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let Ok(changes) = LayerBlob::new(file.path(), Compression::None).changes() else {
        return false;
    };
    let _ = Tree::from_layers(std::slice::from_ref(&changes)).map(|t| t.plan());
    let _ = Tree::from_layers(&[changes.clone(), changes]).map(|t| t.plan());
    true
}

const SECRET: &[u8] = b"host data\n";

/// Names that hostile seeds try to create through absolute or deep
/// relative symlinks (`/tmp -> ...`, `../../..`): they must never appear.
pub const ESCAPE_NAME: &str = "flmount-fuzz-escaped";

/// Extraction: the bytes as a layer applied twice (lower and upper) are
/// written into a target or refused, and nothing beside the target is
/// created, changed or linked; nor is [`ESCAPE_NAME`] created in `/` or
/// `/tmp`. Returns whether the extraction succeeded (was written).
pub fn extract(data: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("secret"), SECRET).unwrap();
    let layer = dir.path().join("layer.tar");
    std::fs::write(&layer, data).unwrap();
    let blob = LayerBlob::new(&layer, Compression::None);
    let target = dir.path().join("rootfs");
    let opts = WriteOptions {
        workers: 2,
        ..WriteOptions::default()
    };
    let result = extract_layers(&[blob.clone(), blob], &target, false, &opts);

    let mut beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    let expected: &[&str] = if result.is_ok() {
        &["host", "layer.tar", "rootfs"]
    } else {
        &["host", "layer.tar"]
    };
    assert_eq!(beside, expected, "entries created beside the target ({result:?})");
    assert_eq!(
        std::fs::read_dir(&host).unwrap().count(),
        1,
        "entries created in a host directory"
    );
    let secret = std::fs::symlink_metadata(host.join("secret")).unwrap();
    assert!(
        secret.file_type().is_file() && secret.nlink() == 1,
        "the host file was replaced or linked"
    );
    assert_eq!(std::fs::read(host.join("secret")).unwrap(), SECRET);
    for dir in ["/", "/tmp"] {
        let escaped = Path::new(dir).join(ESCAPE_NAME);
        assert!(
            !escaped.exists(),
            "{} was created ({result:?})",
            escaped.display()
        );
    }
    if result.is_ok() {
        assert_links_inside(&target);
    }
    result.is_ok()
}

/// Every hard link of every file in `root` is inside `root`.
fn assert_links_inside(root: &Path) {
    let mut found: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                found.entry(m.ino()).or_insert((m.nlink(), 0)).1 += 1;
            }
        }
    }
    for (ino, (nlink, names)) in found {
        assert_eq!(nlink, names, "inode {ino} has links outside the target");
    }
}

/// Registry documents and names: manifests and indexes (under every
/// content type a registry may claim), image configs, references, digests
/// and platforms give values or errors. Returns whether the bytes parsed
/// as a manifest or index under some content type.
pub fn manifest(data: &[u8]) -> bool {
    let mut parsed = false;
    for content_type in [
        None,
        Some("application/json"),
        Some("application/vnd.oci.image.manifest.v1+json"),
        Some("application/vnd.oci.image.index.v1+json"),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    ] {
        parsed |= Manifest::parse(data, content_type).is_ok();
    }
    let _ = Process::from_image_config(data, flmount::runtime::ImageFiles::None);
    let text = String::from_utf8_lossy(data);
    let _ = ImageRef::parse(&text);
    let _ = Digest::parse(&text);
    let _ = Platform::parse(&text);
    parsed
}

/// The flist reader as a mount uses it: the bytes, opened as an flist, are
/// refused or give routes, tags and a FUSE index whose tree, walked from
/// the root as requests would, is finite and consistent. Returns whether
/// an index was built.
pub fn flist(data: &[u8]) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let Ok(flist) = Flist::open(file.path()) else {
        return false;
    };
    let _ = flist.routes();
    let _ = flist.tags();
    // The whole-tree reader (unpack) and the one a mount uses, which
    // reads a directory at a time and must never serve a loop either.
    let planned = flist.plan().is_ok();
    let Ok(index) = Index::open(file.path()) else {
        return false;
    };
    let (rows, _) = index.totals();
    let mut todo = vec![ROOT];
    let mut dirs_seen = 0;
    while let Some(ino) = todo.pop() {
        dirs_seen += 1;
        assert!(dirs_seen <= rows, "a directory loop in the index");
        let _ = index.path_of(ino);
        let Some(entries) = index.entries(ino) else {
            continue;
        };
        for e in entries.iter() {
            assert_eq!(
                index.lookup(ino, &e.name),
                Some(e.ino),
                "lookup disagrees with readdir"
            );
            match index.node(e.ino).as_ref().map(|n| &n.kind) {
                Some(NodeKind::Dir) => todo.push(e.ino),
                Some(NodeKind::File { chunks, .. }) => {
                    let _ = chunks.len();
                }
                Some(_) => {}
                None => {}
            }
        }
    }
    planned
}
