//! Exact on every tar that real tools write: fixtures made by GNU tar
//! (`--xattrs --format=posix`, every `--sparse` format), `setcap`,
//! `setfacl` and `setfattr`, each checked in all four views of an image
//! (`-extractto`, `-mount`, the FUSE view of its flist, `unpack` of that
//! flist) against `umoci unpack` or GNU `tar -x`, plus access checks as
//! `nobody` and the space sparse files take.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::umoci_unpack;
use common::fstree::{assert_same_tree, describe, Ignore};
use common::mounts::Mounted;
use common::tarball::{tar, E};
use common::*;

/// An image pushed to the registry of a bed whose scratch directory every
/// user may enter (for the `nobody` checks).
struct Img {
    bed: Bed,
    image: String,
}

impl Img {
    fn push(name: &str, layers: Vec<Vec<u8>>) -> Img {
        let bed = Bed::open_to_others();
        let image = bed.push_gzip(&format!("exact/{name}"), "layout", layers);
        Img { bed, image }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.bed.path(name)
    }

    /// `umoci unpack` of the image: the reference.
    fn umoci(&self) -> PathBuf {
        umoci_unpack(&self.path("layout"), &self.path("umoci"))
    }
}

/// The four views of an image; mounts are undone on drop.
struct Views<'a> {
    img: &'a Img,
    flat: PathBuf,
    overlay: PathBuf,
    fuse: PathBuf,
    unpacked: PathBuf,
    /// stderr of the extraction.
    log: String,
    fuse_server: Option<Mounted>,
}

impl<'a> Views<'a> {
    fn new(img: &'a Img) -> Views<'a> {
        let fl = &img.bed.fl;
        let flat = img.path("flat");
        let log = fl.ok(&["-image", &img.image, "-extractto", s(&flat)]);
        let mut views = Views {
            img,
            flat,
            overlay: img.path("overlay"),
            fuse: img.path("fuse"),
            unpacked: img.path("unpacked"),
            log,
            fuse_server: None,
        };
        fl.ok(&["-image", &img.image, "-mount", s(&views.overlay)]);
        let flist = img.path("image.fl");
        img.bed.pack(&img.image, &flist, &img.path("chunks"));
        fl.ok(&["unpack", "-flist", s(&flist), s(&views.unpacked)]);
        views.fuse_server = Some(Mounted::start(
            fl,
            &["-flist", s(&flist), "-allow-other"],
            &views.fuse,
        ));
        views
    }

    fn all(&self) -> [(&'static str, &Path); 4] {
        [
            ("-extractto", &self.flat),
            ("-mount", &self.overlay),
            ("FUSE", &self.fuse),
            ("unpack", &self.unpacked),
        ]
    }

    /// Every view equals `reference`, entry by entry.
    fn assert_equal_to(&self, reference: &Path, ignore: &Ignore) {
        for (view, dir) in self.all() {
            eprintln!("comparing the {view} view with {}", reference.display());
            assert_same_tree(reference, dir, ignore);
        }
    }

    /// The overlay layer directories in the workdir.
    fn layer_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.img.bed.fl.workdir.join("overlays"))
            .unwrap()
            .map(|e| e.unwrap().path().join("diff"))
            .filter(|p| p.is_dir())
            .collect()
    }
}

impl Drop for Views<'_> {
    fn drop(&mut self) {
        let _ = self.img.bed.fl.run(&["-umount", s(&self.overlay)]);
        // fuse_server drops next: the server killed, its mount taken down.
    }
}

/// GNU tar creating `out` from `members` of `src`, with `args` first.
fn gnu_tar(src: &Path, out: &Path, args: &[&str], members: &[&str]) -> Vec<u8> {
    run_ok(
        Command::new("tar")
            .args(args)
            .arg("-C")
            .arg(src)
            .arg("-cf")
            .arg(out)
            .args(["--numeric-owner", "--mtime=@1700000000"])
            .args(members),
    );
    std::fs::read(out).unwrap()
}

const XATTRS: &[&str] = &["--xattrs", "--xattrs-include=*", "--format=posix"];

