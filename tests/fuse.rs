//! FUSE mounts of flists, against the real kernel FUSE driver: the mounted
//! view equals `-extractto` (from dir, zdb and S3 stores); a busybox image
//! served lazily runs in a chroot; file modes and setuid hold for other
//! users; the
//! chunk cache evicts under a small limit and never serves a corrupted
//! chunk; a store that is down or hung gives EIO within the timeout and
//! reads recover when it is back; concurrent readers agree; SIGTERM and
//! `-umount` unmount cleanly; readiness reaches systemd only once mounted.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::fixtures::{assert_modes_and_setuid_hold_for_nobody, permissions_layer, RulesImage};
use common::fstree::{assert_same_tree, Ignore};
use common::mounts::{fuse_or_skip, is_mounted, signal, Mounted};
use common::servers::{CountingHttp, Server};
use common::*;

fn rules_image() -> RulesImage {
    RulesImage::new("fuse/rules")
}

impl RulesImage {
    /// Packs into one store; returns the flist's path.
    fn pack_into(&self, name: &str, store: &str) -> PathBuf {
        let out = self.path(name);
        self.bed.fl.ok(&[
            "-image",
            &self.image,
            "-flist",
            out.to_str().unwrap(),
            "-store",
            store,
        ]);
        out
    }
}

/// A directory of files of several chunks each (512 KiB chunks), and the
/// flist of it in a dir store.
struct Chunky {
    tmp: tempfile::TempDir,
    src: PathBuf,
    flist: PathBuf,
    chunks: PathBuf,
    fl: Flmount,
}

/// `flmount pack` of `src` into `flist`, its chunks in a dir store at `chunks`.
fn pack(fl: &Flmount, src: &Path, flist: &Path, chunks: &Path) {
    fl.ok(&[
        "pack",
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &format!("dir://{}", chunks.display()),
        src.to_str().unwrap(),
    ]);
}

fn chunky(files: usize) -> Chunky {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("data")).unwrap();
    for i in 0..files {
        let len = 1_200_000 + i * 77_777;
        std::fs::write(
            src.join(format!("data/f{i:02}")),
            pseudo_random(len, i as u64 + 1),
        )
        .unwrap();
    }
    std::fs::write(src.join("small"), b"small file\n").unwrap();
    let flist = tmp.path().join("chunky.fl");
    let chunks = tmp.path().join("chunks");
    let fl = Flmount::new();
    pack(&fl, &src, &flist, &chunks);
    Chunky {
        tmp,
        src,
        flist,
        chunks,
        fl,
    }
}

