//! flists: pack an image into an flist and chunk stores (dir, zdb via a real
//! redis-server, S3 via moto, HTTP), unpack it, and compare with
//! `-extractto`; sharding, replication and lost replicas; deduplication;
//! secrets kept out of flists; and interop with an independent Python
//! implementation of the rfs format.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::faults::CutProxy;
use common::fixtures::{rules_layers, RulesImage};
use common::fstree::{assert_same_tree, Ignore};
use common::servers::{venv_bin, CountingHttp, Server, ZdbNamespaces};
use common::tarball::tar;
use common::*;

type Setup = RulesImage;

fn setup() -> Setup {
    RulesImage::new("fl/rules")
}

impl Setup {
    /// Packs with the given stores; returns the flist path and flmount's log.
    fn pack(&self, name: &str, stores: &[String]) -> (PathBuf, String) {
        let out = self.path(name);
        let mut args = vec![
            "-image".to_owned(),
            self.image.clone(),
            "-flist".into(),
            out.to_str().unwrap().into(),
        ];
        for s in stores {
            args.push("-store".into());
            args.push(s.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.bed.fl.ok(&args);
        (out, log)
    }
    /// Unpacks and compares with the flat extraction.
    fn unpack_equals(&self, flist: &Path, stores: &[String], dest: &str) {
        self.unpack_equals_with(flist, stores, dest, &[]);
    }
    fn unpack_equals_with(&self, flist: &Path, stores: &[String], dest: &str, extra: &[&str]) {
        let target = self.path(dest);
        let mut args = vec![
            "unpack".to_owned(),
            "-flist".into(),
            flist.to_str().unwrap().into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        for s in stores {
            args.push("-store".into());
            args.push(s.clone());
        }
        args.push(target.to_str().unwrap().into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bed.fl.ok(&args);
        assert_same_tree(&self.flat, &target, &Ignore::default());
    }
}

fn counts(log: &str) -> (u64, u64) {
    let at = log
        .find(" chunks (")
        .unwrap_or_else(|| panic!("no pack summary:\n{log}"));
    let rest: Vec<&str> = log[at + 9..].split_whitespace().collect();
    (rest[0].parse().unwrap(), rest[2].parse().unwrap())
}

/// The pack summary's chunks stored for content a later layer replaced
/// (not named by the flist, so not in its chunk count).
fn replaced(log: &str) -> u64 {
    log.find(" more chunk")
        .map(|at| log[..at].rsplit(' ').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn dir_store_round_trip_equals_extraction_and_repack_uploads_nothing() {
    if !root_or_skip(
        "dir_store_round_trip_equals_extraction_and_repack_uploads_nothing",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let s = setup();
    let store = format!("dir://{}", s.path("chunks").display());
    // The store's chunk files, as the store's disk shows them: name,
    // inode and modification time (a chunk written again changes them).
    let stored = || -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut files: Vec<_> = files_under(&s.path("chunks"))
            .into_iter()
            .filter(|p| p.file_name().unwrap().len() == 64)
            .map(|p| {
                let m = std::fs::metadata(&p).unwrap();
                (p, std::os::unix::fs::MetadataExt::ino(&m), m.modified().unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let (flist, log) = s.pack("a.fl", std::slice::from_ref(&store));
    let (uploaded, _) = counts(&log);
    let first = stored();
    assert!(uploaded > 5, "{log}");
    // The store holds the flist's new chunks and those of replaced content.
    assert_eq!(first.len() as u64, uploaded + replaced(&log), "{log}");
    s.unpack_equals(&flist, &[], "from-routes");
    let (repacked, log) = s.pack("b.fl", std::slice::from_ref(&store));
    assert_eq!(counts(&log).0, 0, "a re-pack uploaded chunks:\n{log}");
    assert_eq!(stored(), first, "a re-pack wrote chunks");
    // The re-pack reused the chunk lists it remembered: its flist must be as good.
    s.unpack_equals(&repacked, &[], "from-repack");
    // Remembered lists that do not fit their entries (a chunk short, or
    // cut inside a chunk) are not used: those entries are packed again.
    {
        let db = rusqlite::Connection::open(s.bed.fl.workdir.join("chunks.db")).unwrap();
        let damaged = db
            .execute(
                "UPDATE layer_entry SET chunks = CASE WHEN length(chunks) > 64
                 THEN substr(chunks, 1, length(chunks) - 64) ELSE substr(chunks, 1, 40) END",
                [],
            )
            .unwrap();
        assert!(damaged > 5, "{damaged} remembered lists");
    }
    let (mended, log) = s.pack("b2.fl", std::slice::from_ref(&store));
    assert_eq!(counts(&log).0, 0, "the content is in the store:\n{log}");
    s.unpack_equals(&mended, &[], "from-damaged-index");
    // A fresh workdir has no local index: the store is asked, still nothing uploaded.
    let fresh = Flmount::new();
    let log = fresh.ok(&[
        "-image",
        &s.image,
        "-flist",
        s.path("c.fl").to_str().unwrap(),
        "-store",
        &store,
    ]);
    assert_eq!(counts(&log).0, 0, "{log}");
    assert_eq!(stored(), first, "a pack from a fresh workdir wrote chunks");

    // ls and inspect read it back.
    let out = s
        .bed
        .fl
        .command()
        .args(["flist", "ls", flist.to_str().unwrap()])
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(
        ls.contains(" /bin/busybox") && ls.contains("-> busybox") && ls.contains(" /dev/sda (8,0)"),
        "{ls}"
    );
    let out = s
        .bed
        .fl
        .command()
        .args(["flist", "tag", flist.to_str().unwrap(), "description=rules"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("description=rules"));
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn sharded_and_replicated_stores_survive_a_lost_replica() {
    if !root_or_skip(
        "sharded_and_replicated_stores_survive_a_lost_replica",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let s = setup();
    let (a, b, c) = (s.path("low"), s.path("high"), s.path("replica"));
    let stores = vec![
        format!("00-7f=dir://{}", a.display()),
        format!("80-ff=dir://{}", b.display()),
        format!("00-ff=dir://{}", c.display()),
    ];
    let (flist, _) = s.pack("sharded.fl", &stores);
    // The chunk ids the flist names, read with Python's sqlite3.
    let out = run_ok(Command::new("python3").args([
        "-c",
        "import sqlite3, sys\nfor (i,) in sqlite3.connect(sys.argv[1]).execute('SELECT DISTINCT id FROM block'): print(bytes(i).hex())",
        flist.to_str().unwrap(),
    ]));
    let named: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(named.len() > 5, "{named:?}");
    // The chunk files each store holds (by id), whatever directories it has.
    let ids_in = |dir: &Path| -> std::collections::BTreeSet<String> {
        files_under(dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect()
    };
    let (low, high, all) = (ids_in(&a), ids_in(&b), ids_in(&c));
    assert!(!low.is_empty() && !high.is_empty(), "a shard holds no chunks");
    assert!(
        low.iter().all(|id| id.as_str() < "80"),
        "low shard holds high ids"
    );
    assert!(
        high.iter().all(|id| id.as_str() >= "80"),
        "high shard holds low ids"
    );
    // (The stores may hold more: chunks of lower-layer files the image
    // replaces, packed per layer for reuse.)
    assert!(
        named.is_subset(&(&low | &high)),
        "the shards lack chunks of the flist"
    );
    assert_eq!(
        all,
        &low | &high,
        "the replica does not hold what the shards hold"
    );
    std::fs::remove_dir_all(&a).unwrap();
    s.unpack_equals(&flist, &[], "one-replica-lost");
    std::fs::remove_dir_all(&c).unwrap();
    let err = s.bed.fl.fails(
        &[
            "unpack",
            "-flist",
            flist.to_str().unwrap(),
            s.path("all-lost").to_str().unwrap(),
        ],
        3,
    );
    assert!(err.contains("could not be read from any store"), "{err}");
    assert!(!s.path("all-lost").exists());
    // Ranges that leave ids uncovered are refused before anything is stored.
    let err = s.bed.fl.fails(
        &[
            "-image",
            &s.image,
            "-flist",
            s.path("x.fl").to_str().unwrap(),
            "-store",
            &format!("00-7f=dir://{}", a.display()),
        ],
        1,
    );
    assert!(err.contains("must cover 00-ff"), "{err}");
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn zdb_store_on_redis_and_secrets_stay_out() {
    if !root_or_skip(
        "zdb_store_on_redis_and_secrets_stay_out",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let s = setup();
    let redis = Server::redis();
    let store = format!("zdb://flmuser:zdb-Secret-77@127.0.0.1:{}", redis.1);
    let (flist, _) = s.pack("zdb.fl", std::slice::from_ref(&store));
    let raw = std::fs::read(&flist).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("zdb-Secret-77"),
        "the password was written into the flist"
    );
    let out = s
        .bed
        .fl
        .command()
        .args(["flist", "store", flist.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("zdb://flmuser@127.0.0.1:{}", redis.1)));
    s.unpack_equals(&flist, &[], "from-zdb");
    // The store goes down: a clear error naming it, and no flist.
    drop(redis);
    let started = std::time::Instant::now();
    let err = s.bed.fl.fails(
        &[
            "unpack",
            "-flist",
            flist.to_str().unwrap(),
            "-timeout",
            "2",
            s.path("down").to_str().unwrap(),
        ],
        5,
    );
    assert!(started.elapsed().as_secs() < 20, "no bounded timeout");
    assert!(err.contains("zdb://flmuser@127.0.0.1"), "{err}");
    assert!(!err.contains("zdb-Secret-77"), "{err}");
    // The store goes down during a pack: a proxy in front of a new redis
    // forwards 256 KiB of the upload, then drops its connections and stops
    // listening. Bounded retries, exit 5 naming the store, no flist.
    let redis = Server::redis();
    let cut = CutProxy::start(redis.1, 256 << 10);
    let store = format!("zdb://flmuser:zdb-Secret-77@127.0.0.1:{}", cut.port);
    let fresh = Flmount::new();
    let out = s.path("never.fl");
    let started = std::time::Instant::now();
    let err = fresh.fails(
        &[
            "-image",
            &s.image,
            "-flist",
            out.to_str().unwrap(),
            "-store",
            &store,
            "-timeout",
            "2",
        ],
        5,
    );
    assert!(started.elapsed().as_secs() < 60, "no bounded retries");
    assert!(
        cut.cut.load(std::sync::atomic::Ordering::SeqCst),
        "the store never went down"
    );
    let keys = run_ok(Command::new("redis-cli").args(["-p", &redis.1.to_string(), "dbsize"]));
    let keys: u64 = String::from_utf8_lossy(&keys.stdout).trim().parse().unwrap();
    assert!(keys >= 1, "the store went down before the pack stored anything");
    assert!(
        err.contains("unavailable")
            && err.contains(&format!("zdb://flmuser@127.0.0.1:{}", cut.port))
            && !err.contains("zdb-Secret-77"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "an flist was written though its chunks were not stored"
    );
}

/// A namespace with a password: flmount sends it with `SELECT ns pass`
/// (0-db's way); the right one packs and unpacks, a wrong or missing one is
/// refused, and the password is never written or printed. `keys` counts a
/// namespace's keys on the server.
fn namespace_passwords_are_sent_and_checked(port: u16, keys: &dyn Fn(&str) -> usize) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), pseudo_random(1_500_000, 4)).unwrap();
    std::fs::write(src.join("small"), b"small\n").unwrap();
    let fl = Flmount::new();
    let pack = |name: &str, url: &str| {
        let flist = tmp.path().join(name);
        let out = fl.run(&[
            "pack",
            "-flist",
            flist.to_str().unwrap(),
            "-store",
            url,
            src.to_str().unwrap(),
        ]);
        (flist, out)
    };
    let (flist, out) = pack("ok.fl", &format!("zdb://u:ns-Secret-55@127.0.0.1:{port}/secure"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(keys("secure") >= 3, "the chunks are not in the namespace");
    assert_eq!(keys("default"), 0, "chunks went to the default namespace");
    assert!(!String::from_utf8_lossy(&std::fs::read(&flist).unwrap()).contains("ns-Secret-55"));
    let target = tmp.path().join("unpacked");
    fl.ok(&[
        "unpack",
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &format!("zdb://u:ns-Secret-55@127.0.0.1:{port}/secure"),
        target.to_str().unwrap(),
    ]);
    assert_same_tree(
        &src,
        &target,
        &Ignore {
            dir_mtimes: true,
            ..Ignore::default()
        },
    );
    for (name, url, says) in [
        (
            "wrong.fl",
            format!("zdb://u:wrong-pw@127.0.0.1:{port}/secure"),
            "denied",
        ),
        ("none.fl", format!("zdb://127.0.0.1:{port}/secure"), "protected"),
    ] {
        let (flist, out) = pack(name, &url);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{name}: {err}");
        assert!(
            !err.contains("ns-Secret-55") && !err.contains("wrong-pw"),
            "{err}"
        );
        assert!(!flist.exists(), "{name}: an flist was written");
    }
}

/// A zdb store with a password and no namespace authenticates with AUTH
/// (a redis `requirepass`, 0-db's admin password); a wrong password is an
/// authentication failure (exit 4), never a store silently used without it.
#[test]
fn a_zdb_password_without_a_namespace_authenticates() {
    let s = setup();
    let redis = Server::redis_with(&["--requirepass", "srv-Secret-77"]);
    let good = format!("zdb://:srv-Secret-77@127.0.0.1:{}", redis.1);
    let (flist, log) = s.pack("auth.fl", std::slice::from_ref(&good));
    assert!(!log.contains("srv-Secret-77"), "the password reached the log");
    s.unpack_equals(&flist, &[good], "auth-out");
    let bad = format!("zdb://:wrong@127.0.0.1:{}", redis.1);
    let out = s.path("bad.fl");
    let err = s.bed.fl.fails(
        &[
            "-image",
            &s.image,
            "-flist",
            out.to_str().unwrap(),
            "-store",
            &bad,
        ],
        4,
    );
    assert!(!err.contains("wrong"), "the password reached the error: {err}");
    assert!(!out.exists());
    // No password: refused by the server, not written anywhere.
    let none = format!("zdb://127.0.0.1:{}", redis.1);
    s.bed.fl.fails(
        &[
            "-image",
            &s.image,
            "-flist",
            out.to_str().unwrap(),
            "-store",
            &none,
        ],
        4,
    );
}

#[test]
fn zdb_namespace_passwords_are_sent_and_checked() {
    // 0-db's namespace protocol, as a stand-in on the wire: redis has no
    // `SELECT ns password`, and 0-db is not in the test bed.
    let zdb = ZdbNamespaces::start("secure", "ns-Secret-55");
    namespace_passwords_are_sent_and_checked(zdb.port, &|ns| zdb.keys(ns));
}

/// The same against a real 0-db (github.com/threefoldtech/0-db, a small C
/// program: `make`), which the test bed cannot install:
/// `FLMOUNT_ZDB=/path/to/zdb cargo test --test flist -- --ignored real_0_db`.
#[test]
#[ignore = "needs a 0-db binary in FLMOUNT_ZDB (not in the test bed)"]
fn zdb_namespace_passwords_on_a_real_0_db() {
    let zdb = std::env::var("FLMOUNT_ZDB").expect("FLMOUNT_ZDB=/path/to/zdb");
    need("redis-cli");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Server::spawn(
        Command::new(zdb)
            .args(["--listen", "127.0.0.1", "--port", &port.to_string(), "--data"])
            .arg(dir.path().join("data"))
            .arg("--index")
            .arg(dir.path().join("index")),
        port,
        "0-db",
    );
    let cli = |args: &[&str]| {
        let out = run_ok(
            Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    cli(&["NSNEW", "secure"]);
    cli(&["NSSET", "secure", "password", "ns-Secret-55"]);
    cli(&["NSSET", "secure", "public", "0"]);
    let keys = |ns: &str| -> usize {
        let info = cli(&["NSINFO", ns]);
        info.lines()
            .find_map(|l| l.strip_prefix("entries: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no entries in NSINFO {ns}: {info}"))
    };
    namespace_passwords_are_sent_and_checked(port, &keys);
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn zdb_namespaces_are_selected() {
    if !root_or_skip(
        "zdb_namespaces_are_selected",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    need("redis-cli");
    let s = setup();
    let redis = Server::redis();
    // Redis names its namespaces (databases) by number; 0-db by name.
    let store = format!("zdb://127.0.0.1:{}/3", redis.1);
    let (flist, _) = s.pack("ns.fl", std::slice::from_ref(&store));
    let keys = |db: &str| -> u64 {
        let out = run_ok(Command::new("redis-cli").args(["-p", &redis.1.to_string(), "-n", db, "dbsize"]));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert!(keys("3") > 0, "no chunk in namespace 3");
    assert_eq!(keys("0"), 0, "chunks went to the default namespace");
    s.unpack_equals(&flist, &[], "from-ns");
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn http_and_s3_stores() {
    if !root_or_skip("http_and_s3_stores", "the fixture has device nodes and owners") {
        return;
    }
    let s = setup();
    // HTTP: a dir store served by any web server, read-only.
    let chunks = s.path("served");
    let (flist, _) = s.pack("http.fl", &[format!("dir://{}", chunks.display())]);
    let http = CountingHttp::start(&chunks);
    let from_http = [http.url()];
    let cache = s.path("unpack-cache");
    let with_cache = ["-cache", cache.to_str().unwrap(), "-timeout", "2"];
    s.unpack_equals_with(&flist, &from_http, "from-http", &with_cache);
    // With the store gone, a second unpack comes whole from the chunk cache.
    drop(http);
    s.unpack_equals_with(&flist, &from_http, "from-cache", &with_cache);

    // S3 (moto): credentials from the URL, bucket made beforehand.
    let (_moto, store) = Server::moto_bucket("flchunks");
    let (flist, _) = s.pack("s3.fl", std::slice::from_ref(&store));
    assert!(!String::from_utf8_lossy(&std::fs::read(&flist).unwrap()).contains("s3-Secret-99"));
    // Reading needs the secret again: give it with -store.
    s.unpack_equals(&flist, &[store], "from-s3");
}

#[test]
fn interop_with_an_independent_rfs_implementation() {
    let python = venv_bin("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/rfs_format.py");
    let tmp = tempfile::tempdir().unwrap();
    // Their flist, our unpack.
    let (theirs, chunks) = (tmp.path().join("theirs.fl"), tmp.path().join("chunks"));
    run_ok(
        Command::new(&python)
            .arg(&script)
            .arg("make")
            .arg(&theirs)
            .arg(&chunks),
    );
    let fl = Flmount::new();
    let target = tmp.path().join("unpacked");
    fl.ok(&[
        "unpack",
        "-flist",
        theirs.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    // Every entry of the tree the script writes (its TREE): type, mode,
    // owner, content and mtime.
    let big: Vec<u8> = (0..3 * 512 * 1024 + 123).map(|i| ((i * 7) % 251) as u8).collect();
    let listing = common::fstree::describe(&target);
    let names: Vec<&str> = listing.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "/",
            "/big",
            "/empty",
            "/etc",
            "/etc/hostname",
            "/etc/secret",
            "/link"
        ]
    );
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    for (path, kind, mode, owner, content) in [
        ("/etc", "dir", 0o755, (0, 0), None),
        (
            "/etc/hostname",
            "file",
            0o644,
            (0, 0),
            Some(&b"made-by-python\n"[..]),
        ),
        ("/etc/secret", "file", 0o600, (0, 42), Some(&b"root only\n"[..])),
        ("/big", "file", 0o755, (1000, 1000), Some(&big[..])),
        ("/empty", "file", 0o644, (0, 0), Some(&b""[..])),
    ] {
        let info = &listing[path];
        assert_eq!((info.kind, info.mode), (kind, mode), "{path}");
        if root {
            assert_eq!((info.uid, info.gid), owner, "{path}");
        }
        if let Some(data) = content {
            assert_eq!(info.content, sha256_hex(data), "{path}: content");
            assert_eq!(info.size, data.len() as u64, "{path}");
        }
        if kind == "file" {
            assert_eq!(info.mtime, (1_700_000_000, 0), "{path}: mtime");
        }
    }
    assert_eq!(listing["/link"].kind, "symlink");
    assert_eq!(listing["/link"].content, "etc/hostname");
    // Our flist, their decoder, checked against our extraction.
    let reg = Registry::start();
    let layers = vec![(Compression::Gzip, tar(&rules_layers()[0]))];
    let image = reg.push_layers("fl/interop", layers, &tmp.path().join("layout"));
    let flat = tmp.path().join("flat");
    fl.ok(&["-image", &image, "-extractto", flat.to_str().unwrap()]);
    let ours = tmp.path().join("ours.fl");
    let our_chunks = tmp.path().join("our-chunks");
    fl.ok(&[
        "-image",
        &image,
        "-flist",
        ours.to_str().unwrap(),
        "-store",
        &format!("dir://{}", our_chunks.display()),
    ]);
    let out = run_ok(
        Command::new(&python)
            .arg(&script)
            .arg("check")
            .arg(&ours)
            .arg(&our_chunks)
            .arg(&flat),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("checked") && !said.contains("checked 0 "), "{said}");
}

#[test]
fn a_corrupt_chunk_is_an_error_never_data() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let layers = vec![(
        Compression::Gzip,
        tar(&[common::tarball::E::file("f", pseudo_random(100_000, 9))]),
    )];
    let image = reg.push_layers("fl/corrupt", layers, &tmp.path().join("layout"));
    let fl = Flmount::new();
    let chunks = tmp.path().join("chunks");
    let flist = tmp.path().join("c.fl");
    fl.ok(&[
        "-image",
        &image,
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &format!("dir://{}", chunks.display()),
    ]);
    for shard in std::fs::read_dir(&chunks).unwrap() {
        let shard = shard.unwrap();
        if !shard.file_type().unwrap().is_dir() {
            continue; // the store's identity file
        }
        for blob in std::fs::read_dir(shard.path()).unwrap() {
            let p = blob.unwrap().path();
            let mut data = std::fs::read(&p).unwrap();
            data[20] ^= 0x40;
            std::fs::write(&p, data).unwrap();
        }
    }
    let err = fl.fails(
        &[
            "unpack",
            "-flist",
            flist.to_str().unwrap(),
            tmp.path().join("out").to_str().unwrap(),
        ],
        6,
    );
    assert!(err.contains("does not match its id"), "{err}");
    assert!(!tmp.path().join("out").exists());
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn packing_a_directory_round_trips_it() {
    if !root_or_skip(
        "packing_a_directory_round_trips_it",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let s = setup();
    let store = format!("dir://{}", s.path("dir-chunks").display());
    let flist = s.path("dir.fl");
    s.bed.fl.ok(&[
        "pack",
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &store,
        s.flat.to_str().unwrap(),
    ]);
    s.unpack_equals(&flist, &[], "dir-round-trip");
    let out = s
        .bed
        .fl
        .run(&["flist", "inspect", "-json", flist.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Regular files in the tree, hard-linked names counted once.
    let files = files_under(&s.flat)
        .iter()
        .map(|p| p.symlink_metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(files > 10);
    assert_eq!(info["files"], files, "{info}");
    assert_eq!(info["routes"][0]["url"], store);
    // Packed again, as JSON: nothing uploaded.
    let again = s.path("dir-again.fl");
    let out = s.bed.fl.run(&[
        "pack",
        "-json",
        "-flist",
        again.to_str().unwrap(),
        "-store",
        &store,
        s.flat.to_str().unwrap(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["packed"]["uploaded"], 0, "{summary}");
    assert_eq!(summary["packed"]["files"], files, "{summary}");
}