/// A fresh directory for a fixture's source files, mode 0755.
fn src_dir(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn xattr_of(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    xattr::get(path, std::ffi::OsStr::from_bytes(name)).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `test` cannot run here (root and FUSE are needed): a failure
/// in CI (see `common::host::skip`).
fn skip(test: &str) -> bool {
    !common::mounts::fuse_or_skip(test)
}

/// Issue 13, case 1: PAX values holding a newline byte (a capability
/// blob, an ACL naming uid 10, a long name with a newline in it).
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn pax_values_with_newlines_are_read_by_their_length() {
    if skip("pax_values_with_newlines_are_read_by_their_length") {
        return;
    }
    need("setcap");
    need("setfacl");
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    std::fs::copy("/usr/bin/true", src.join("cap")).unwrap();
    run_ok(
        Command::new("setcap")
            .args(["cap_dac_override,cap_fowner+ep"])
            .arg(src.join("cap")),
    );
    std::fs::write(src.join("acl10"), b"uid 10 may read\n").unwrap();
    run_ok(
        Command::new("setfacl")
            .args(["-m", "u:10:r"])
            .arg(src.join("acl10")),
    );
    let long = format!("{}\n{}", "n".repeat(80), "m".repeat(80));
    std::fs::write(src.join(&long), b"a name with a newline\n").unwrap();
    let layer = gnu_tar(&src, &work.path().join("l.tar"), XATTRS, &["."]);
    // The fixture really holds the bytes that broke the old reader.
    assert!(contains(
        &layer,
        b"SCHILY.xattr.security.capability=\x01\x00\x00\x02\x0a"
    ));
    assert!(
        contains(&layer, b"\x02\x00\x04\x00\x0a\x00\x00\x00"),
        "no ACL entry for uid 10"
    );

    let img = Img::push("pax-newline", vec![layer]);
    let views = Views::new(&img);
    let reference = img.umoci();
    views.assert_equal_to(&reference, &Ignore::default());
    let cap = xattr_of(&src.join("cap"), b"security.capability").unwrap();
    let acl = xattr_of(&src.join("acl10"), b"system.posix_acl_access").unwrap();
    for (view, dir) in views.all() {
        assert_eq!(
            xattr_of(&dir.join("cap"), b"security.capability").as_ref(),
            Some(&cap),
            "{view}"
        );
        assert_eq!(
            xattr_of(&dir.join("acl10"), b"system.posix_acl_access").as_ref(),
            Some(&acl),
            "{view}"
        );
        assert_eq!(
            std::fs::read(dir.join(&long)).unwrap(),
            b"a name with a newline\n",
            "{view}"
        );
    }
}

/// A sparse file: `size` bytes, `data` written at each offset.
fn sparse_file(path: &Path, size: u64, data: &[(u64, &[u8])]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (offset, bytes) in data {
        f.write_all_at(bytes, *offset).unwrap();
    }
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Issue 13, cases 2, 3 and 4: GNU tar's PAX sparse formats 0.0, 0.1 and
/// 1.0 and its old GNU format with more than four regions, each a layer;
/// content equal to GNU `tar -x` in every view, holes kept.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn sparse_files_of_every_gnu_format_are_exact_and_keep_their_holes() {
    if skip("sparse_files_of_every_gnu_format_are_exact_and_keep_their_holes") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    let block = pseudo_random(8192, 7);
    let regions: Vec<(u64, &[u8])> = (0..3).map(|i| (i * (3 << 20) + 4096, &block[..])).collect();
    for name in ["s00", "s01"] {
        sparse_file(&src.join(name), 10 << 20, &regions);
    }
    // A 1 GiB file holding 24 KiB: the holes must stay holes.
    const BIG: u64 = 1 << 30;
    sparse_file(
        &src.join("s10-big"),
        BIG,
        &[(0, &block[..]), (BIG / 2, &block[..]), (BIG - 8192, &block[..])],
    );
    // Ten regions: four in the GNU header, six in an extended header.
    let many: Vec<(u64, &[u8])> = (0..10).map(|i| (i * (1 << 20), &block[..4096])).collect();
    sparse_file(&src.join("gnu-many"), 11 << 20, &many);
    let mut layers = Vec::new();
    let mut tars = Vec::new();
    for (version, member) in [("0.0", "s00"), ("0.1", "s01"), ("1.0", "s10-big")] {
        let out = work.path().join(format!("{member}.tar"));
        let args = [
            "--format=posix",
            "--sparse",
            &format!("--sparse-version={version}"),
        ];
        layers.push(gnu_tar(&src, &out, &args, &[member]));
        tars.push(out);
    }
    let out = work.path().join("gnu.tar");
    let gnu = gnu_tar(&src, &out, &["--format=gnu", "--sparse"], &["gnu-many"]);
    assert_eq!(
        (gnu[156], gnu[482]),
        (b'S', 1),
        "not a GNU sparse header with extended headers"
    );
    layers.push(gnu);
    tars.push(out);
    assert!(contains(&layers[1], b"GNUSparseFile.") && contains(&layers[2], b"GNU.sparse.major=1"));

    // The reference: GNU tar -x of each layer in turn.
    let reference = work.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    std::fs::set_permissions(&reference, std::fs::Permissions::from_mode(0o755)).unwrap();
    for t in &tars {
        untar(t, &reference);
    }
    assert!(
        allocated(&reference.join("s10-big")) < 1 << 20,
        "GNU tar did not keep the holes"
    );

    let img = Img::push("sparse", layers);
    let views = Views::new(&img);
    // The root and its mtime are the target's own: no layer names them.
    let ignore = Ignore {
        dir_mtimes: true,
        ..Ignore::default()
    };
    views.assert_equal_to(&reference, &ignore);
    for (view, dir) in views.all() {
        let big = dir.join("s10-big");
        assert_eq!(std::fs::metadata(&big).unwrap().len(), BIG, "{view}");
        let used = allocated(&big);
        // FUSE counts whole 512 KiB chunks holding data: three here.
        let limit = if view == "FUSE" { 3 << 19 } else { 1 << 20 };
        assert!(used <= limit, "{view}: the 1 GiB sparse file takes {used} bytes");
        assert!(used > 0, "{view}: the data takes no space at all");
    }
    // The overlay layer directories hold holes too.
    let du: u64 = views
        .layer_dirs()
        .iter()
        .flat_map(|d| files_under(d))
        .map(|f| allocated(&f))
        .sum();
    assert!(du < 4 << 20, "the overlay layer directories take {du} bytes");
}

/// Issue 13, case 5: parents no entry names (GNU tar given a file's path)
/// are 0755 and root's, and `nobody` reaches the file through them.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn implicit_parents_are_0755_and_root_owned() {
    if skip("implicit_parents_are_0755_and_root_owned") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::write(src.join("a/b/c/file"), b"reachable\n").unwrap();
    std::fs::set_permissions(src.join("a/b/c/file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let layer = gnu_tar(
        &src,
        &work.path().join("l.tar"),
        &["--format=posix"],
        &["a/b/c/file"],
    );
    let img = Img::push("implicit", vec![layer]);
    let views = Views::new(&img);
    let reference = img.umoci();
    let ignore = Ignore {
        dir_mtimes: true,
        ..Ignore::default()
    };
    views.assert_equal_to(&reference, &ignore);
    for (view, dir) in views.all() {
        for parent in ["", "a", "a/b", "a/b/c"] {
            let md = std::fs::metadata(dir.join(parent)).unwrap();
            assert_eq!(
                (md.mode() & 0o7777, md.uid(), md.gid()),
                (0o755, 0, 0),
                "{view}: /{parent}"
            );
        }
        let (ok, _, err) = as_nobody("cat", &[&dir.join("a/b/c/file")]);
        assert!(ok, "{view}: nobody cannot read through implicit parents: {err}");
    }
}

/// Issue 13, case 6: the `-mount` root is the image root (mode, owner,
/// mtime, xattrs) when the top layer does not touch `/`.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn the_mount_root_is_the_image_root() {
    if skip("the_mount_root_is_the_image_root") {
        return;
    }
    need("setfattr");
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    std::fs::write(src.join("f"), b"f\n").unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&src, Some(5), Some(6)).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.root", "-v", "image root"])
            .arg(&src),
    );
    let lower = gnu_tar(&src, &work.path().join("l1.tar"), XATTRS, &["."]);
    // The top layer adds a file in a new directory: it names no `./`.
    let top_src = src_dir(work.path(), "top");
    std::fs::create_dir(top_src.join("etc")).unwrap();
    std::fs::write(top_src.join("etc/top"), b"top\n").unwrap();
    let top = gnu_tar(
        &top_src,
        &work.path().join("l2.tar"),
        &["--format=posix"],
        &["etc"],
    );
    // And an empty layer last (what `RUN true` commits).
    let empty_tar = work.path().join("l3.tar");
    run_ok(
        Command::new("tar")
            .args(["--format=posix", "-cf"])
            .arg(&empty_tar)
            .args(["-T", "/dev/null"]),
    );
    let empty = std::fs::read(&empty_tar).unwrap();
    let img = Img::push("root", vec![lower, top, empty]);
    let views = Views::new(&img);
    let reference = img.umoci();
    views.assert_equal_to(&reference, &Ignore::default());
    for (view, dir) in views.all() {
        let md = std::fs::metadata(dir).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime()),
            (0o750, 5, 6, 1_700_000_000),
            "{view}"
        );
        assert_eq!(
            xattr_of(dir, b"user.root").as_deref(),
            Some(&b"image root"[..]),
            "{view}"
        );
    }
}

