//! `-extractto`: the flattened rootfs must equal, entry by entry, what
//! `umoci unpack` makes of the same image (the independent reference), on
//! fixtures that exercise every OCI layer rule; and no hostile layer may
//! write outside the target.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::{rules_layers, umoci_unpack};
use common::fstree::{assert_same_tree, describe, Ignore};
use common::tarball::{tar, E};
use common::*;

/// The image's layout dir and tag, plus where the registry serves it.
struct Fixture {
    _tmp: tempfile::TempDir,
    layout: PathBuf,
    _reg: Registry,
    image: String,
}

fn fixture(name: &str, layers: Vec<(Compression, Vec<u8>)>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let reg = Registry::start();
    let image = reg.push_layers(&format!("fx/{name}"), layers, &layout);
    Fixture {
        _tmp: tmp,
        layout,
        _reg: reg,
        image,
    }
}

fn rules_fixture(name: &str, compression: Compression) -> Fixture {
    fixture(
        name,
        rules_layers()
            .iter()
            .map(|entries| (compression, tar(entries)))
            .collect(),
    )
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn extraction_equals_umoci_on_every_rule() {
    if !root_or_skip(
        "extraction_equals_umoci_on_every_rule",
        "device nodes, owners, trusted xattrs, umoci unpack without --rootless",
    ) {
        return;
    }
    let fx = rules_fixture("rules", Compression::Gzip);
    let out = tempfile::tempdir().unwrap();
    let ours = out.path().join("rootfs");
    let fl = Flmount::new();
    fl.ok(&["-image", &fx.image, "-extractto", ours.to_str().unwrap()]);
    let reference = umoci_unpack(&fx.layout, &out.path().join("bundle"));
    assert_same_tree(&ours, &reference, &Ignore::default());

    // Spot checks that the comparison really covers the rules.
    let listing = describe(&ours);
    assert!(!listing.contains_key("/etc/motd") && !listing.contains_key("/victim"));
    assert!(!listing.contains_key("/var/cache/old1") && !listing.contains_key("/var/cache/sub"));
    assert_eq!(listing["/victim-link"].content, sha256_hex(b"original content\n"));
    assert_eq!(listing["/bin/ls"].link_group, "/bin/busybox");
    assert_eq!(listing["/bin/su"].mode, 0o4755);
    assert_eq!(listing["/tmp"].mode, 0o1777);
    assert_eq!(listing["/dev/sda"].rdev, (8, 0));
    assert!(listing["/usr/bin/ping"]
        .xattrs
        .contains_key("security.capability"));
    assert_eq!(listing["/keepdir"].uid, 3);
    assert!(listing.contains_key("/keepdir/child"));
    assert_eq!(listing["/subsecond"].mtime, (1_700_000_000, 123_456_789));
    assert_eq!(listing["/dup"].content, sha256_hex(b"second, the winner"));
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn zstd_and_plain_layers_give_the_same_tree() {
    if !root_or_skip(
        "zstd_and_plain_layers_give_the_same_tree",
        "device nodes, owners, trusted xattrs, umoci unpack without --rootless",
    ) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for (name, c) in [
        ("gz", Compression::Gzip),
        ("zst", Compression::Zstd),
        ("plain", Compression::None),
    ] {
        let fx = rules_fixture(name, c);
        let dest = out.path().join(name);
        Flmount::new().ok(&["-image", &fx.image, "-extractto", dest.to_str().unwrap()]);
        trees.push(dest);
    }
    assert_same_tree(&trees[0], &trees[1], &Ignore::default());
    assert_same_tree(&trees[0], &trees[2], &Ignore::default());
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn a_busybox_rootfs_runs_in_a_chroot() {
    if !root_or_skip(
        "a_busybox_rootfs_runs_in_a_chroot",
        "device nodes, owners, trusted xattrs, umoci unpack without --rootless",
    ) {
        return;
    }
    let fx = rules_fixture("chroot", Compression::Gzip);
    let out = tempfile::tempdir().unwrap();
    let rootfs = out.path().join("rootfs");
    Flmount::new().ok(&["-image", &fx.image, "-extractto", rootfs.to_str().unwrap()]);
    let result = run_ok(Command::new("chroot").arg(&rootfs).args([
        "/bin/sh",
        "-c",
        "/bin/busybox cat /etc/passwd-link; ls /var/cache",
    ]));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains("root:x:0:0") && stdout.contains("new"),
        "{stdout}"
    );
}

#[test]
fn refuses_a_non_empty_target_unless_forced() {
    let fx = fixture(
        "small",
        vec![(
            Compression::Gzip,
            tar(&[E::dir("etc"), E::file("etc/hostname", b"img\n")]),
        )],
    );
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("busy");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let fl = Flmount::new();
    let err = fl.fails(&["-image", &fx.image, "-extractto", target.to_str().unwrap()], 1);
    assert!(err.contains("not empty") && err.contains("-force"), "{err}");
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");
    // A symlink planted in the target is replaced, never followed.
    let outside = out.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("etc")).unwrap();
    fl.ok(&[
        "-image",
        &fx.image,
        "-extractto",
        target.to_str().unwrap(),
        "-force",
    ]);
    assert_eq!(std::fs::read(target.join("etc/hostname")).unwrap(), b"img\n");
    assert!(std::fs::symlink_metadata(target.join("etc")).unwrap().is_dir());
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote through the planted symlink"
    );
    // An empty target is fine, and a failed extraction leaves nothing behind.
    let empty = out.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fl.ok(&["-image", &fx.image, "-extractto", empty.to_str().unwrap()]);
    assert!(empty.join("etc/hostname").is_file());
}

