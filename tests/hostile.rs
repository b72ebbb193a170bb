//! Hostile cases for "flmount touches only what it owns" (issue 12): each
//! test makes its own victims in a temporary directory (mounts, a user's
//! directory, a store, symlinks a user planted) and checks that flmount
//! leaves them alone, or that what it promises in the README holds. Every
//! one of these failed on f4b1700.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mounts::{fuse_or_skip, Mounted, OwnMount};
use common::servers::Server;
use common::tarball::{tar, E};
use common::*;

/// One small image in a bed whose scratch directory other users may
/// traverse (0755); returns the bed and the image.
fn bed(name: &str) -> (Bed, String) {
    let b = Bed::open_to_others();
    let layer = tar(&[
        E::dir("etc"),
        E::file("etc/a", "made by image a\n"),
        E::file("big", pseudo_random(3 << 20, 7)),
    ]);
    let a = b.push_gzip(&format!("hostile/{name}-a"), "layout-a", vec![layer]);
    (b, a)
}

/// Mounts of anything at `dir` (all of them, bottom first).
fn mounts_at(dir: &Path) -> Vec<String> {
    let want = std::fs::canonicalize(dir).unwrap_or(dir.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

fn umount_all(dir: &Path) {
    while !mounts_at(dir).is_empty() {
        if !Command::new("umount")
            .arg("-l")
            .arg(dir)
            .status()
            .unwrap()
            .success()
        {
            break;
        }
    }
}

fn nobody() -> (u32, u32) {
    (65534, 65534)
}

/// A directory with some files, and a pseudo-random big one (several chunks).
fn content_dir(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hello"), format!("hello {seed}\n")).unwrap();
    std::fs::write(dir.join("big"), pseudo_random(3 << 20, seed)).unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------ -umount

/// A bind mount of flmount's overlay onto itself (`mount --bind M M`, as
/// container runtimes do to make a mount point shared): `-umount M` passes
/// the proof on the bind (same device, same upperdir), unmounts only the
/// bind, then removes the upper directory of the overlay that is still
/// mounted. The same happens when the overlay is bound elsewhere.
#[test]
fn umount_never_removes_the_upper_of_an_overlay_still_mounted() {
    if !root_or_skip(
        "umount_never_removes_the_upper_of_an_overlay_still_mounted",
        "mounts",
    ) {
        return;
    }
    let (b, a) = bed("bindself");
    let m = b.path("m");
    b.fl.ok(&["-image", &a, "-mount", s(&m)]);
    std::fs::write(m.join("written"), b"user data").unwrap();
    run_ok(Command::new("mount").arg("--bind").arg(&m).arg(&m));
    let out = b.fl.run(&["-umount", s(&m)]);
    let still = !mounts_at(&m).is_empty();
    let writable = std::fs::write(m.join("after"), b"x").is_ok();
    umount_all(&m);
    if still {
        assert!(
            writable,
            "-umount ({:?}) left the overlay mounted but removed its upper: writes fail\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Bound elsewhere: the operator's bind keeps working.
    let m = b.path("m2");
    let bound = b.path("bound");
    b.fl.ok(&["-image", &a, "-mount", s(&m)]);
    std::fs::write(m.join("written"), b"user data").unwrap();
    let _bind = OwnMount::bind(&m, &bound);
    let out = b.fl.run(&["-umount", s(&m)]);
    let ok = std::fs::write(bound.join("after"), b"x").is_ok();
    umount_all(&m);
    assert!(
        ok,
        "-umount ({:?}) removed the upper of an overlay still mounted at {}",
        out.status,
        bound.display()
    );
}

/// A bind mount of flmount's FUSE mount is the operator's (a container's
/// rootfs, say): README: "a bind mount ... is left mounted, exit 8".
#[test]
fn umount_leaves_a_bind_mount_of_an_flmount_fuse_mount() {
    if !fuse_or_skip("umount_leaves_a_bind_mount_of_an_flmount_fuse_mount") {
        return;
    }
    let (b, a) = bed("fusebind");
    let mnt = b.path("mnt");
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    let bound = b.path("bound");
    let _bind = OwnMount::bind(&mnt.join("etc"), &bound);
    let out = b.fl.run(&["-umount", s(&bound)]);
    let still = !mounts_at(&bound).is_empty();
    drop(_bind);
    m.stop();
    assert!(
        still,
        "-umount unmounted the operator's bind mount of a FUSE mount ({:?})",
        out.status
    );
    assert_eq!(out.status.code(), Some(8));
}

// ------------------------------------------------------------ workdir paths

/// The workdir's own store is opened as `dir://<workdir>/store`, a URL:
/// a `?` in the workdir's path starts a query, and the chunks and the
/// store identity go into the directory before it.
#[test]
fn a_workdir_with_a_question_mark_keeps_its_store_inside() {
    if !fuse_or_skip("a_workdir_with_a_question_mark_keeps_its_store_inside") {
        return;
    }
    let (mut b, a) = bed("qmark");
    let victim = b.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("notes"), b"mine").unwrap();
    b.fl.workdir = b.path("victim?x");
    let mnt = b.path("mnt");
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    let read = std::fs::read(mnt.join("etc/a"));
    m.stop();
    assert_eq!(read.unwrap(), b"made by image a\n");
    assert_eq!(
        entries(&victim),
        vec!["notes".to_owned()],
        "the workdir's store was written into {}",
        victim.display()
    );
}

/// A `-fuse` mount's workdir flist records its store by path; after the
/// workdir is moved (or copied) the mount comes up and every read fails
/// (or reads another workdir's store, which that workdir's gc empties).
#[test]
fn a_fuse_mount_of_a_moved_workdir_reads_its_own_store() {
    if !fuse_or_skip("a_fuse_mount_of_a_moved_workdir_reads_its_own_store") {
        return;
    }
    let (mut b, a) = bed("moved");
    b.fl.workdir = b.path("wdA");
    let mnt = b.path("mnt");
    Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt).stop();
    std::fs::rename(b.path("wdA"), b.path("wdB")).unwrap();
    b.fl.workdir = b.path("wdB");
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    let read = std::fs::read(mnt.join("etc/a"));
    m.stop();
    assert!(!b.path("wdA").exists(), "the old workdir's path was made again");
    assert_eq!(
        read.expect("reading through the mount of a moved workdir"),
        b"made by image a\n"
    );
}

// ------------------------------------------------------------ -overlaydir

/// A user's `-overlaydir` whose `upper` is a symlink (to a directory the
/// user does not own) and whose marker the user wrote: flmount trusts the
/// marker and follows the symlink, so the container's writes land there.
#[test]
fn an_overlaydir_upper_symlink_is_never_followed() {
    if !root_or_skip("an_overlaydir_upper_symlink_is_never_followed", "mounts") {
        return;
    }
    let (b, a) = bed("ovlink");
    // A genuine marker for image a, from a mount the user was given.
    let first = b.path("ov0");
    let m0 = b.path("m0");
    b.fl.ok(&["-image", &a, "-mount", s(&m0), "-overlaydir", s(&first)]);
    b.fl.ok(&["-umount", s(&m0)]);
    let marker = std::fs::read(first.join(".flmount-overlay.json")).unwrap();

    let victim = b.path("rootonly");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("passwd"), b"root:x:0:0\n").unwrap();
    let ov = b.path("ov");
    std::fs::create_dir_all(&ov).unwrap();
    std::os::unix::fs::symlink(&victim, ov.join("upper")).unwrap();
    std::fs::write(ov.join(".flmount-overlay.json"), &marker).unwrap();
    let (uid, gid) = nobody();
    for p in [ov.join("upper"), ov.join(".flmount-overlay.json"), ov.clone()] {
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).unwrap();
    }
    let m = b.path("m");
    let out = b.fl.run(&["-image", &a, "-mount", s(&m), "-overlaydir", s(&ov)]);
    if out.status.success() {
        let _ = std::fs::write(m.join("passwd"), b"evil::0:0\n");
        let _ = b.fl.run(&["-umount", s(&m)]);
        umount_all(&m);
    }
    assert_eq!(
        entries(&victim),
        vec!["passwd".to_owned()],
        "the overlay's upper was the symlink's target ({:?})",
        out.status
    );
    assert_eq!(std::fs::read(victim.join("passwd")).unwrap(), b"root:x:0:0\n");
}

// ------------------------------------------------------------ caches

/// A chunk cache in a directory a user owns (claimed when it was empty):
/// the user replaces the shard directories with symlinks, and root writes
/// chunk files wherever they point.
#[test]
fn a_cache_never_writes_through_a_users_symlinks() {
    if !root_or_skip("a_cache_never_writes_through_a_users_symlinks", "chown") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fl = Flmount::new();
    let (src, store, flist) = (
        tmp.path().join("src"),
        tmp.path().join("store"),
        tmp.path().join("a.fl"),
    );
    content_dir(&src, 1);
    fl.ok(&[
        "pack",
        "-flist",
        s(&flist),
        "-store",
        &format!("dir://{}", s(&store)),
        s(&src),
    ]);
    let cache = tmp.path().join("usercache");
    std::fs::create_dir_all(&cache).unwrap();
    let (uid, gid) = nobody();
    std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
    fl.ok(&[
        "unpack",
        "-flist",
        s(&flist),
        "-cache",
        s(&cache),
        s(&tmp.path().join("out1")),
    ]);
    // The user (who owns the cache directory) moves the shards away and
    // puts symlinks in their place.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for name in entries(&cache) {
        if name.len() == 2 {
            std::fs::rename(cache.join(&name), cache.join(format!("old-{name}"))).unwrap();
        }
    }
    for i in 0..=255u8 {
        let link = cache.join(format!("{i:02x}"));
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).unwrap();
    }
    let _ = fl.run(&[
        "unpack",
        "-flist",
        s(&flist),
        "-cache",
        s(&cache),
        s(&tmp.path().join("out2")),
    ]);
    assert!(
        entries(&elsewhere).is_empty(),
        "root wrote chunk files through the user's symlinks: {:?}",
        entries(&elsewhere)
    );
}

