//! `-mount`: kernel overlayfs over per-layer directories in the workdir.
//! The view through the mount must equal the `-extractto` result.

mod common;

use std::path::Path;

use common::fixtures::{assert_modes_and_setuid_hold_for_nobody, permissions_layer};
use common::fstree::{assert_same_tree, Ignore};
use common::tarball::{tar, E};
use common::*;

fn push(reg: &Registry, name: &str, layers: Vec<Vec<E>>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let layers = layers.iter().map(|e| (Compression::Gzip, tar(e))).collect();
    reg.push_layers(&format!("ov/{name}"), layers, tmp.path())
}

/// Unmounts on drop, so a failing test does not leave mounts behind.
struct Mounted<'a> {
    fl: &'a Flmount,
    target: std::path::PathBuf,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.fl.run(&["-umount", self.target.to_str().unwrap()]);
    }
}

fn mount<'a>(fl: &'a Flmount, image: &str, target: &Path) -> (Mounted<'a>, String) {
    let err = fl.ok(&["-image", image, "-mount", target.to_str().unwrap()]);
    (
        Mounted {
            fl,
            target: target.to_owned(),
        },
        err,
    )
}

fn layers_extracted(stderr: &str) -> usize {
    let at = stderr
        .find(" extracted now")
        .unwrap_or_else(|| panic!("no mount summary:\n{stderr}"));
    let before = &stderr[..at];
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Every overlay rule: whiteouts, opaque dirs, type changes, hard links to
/// lower files, symlinked parents, devices, xattrs.
fn rules() -> Vec<Vec<E>> {
    vec![
        vec![
            E::dir("./"),
            E::dir("etc"),
            E::file("etc/passwd", b"root\n"),
            E::file("etc/shadow", b"secret\n").mode(0o640).owner(0, 42),
            E::dir("var"),
            E::dir("var/cache"),
            E::file("var/cache/a", b"a"),
            E::dir("var/cache/d"),
            E::file("var/cache/d/b", b"b"),
            E::dir("usr"),
            E::dir("usr/lib"),
            E::symlink("lib", "usr/lib"),
            E::file("usr/lib/libc.so", b"libc"),
            E::file("orig", b"hardlinked\n"),
            E::dir("tobefile"),
            E::file("tobefile/x", b"x"),
            E::file("tobedir", b"f"),
            E::dir("dev"),
            E::chr("dev/null", 1, 3),
            E::file("ping", b"p").xattr(
                "security.capability",
                b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            ),
            E::file("bin-su", b"su").mode(0o4755),
        ],
        vec![
            E::file("etc/.wh.shadow", b""),
            E::file("var/cache/.wh..wh..opq", b""),
            E::file("var/cache/new", b"n"),
            E::file("lib/libextra.so", b"through the lower symlink"),
            E::hardlink("orig-link", "orig"),
            E::file("tobefile", b"now a file"),
            E::dir("tobedir"),
            E::file("tobedir/y", b"y"),
            E::file(".wh.etc", b""),
            E::dir("etc").mode(0o700),
            E::file("etc/fresh", b"only this"),
        ],
        vec![E::file("top", b"top layer"), E::dir("var").mode(0o711)],
    ]
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn the_mount_equals_the_extracted_tree() {
    if !root_or_skip(
        "the_mount_equals_the_extracted_tree",
        "mounting overlayfs and creating whiteout devices",
    ) {
        return;
    }
    let reg = Registry::start();
    let image = push(&reg, "rules", rules());
    let fl = Flmount::new();
    let out = tempfile::tempdir().unwrap();
    let flat = out.path().join("flat");
    fl.ok(&["-image", &image, "-extractto", flat.to_str().unwrap()]);
    let mnt = out.path().join("mnt");
    let (mounted, err) = mount(&fl, &image, &mnt);
    assert_eq!(layers_extracted(&err), 3, "{err}");
    assert_same_tree(&flat, &mnt, &Ignore::default());
    assert!(
        !mnt.join("etc/passwd").exists(),
        "the re-created etc kept lower content"
    );
    assert!(mnt.join("usr/lib/libextra.so").is_file());

    // Writes go to the upper directory, never to the cached layers.
    std::fs::write(mnt.join("etc/fresh"), b"changed").unwrap();
    std::fs::remove_file(mnt.join("top")).unwrap();
    drop(mounted);
    assert!(!mnt.join("etc").exists(), "still mounted after -umount");
    assert!(
        !fl.workdir.join("mounts").read_dir().unwrap().any(|_| true),
        "mount state left behind"
    );

    // A second mount of the cached image extracts nothing, and the cached
    // layers were not changed by the writes.
    let (_mounted, err) = mount(&fl, &image, &mnt);
    assert_eq!(layers_extracted(&err), 0, "{err}");
    assert_eq!(std::fs::read(mnt.join("etc/fresh")).unwrap(), b"only this");
    assert!(mnt.join("top").is_file());
    assert_same_tree(&flat, &mnt, &Ignore::default());
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn images_sharing_layers_share_their_directories() {
    if !root_or_skip(
        "images_sharing_layers_share_their_directories",
        "mounting overlayfs and creating whiteout devices",
    ) {
        return;
    }
    let reg = Registry::start();
    let mut a = rules();
    a.truncate(2);
    let mut b = a.clone();
    b.push(vec![E::file("only-in-b", b"b")]);
    let image_a = push(&reg, "a", a);
    let image_b = push(&reg, "b", b);
    let fl = Flmount::new();
    let out = tempfile::tempdir().unwrap();
    let (_ma, err) = mount(&fl, &image_a, &out.path().join("a"));
    assert_eq!(layers_extracted(&err), 2, "{err}");
    let (_mb, err) = mount(&fl, &image_b, &out.path().join("b"));
    assert_eq!(layers_extracted(&err), 1, "{err}");
    assert!(out.path().join("b/only-in-b").is_file());
    assert!(!out.path().join("a/only-in-b").exists());
    let err = fl.fails(
        &[
            "-image",
            &image_a,
            "-mount",
            out.path().join("a").to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("already a mount point"), "{err}");
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn more_than_a_hundred_layers_fit_in_one_mount() {
    if !root_or_skip(
        "more_than_a_hundred_layers_fit_in_one_mount",
        "mounting overlayfs and creating whiteout devices",
    ) {
        return;
    }
    let reg = Registry::start();
    let layers: Vec<Vec<E>> = (0..120)
        .map(|i| vec![E::file(format!("layer-{i:03}"), format!("{i}"))])
        .collect();
    let image = push(&reg, "many", layers);
    let fl = Flmount::new();
    let out = tempfile::tempdir().unwrap();
    let mnt = out.path().join("mnt");
    let (_m, _) = mount(&fl, &image, &mnt);
    // What the kernel mounted, from its mount table: an overlay with 120
    // lower layers, each a short link in the workdir to a layer directory,
    // top layer first; with those directories' full paths the options
    // would not have fit the page mount(2) takes.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == mnt.to_str())
        .unwrap_or_else(|| panic!("{} is not in the mount table", mnt.display()));
    let (_, after) = line.split_once(" - ").unwrap();
    let mut fields = after.split(' ');
    assert_eq!(fields.next(), Some("overlay"), "{line}");
    let options = fields.nth(1).unwrap();
    let lowers: Vec<&str> = options
        .split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_else(|| panic!("no lowerdir in {options}"))
        .split(':')
        .collect();
    assert_eq!(lowers.len(), 120, "{options}");
    let mut full_length = 0;
    for (i, lower) in lowers.iter().enumerate() {
        let short = lower
            .strip_prefix("l/")
            .unwrap_or_else(|| panic!("{lower} is not a short link"));
        assert!(short.len() <= 10, "{lower}");
        let dir = std::fs::canonicalize(fl.workdir.join(lower)).unwrap();
        assert!(dir.starts_with(std::fs::canonicalize(fl.workdir.join("overlays")).unwrap()));
        // Top layer first: the n-th lower holds layer 119 - n's file only.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("layer-{:03}", 119 - i)], "{lower}");
        full_length += dir.as_os_str().len() + 1;
    }
    assert!(
        full_length > 4096,
        "{full_length} bytes of full paths would fit anyway"
    );
    for i in [0, 59, 119] {
        assert_eq!(
            std::fs::read_to_string(mnt.join(format!("layer-{i:03}"))).unwrap(),
            i.to_string()
        );
    }
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 120);
}

#[test]
fn umount_of_something_flmount_did_not_mount_is_refused() {
    let fl = Flmount::new();
    let out = tempfile::tempdir().unwrap();
    let err = fl.fails(&["-umount", out.path().to_str().unwrap()], 3);
    assert!(err.contains("not mounted by flmount"), "{err}");
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn file_modes_and_setuid_hold_for_other_users() {
    if !root_or_skip(
        "file_modes_and_setuid_hold_for_other_users",
        "overlay mounts and setuid files owned by root",
    ) {
        return;
    }
    need("setpriv");
    let reg = Registry::start();
    let image = push(&reg, "perm", vec![permissions_layer()]);
    let fl = Flmount::new();
    // The mount point's parents must be searchable by the other user.
    let mnt = std::path::PathBuf::from(format!("/tmp/flmount-ov-modes-{}", std::process::id()));
    let (mounted, _) = mount(&fl, &image, &mnt);
    assert_modes_and_setuid_hold_for_nobody(&mnt, true);
    drop(mounted);
    let _ = std::fs::remove_dir(&mnt);
}