/// Names created in `dir` while it is watched (inotify, read at the end).
struct CreatedIn(i32);

impl CreatedIn {
    fn watch(dir: &Path) -> CreatedIn {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain system calls on a descriptor this struct owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1");
            let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
            assert!(libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) >= 0);
            CreatedIn(fd)
        }
    }

    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return names;
            }
            let mut at = 0;
            while at < n as usize {
                // SAFETY: the kernel wrote whole events into the buffer.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let start = at + std::mem::size_of::<libc::inotify_event>();
                let name = &buf[start..start + event.len as usize];
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                names.push(String::from_utf8_lossy(name).into_owned());
                at = start + event.len as usize;
            }
        }
    }
}

impl Drop for CreatedIn {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn a_failed_extraction_leaves_nothing_half_written() {
    // Two layers of files; once pulled and read, the cached blob of the
    // upper one loses its second half (the layer index made on the first
    // read stays): the next extraction plans, starts writing, and fails
    // when that layer's content runs out, half-way through the write.
    let lower: Vec<E> = (0..20)
        .map(|i| E::file(format!("lower-{i:02}"), pseudo_random(100_000, i)))
        .collect();
    let upper: Vec<E> = (0..20)
        .map(|i| E::file(format!("upper-{i:02}"), pseudo_random(100_000, 100 + i)))
        .collect();
    let fx = fixture(
        "broken",
        vec![(Compression::Gzip, tar(&lower)), (Compression::Gzip, tar(&upper))],
    );
    let out = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    let first = out.path().join("first");
    fl.ok(&["-image", &fx.image, "-extractto", first.to_str().unwrap()]);
    std::fs::remove_dir_all(&first).unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&fl.run(&["inspect", &fx.image, "-json"]).stdout).unwrap();
    let blob = fl.blob(info["layers"][1]["digest"].as_str().unwrap());
    let data = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &data[..data.len() / 2]).unwrap();

    let watch = CreatedIn::watch(out.path());
    let target = out.path().join("new");
    let out_run = fl.run(&["-image", &fx.image, "-extractto", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out_run.stderr);
    assert!(
        !out_run.status.success(),
        "a truncated layer was extracted:\n{err}"
    );
    let created = watch.names();
    assert!(
        created.iter().any(|n| n.starts_with(".new.flmount-")),
        "no staging directory was made: the failure came before the write ({created:?}):\n{err}"
    );
    assert!(!target.exists(), "a half-written target was left");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

// ------------------------------------------------------------ hostile layers

/// A directory outside every target, watched for writes.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("flmount-canary-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("sentinel"), b"untouched").unwrap();
        Canary { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn assert_untouched(&self) {
        let names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["sentinel"], "something was written outside the target");
        assert_eq!(std::fs::read(self.path().join("sentinel")).unwrap(), b"untouched");
    }
}