/// A directory claimed as a chunk cache is later given as a dir store:
/// nothing refuses it, and the next cache run evicts the store's chunks
/// (chunk ids look like cache keys). README: "a directory that is one of
/// the stores, is refused".
#[test]
fn a_cache_and_a_store_never_share_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    content_dir(&a, 1);
    content_dir(&b, 2);
    let (store, shared) = (tmp.path().join("store"), tmp.path().join("shared"));
    let (fa, fb) = (tmp.path().join("a.fl"), tmp.path().join("b.fl"));
    fl.ok(&[
        "pack",
        "-flist",
        s(&fa),
        "-store",
        &format!("dir://{}", s(&store)),
        s(&a),
    ]);
    fl.ok(&[
        "unpack",
        "-flist",
        s(&fa),
        "-cache",
        s(&shared),
        s(&tmp.path().join("o1")),
    ]);
    let packed = fl.run(&[
        "pack",
        "-flist",
        s(&fb),
        "-store",
        &format!("dir://{}", s(&shared)),
        s(&b),
    ]);
    if packed.status.success() {
        let _ = fl.run(&[
            "unpack",
            "-flist",
            s(&fa),
            "-cache",
            s(&shared),
            "-cache-size",
            "600K",
            s(&tmp.path().join("o2")),
        ]);
        fl.ok(&["unpack", "-flist", s(&fb), s(&tmp.path().join("ob"))]);
    }
}