/// Issue 13, case 7: a layer setting `trusted.overlay.opaque` on a
/// directory (GNU tar keeps it) does not hide the lower layer's content;
/// the xattr is dropped with a warning, as umoci drops it.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn overlay_xattrs_from_layers_are_dropped_and_lower_content_stays() {
    if skip("overlay_xattrs_from_layers_are_dropped_and_lower_content_stays") {
        return;
    }
    need("setfattr");
    let work = tempfile::tempdir().unwrap();
    let lower_src = src_dir(work.path(), "lower");
    std::fs::create_dir(lower_src.join("d")).unwrap();
    std::fs::write(lower_src.join("d/lower"), b"from the lower layer\n").unwrap();
    let lower = gnu_tar(&lower_src, &work.path().join("l1.tar"), XATTRS, &["."]);
    let upper_src = src_dir(work.path(), "upper");
    std::fs::create_dir(upper_src.join("d")).unwrap();
    std::fs::write(upper_src.join("d/upper"), b"from the upper layer\n").unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "trusted.overlay.opaque", "-v", "y"])
            .arg(upper_src.join("d")),
    );
    let upper = gnu_tar(&upper_src, &work.path().join("l2.tar"), XATTRS, &["."]);
    assert!(contains(&upper, b"SCHILY.xattr.trusted.overlay.opaque=y"));
    let img = Img::push("overlay-xattr", vec![lower, upper]);
    let views = Views::new(&img);
    assert!(
        views.log.contains("dropping the xattr trusted.overlay.opaque"),
        "{}",
        views.log
    );
    let reference = img.umoci();
    views.assert_equal_to(&reference, &Ignore::default());
    for (view, dir) in views.all() {
        assert_eq!(
            std::fs::read(dir.join("d/lower")).unwrap(),
            b"from the lower layer\n",
            "{view}: the lower content is hidden"
        );
        assert!(dir.join("d/upper").is_file(), "{view}");
    }
    for layer in views.layer_dirs() {
        let d = layer.join("d");
        if d.is_dir() {
            assert_eq!(xattr_of(&d, b"trusted.overlay.opaque"), None, "{}", d.display());
        }
    }
}

