//! flmount touches only what it owns. Each test makes the thing flmount
//! must leave alone itself (a tmpfs, a bind mount, a device node made with
//! mknod, a symlink, a user's directory, a store's chunks) inside its own
//! temporary directory, points flmount at it as an operator might, and
//! checks that it is exactly as before; then that what flmount does own
//! (its overlays, FUSE mounts, staging trees, caches) is still handled.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mounts::{fuse_or_skip, is_mounted, signal, Mounted, OwnMount};
use common::tarball::{tar, E};
use common::*;

/// Two small images in a bed; returns the bed and the images a and b.
fn bed(name: &str) -> (Bed, String, String) {
    let bed = Bed::new();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let layer = |marker: &str| {
        tar(&[
            E::dir("bin"),
            E::file("bin/busybox", &busybox).mode(0o755),
            E::dir("etc"),
            E::file(format!("etc/{marker}"), format!("made by image {marker}\n")),
            E::file("etc/secret", "root only\n").mode(0o600),
            E::file("etc/public", "anyone\n").mode(0o644),
        ])
    };
    let a = bed.push_gzip(&format!("own/{name}-a"), "layout-a", vec![layer("a")]);
    let b = bed.push_gzip(&format!("own/{name}-b"), "layout-b", vec![layer("b")]);
    (bed, a, b)
}

/// What a path is, without following it: type, device, inode, contents.
fn snapshot(p: &Path) -> (u32, u64, u64, u64, Vec<u8>) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let content = if m.file_type().is_file() {
        std::fs::read(p).unwrap()
    } else if m.file_type().is_symlink() {
        std::fs::read_link(p)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else {
        Vec::new()
    };
    (m.mode() & libc::S_IFMT, m.dev(), m.ino(), m.rdev(), content)
}

/// A character device like /dev/null, made in the test's own directory.
fn mknod_null(path: &Path) {
    run_ok(Command::new("mknod").arg(path).args(["c", "1", "3"]));
}

// ------------------------------------------------------------------ -umount

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn umount_leaves_every_mount_flmount_did_not_make() {
    if !root_or_skip("umount_leaves_every_mount_flmount_did_not_make", "mounts") {
        return;
    }
    let (b, a, _) = bed("umount");
    // A tmpfs holding a file, as a user's mount would.
    let t = b.path("t1");
    let _tmpfs = OwnMount::tmpfs(&t);
    std::fs::write(t.join("data"), b"precious").unwrap();
    let err = b.fl.fails(&["-umount", s(&t)], 8);
    assert!(err.contains("did not make"), "{err}");
    assert!(mounted_at(&t, Some("tmpfs")), "flmount unmounted a tmpfs");
    assert_eq!(std::fs::read(t.join("data")).unwrap(), b"precious");
    // The unit's stop: a live mount that is not a dead flmount mount stays.
    b.fl.ok(&["-umount", s(&t), "-stale"]);
    assert!(mounted_at(&t, Some("tmpfs")));
    // Named another way (a symlinked parent, `..`): still refused.
    std::os::unix::fs::symlink(b.tmp.path(), b.path("link")).unwrap();
    b.fl.fails(&["-umount", s(&b.path("link/t1"))], 8);
    b.fl.fails(&["-umount", s(&b.path("t1/../t1"))], 8);
    assert!(mounted_at(&t, Some("tmpfs")));

    // A bind mount.
    let src = b.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let bound = b.path("bound");
    let _bind = OwnMount::bind(&src, &bound);
    b.fl.fails(&["-umount", s(&bound)], 8);
    assert!(mounted_at(&bound, None));

    // An overlay mounted by hand, as another engine would.
    let (lower, upper, work, ov) = (b.path("lo"), b.path("up"), b.path("wk"), b.path("ov"));
    for d in [&lower, &upper, &work, &ov] {
        std::fs::create_dir_all(d).unwrap();
    }
    run_ok(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(&ov),
    );
    let _ov = OwnMount(ov.clone());
    let err = b.fl.fails(&["-umount", s(&ov)], 8);
    assert!(err.contains("overlay"), "{err}");
    assert!(mounted_at(&ov, Some("overlay")));

    // flmount's own overlay, asked of another workdir: not this one's.
    let m = b.path("m");
    b.fl.ok(&["-image", &a, "-mount", s(&m)]);
    let other = Flmount::new();
    other.fails(&["-umount", s(&m)], 8);
    assert!(mounted_at(&m, Some("overlay")));
    b.fl.ok(&["-umount", s(&m)]);
    assert!(!mounted_at(&m, None));

    // Nothing mounted, nothing recorded: an error, and nothing removed.
    let plain = b.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("keep"), b"k").unwrap();
    b.fl.fails(&["-umount", s(&plain)], 3);
    assert!(plain.join("keep").exists());
    b.fl.ok(&["-umount", s(&plain), "-stale"]);
}