// ------------------------------------------------------------ the chunk index

/// A `chunks.db` corrupt in a table's page (not its header) blocks every
/// pack with "database disk image is malformed", naming no file. README:
/// "A corrupt chunks.db is moved aside (named in a warning) and rebuilt."
#[test]
fn a_chunks_db_corrupt_inside_is_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    let src = tmp.path().join("src");
    content_dir(&src, 3);
    let store = format!("dir://{}", s(&tmp.path().join("store")));
    fl.ok(&[
        "pack",
        "-flist",
        s(&tmp.path().join("1.fl")),
        "-store",
        &store,
        s(&src),
    ]);
    let db = fl.workdir.join("chunks.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 8192, "chunks.db has one page");
    for b in &mut bytes[4096..] {
        *b = 0xff;
    }
    std::fs::write(&db, &bytes).unwrap();
    let log = fl.ok(&[
        "pack",
        "-flist",
        s(&tmp.path().join("2.fl")),
        "-store",
        &store,
        s(&src),
    ]);
    assert!(log.contains("chunks.db"), "{log}");
}

/// A remote store that lost chunks but kept its identity object (keys
/// deleted or evicted, a partial restore): the index is trusted, the pack
/// says "0 uploaded", exits 0, and writes an flist whose chunks are gone.
#[test]
fn a_remote_store_that_lost_chunks_but_not_its_identity_is_filled_again() {
    let redis = Server::redis();
    let tmp = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    let src = tmp.path().join("src");
    content_dir(&src, 4);
    let store = format!("zdb://127.0.0.1:{}", redis.1);
    fl.ok(&[
        "pack",
        "-flist",
        s(&tmp.path().join("1.fl")),
        "-store",
        &store,
        s(&src),
    ]);
    run_ok(Command::new("redis-cli").args([
        "-p",
        &redis.1.to_string(),
        "EVAL",
        "for _,k in ipairs(redis.call('keys','*')) do if k ~= 'flmount-store-id' then redis.call('del',k) end end return 0",
        "0",
    ]));
    let f2 = tmp.path().join("2.fl");
    fl.ok(&["pack", "-flist", s(&f2), "-store", &store, s(&src)]);
    fl.ok(&["unpack", "-flist", s(&f2), s(&tmp.path().join("out"))]);
}