/// Issue 13, case 8: ACLs hold in every view, both ways: a 0644 file
/// denied to `nobody` by `user:nobody:---`, a 0600 one granted by
/// `user:nobody:r--`.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn acls_are_enforced_in_every_view() {
    if skip("acls_are_enforced_in_every_view") {
        return;
    }
    need("setfacl");
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    for (name, mode, acl) in [
        ("denied", 0o644, "u:nobody:---"),
        ("granted", 0o600, "u:nobody:r--"),
    ] {
        std::fs::write(src.join(name), format!("{name}\n")).unwrap();
        std::fs::set_permissions(src.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        run_ok(Command::new("setfacl").args(["-m", acl]).arg(src.join(name)));
    }
    let layer = gnu_tar(&src, &work.path().join("l.tar"), XATTRS, &["."]);
    assert!(contains(&layer, b"SCHILY.xattr.system.posix_acl_access="));
    let img = Img::push("acl", vec![layer]);
    let views = Views::new(&img);
    let reference = img.umoci();
    views.assert_equal_to(&reference, &Ignore::default());
    for (view, dir) in views.all() {
        let (ok, _, err) = as_nobody("cat", &[&dir.join("denied")]);
        assert!(
            !ok && err.contains("Permission denied"),
            "{view}: nobody read a file its ACL denies ({err})"
        );
        let (ok, _, err) = as_nobody("cat", &[&dir.join("granted")]);
        assert!(ok, "{view}: nobody could not read a file its ACL grants: {err}");
    }
}