// ------------------------------------------------------------------ outputs

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn outputs_never_replace_devices_symlinks_or_directories() {
    if !root_or_skip("outputs_never_replace_devices_symlinks_or_directories", "mknod") {
        return;
    }
    let (b, a, _) = bed("outputs");
    let config = |out: &Path| b.fl.run(&["-image", &a, "-saveconfig", s(out)]);

    // A character device (a /dev/null of the test's own): written through.
    let null = b.path("null");
    mknod_null(&null);
    let before = snapshot(&null);
    assert!(config(&null).status.success());
    let fl = b.fl.run(&[
        "-image",
        &a,
        "-flist",
        s(&null),
        "-store",
        &format!("dir://{}", s(&b.path("st"))),
    ]);
    assert!(fl.status.success(), "{}", String::from_utf8_lossy(&fl.stderr));
    let src = b.path("srcdir");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    b.fl.ok(&[
        "pack",
        "-flist",
        s(&null),
        "-store",
        &format!("dir://{}", s(&b.path("st"))),
        s(&src),
    ]);
    assert_eq!(snapshot(&null), before, "the device node was replaced");
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    // Edited in place: only regular files.
    b.fl.fails(&["flist", "tag", s(&null), "a=b"], 8);
    assert_eq!(snapshot(&null), before);

    // A symlink (as /dev/stdout is): followed, never replaced.
    let target = b.path("real.json");
    std::fs::write(&target, b"old").unwrap();
    let link = b.path("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    assert!(config(&link).status.success());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real.json"));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert!(saved.get("rootfs").is_some(), "{saved}");
    b.fl.ok(&["-image", &a, "-lxcconfig", s(&link)]);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&target).unwrap().contains("lxc.init.cmd"));

    // A FIFO (`| jq` through a named pipe): written through.
    let fifo = b.path("fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    assert!(config(&fifo).status.success());
    let through = reader.join().unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&through).is_ok());
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // A directory: refused, untouched.
    let dir = b.path("adir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inside"), b"mine").unwrap();
    let out = config(&dir);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"mine");
    b.fl.fails(
        &[
            "-image",
            &a,
            "-flist",
            s(&dir),
            "-store",
            &format!("dir://{}", s(&b.path("st"))),
        ],
        8,
    );
    assert!(dir.is_dir());

    // `-`: standard output, no file named `-`.
    let out =
        b.fl.command()
            .current_dir(b.tmp.path())
            .args(["-image", &a, "-saveconfig", "-"])
            .output()
            .unwrap();
    assert!(out.status.success());
    assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok());
    assert!(!b.path("-").exists());
    // Nothing temporary is left beside any of them.
    let left: Vec<_> = std::fs::read_dir(b.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".flmount-") || n.starts_with(".flist"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

// ------------------------------------------------------------------ caches

/// Every file below `dir` with its content.
fn files_and_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = files_under(dir)
        .into_iter()
        .map(|p| {
            let c = std::fs::read(&p).unwrap();
            (p, c)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_cache_directory_must_be_flmounts_own() {
    let (b, a, _) = bed("cache");
    let store = b.path("store");
    let flist = b.path("a.fl");
    b.pack(&a, &flist, &store);

    // A user's directory shaped like a cache: a tmp/, two-character
    // subdirectories, a big file.
    let user = b.path("somewhere");
    std::fs::create_dir_all(user.join("tmp")).unwrap();
    std::fs::create_dir_all(user.join("ab")).unwrap();
    std::fs::write(user.join("tmp/draft"), b"draft").unwrap();
    std::fs::write(user.join("ab/cd"), b"notes").unwrap();
    std::fs::write(user.join("big"), pseudo_random(600_000, 1)).unwrap();
    let before = files_and_contents(&user);
    let err = b.fl.fails(
        &[
            "unpack",
            "-flist",
            s(&flist),
            "-cache",
            s(&user),
            s(&b.path("out1")),
        ],
        8,
    );
    assert!(err.contains("not an flmount chunk cache"), "{err}");
    assert_eq!(files_and_contents(&user), before, "the user's files changed");
    assert!(!b.path("out1").exists());

    // The store itself as the cache: refused, not one chunk lost.
    let chunks = files_and_contents(&store);
    let err = b.fl.fails(
        &[
            "unpack",
            "-flist",
            s(&flist),
            "-cache",
            s(&store),
            s(&b.path("out2")),
        ],
        8,
    );
    assert!(
        err.contains("store") || err.contains("not an flmount chunk cache"),
        "{err}"
    );
    assert_eq!(files_and_contents(&store), chunks);
    // ... even when it is named through a symlink and empty otherwise.
    let empty_store = b.path("empty-store");
    std::fs::create_dir_all(&empty_store).unwrap();
    std::os::unix::fs::symlink(&empty_store, b.path("store-link")).unwrap();
    b.fl.fails(
        &[
            "unpack",
            "-flist",
            s(&flist),
            "-store",
            &format!("dir://{}", s(&empty_store)),
            "-cache",
            s(&b.path("store-link")),
            s(&b.path("out3")),
        ],
        8,
    );

    // A new directory becomes a marked cache and works, and so does it again.
    let cache = b.path("cache");
    b.fl.ok(&[
        "unpack",
        "-flist",
        s(&flist),
        "-cache",
        s(&cache),
        s(&b.path("out4")),
    ]);
    assert!(cache.join(".flmount-chunk-cache").is_file());
    assert_eq!(std::fs::read(b.path("out4/etc/a")).unwrap(), b"made by image a\n");
    // A file of someone else's put in it is never deleted.
    std::fs::write(cache.join("README"), b"mine").unwrap();
    b.fl.ok(&[
        "unpack",
        "-flist",
        s(&flist),
        "-cache",
        s(&cache),
        "-cache-size",
        "1",
        s(&b.path("out5")),
    ]);
    assert_eq!(std::fs::read(cache.join("README")).unwrap(), b"mine");
}

// ------------------------------------------------------------------ gc

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn gc_keeps_what_a_live_fuse_mount_serves_whatever_names_the_workdir() {
    if !fuse_or_skip("gc_keeps_what_a_live_fuse_mount_serves_whatever_names_the_workdir") {
        return;
    }
    let (mut b, a, _) = bed("gc");
    // The mount names the workdir through a symlink; gc by its real path.
    let real = b.path("wd");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, b.path("wdlink")).unwrap();
    b.fl.workdir = b.path("wdlink");
    let mnt = b.path("mnt");
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    let flists = files_under(&real.join("flists"));
    let chunks = files_under(&real.join("store"));
    assert_eq!(flists.len(), 1);
    assert!(chunks.len() > 1);
    // The image is forgotten: only the live mount still needs its flist.
    b.fl.workdir = real.clone();
    b.fl.ok(&["images", "rm", &a]);
    b.fl.ok(&["gc"]);
    assert_eq!(
        files_under(&real.join("flists")),
        flists,
        "gc removed a live mount's flist"
    );
    assert_eq!(
        files_under(&real.join("store")),
        chunks,
        "gc removed a live mount's chunks"
    );
    drop_caches();
    assert_eq!(std::fs::read(mnt.join("etc/a")).unwrap(), b"made by image a\n");
    m.stop();
    // Once unmounted, they go.
    b.fl.ok(&["gc"]);
    assert!(files_under(&real.join("flists")).is_empty());
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

// ------------------------------------------------------------------ overlay

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn an_overlay_upper_stays_with_its_image() {
    if !root_or_skip("an_overlay_upper_stays_with_its_image", "overlay mounts") {
        return;
    }
    let (b, a, image_b) = bed("upper");
    let m = b.path("m");
    b.fl.ok(&["-image", &a, "-mount", s(&m)]);
    std::fs::write(m.join("etc/written-on-a"), b"a's data").unwrap();
    std::fs::remove_file(m.join("etc/public")).unwrap();
    // Unmounted behind flmount's back (or a reboot): the record stays.
    run_ok(Command::new("umount").arg(&m));
    let err = b.fl.fails(&["-image", &image_b, "-mount", s(&m)], 8);
    assert!(err.contains("another image") && err.contains("-umount"), "{err}");
    assert!(!mounted_at(&m, None));
    // The same image gets its writable layer back.
    b.fl.ok(&["-image", &a, "-mount", s(&m)]);
    assert_eq!(std::fs::read(m.join("etc/written-on-a")).unwrap(), b"a's data");
    b.fl.ok(&["-umount", s(&m)]);
    // Discarded by -umount of the unmounted point: B starts clean.
    b.fl.ok(&["-image", &image_b, "-mount", s(&m)]);
    assert!(!m.join("etc/written-on-a").exists());
    assert!(m.join("etc/public").exists() && m.join("etc/b").exists());
    b.fl.ok(&["-umount", s(&m)]);

    // A user's -overlaydir, with a comma and a colon in its path.
    let ovdir = b.path("ov,1:x");
    b.fl.ok(&["-image", &a, "-mount", s(&m), "-overlaydir", s(&ovdir)]);
    std::fs::write(m.join("etc/kept"), b"k").unwrap();
    b.fl.ok(&["-umount", s(&m)]);
    assert!(
        ovdir.join("upper/etc/kept").exists(),
        "-umount removed a user's upper"
    );
    b.fl.fails(
        &["-image", &image_b, "-mount", s(&m), "-overlaydir", s(&ovdir)],
        8,
    );
    b.fl.ok(&["-image", &a, "-mount", s(&m), "-overlaydir", s(&ovdir)]);
    assert!(m.join("etc/kept").exists());
    b.fl.ok(&["-umount", s(&m)]);

    // A failed mount leaves no record (which would pin the image for gc).
    let busy = b.path("busy");
    let _t = OwnMount::tmpfs(&busy);
    b.fl.fails(&["-image", &a, "-mount", s(&busy)], 1);
    let records: Vec<_> = files_under(&b.fl.workdir.join("mounts"))
        .into_iter()
        .filter(|p| p.ends_with("mount.json"))
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
}

// ------------------------------------------------------------------ stores

fn store_chunks(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .count()
}

#[test]
fn a_store_that_lost_its_chunks_is_filled_again() {
    let (b, a, _) = bed("lost");
    let store = b.path("store");
    let url = format!("dir://{}", s(&store));
    let pack = |name: &str| {
        let out =
            b.fl.command()
                .args(["-json", "-image", &a, "-flist", s(&b.path(name)), "-store", &url])
                .output()
                .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    pack("1.fl");
    let n = store_chunks(&store);
    assert!(n > 1);
    // The store is removed (its root too): the next pack fills it again.
    std::fs::remove_dir_all(&store).unwrap();
    let log = pack("2.fl");
    assert!(log.contains(&format!("{n} uploaded")), "{log}");
    assert_eq!(store_chunks(&store), n);
    b.fl.ok(&["unpack", "-flist", s(&b.path("2.fl")), s(&b.path("u2"))]);
    // Some chunks removed by hand: the local store is asked, not the index.
    let victims: Vec<_> = files_under(&store)
        .into_iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .take(2)
        .collect();
    for v in &victims {
        std::fs::remove_file(v).unwrap();
    }
    pack("3.fl");
    assert!(
        victims.iter().all(|v| v.exists()),
        "removed chunks were not stored again"
    );

    // A redis (zdb) store flushed.
    let redis = common::servers::Server::redis();
    let zdb = format!("zdb://127.0.0.1:{}", redis.1);
    b.fl.ok(&["-image", &a, "-flist", s(&b.path("z1.fl")), "-store", &zdb]);
    run_ok(Command::new("redis-cli").args(["-p", &redis.1.to_string(), "FLUSHALL"]));
    let log =
        b.fl.ok(&["-image", &a, "-flist", s(&b.path("z2.fl")), "-store", &zdb]);
    assert!(!log.contains(" 0 uploaded"), "{log}");
    b.fl.ok(&["unpack", "-flist", s(&b.path("z2.fl")), s(&b.path("uz"))]);
    assert_eq!(std::fs::read(b.path("uz/etc/a")).unwrap(), b"made by image a\n");

    // A corrupt chunks.db is only a cache: set aside, named, rebuilt.
    std::fs::write(b.fl.workdir.join("chunks.db"), b"this is not sqlite, it is garbage of sufficient length to be read as a header..............................").unwrap();
    let log = pack("4.fl");
    assert!(log.contains("chunks.db") && log.contains("corrupt"), "{log}");
    b.fl.ok(&["unpack", "-flist", s(&b.path("4.fl")), s(&b.path("u4"))]);
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_fuse_mounts_workdir_flist_is_packed_again_when_its_store_lost_chunks() {
    if !fuse_or_skip("a_fuse_mounts_workdir_flist_is_packed_again_when_its_store_lost_chunks") {
        return;
    }
    let (b, a, _) = bed("refuse");
    let mnt = b.path("mnt");
    Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt).stop();
    std::fs::remove_dir_all(b.fl.workdir.join("store")).unwrap();
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    assert!(m.log().contains("missing"), "{}", m.log());
    drop_caches();
    assert_eq!(std::fs::read(mnt.join("etc/a")).unwrap(), b"made by image a\n");
    m.stop();

    // -validate-cache hashes the store's chunks: a corrupt one is replaced.
    let chunks: Vec<_> = files_under(&b.fl.workdir.join("store"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .collect();
    for c in &chunks {
        let mut data = std::fs::read(c).unwrap();
        data[10] ^= 1;
        std::fs::write(c, data).unwrap();
    }
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse", "-validate-cache"], &mnt);
    assert!(m.log().contains("corrupt chunks"), "{}", m.log());
    drop_caches();
    assert_eq!(
        std::fs::read(mnt.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    m.stop();
    // A workdir flist that is not one any more: packed again.
    let flist = files_under(&b.fl.workdir.join("flists")).pop().unwrap();
    std::fs::write(&flist, b"garbage").unwrap();
    let m = Mounted::start(&b.fl, &["-image", &a, "-fuse"], &mnt);
    assert_eq!(std::fs::read(mnt.join("etc/a")).unwrap(), b"made by image a\n");
    m.stop();
}

// ------------------------------------------------------------------ signals

/// Names in `dir` that look like flmount's temporaries.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".flmount-"))
        .collect()
}

/// A layer of many small files, so an extraction takes a while.
fn many_files_image(b: &Bed) -> String {
    let mut entries = vec![E::dir("d")];
    for i in 0..20_000 {
        entries.push(E::file(format!("d/f{i:05}"), format!("{i}\n")));
    }
    b.reg.push_layers(
        "own/many",
        vec![(Compression::None, tar(&entries))],
        &b.path("layout-many"),
    )
}

#[test]
fn interrupted_extractions_and_packs_leave_no_temporaries() {
    let (b, _, _) = bed("signals");
    let image = many_files_image(&b);
    b.fl.ok(&["-image", &image]); // pulled: what follows is extraction only
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let target = b.path(&format!("rootfs-{sig}"));
        let mut child =
            b.fl.command()
                .args(["-image", &image, "-extractto", s(&target)])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        // Stopped while its staging tree exists, then signalled.
        let deadline = Instant::now() + Duration::from_secs(30);
        while temporaries(b.tmp.path()).is_empty() {
            assert!(Instant::now() < deadline, "no staging tree appeared");
            assert!(
                child.try_wait().unwrap().is_none(),
                "extraction ended before it could be interrupted"
            );
        }
        signal(child.id() as i32, libc::SIGSTOP);
        assert!(!temporaries(b.tmp.path()).is_empty());
        signal(child.id() as i32, sig);
        signal(child.id() as i32, libc::SIGCONT);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            temporaries(b.tmp.path()).is_empty(),
            "left: {:?}",
            temporaries(b.tmp.path())
        );
        assert!(!target.exists());
    }

    // SIGKILL leaves the staging tree; the next extraction removes it.
    let target = b.path("rootfs-kill");
    let mut child =
        b.fl.command()
            .args(["-image", &image, "-extractto", s(&target)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    while temporaries(b.tmp.path()).is_empty() {
        assert!(child.try_wait().unwrap().is_none());
    }
    signal(child.id() as i32, libc::SIGKILL);
    let _ = child.wait();
    assert!(!temporaries(b.tmp.path()).is_empty(), "no leftover to test with");
    b.fl.ok(&["-image", &image, "-extractto", s(&target)]);
    assert!(
        temporaries(b.tmp.path()).is_empty(),
        "left: {:?}",
        temporaries(b.tmp.path())
    );
    assert!(target.join("d/f19999").exists());

    // A pack killed at any point leaves no temporary in the store: chunks
    // are linked into place whole.
    let store = b.path("store");
    for delay in [50, 150, 300] {
        let mut child =
            b.fl.command()
                .args([
                    "-image",
                    &image,
                    "-flist",
                    s(&b.path("p.fl")),
                    "-store",
                    &format!("dir://{}", s(&store)),
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let left: Vec<_> = files_under(&store)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(left.is_empty(), "temporaries in the store: {left:?}");
    }
}

// ------------------------------------------------------------------ FUSE

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn fuse_mounts_with_commas_in_their_paths() {
    if !fuse_or_skip("fuse_mounts_with_commas_in_their_paths") {
        return;
    }
    let (b, a, _) = bed("commas");
    let flist = b.path("a,b.fl");
    let store = b.path("st,1");
    b.pack(&a, &flist, &store);
    let mnt = b.path("mnt,x");
    let m = Mounted::start(&b.fl, &["-flist", s(&flist)], &mnt);
    assert_eq!(std::fs::read(mnt.join("etc/a")).unwrap(), b"made by image a\n");
    b.fl.ok(&["-umount", s(&mnt)]);
    let mut m = m;
    m.wait_exit(Duration::from_secs(20));
}

/// Whether user nobody can read `path`.
fn read_as_nobody(path: &Path) -> bool {
    as_nobody("cat", &[path]).0
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn fuse_access_is_the_kernels_whatever_is_cached() {
    if !fuse_or_skip("fuse_access_is_the_kernels_whatever_is_cached") {
        return;
    }
    need("setpriv");
    let (b, a, _) = bed("access");
    let flist = b.path("a.fl");
    b.pack(&a, &flist, &b.path("st"));
    let mnt = b.path("mnt");
    // Without -allow-other: nobody else gets in, whether or not root has
    // read (and so cached) the file.
    let m = Mounted::start(&b.fl, &["-flist", s(&flist)], &mnt);
    assert!(
        !mounted_options(&mnt).contains("allow_other"),
        "{}",
        mounted_options(&mnt)
    );
    assert!(
        !read_as_nobody(&mnt.join("etc/public")),
        "nobody read an uncached file"
    );
    assert_eq!(std::fs::read(mnt.join("etc/public")).unwrap(), b"anyone\n");
    assert!(
        !read_as_nobody(&mnt.join("etc/public")),
        "nobody read a cached file"
    );
    // Killed: the watcher takes the mount down.
    let mut m = m;
    m.kill_and_wait_unmounted();
    drop(m);
    // With -allow-other: the modes decide, cached or not.
    let m = Mounted::start(&b.fl, &["-flist", s(&flist), "-allow-other"], &mnt);
    assert!(read_as_nobody(&mnt.join("etc/public")));
    assert!(
        !read_as_nobody(&mnt.join("etc/secret")),
        "nobody read a 0600 file"
    );
    assert_eq!(std::fs::read(mnt.join("etc/secret")).unwrap(), b"root only\n");
    assert!(
        !read_as_nobody(&mnt.join("etc/secret")),
        "nobody read a cached 0600 file"
    );
    m.stop();
}

fn mounted_options(dir: &Path) -> String {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == dir.to_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn the_units_stop_clears_only_a_dead_flmount_mount() {
    if !fuse_or_skip("the_units_stop_clears_only_a_dead_flmount_mount") {
        return;
    }
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/flmount@.service"))
            .unwrap();
    for line in [
        "AssertPathExists=/etc/flmount/%i.conf",
        "RestartPreventExitStatus=2",
        "Documentation=man:flmount(1)",
        "ExecStopPost=/usr/local/bin/flmount -q -umount ${FLMOUNT_MOUNT} -stale",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    assert!(
        !unit.contains("ExecStartPre=/bin/mkdir"),
        "mkdir fails on a dead mount"
    );
    let (b, a, _) = bed("unit");
    let flist = b.path("a.fl");
    b.pack(&a, &flist, &b.path("st"));
    // The stop after a clean exit: nothing mounted, no error.
    let mnt = b.path("mnt");
    b.fl.ok(&["-q", "-umount", s(&mnt), "-stale"]);
    // A start that failed because another live flmount mount is there:
    // the stop leaves that mount alone.
    let m = Mounted::start(&b.fl, &["-flist", s(&flist)], &mnt);
    b.fl.fails(&["-flist", s(&flist), "-mount", s(&mnt)], 1);
    b.fl.ok(&["-q", "-umount", s(&mnt), "-stale"]);
    assert!(is_mounted(&mnt), "the stop detached a live mount");
    assert_eq!(std::fs::read(mnt.join("etc/a")).unwrap(), b"made by image a\n");
    m.stop();
}