/// Extracts a single hostile layer; returns the target and flmount's result.
fn extract_hostile(name: &str, entries: Vec<E>) -> (tempfile::TempDir, PathBuf, std::process::Output) {
    let fx = fixture(name, vec![(Compression::Gzip, tar(&entries))]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("rootfs");
    let result = Flmount::new().run(&["-image", &fx.image, "-extractto", target.to_str().unwrap()]);
    (out, target, result)
}

/// Names with `..` or a leading `/` (the classic tar traversal).
#[test]
fn path_traversal_names_stay_inside() {
    let canary = Canary::new();
    let up = "../".repeat(20);
    let abs = canary.path().join("abs-escape");
    let rel = format!(
        "{up}{}",
        canary
            .path()
            .join("rel-escape")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    let (_out, target, result) = extract_hostile(
        "traversal",
        vec![
            E::file(abs.to_str().unwrap(), b"x"),
            E::file(&rel, b"y"),
            E::file("a/../../../b", b"z"),
        ],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    canary.assert_untouched();
    // Clamped at the root, as umoci's securejoin does.
    assert!(target.join(abs.strip_prefix("/").unwrap()).is_file());
    assert!(target.join("b").is_file());
}

/// CVE-2014-9356 (Docker: absolute and relative symlinks in a layer's
/// paths) and RUSTSEC-2021-0080 (tar-rs created directories through
/// symlinks): a symlink to outside, then entries below it, and a directory
/// swapped for a symlink within one layer.
#[test]
fn symlinked_parents_never_lead_outside() {
    let canary = Canary::new();
    let outside = canary.path().to_str().unwrap().to_owned();
    let (_out, target, result) = extract_hostile(
        "symlink-parent",
        vec![
            E::symlink("abs", &outside),
            E::file("abs/pwned-abs", b"x"),
            E::symlink(
                "rel",
                "../../../../../../../../../../../../".to_owned() + outside.trim_start_matches('/'),
            ),
            E::file("rel/pwned-rel", b"y"),
            E::dir("swap"),
            E::symlink("swap", &outside),
            E::file("swap/pwned-swap", b"z"),
            E::dir("abs/newdir"),
            E::dir("abs/newdir/deeper"),
        ],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    canary.assert_untouched();
    let inside = target.join(outside.trim_start_matches('/'));
    assert!(inside.join("newdir/deeper").is_dir());
    for f in ["pwned-abs", "pwned-rel", "pwned-swap"] {
        assert!(inside.join(f).is_file(), "{f} not resolved inside the root");
    }
}

/// RUSTSEC-2018-0002 (tar-rs followed a hard link's target through a
/// symlink) and hard links naming host files directly.
#[test]
fn hardlinks_to_outside_files_are_refused() {
    let canary = Canary::new();
    let sentinel = canary.path().join("sentinel");
    for (name, entries) in [
        ("hl-abs", vec![E::hardlink("stolen", sentinel.to_str().unwrap())]),
        (
            "hl-rel",
            vec![E::hardlink(
                "stolen",
                format!("../../../../../../..{}", sentinel.display()),
            )],
        ),
        (
            "hl-via-symlink",
            vec![
                E::symlink("d", canary.path().to_str().unwrap()),
                E::hardlink("stolen", "d/sentinel"),
            ],
        ),
    ] {
        let (_out, target, result) = extract_hostile(name, entries);
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(
            !result.status.success() && err.contains("hard link to missing"),
            "{name}: {err}"
        );
        assert!(!target.exists(), "{name}: partial target left");
        canary.assert_untouched();
    }
    // The tar-rs advisory pattern: a hard link to a symlink that points
    // outside links the symlink itself, inside the root.
    let (_out, target, result) = extract_hostile(
        "hl-to-symlink",
        vec![
            E::symlink("sym", sentinel.to_str().unwrap()),
            E::hardlink("link", "sym"),
            E::file("link-after", b"ok"),
        ],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(std::fs::symlink_metadata(target.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    canary.assert_untouched();
}

/// CVE-2021-29136 (umoci): a layer turning the root (`.`) into a symlink
/// to a host directory, followed by entries that would land there.
#[test]
fn the_root_cannot_be_replaced_by_a_symlink() {
    let canary = Canary::new();
    for (name, entry) in [
        ("root-dot", E::symlink(".", canary.path().to_str().unwrap())),
        ("root-slash", E::symlink("/", "/")),
    ] {
        let (_out, target, result) = extract_hostile(name, vec![entry, E::file("x", b"x")]);
        assert!(!result.status.success(), "{name} accepted");
        assert!(!target.exists());
        canary.assert_untouched();
    }
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn the_tar_export_unpacks_to_the_same_tree() {
    if !root_or_skip(
        "the_tar_export_unpacks_to_the_same_tree",
        "device nodes, owners, trusted xattrs, umoci unpack without --rootless",
    ) {
        return;
    }
    let fx = rules_fixture("export", Compression::Gzip);
    let out = tempfile::tempdir().unwrap();
    let flat = out.path().join("flat");
    let fl = Flmount::new();
    fl.ok(&["-image", &fx.image, "-extractto", flat.to_str().unwrap()]);
    let result = fl
        .command()
        .args(["-image", &fx.image, "-extractto", "-", "-q"])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let tarball = out.path().join("rootfs.tar");
    std::fs::write(&tarball, &result.stdout).unwrap();
    let untarred = out.path().join("untarred");
    untar(&tarball, &untarred);
    assert_same_tree(&flat, &untarred, &Ignore::default());
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn without_root_devices_are_skipped_with_a_warning() {
    if !root_or_skip(
        "without_root_devices_are_skipped_with_a_warning (it drops to nobody itself)",
        "device nodes, owners, trusted xattrs, umoci unpack without --rootless",
    ) {
        return;
    }
    need("setpriv");
    let fx = fixture(
        "unprivileged",
        vec![(
            Compression::Gzip,
            tar(&[
                E::dir("dev"),
                E::chr("dev/null", 1, 3),
                E::fifo("dev/fifo"),
                E::file("etc-owned", b"x").owner(1000, 1000),
                E::file("setuid", b"s").mode(0o4755),
            ]),
        )],
    );
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let mut perms = std::fs::metadata(home.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(home.path(), perms).unwrap();
    let target = home.path().join("rootfs");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_flmount"))
        .args(["-image", &fx.image, "-workdir"])
        .arg(home.path().join("work"))
        .arg("-extractto")
        .arg(&target)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped 1 device nodes"), "{stderr}");
    let listing = describe(&target);
    assert!(!listing.contains_key("/dev/null"));
    assert_eq!(listing["/dev/fifo"].kind, "fifo");
    assert_eq!(
        listing["/etc-owned"].uid, 65534,
        "owners cannot be kept without root"
    );
    assert_eq!(listing["/setuid"].mode, 0o4755);
}

/// A small gzip layer whose PAX header claims 64 MiB (the tar crate would
/// read it whole into memory): refused at the header, with a clear error.
#[test]
fn a_huge_extension_header_is_refused_not_buffered() {
    let mut pax = tar::Header::new_ustar();
    pax.set_path("PaxHeaders/bomb").unwrap();
    pax.set_size(64 << 20);
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_cksum();
    let mut layer = pax.as_bytes().to_vec();
    layer.extend(std::iter::repeat_n(b'a', 64 << 20));
    layer.extend_from_slice(&[0u8; 1024]);
    let fx = fixture("pax-bomb", vec![(Compression::Gzip, layer)]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("rootfs");
    let fl = Flmount::new();
    fl.ok(&["-image", &fx.image]);
    // Peak memory measured by GNU time, against the peak of extracting a
    // small ordinary layer: buffering the header would take 64 MiB more.
    let plain = fixture(
        "pax-baseline",
        vec![(Compression::Gzip, tar(&[E::file("a", pseudo_random(100_000, 5))]))],
    );
    fl.ok(&["-image", &plain.image]);
    let (run, baseline) = run_measuring_memory(fl.command().args([
        "-image",
        &plain.image,
        "-extractto",
        out.path().join("baseline").to_str().unwrap(),
    ]));
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (run, kib) = run_measuring_memory(fl.command().args([
        "-image",
        &fx.image,
        "-extractto",
        target.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&run.stderr);
    eprintln!("peak {kib} KiB, {baseline} KiB for a small layer");
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("extension header") && err.contains("67108864 bytes"),
        "{err}"
    );
    assert!(
        kib < baseline + (16 << 10),
        "a refused 64 MiB header took {} MiB, a small layer {} MiB",
        kib >> 10,
        baseline >> 10
    );
    assert!(!target.exists());
}
