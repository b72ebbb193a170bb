//! Faults with nothing lost and nothing wrong trusted: a full disk under the
//! workdir or the target, and flmount killed (SIGKILL) mid-way through
//! pull, extraction, pack, overlay preparation and FUSE serving, each as
//! soon as its work is seen under way, many times over; the next run always
//! finishes and equals a clean run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::RulesImage;
use common::fstree::{assert_same_tree, Ignore};
use common::mounts::{Mounted, OwnMount};
use common::*;

/// A small tmpfs at `dir`, unmounted on drop.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
        );
        SmallFs(dir.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn a_full_disk_is_a_clear_error_and_leaves_nothing_half_done() {
    if !root_or_skip(
        "a_full_disk_is_a_clear_error_and_leaves_nothing_half_done",
        "mounting a small tmpfs",
    ) {
        return;
    }
    let img = RulesImage::new("rel/full");

    // The target's filesystem fills up: exit 7, no half-extracted target.
    let small = SmallFs::mount(&img.path("small-target"), "1m");
    let target = small.0.join("rootfs");
    let err = img
        .bed
        .fl
        .fails(&["-image", &img.image, "-extractto", target.to_str().unwrap()], 7);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!target.exists(), "a partial rootfs was left at the target");
    assert_eq!(
        std::fs::read_dir(&small.0).unwrap().count(),
        0,
        "staging was left behind"
    );

    // A dir:// chunk store's filesystem fills up while packing: a local
    // I/O error (exit 7), not a store to retry, and no flist.
    let small_store = SmallFs::mount(&img.path("small-store"), "256k");
    let flist = img.path("full.fl");
    let err = img.bed.fl.fails(
        &[
            "-image",
            &img.image,
            "-flist",
            flist.to_str().unwrap(),
            "-store",
            &format!("dir://{}", small_store.0.join("chunks").display()),
        ],
        7,
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!flist.exists(), "an flist was written over a failed store");
    drop(small_store);

    // The workdir's filesystem fills up during a pull: a clear error, and
    // nothing unverified in the blob store. With room again, the same
    // workdir pulls and extracts exactly.
    let work_fs = SmallFs::mount(&img.path("small-work"), "1m");
    let mut fl = Flmount::new();
    fl.workdir = work_fs.0.join("work");
    let err = fl.fails(&["-image", &img.image], 7);
    assert!(err.contains("No space left on device"), "{err}");
    for blob in std::fs::read_dir(fl.workdir.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let hex = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            sha256_hex(&std::fs::read(&path).unwrap()),
            hex,
            "an unverified blob was kept"
        );
    }
    run_ok(
        Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&work_fs.0),
    );
    let out = img.path("after-full");
    fl.ok(&["-image", &img.image, "-extractto", out.to_str().unwrap()]);
    assert_same_tree(&img.flat, &out, &Ignore::default());
    drop(work_fs);
}

/// Whether some entry directly in `dir` has a name starting with `prefix`
/// and holding `part`.
fn has_entry(dir: &Path, prefix: &str, part: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix) && name.contains(part)
        })
    })
}

/// Chunk files (64 hex characters) below `dir`.
fn chunk_files(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .count()
}