impl Chunky {
    /// Serves the flist at `tmp/mnt-NAME` from `store` with a new chunk
    /// cache `tmp/cache-NAME`, and `extra` flags.
    fn serve(&self, name: &str, store: &str, extra: &[&str]) -> (Mounted, PathBuf) {
        let mnt = self.tmp.path().join(format!("mnt-{name}"));
        let cache = self.tmp.path().join(format!("cache-{name}"));
        let mut args = vec![
            "-flist",
            self.flist.to_str().unwrap(),
            "-store",
            store,
            "-cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (Mounted::start(&self.fl, &args, &mnt), mnt)
    }
}

/// The paths an HTTP store serves the chunks of a dir store at
/// (`/<hh>/<id>`), from the chunk files in it.
fn chunk_paths(store: &Path) -> std::collections::BTreeSet<String> {
    files_under(store)
        .iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .map(|p| format!("/{}", p.strip_prefix(store).unwrap().display()))
        .collect()
}

/// sha256 of every regular file below `root`, by relative path.
fn contents(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let data = std::fs::read(entry.path()).unwrap();
                let rel = entry.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, sha256_hex(&data));
            }
        }
    }
    out
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn mounted_flists_equal_extraction_from_dir_zdb_and_s3_stores() {
    if !fuse_or_skip("mounted_flists_equal_extraction_from_dir_zdb_and_s3_stores") {
        return;
    }
    let img = rules_image();
    let redis = Server::redis();
    let (_moto, s3) = Server::moto_bucket("flchunks");
    let stores = [
        ("dir", format!("dir://{}", img.path("chunks").display())),
        ("zdb", format!("zdb://127.0.0.1:{}", redis.1)),
        ("s3", s3.clone()),
    ];
    for (kind, store) in &stores {
        let flist = img.pack_into(&format!("{kind}.fl"), store);
        let mnt = img.path(&format!("mnt-{kind}"));
        // The S3 secret is not in the flist: it comes back with -store.
        let mut args = vec!["-flist", flist.to_str().unwrap()];
        if *kind == "s3" {
            args.extend(["-store", s3.as_str()]);
        }
        let cache = img.path(&format!("cache-{kind}"));
        args.extend(["-cache", cache.to_str().unwrap()]);
        let m = Mounted::start(&img.bed.fl, &args, &mnt);
        assert_same_tree(&img.flat, &mnt, &Ignore::default());

        // Read-only, whoever asks.
        let err = std::fs::write(mnt.join("etc/new"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("etc/passwd"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        let log = m.stop();
        assert!(log.contains("SIGTERM: unmounting"), "{log}");
        assert!(!log.contains("s3-Secret-99"), "a secret reached the log:\n{log}");
    }

    // -umount works on FUSE mounts too, and the server exits by itself.
    let flist = img.path("dir.fl");
    let mnt = img.path("mnt-umount");
    let mut m = Mounted::start(&img.bed.fl, &["-flist", flist.to_str().unwrap()], &mnt);
    img.bed.fl.ok(&["-umount", mnt.to_str().unwrap()]);
    m.wait_exit(Duration::from_secs(20));

    // A killed server leaves no mount behind (auto_unmount).
    Mounted::start(&img.bed.fl, &["-flist", flist.to_str().unwrap()], &mnt).kill_and_wait_unmounted();

    // A dead mount (its server and its unmount watcher both killed, as
    // when the server dies while fusermount3 mounts): the next server at
    // that mount point clears it, and a live mount there is refused.
    let mut m = Mounted::start(&img.bed.fl, &["-flist", flist.to_str().unwrap()], &mnt);
    // The root's attributes are now in the kernel's cache, where they
    // outlive the server: only asking the server tells a dead mount.
    std::fs::metadata(&mnt).unwrap();
    let watcher = processes_named("flmount-watch")
        .into_iter()
        .find(|(_, args)| args.contains(mnt.to_str().unwrap()))
        .expect("the mount's unmount watcher");
    signal(watcher.0, libc::SIGKILL);
    signal(m.pid(), libc::SIGKILL);
    let _ = m.child.take().unwrap().wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(is_mounted(&mnt), "no dead mount to test with");
    assert_eq!(
        nix::sys::statfs::statfs(&mnt).map(drop),
        Err(nix::errno::Errno::ENOTCONN)
    );
    let m = Mounted::start(&img.bed.fl, &["-flist", flist.to_str().unwrap()], &mnt);
    assert!(
        m.log().contains("killed flmount server left mounted"),
        "{}",
        m.log()
    );
    assert_same_tree(&img.flat, &mnt, &Ignore::default());
    let err = img.bed.fl.fails(
        &["-flist", flist.to_str().unwrap(), "-mount", mnt.to_str().unwrap()],
        1,
    );
    assert!(err.contains("already an flmount FUSE mount"), "{err}");
    m.stop();
    assert!(!mounted_at(&mnt, None), "a mount is left at {}", mnt.display());
}

/// (pid, command line) of the processes whose program is `name`.
fn processes_named(name: &str) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let program = std::path::Path::new(args.first()?)
                .file_name()?
                .to_str()?
                .to_owned();
            (program == name).then(|| (pid, args.join(" ")))
        })
        .collect()
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_busybox_image_served_lazily_runs_in_a_chroot() {
    if !fuse_or_skip("a_busybox_image_served_lazily_runs_in_a_chroot") {
        return;
    }
    let img = rules_image();
    let mnt = img.path("rootfs");
    let m = Mounted::start(&img.bed.fl, &["-image", &img.image, "-fuse"], &mnt);
    let out = run_ok(Command::new("chroot").arg(&mnt).args([
        "/bin/sh",
        "-c",
        "/bin/busybox cat /etc/passwd-link; ls /var/cache; /bin/ls -l /dev/null",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("root:x:0:0") && stdout.contains("new") && stdout.contains("1,   3"),
        "{stdout}"
    );
    assert_same_tree(&img.flat, &mnt, &Ignore::default());
    // The ioctl systemd-nspawn and lsattr send (FS_IOC_GETFLAGS): ENOTTY,
    // with nothing logged.
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl, sys, errno\n\
             f = open(sys.argv[1], 'rb')\n\
             try:\n    fcntl.ioctl(f, 0x80086601, b'\\0' * 8); print('answered')\n\
             except OSError as e:\n    print(errno.errorcode[e.errno])\n",
        )
        .arg(mnt.join("bin/busybox"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ENOTTY", "{out:?}");
    let log = m.stop();
    assert!(!log.contains("Not Implemented"), "{log}");

    // A second mount of the same image reuses its flist: nothing is packed.
    let m = Mounted::start(&img.bed.fl, &["-image", &img.image, "-fuse", "-v"], &mnt);
    let log = m.stop();
    assert!(!log.contains("packed"), "the image was packed again:\n{log}");
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn file_modes_and_setuid_hold_for_other_users() {
    if !fuse_or_skip("file_modes_and_setuid_hold_for_other_users") {
        return;
    }
    need("setpriv");
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![(Compression::Gzip, tarball::tar(&permissions_layer()))];
    let image = reg.push_layers("fuse/perm", layers, tmp.path());
    let fl = Flmount::new();
    // The mount point's parents must be searchable by the other user.
    let mnt = PathBuf::from(format!("/tmp/flmount-modes-{}", std::process::id()));
    let m = Mounted::start(&fl, &["-image", &image, "-fuse", "-allow-other"], &mnt);
    // Served by root: setuid programs work, as on the image's own disk.
    assert_modes_and_setuid_hold_for_nobody(&mnt, true);
    m.stop();
    let _ = std::fs::remove_dir(&mnt);
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_small_cache_evicts_and_a_corrupted_cached_chunk_is_fetched_again() {
    if !fuse_or_skip("a_small_cache_evicts_and_a_corrupted_cached_chunk_is_fetched_again") {
        return;
    }
    let c = chunky(8); // about 12 MiB in 24 chunks
    let expected = contents(&c.src);
    let mnt = c.tmp.path().join("mnt");
    let cache = c.tmp.path().join("cache");
    let flist = c.flist.to_str().unwrap();
    let small = [
        "-flist",
        flist,
        "-cache",
        cache.to_str().unwrap(),
        "-cache-size",
        "2M",
    ];
    let m = Mounted::start(&c.fl, &small, &mnt);
    for _ in 0..2 {
        assert_eq!(contents(&mnt), expected);
        // Drop the page cache so the second round reads through FUSE again.
        std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    }
    m.stop();
    let cached = bytes_under(&cache);
    assert!(
        cached <= 2 << 20,
        "the cache holds {cached} bytes, over its 2 MiB limit"
    );
    assert!(cached > 0, "nothing was cached");

    // Fill the cache, then damage every cached chunk: each is detected when
    // read back, removed, and fetched again from the store.
    let big = ["-flist", flist, "-cache", cache.to_str().unwrap()];
    let m = Mounted::start(&c.fl, &big, &mnt);
    assert_eq!(contents(&mnt), expected);
    m.stop();
    let mut damaged = 0;
    for shard in std::fs::read_dir(&cache).unwrap() {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue; // the cache's marker
        }
        for f in std::fs::read_dir(&shard).unwrap() {
            let f = f.unwrap().path();
            let mut data = std::fs::read(&f).unwrap();
            data[0] ^= 0xff;
            std::fs::write(&f, data).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged >= 24, "only {damaged} chunks were cached");
    // Read back through a store that counts what it serves.
    let http = CountingHttp::start(&c.chunks);
    let from_http = [
        "-flist",
        flist,
        "-store",
        &http.url(),
        "-cache",
        cache.to_str().unwrap(),
    ];
    let m = Mounted::start(&c.fl, &from_http, &mnt);
    assert_eq!(contents(&mnt), expected);
    let log = m.stop();
    assert!(log.contains("is corrupt"), "{log}");
    let gets = http.gets();
    assert_eq!(
        gets.len(),
        damaged,
        "{} of {damaged} damaged chunks were fetched again",
        gets.len()
    );
    assert!(gets.values().all(|&n| n == 1), "{gets:?}");
}

/// Reads a file through the mount, returning the error kind and how long it took.
fn timed_read(path: &Path) -> (std::io::Result<Vec<u8>>, Duration) {
    let started = Instant::now();
    let r = std::fs::read(path);
    (r, started.elapsed())
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_down_or_hung_store_gives_eio_within_the_timeout_and_reads_recover() {
    if !fuse_or_skip("a_down_or_hung_store_gives_eio_within_the_timeout_and_reads_recover") {
        return;
    }
    let c = chunky(4);
    let expected = contents(&c.src);
    let mnt = c.tmp.path().join("mnt");
    let cache = c.tmp.path().join("cache");
    // The dir store served over HTTP, which can be stopped and restarted.
    let http = CountingHttp::start(&c.chunks);
    let port = http.port;
    let store = format!("http://127.0.0.1:{port}");
    let args = [
        "-flist",
        c.flist.to_str().unwrap(),
        "-store",
        &store,
        "-cache",
        cache.to_str().unwrap(),
        "-timeout",
        "2",
    ];
    let m = Mounted::start(&c.fl, &args, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("data/f00")).unwrap(),
        std::fs::read(c.src.join("data/f00")).unwrap()
    );

    drop(http); // the store goes down
    let (r, took) = timed_read(&mnt.join("data/f01"));
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(
        took < Duration::from_secs(10),
        "EIO took {took:?} with -timeout 2"
    );
    // Cached data is still served.
    assert_eq!(
        std::fs::read(mnt.join("data/f00")).unwrap(),
        std::fs::read(c.src.join("data/f00")).unwrap()
    );

    let http = CountingHttp::start_on(&c.chunks, port); // back again
    assert_eq!(contents(&mnt), expected);
    let log = m.stop();
    assert!(
        log.contains(&format!("127.0.0.1:{port}")),
        "the failing store is not named:\n{log}"
    );
    drop(http);

    // A store that hangs (accepts, never answers): EIO after the timeout too.
    let redis = Server::redis();
    let flist = c.tmp.path().join("zdb.fl");
    c.fl.ok(&[
        "pack",
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &format!("zdb://127.0.0.1:{}", redis.1),
        c.src.to_str().unwrap(),
    ]);
    let m = Mounted::start(&c.fl, &["-flist", flist.to_str().unwrap(), "-timeout", "2"], &mnt);
    assert_eq!(std::fs::read(mnt.join("small")).unwrap(), b"small file\n");
    signal(redis.0.id() as i32, libc::SIGSTOP);
    let (r, took) = timed_read(&mnt.join("data/f02"));
    signal(redis.0.id() as i32, libc::SIGCONT);
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(
        took < Duration::from_secs(10),
        "EIO took {took:?} with -timeout 2"
    );
    assert_eq!(contents(&mnt), expected, "reads did not recover");
    m.stop();
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn concurrent_readers_agree_and_sigterm_during_reads_unmounts() {
    if !fuse_or_skip("concurrent_readers_agree_and_sigterm_during_reads_unmounts") {
        return;
    }
    let c = chunky(6);
    let expected = contents(&c.src);
    let mnt = c.tmp.path().join("mnt");
    let cache = c.tmp.path().join("cache");
    // The store served over HTTP by a server that counts the fetches.
    let http = CountingHttp::start(&c.chunks);
    let store = http.url();
    let args = [
        "-flist",
        c.flist.to_str().unwrap(),
        "-store",
        &store,
        "-cache",
        cache.to_str().unwrap(),
    ];
    let m = Mounted::start(&c.fl, &args, &mnt);
    for round in 0..3 {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| contents(&mnt))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r, expected, "round {round}");
        }
        std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    }
    m.stop();
    // Eight readers of every file, three times over: each chunk was
    // fetched from the store once, and every chunk was.
    let gets = http.gets();
    let chunks = chunk_paths(&c.chunks);
    let fetched: std::collections::BTreeSet<String> = gets.keys().cloned().collect();
    assert_eq!(fetched, chunks, "the chunks fetched are not the chunks stored");
    let again: Vec<_> = gets.iter().filter(|(_, &n)| n > 1).collect();
    assert!(again.is_empty(), "chunks fetched more than once: {again:?}");

    // SIGTERM while readers hold files open: the mount goes away, each
    // reader either reads its file whole and right or gets an error, never
    // wrong or missing bytes; the server exits cleanly.
    std::fs::remove_dir_all(&cache).unwrap();
    let mut m = Mounted::start(&c.fl, &args, &mnt);
    let sources: Vec<Vec<u8>> = (0..4)
        .map(|i| std::fs::read(c.src.join(format!("data/f{i:02}"))).unwrap())
        .collect();
    let started = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sent = std::sync::atomic::AtomicBool::new(false);
    use std::sync::atomic::Ordering::SeqCst;
    let outcomes: Vec<(usize, Vec<String>)> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|i| {
                let (mnt, stop, started, sent, source) = (&mnt, &stop, &started, &sent, &sources[i]);
                s.spawn(move || {
                    let (mut whole, mut errors) = (0, Vec::new());
                    let mut buf = vec![0u8; 65536];
                    let mut first = true;
                    while !stop.load(SeqCst) {
                        let mut f = match File::open(mnt.join(format!("data/f{i:02}"))) {
                            Ok(f) => f,
                            Err(e) => {
                                errors.push(format!("open: {e}"));
                                break;
                            }
                        };
                        let mut at = 0;
                        loop {
                            match f.read(&mut buf) {
                                Ok(0) => {
                                    assert_eq!(at, source.len(), "f{i:02}: end of file after {at} bytes");
                                    whole += 1;
                                    break;
                                }
                                Ok(n) => {
                                    assert!(buf[..n] == source[at..at + n], "f{i:02}: wrong bytes at {at}");
                                    at += n;
                                    if first {
                                        // Hold the file open, mid-read,
                                        // until the server has its SIGTERM.
                                        first = false;
                                        started.fetch_add(1, SeqCst);
                                        while !sent.load(SeqCst) {
                                            std::thread::sleep(Duration::from_millis(1));
                                        }
                                    }
                                }
                                Err(e) => {
                                    errors.push(format!("read at {at}: {e}"));
                                    break;
                                }
                            }
                        }
                    }
                    (whole, errors)
                })
            })
            .collect();
        // Every reader holds its file open, part read (a state, not a
        // time), then SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(60);
        while started.load(SeqCst) < 4 {
            assert!(Instant::now() < deadline, "the readers did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(m.pid(), libc::SIGTERM);
        sent.store(true, SeqCst);
        m.wait_exit(Duration::from_secs(20));
        stop.store(true, SeqCst);
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    eprintln!("readers (whole reads, errors): {outcomes:?}");
    // Each reader ended its file open at SIGTERM whole and right (checked
    // byte by byte as read) or with an error, and then found the mount gone.
    for (i, (whole, errors)) in outcomes.iter().enumerate() {
        assert!(*whole + errors.len() >= 1, "reader {i}: no outcome");
        assert!(
            errors
                .last()
                .is_some_and(|e| e.starts_with("open") || e.starts_with("read")),
            "reader {i} did not see the mount go: {errors:?}"
        );
    }
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn prefetch_fills_the_cache_so_reads_need_no_store() {
    if !fuse_or_skip("prefetch_fills_the_cache_so_reads_need_no_store") {
        return;
    }
    let c = chunky(4);
    let expected = contents(&c.src);
    let http = CountingHttp::start(&c.chunks);
    let (m, mnt) = c.serve("prefetch", &http.url(), &["-prefetch"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !m.log().contains("prefetched") {
        assert!(Instant::now() < deadline, "prefetch did not finish:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every chunk was fetched, once, before anything was read.
    let gets = http.gets();
    assert_eq!(
        gets.keys().cloned().collect::<std::collections::BTreeSet<_>>(),
        chunk_paths(&c.chunks)
    );
    assert!(gets.values().all(|&n| n == 1), "{gets:?}");
    drop(http);
    assert_eq!(contents(&mnt), expected);
    m.stop();
}

#[test]
fn the_systemd_unit_verifies() {
    need("systemd-analyze");
    let out = Command::new("systemd-analyze").arg("--version").output().unwrap();
    assert!(out.status.success());
    // The unit as installed, pointing at this build's binary.
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/flmount@.service"))
            .unwrap()
            .replace("/usr/local/bin/flmount", env!("CARGO_BIN_EXE_flmount"));
    assert!(unit.contains("Type=notify") && unit.contains("Restart=on-failure"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flmount@web.service");
    std::fs::write(&path, unit).unwrap();
    // Documentation=man:flmount(1): the page as `flmount man` writes it.
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let page = run_ok(Command::new(env!("CARGO_BIN_EXE_flmount")).arg("man")).stdout;
    std::fs::write(man1.join("flmount.1"), page).unwrap();
    let out = Command::new("systemd-analyze")
        .env("MANPATH", dir.path().join("man"))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// Runs SQL on an flist with Python's sqlite3 (an independent writer).
fn sql(flist: &Path, statements: &str) {
    run_ok(Command::new("python3").args([
        "-c",
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        flist.to_str().unwrap(),
        statements,
    ]));
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn hostile_flists_are_refused_or_served_safely() {
    if !fuse_or_skip("hostile_flists_are_refused_or_served_safely") {
        return;
    }
    let c = chunky(4);
    let mnt = c.tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let variant = |name: &str, statements: &str| {
        let path = c.tmp.path().join(format!("{name}.fl"));
        std::fs::copy(&c.flist, &path).unwrap();
        sql(&path, statements);
        path
    };
    let refused = |flist: &Path, expect: &str| {
        let err = c.fl.fails(
            &["-flist", flist.to_str().unwrap(), "-mount", mnt.to_str().unwrap()],
            1,
        );
        assert!(err.contains(expect), "{err}");
        assert!(!is_mounted(&mnt));
    };
    refused(
        &variant("root", "UPDATE inode SET mode = 33188 WHERE ino = 1;"),
        "not a directory",
    );
    let truncated = c.tmp.path().join("truncated.fl");
    let bytes = std::fs::read(&c.flist).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    refused(&truncated, "truncated");

    // Served safely: rows a writer should not have left (an invalid name,
    // a size beyond 1 TiB, a hard link to a directory) are left out, each
    // named in the log; rows in a parent loop are unreachable and not
    // shown; a file whose size disagrees with its chunks reads as EIO; the
    // rest of the tree keeps working.
    let odd = variant(
        "odd",
        "INSERT INTO inode (ino, parent, name, size, uid, gid, mode, rdev, ctime, mtime) \
             VALUES (9001, 9002, 'loop-a', 0, 0, 0, 16877, 0, 0, 0), \
                    (9002, 9001, 'loop-b', 0, 0, 0, 16877, 0, 0, 0), \
                    (9003, 1, 'to-dir', 0, 0, 0, 33188, 0, 0, 0); \
         INSERT INTO fl_link (ino, target) VALUES (9003, (SELECT ino FROM inode WHERE name = 'data')); \
         UPDATE inode SET size = size * 3 WHERE name = 'f00'; \
         UPDATE inode SET name = 'a/b' WHERE name = 'small'; \
         UPDATE inode SET name = '..' WHERE name = 'f02'; \
         UPDATE inode SET size = 1 << 50 WHERE name = 'f03';",
    );
    let m = Mounted::start(&c.fl, &["-flist", odd.to_str().unwrap()], &mnt);
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&mnt), ["data"]);
    assert_eq!(names(&mnt.join("data")), ["f00", "f01"]);
    let err = std::fs::read(mnt.join("data/f00")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        std::fs::read(mnt.join("data/f01")).unwrap(),
        std::fs::read(c.src.join("data/f01")).unwrap()
    );
    let log = m.stop();
    for expected in [
        "invalid name \"a/b\"",
        "invalid name \"..\"",
        "claims 1125899906842624 bytes",
        "a hard link to inode",
    ] {
        assert!(log.contains(expected), "{expected} is not in the log:\n{log}");
    }
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_full_chunk_cache_disk_still_serves_correct_reads() {
    if !fuse_or_skip("a_full_chunk_cache_disk_still_serves_correct_reads") {
        return;
    }
    let c = chunky(3);
    let expected = contents(&c.src);
    // The cache's filesystem holds 1 MiB: most chunk writes fail with ENOSPC.
    let cache = c.tmp.path().join("tiny-cache");
    std::fs::create_dir_all(&cache).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&cache),
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&cache);
    let mnt = c.tmp.path().join("mnt");
    let m = Mounted::start(
        &c.fl,
        &[
            "-flist",
            c.flist.to_str().unwrap(),
            "-cache",
            cache.join("chunks").to_str().unwrap(),
        ],
        &mnt,
    );
    assert_eq!(contents(&mnt), expected);
    let log = m.stop();
    assert!(
        log.contains("No space left on device"),
        "the failed cache writes were not logged:\n{log}"
    );
}

/// The chunk paths (`/<hh>/<id>`) of an flist's trace, in order, read with
/// Python's sqlite3 (an independent reader).
fn traced_paths(flist: &Path) -> Vec<String> {
    let out = run_ok(Command::new("python3").args([
        "-c",
        "import sqlite3, sys\n\
         for (i,) in sqlite3.connect(sys.argv[1]).execute('SELECT id FROM fl_trace ORDER BY seq'):\n\
         \x20   print(f'/{i.hex()[:2]}/{i.hex()}')",
        flist.to_str().unwrap(),
    ]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The chunk paths of one file of an flist, in order.
fn file_chunk_paths(flist: &Path, name: &str) -> Vec<String> {
    let out = run_ok(Command::new("python3").args([
        "-c",
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         (ino,) = c.execute('SELECT ino FROM inode WHERE name = ?', (sys.argv[2],)).fetchone()\n\
         for (i,) in c.execute('SELECT id FROM block WHERE ino = ? ORDER BY rowid', (ino,)):\n\
         \x20   print(f'/{i.hex()[:2]}/{i.hex()}')",
        flist.to_str().unwrap(),
        name,
    ]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_trace_recorded_on_one_mount_is_fetched_first_by_the_next() {
    if !fuse_or_skip("a_trace_recorded_on_one_mount_is_fetched_first_by_the_next") {
        return;
    }
    let c = chunky(4);
    let http = CountingHttp::start(&c.chunks);
    let store = http.url();
    let cache1 = c.tmp.path().join("cache1");
    // Record: what `cat` of two files reads, in order (f02 first).
    let out = c.fl.run(&[
        "-json",
        "flist",
        "trace",
        c.flist.to_str().unwrap(),
        "-store",
        &store,
        "-cache",
        cache1.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "cat {}/data/f02 {}/small > /dev/null",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let mut expected = file_chunk_paths(&c.flist, "f02");
    expected.extend(file_chunk_paths(&c.flist, "small"));
    assert_eq!(
        traced_paths(&c.flist),
        expected,
        "the trace: f02's chunks, then small's"
    );
    assert!(
        stdout.contains(&format!("\"chunks\":{}", expected.len())),
        "{stdout}"
    );
    // The private mount point is gone.
    assert!(!std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(".flmount-trace-"));

    // A new mount with an empty cache fetches the traced chunks before
    // anything is read, and only those (no -prefetch).
    let before = http.gets();
    let (m, mnt) = c.serve("traced", &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !m.log().contains("the start-up trace:") {
        assert!(
            Instant::now() < deadline,
            "the trace was not fetched:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let fetched: std::collections::BTreeSet<String> = http
        .gets()
        .into_iter()
        .filter(|(path, n)| before.get(path) != Some(n))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        fetched,
        expected.iter().cloned().collect(),
        "fetched at mount: the trace"
    );
    // Reading the traced files asks the store for nothing more.
    let gets = http.gets();
    assert_eq!(
        std::fs::read(mnt.join("data/f02")).unwrap(),
        std::fs::read(c.src.join("data/f02")).unwrap()
    );
    assert_eq!(http.gets(), gets);
    m.stop();

    // The trace table does not disturb an independent rfs reader.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/rfs_format.py");
    run_ok(
        Command::new(common::servers::venv_bin("python"))
            .arg(&script)
            .args([
                "check",
                c.flist.to_str().unwrap(),
                c.chunks.to_str().unwrap(),
                c.src.to_str().unwrap(),
            ]),
    );
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_shared_cache_store_serves_the_second_machine() {
    if !fuse_or_skip("a_shared_cache_store_serves_the_second_machine") {
        return;
    }
    let c = chunky(3);
    let expected = contents(&c.src);
    let origin = CountingHttp::start(&c.chunks);
    // The fleet's cache: a redis-server speaking zdb's protocol.
    let redis = Server::redis();
    let tier = format!("zdb://127.0.0.1:{}", redis.1);
    let machine = |name: &str| {
        let (m, mnt) = c.serve(name, &origin.url(), &["-cache-store", &tier]);
        assert_eq!(contents(&mnt), expected, "{name}");
        m.stop()
    };
    let first = machine("a");
    let fetched_from_origin: usize = origin.gets().values().sum();
    assert_eq!(
        origin
            .gets()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        chunk_paths(&c.chunks),
        "the first machine read every chunk from the origin:\n{first}"
    );
    // Its fills are written in the background: wait until redis has them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_ok(Command::new("redis-cli").args(["-p", &redis.1.to_string(), "DBSIZE"]));
        let keys: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if keys >= chunk_paths(&c.chunks).len() {
            break;
        }
        assert!(Instant::now() < deadline, "the cache store holds {keys} chunks");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = machine("b");
    assert_eq!(
        origin.gets().values().sum::<usize>(),
        fetched_from_origin,
        "the second machine asked the origin:\n{second}"
    );
    // "N chunks (..) fetched, N of them from the cache store"
    let summary = second
        .lines()
        .find(|l| l.contains("unmounted"))
        .unwrap_or_default();
    let tier_hits = summary
        .split(" of them from the cache store")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(tier_hits, Some(chunk_paths(&c.chunks).len()), "{summary}");
}

/// A program's libraries are fetched from a far store as soon as the start
/// of the program is read, before its loader asks for them: only the first
/// 4 KiB of a dynamically linked program is read here, and the store is
/// asked for every chunk of its interpreter and of libc, files no one read
/// (nor any file of their directories).
#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_programs_libraries_are_fetched_before_its_loader_asks() {
    if !fuse_or_skip("a_programs_libraries_are_fetched_before_its_loader_asks") {
        return;
    }
    need("ldd");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // The host's `env` and what `ldd` says it loads, each at its own path.
    let program = Path::new("/usr/bin/env");
    let ldd = String::from_utf8(run_ok(Command::new("ldd").arg(program)).stdout).unwrap();
    let mut files: Vec<PathBuf> = vec![program.into()];
    files.extend(
        ldd.split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from),
    );
    let names: Vec<String> = files[1..]
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("libc.so")) && names.iter().any(|n| n.starts_with("ld-linux")),
        "{ldd}"
    );
    for file in &files {
        let to = src.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(file, &to).unwrap();
    }
    let chunks = tmp.path().join("chunks");
    let flist = tmp.path().join("env.fl");
    let fl = Flmount::new();
    pack(&fl, &src, &flist, &chunks);
    let http = CountingHttp::start(&chunks);
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let m = Mounted::start(
        &fl,
        &[
            "-flist",
            flist.to_str().unwrap(),
            "-store",
            &http.url(),
            "-cache",
            cache.to_str().unwrap(),
        ],
        &mnt,
    );
    let mut start = vec![0u8; 4096];
    File::open(mnt.join("usr/bin/env"))
        .unwrap()
        .read_exact(&mut start)
        .unwrap();
    assert_eq!(&start[..4], b"\x7fELF");
    let wanted: Vec<String> = names.iter().flat_map(|n| file_chunk_paths(&flist, n)).collect();
    assert!(wanted.len() >= 2, "{wanted:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let gets = http.gets();
        let missing: Vec<&String> = wanted.iter().filter(|p| !gets.contains_key(*p)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = m.stop();
    assert_eq!(
        missing,
        0,
        "{missing} of {} chunks of {names:?} were not fetched ahead:\n{log}",
        wanted.len()
    );
}