/// Issue 13, case 9: an xattr name that is not UTF-8 (GNU tar writes it
/// as raw bytes) is kept in every view and in the tar export.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn non_utf8_xattr_names_are_kept_as_bytes() {
    if skip("non_utf8_xattr_names_are_kept_as_bytes") {
        return;
    }
    let name: &[u8] = b"user.caf\xe9-\xff";
    let work = tempfile::tempdir().unwrap();
    let src = src_dir(work.path(), "src");
    std::fs::create_dir(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/file"), b"x\n").unwrap();
    for p in ["dir", "dir/file"] {
        xattr::set(src.join(p), std::ffi::OsStr::from_bytes(name), b"raw name").unwrap();
    }
    let layer = gnu_tar(&src, &work.path().join("l.tar"), XATTRS, &["."]);
    assert!(contains(&layer, b"SCHILY.xattr.user.caf\xe9-\xff=raw name"));
    let img = Img::push("non-utf8-xattr", vec![layer]);
    let views = Views::new(&img);
    let reference = img.umoci();
    views.assert_equal_to(&reference, &Ignore::default());
    for (view, dir) in views.all() {
        for p in ["dir", "dir/file"] {
            assert_eq!(
                xattr_of(&dir.join(p), name).as_deref(),
                Some(&b"raw name"[..]),
                "{view}: {p}"
            );
        }
    }
    // The tar export too, as GNU tar reads it back.
    let out = img
        .bed
        .fl
        .command()
        .args(["-image", &img.image, "-extractto", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = img.path("export.tar");
    std::fs::write(&exported, &out.stdout).unwrap();
    let untarred = img.path("untarred");
    untar(&exported, &untarred);
    assert_eq!(
        xattr_of(&untarred.join("dir/file"), name).as_deref(),
        Some(&b"raw name"[..])
    );
}

/// Issue 13, case 10: within one layer, a hard link to a lower file, then
/// a whiteout of that file: applied in stream order (umoci, containerd),
/// the link keeps the content.
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_hard_link_then_a_whiteout_of_its_target_keeps_the_link() {
    if skip("a_hard_link_then_a_whiteout_of_its_target_keeps_the_link") {
        return;
    }
    let lower = tar(&[
        E::dir("./"),
        E::file("x1", b"x1 content\n"),
        E::dir("d"),
        E::file("d/old", b"old"),
    ]);
    let upper = tar(&[
        E::hardlink("x1-link", "x1"),
        E::file(".wh.x1", b""),
        E::file("d/new", b"new"),
        E::file(".wh.d", b""),
        E::file("mine", b"mine"),
        E::file(".wh.mine", b""),
    ]);
    let img = Img::push("link-whiteout", vec![lower, upper]);
    let views = Views::new(&img);
    let reference = img.umoci();
    // umoci leaves /d with the time of its run (it removes d/old and does
    // not restore the mtime of a directory no entry names); flmount keeps
    // the image's.
    let ignore = Ignore {
        dir_mtimes: true,
        ..Ignore::default()
    };
    views.assert_equal_to(&reference, &ignore);
    let listing = describe(&views.flat);
    assert!(!listing.contains_key("/x1") && !listing.contains_key("/d/old"));
    assert_eq!(listing["/x1-link"].content, sha256_hex(b"x1 content\n"));
    assert!(listing.contains_key("/d/new") && listing.contains_key("/mine"));
}