/// Waits until `state` holds (true) or `child` exits by itself (false),
/// within a generous deadline; polls every millisecond, so the state is
/// seen about as soon as it holds.
fn wait_for_state(child: &mut std::process::Child, what: &str, mut state: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if state() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: neither the state to kill at nor the end came within 120 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn killed_mid_way_the_next_run_equals_a_clean_run() {
    if !root_or_skip(
        "killed_mid_way_the_next_run_equals_a_clean_run",
        "the fixture has device nodes and owners; overlay mounts",
    ) {
        return;
    }
    let img = RulesImage::new("rel/kill");
    // One image per round: the rules layers and a layer of its own, so each
    // round has something new to download, extract, pack, prepare for
    // overlayfs and serve.
    let rounds = 8;
    let images: Vec<String> = (0..rounds)
        .map(|r| {
            let mut layers: Vec<(Compression, Vec<u8>)> = common::fixtures::rules_layers()
                .iter()
                .map(|e| (Compression::Gzip, common::tarball::tar(e)))
                .collect();
            layers.push((
                Compression::Gzip,
                common::tarball::tar(&[common::tarball::E::file(
                    format!("round-{r}"),
                    pseudo_random(3 << 20, 1000 + r as u64),
                )]),
            ));
            img.bed.reg.push_layers(
                &format!("rel/kill-{r}"),
                layers,
                &img.path(&format!("layout-{r}")),
            )
        })
        .collect();
    let fl = Flmount::new();
    let (out, mnt, fmnt) = (img.path("out"), img.path("mnt"), img.path("fmnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&fmnt).unwrap();
    // Whatever is left mounted there if the test fails (a dead FUSE mount
    // of a killed server, an overlay) is unmounted when it ends.
    let _unmount = [OwnMount(mnt.clone()), OwnMount(fmnt.clone())];
    let fuse_mounted = || mounted_at(&fmnt, Some("fuse.flmount"));
    // Mounted and answering: statfs always reaches the server (a dead
    // server's mount answers ENOTCONN; attributes may come from a cache).
    let fuse_answer = || nix::sys::statfs::statfs(&fmnt).map(drop);
    let fuse_serving = || fuse_mounted() && fuse_answer().is_ok();
    let spawn = |args: &[&str]| {
        fl.command()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let store = fl.workdir.join("store");
    let mut kills: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut left_stale = 0;
    for (round, image) in images.iter().enumerate() {
        // pull: through a proxy that stops the first long answer (a layer)
        // after 1 MiB and holds the connection: killed with a partial
        // download in tmp/, always.
        let proxy = FaultProxy::with(img.bed.reg.port, 1, Fault::StallAfter(1 << 20));
        let via_proxy = image.replacen(&img.bed.reg.addr(), &proxy.addr(), 1);
        let mut child = spawn(&["-image", &via_proxy]);
        let partial = || {
            proxy.failed.load(std::sync::atomic::Ordering::SeqCst) == 1
                && has_entry(&fl.workdir.join("tmp"), "sha256-", ".partial")
        };
        let stalled = wait_for_state(&mut child, "pull", partial);
        assert!(stalled, "round {round}: the pull ended though its layer stalled");
        let runs: Vec<(&str, Vec<String>)> = vec![
            ("pull", vec![]),
            ("extract", vec!["-extractto".into(), out.display().to_string()]),
            (
                "pack",
                vec![
                    "-flist".into(),
                    img.path("k.fl").display().to_string(),
                    "-store".into(),
                    format!("dir://{}", img.path(&format!("chunks-{round}")).display()),
                ],
            ),
            ("overlay", vec!["-mount".into(), mnt.display().to_string()]),
            (
                "fuse",
                vec!["-fuse".into(), "-mount".into(), fmnt.display().to_string()],
            ),
        ];
        for (what, extra) in runs {
            if what == "extract" {
                let _ = std::fs::remove_dir_all(&out);
            }
            if what != "pull" {
                let mut args = vec!["-image", image.as_str()];
                args.extend(extra.iter().map(String::as_str));
                child = spawn(&args);
            }
            let stored = chunk_files(&store);
            // Where each run is killed: as soon as its work is seen under
            // way. FUSE servers: while packing in even rounds, while
            // serving in odd ones.
            let reached = match what {
                "pull" => true,
                "extract" => wait_for_state(&mut child, what, || {
                    has_entry(img.bed.tmp.path(), ".out", ".flmount-")
                }),
                "pack" => wait_for_state(&mut child, what, || {
                    chunk_files(&img.path(&format!("chunks-{round}"))) > 0
                }),
                "overlay" => wait_for_state(&mut child, what, || {
                    has_entry(&fl.workdir.join("overlays"), ".", ".flmount-")
                }),
                _ if round % 2 == 0 => wait_for_state(&mut child, "fuse (packing)", || {
                    chunk_files(&store) > stored && !fuse_mounted()
                }),
                _ => wait_for_state(&mut child, "fuse (serving)", fuse_serving),
            };
            let key = match what {
                "fuse" if round % 2 == 0 => "fuse while packing",
                "fuse" => "fuse while serving",
                other => other,
            };
            if reached && child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                *kills.entry(key).or_default() += 1;
            }
            child.wait().unwrap();
            if what == "overlay" && mounted_at(&mnt, None) {
                fl.ok(&["-umount", mnt.to_str().unwrap()]);
            }
            if what == "fuse" {
                // fusermount3's auto_unmount takes the mount down; but a
                // server killed while fusermount3 was mounting can leave a
                // dead mount (ENOTCONN), which the next run must clear.
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while fuse_mounted() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if fuse_mounted() {
                    match fuse_answer() {
                        Err(nix::errno::Errno::ENOTCONN) => left_stale += 1,
                        // Unmounted just now, after the wait.
                        _ if !fuse_mounted() => {}
                        other => panic!("a killed FUSE server left a mount that is not dead: {other:?}"),
                    }
                }
            }
        }
    }
    eprintln!("kills: {kills:?}; {left_stale} dead mounts left for the next run to clear");
    // Every pull was killed mid-download, every FUSE server of an odd round
    // while serving (both wait for a state that lasts until killed); the
    // others at their first visible work, which the fixture makes long
    // enough to be seen in most rounds: at least once each.
    assert_eq!(kills.get("pull"), Some(&rounds), "{kills:?}");
    assert_eq!(kills.get("fuse while serving"), Some(&(rounds / 2)), "{kills:?}");
    for what in ["extract", "pack", "overlay", "fuse while packing"] {
        assert!(
            kills.get(what).is_some_and(|&n| n >= 1),
            "no {what} run was killed mid-way: {kills:?}"
        );
    }

    // Nothing left half-written is trusted, and no stale lock blocks: each
    // run now finishes (no -validate-cache: nothing is repaired first) and
    // equals a clean run.
    let clean = Flmount::new();
    for (round, image) in images.iter().enumerate() {
        let _ = std::fs::remove_dir_all(&out);
        fl.ok(&["-image", image, "-extractto", out.to_str().unwrap()]);
        let reference = img.path(&format!("clean-{round}"));
        clean.ok(&["-image", image, "-extractto", reference.to_str().unwrap()]);
        assert_same_tree(&reference, &out, &Ignore::default());
    }
    // Every blob the killed runs kept is whole: it hashes to its name.
    let blobs = files_under(&fl.workdir.join("blobs"));
    // The rules layers, and each round's layer, config and manifest.
    assert_eq!(blobs.len(), 3 + 3 * rounds, "{blobs:?}");
    for blob in &blobs {
        let hex = blob.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            sha256_hex(&std::fs::read(blob).unwrap()),
            hex,
            "{} does not match its digest",
            blob.display()
        );
    }
    // Staging lives beside its target (`.out.flmount-*`): the next run to
    // that target removed what the killed ones left.
    assert!(
        !has_entry(img.bed.tmp.path(), ".out", ".flmount-"),
        "staging of a killed extraction left beside the target"
    );
    let last = &images[rounds - 1];
    let flist = img.path("k.fl");
    // Into the store of round 0, half-filled by a killed pack.
    fl.ok(&[
        "-image",
        last,
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &format!("dir://{}", img.path("chunks-0").display()),
    ]);
    let unpacked = img.path("unpacked");
    fl.ok(&[
        "unpack",
        "-flist",
        flist.to_str().unwrap(),
        unpacked.to_str().unwrap(),
    ]);
    assert_same_tree(&out, &unpacked, &Ignore::default());
    // Each image mounts with overlayfs, equal to its clean extraction: the
    // layer directories whose preparation was killed are prepared again.
    for (round, image) in images.iter().enumerate() {
        fl.ok(&["-image", image, "-mount", mnt.to_str().unwrap()]);
        assert_same_tree(
            &img.path(&format!("clean-{round}")),
            &mnt,
            &Ignore {
                dir_mtimes: true,
                ..Ignore::default()
            },
        );
        fl.ok(&["-umount", mnt.to_str().unwrap()]);
    }
    // A killed preparation's staging directory stays in overlays/ (the
    // next preparation of that layer makes its own) until gc removes it.
    fl.ok(&["gc"]);
    assert!(
        !has_entry(&fl.workdir.join("overlays"), ".", ".flmount-"),
        "gc left the staging of a killed overlay preparation in overlays/"
    );
    // The same mount point serves the image through FUSE again, and once
    // unmounted nothing is left there (no dead mount stacked below).
    let mut server = Mounted::start(&fl, &["-image", last, "-fuse"], &fmnt);
    assert!(fuse_serving());
    assert_same_tree(&out, &fmnt, &Ignore::default());
    fl.ok(&["-umount", fmnt.to_str().unwrap()]);
    // A clean exit, and no mount left at fmnt.
    server.wait_exit(Duration::from_secs(120));
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn concurrent_runs_on_one_workdir_equal_serial_runs() {
    if !root_or_skip(
        "concurrent_runs_on_one_workdir_equal_serial_runs",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let img = RulesImage::new("rel/concurrent");
    let fl = Flmount::new();
    let store = format!("dir://{}", img.path("chunks").display());
    // Six processes at once on one fresh workdir: two extractions, two
    // packs of the same image into one store, an export and a plain pull.
    let jobs: Vec<Vec<String>> = vec![
        vec!["-extractto".into(), img.path("x1").display().to_string()],
        vec!["-extractto".into(), img.path("x2").display().to_string()],
        vec![
            "-flist".into(),
            img.path("a.fl").display().to_string(),
            "-store".into(),
            store.clone(),
        ],
        vec![
            "-flist".into(),
            img.path("b.fl").display().to_string(),
            "-store".into(),
            store.clone(),
        ],
        vec!["-extractto".into(), "-".into()],
        vec![],
    ];
    let children: Vec<_> = jobs
        .iter()
        .map(|extra| {
            fl.command()
                .args(["-image", &img.image])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (job, out) in jobs.iter().zip(&outputs) {
        assert!(
            out.status.success(),
            "{job:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for x in ["x1", "x2"] {
        assert_same_tree(&img.flat, &img.path(x), &Ignore::default());
    }
    for fl_name in ["a.fl", "b.fl"] {
        let dest = img.path(&format!("unpacked-{fl_name}"));
        fl.ok(&[
            "unpack",
            "-flist",
            img.path(fl_name).to_str().unwrap(),
            dest.to_str().unwrap(),
        ]);
        assert_same_tree(&img.flat, &dest, &Ignore::default());
    }
    // The export, untarred, is the same tree too.
    let tarball = img.path("rootfs.tar");
    std::fs::write(&tarball, &outputs[4].stdout).unwrap();
    let untarred = img.path("untarred");
    untar(&tarball, &untarred);
    assert_same_tree(&img.flat, &untarred, &Ignore::default());
}

#[test]
fn a_manifest_naming_a_missing_blob_is_a_clear_error() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![
        (
            Compression::Gzip,
            common::tarball::tar(&[common::tarball::E::file("a", b"a")]),
        ),
        (
            Compression::Gzip,
            common::tarball::tar(&[common::tarball::E::file("b", b"b")]),
        ),
    ];
    let image = reg.push_layers("rel/missing", layers, &tmp.path().join("layout"));
    let fl = Flmount::new();
    let info: serde_json::Value =
        serde_json::from_slice(&fl.run(&["inspect", &image, "-json"]).stdout).unwrap();
    let layer = info["layers"][1]["digest"].as_str().unwrap().to_owned();
    // The registry lost a layer its manifest names.
    std::fs::remove_file(reg.blob_data_path(layer.strip_prefix("sha256:").unwrap())).unwrap();
    let fresh = Flmount::new();
    let err = fresh.fails(&["-image", &image], 3);
    assert!(err.contains("not found"), "{err}");
    // Nothing of that blob is kept, and what was fetched is verified.
    assert!(!fresh.blob(&layer).exists());
    for blob in std::fs::read_dir(fresh.workdir.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let hex = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), hex);
    }
}

/// Passes what is written on to `inner`, hashing it: the diff ID of a tar
/// streamed into a compressor.
struct HashingWriter<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a tar holding `bomb` (`size` zero bytes) then `after` into
/// `compressor`; returns the compressor and the tar's diff ID. The tar is
/// never held whole.
fn zero_bomb_tar<W: std::io::Write>(compressor: W, size: u64) -> (W, String) {
    use sha2::Digest;
    let mut tar = tar::Builder::new(HashingWriter {
        inner: compressor,
        hash: sha2::Sha256::new(),
    });
    for (name, size, data) in [
        (
            "bomb",
            size,
            &mut std::io::Read::take(std::io::repeat(0), size) as &mut dyn std::io::Read,
        ),
        ("after", 6, &mut &b"after\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data).unwrap();
    }
    let w = tar.into_inner().unwrap();
    (w.inner, format!("sha256:{}", hex::encode(w.hash.finalize())))
}

fn gzip_bomb(size: u64) -> PrebuiltLayer {
    let (gz, diff_id) = zero_bomb_tar(
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()),
        size,
    );
    PrebuiltLayer {
        media_type: Compression::Gzip.media_type(),
        blob: gz.finish().unwrap(),
        diff_id,
    }
}

/// A zstd bomb; with `window_log`, its frame asks the decoder for a window
/// of 2^window_log bytes.
fn zstd_bomb(size: u64, window_log: Option<u32>) -> PrebuiltLayer {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    if let Some(log) = window_log {
        encoder.long_distance_matching(true).unwrap();
        encoder.window_log(log).unwrap();
    }
    let (zst, diff_id) = zero_bomb_tar(encoder, size);
    PrebuiltLayer {
        media_type: Compression::Zstd.media_type(),
        blob: zst.finish().unwrap(),
        diff_id,
    }
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn compression_bombs_are_streamed_in_bounded_memory() {
    if !root_or_skip(
        "compression_bombs_are_streamed_in_bounded_memory",
        "mounting small tmpfs targets",
    ) {
        return;
    }
    const GIB: u64 = 1 << 30;
    // The memory goal of extraction (issue 3), for any layer.
    const MAX_RSS_KIB: u64 = 100 << 10;
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let bombs = [("gzip", gzip_bomb(GIB)), ("zstd", zstd_bomb(GIB, None))];
    for (name, bomb) in bombs {
        assert!(
            bomb.blob.len() < 2 << 20,
            "{name}: a {} byte blob is no bomb",
            bomb.blob.len()
        );
        let spec = ImageSpec {
            prebuilt: vec![bomb],
            ..ImageSpec::new(name, Vec::new())
        };
        let image = reg.push_spec(&format!("bomb/{name}"), &spec, &tmp.path().join(name));
        let fl = Flmount::new();
        let measured = |args: &[&str]| {
            let (out, rss) = run_measuring_memory(fl.command().args(args));
            eprintln!("{name}: flmount {args:?}: peak {} MiB", rss >> 10);
            assert!(
                rss < MAX_RSS_KIB,
                "{name}: flmount {args:?} peaked at {} MiB",
                rss >> 10
            );
            out
        };

        // A target too small for it: exit 7, nothing left behind.
        let small = SmallFs::mount(&tmp.path().join(format!("{name}-small")), "64m");
        let target = small.0.join("rootfs");
        let out = measured(&["-image", &image, "-extractto", target.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{name}: {err}");
        assert!(err.contains("No space left on device"), "{err}");
        assert_eq!(
            std::fs::read_dir(&small.0).unwrap().count(),
            0,
            "{name}: staging left behind"
        );
        drop(small);

        // Room enough: the whole GiB is written, in bounded memory.
        let roomy = SmallFs::mount(&tmp.path().join(format!("{name}-roomy")), "1100m");
        let target = roomy.0.join("rootfs");
        let out = measured(&["-image", &image, "-extractto", target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::metadata(target.join("bomb")).unwrap().len(), GIB);
        assert_eq!(std::fs::read(target.join("after")).unwrap(), b"after\n");
        drop(roomy);

        // Packed into an flist: the zeros are stored once, in bounded memory.
        let store = tmp.path().join(format!("{name}-store"));
        let flist = tmp.path().join(format!("{name}.fl"));
        let out = measured(&[
            "-image",
            &image,
            "-flist",
            flist.to_str().unwrap(),
            "-store",
            &format!("dir://{}", store.display()),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stored = bytes_under(&store);
        assert!(
            stored < 1 << 20,
            "{name}: {stored} bytes stored for a GiB of zeros"
        );
        let out = fl.run(&["flist", "inspect", "-json", flist.to_str().unwrap()]);
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["bytes"].as_u64(), Some(GIB + 6), "{name}: {info}");
    }
}

/// zstd frames name the window their decoder needs: up to 128 MiB (zstd's
/// default limit, `window_log` 27) is accepted; a frame asking for 2 GiB
/// is refused by the decoder before anything is allocated, and no target
/// is left.
#[test]
fn zstd_windows_over_128_mib_are_refused_and_up_to_it_accepted() {
    const MAX_RSS_KIB: u64 = 100 << 10;
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    for (name, log, size) in [("w27", 27, 140u64 << 20), ("w31", 31, 64 << 20)] {
        let spec = ImageSpec {
            prebuilt: vec![zstd_bomb(size, Some(log))],
            ..ImageSpec::new(name, Vec::new())
        };
        let image = reg.push_spec(&format!("bomb/{name}"), &spec, &tmp.path().join(name));
        fl.ok(&["-image", &image]);
        let target = tmp.path().join(format!("{name}-rootfs"));
        let (out, rss) = run_measuring_memory(fl.command().args([
            "-image",
            &image,
            "-extractto",
            target.to_str().unwrap(),
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{name}: peak {} MiB: {err}", rss >> 10);
        if log <= 27 {
            assert!(out.status.success(), "a 2^{log} window was refused: {err}");
            assert_eq!(std::fs::metadata(target.join("bomb")).unwrap().len(), size);
            assert_eq!(std::fs::read(target.join("after")).unwrap(), b"after\n");
        } else {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains("zstd") && err.contains("Frame requires too much memory"),
                "not refused for its window: {err}"
            );
            assert!(!target.exists());
            assert!(rss < MAX_RSS_KIB, "peaked at {} MiB", rss >> 10);
        }
    }
}
