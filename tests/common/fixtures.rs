//! Shared fixtures: the rules image and its reference extraction (umoci),
//! the permissions layer and its checks, and deterministic file content.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::bed::Bed;
use super::fstree::{assert_same_tree, Ignore};
use super::host::need;
use super::run::{as_nobody, run_ok, s};
use super::tarball::{tar, E};

/// The rules image in a bed's registry, and the reference every other way
/// of materialising it is compared with: `umoci unpack` of it (an
/// independent implementation), which flmount's `-extractto` is checked to
/// equal.
pub struct RulesImage {
    pub bed: Bed,
    pub image: String,
    pub flat: PathBuf,
}

impl RulesImage {
    /// Pushes the rules layers as `repo` and extracts them.
    pub fn new(repo: &str) -> RulesImage {
        let bed = Bed::new();
        let image = bed.push_gzip(repo, "layout", rules_layers().iter().map(|e| tar(e)).collect());
        let ours = bed.path("flmount-flat");
        bed.fl.ok(&["-image", &image, "-extractto", s(&ours)]);
        let flat = umoci_unpack(&bed.path("layout"), &bed.path("umoci-bundle"));
        assert_same_tree(&flat, &ours, &Ignore::default());
        RulesImage { bed, image, flat }
    }

    /// A path in the image's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.bed.path(name)
    }
}

/// `umoci unpack` of the layout's image tagged `t` into the bundle
/// `bundle`: the reference extraction. Returns the bundle's rootfs.
pub fn umoci_unpack(layout: &Path, bundle: &Path) -> PathBuf {
    need("umoci");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:t", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// Every rule of the issue in three layers.
pub fn rules_layers() -> Vec<Vec<E>> {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let long_dir = "l".repeat(120);
    vec![
        vec![
            E::dir("./").mode(0o755),
            E::dir("bin"),
            E::file("bin/busybox", &busybox).mode(0o755),
            E::symlink("bin/sh", "busybox"),
            E::hardlink("bin/ls", "bin/busybox"),
            E::file("bin/su", b"setuid\n").mode(0o4755).owner(0, 0),
            E::file("bin/wall", b"setgid\n").mode(0o2755).owner(0, 5),
            E::dir("etc").mode(0o755),
            E::file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            E::file("etc/shadow", b"root:*:1::::::\n")
                .mode(0o640)
                .owner(0, 42),
            E::file("etc/owned", b"user file\n").owner(1000, 1001),
            E::dir("tmp").mode(0o1777),
            E::dir("usr"),
            E::dir("usr/bin"),
            E::file("usr/bin/ping", b"ping binary\n")
                .mode(0o755)
                .xattr(
                    "security.capability",
                    b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                )
                .xattr("user.flmount", b"kept"),
            E::dir("dev"),
            E::chr("dev/null", 1, 3),
            E::blk("dev/sda", 8, 0),
            E::fifo("dev/initctl").mode(0o600),
            E::dir("var"),
            E::dir("var/cache"),
            E::file("var/cache/old1", b"1"),
            E::dir("var/cache/sub"),
            E::file("var/cache/sub/old2", b"2"),
            E::dir("becomes-file"),
            E::file("becomes-file/child", b"c"),
            E::file("becomes-dir", b"f"),
            E::symlink("becomes-other", "etc"),
            E::file("empty", b""),
            E::file("big", pseudo_random(3 << 20, 3)),
            E::dir(&long_dir),
            E::file(format!("{long_dir}/{}", "n".repeat(150)), b"long name\n"),
            E::file(b"non-utf8-\xff\xfe".as_slice(), b"raw bytes name\n"),
            E::file("subsecond", b"t").pax("mtime", "1700000000.123456789"),
            E::file("victim", b"original content\n"),
            E::dir("keepdir").mode(0o750),
            E::file("keepdir/child", b"kept across a metadata change\n"),
        ],
        vec![
            E::file("etc/.wh.shadow", b""),
            E::file("var/cache/.wh..wh..opq", b""),
            E::file("var/cache/new", b"new"),
            E::file("becomes-file", b"now a file"),
            E::dir("becomes-dir").mode(0o700),
            E::file("becomes-dir/inside", b"i"),
            E::file("becomes-other", b"was a symlink"),
            E::hardlink("etc/passwd-link", "etc/passwd"),
            E::hardlink("victim-link", "victim"),
            E::file("dup", b"first"),
            E::file("dup", b"second, the winner"),
            E::dir("keepdir").mode(0o700).owner(3, 4).mtime(1_600_000_000),
            E::file("etc/motd", b"layer two\n"),
        ],
        vec![
            E::file(".wh.victim", b""),
            E::file("etc/.wh.motd", b""),
            E::file("etc/shadow", b"recreated after a whiteout\n").mode(0o600),
        ],
    ]
}

/// A layer for permission checks: a file only root may read, one anyone
/// may, and this machine's `id` as a setuid-root program and as a plain one
/// (run from a mount, it finds its libraries on the host).
pub fn permissions_layer() -> Vec<E> {
    let id = std::fs::read("/usr/bin/id").expect("coreutils' /usr/bin/id");
    vec![
        E::dir("etc").mode(0o755),
        E::file("etc/shadow", "root:secret\n").mode(0o640).owner(0, 42),
        E::file("etc/passwd", "root:x:0:0::/root:/bin/sh\n").mode(0o644),
        E::dir("bin").mode(0o755),
        E::file("bin/suid-id", &id).mode(0o4755),
        E::file("bin/id", &id).mode(0o755),
    ]
}

/// As `nobody`, through a mount of [`permissions_layer`] at `mnt`: the
/// root-only file is refused, the public one is read, and the setuid
/// program runs as root exactly when `suid` (the mount allows it); then the
/// same with the mount remounted `nosuid`, where it never does.
pub fn assert_modes_and_setuid_hold_for_nobody(mnt: &Path, suid: bool) {
    let path = |p: &str| mnt.join(p).to_str().unwrap().to_owned();
    let (ok, _, err) = as_nobody("cat", &[&path("etc/shadow")]);
    assert!(
        !ok && err.contains("Permission denied"),
        "nobody read a 0640 root file: {err}"
    );
    let (ok, out, err) = as_nobody("cat", &[&path("etc/passwd")]);
    assert!(ok && out == "root:x:0:0::/root:/bin/sh", "{out} {err}");
    let (ok, out, err) = as_nobody(&path("bin/id"), &["-u"]);
    assert!(ok && out == "65534", "{out} {err}");
    let euid = |expected: &str| {
        let (ok, out, err) = as_nobody(&path("bin/suid-id"), &["-u"]);
        assert!(
            ok && out == expected,
            "setuid-root id as nobody gave {out:?} (want {expected}): {err}"
        );
    };
    euid(if suid { "0" } else { "65534" });
    run_ok(Command::new("mount").args(["-o", "remount,bind,nosuid"]).arg(mnt));
    euid("65534");
}

/// Deterministic incompressible-ish bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