// ------------------------------------------------------------ outputs

/// In a sticky world-writable directory another user plants a symlink to
/// a file of root's: the kernel would not let root follow it
/// (fs.protected_symlinks), but flmount resolves it by hand and renames
/// its output over the target.
#[test]
fn outputs_never_follow_another_users_symlink_in_a_sticky_directory() {
    if !root_or_skip(
        "outputs_never_follow_another_users_symlink_in_a_sticky_directory",
        "chown",
    ) {
        return;
    }
    let (b, a) = bed("sticky");
    let shared = b.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let secret = b.path("rootonly");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("shadow"), b"root:secret\n").unwrap();
    let (uid, gid) = nobody();
    for (name, target) in [
        ("config.json", secret.join("shadow")),
        ("lxc.conf", secret.join("new")),
    ] {
        let link = shared.join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).unwrap();
    }
    let _ = b.fl.run(&[
        "-image",
        &a,
        "-saveconfig",
        s(&shared.join("config.json")),
        "-lxcconfig",
        s(&shared.join("lxc.conf")),
    ]);
    assert_eq!(std::fs::read(secret.join("shadow")).unwrap(), b"root:secret\n");
    assert!(
        !secret.join("new").exists(),
        "root created a file through a user's dangling symlink"
    );
}

/// README: "a character device, FIFO or socket ... is written through".
/// open(2) cannot open a socket (ENXIO): the output fails.
#[test]
fn a_socket_output_is_written_through() {
    let (b, a) = bed("socket");
    let path = b.path("sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        let _ = conn.read_to_end(&mut out);
        out
    });
    let out = b.fl.run(&["-image", &a, "-saveconfig", s(&path)]);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let got = reader.join().unwrap();
    assert!(got.starts_with(b"{"), "nothing written through the socket");
}
