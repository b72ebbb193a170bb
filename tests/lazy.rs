//! Reading gzip layers from the middle. Lazy mounts straight from the
//! registry (`flmount index`, `-mount -lazy`), against the real registry
//! and kernel FUSE: the mounted tree equals `umoci unpack`, no layer is
//! downloaded, a small read costs one part of one layer, an index pushed
//! next to the image is found by any machine, and a registry that serves
//! other bytes than the image's gives EIO, never wrong bytes. Indexes that
//! do not fit the image, and layers that cannot have one, are refused with
//! the reason; a zstd layer is fetched whole, once. And extraction: a large layer is inflated by several threads
//! from its seek points, with the same result as `umoci unpack`.

mod common;

use std::path::Path;

use common::fixtures::{rules_layers, umoci_unpack};
use common::fstree::{assert_same_tree, Ignore};
use common::mounts::{fuse_or_skip, Mounted};
use common::tarball::{tar, E};
use common::*;

/// Text-like content: compresses, with back-references across blocks.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words: [&[u8]; 8] = [
        b"layer ",
        b"index ",
        b"span ",
        b"gzip ",
        b"window ",
        b"\n",
        b"flmount ",
        b"registry ",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 61) as usize]);
        if x.is_multiple_of(13) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A layer of several gzip intervals (4 MiB each): big files that cross
/// them, incompressible content, and many small files in between.
fn big_layer() -> Vec<E> {
    let mut entries = vec![
        E::dir("big"),
        E::file("big/text", text(6 << 20, 1)),
        E::file("big/random", pseudo_random(3 << 20, 2)),
    ];
    entries.push(E::dir("many"));
    for i in 0..300 {
        entries.push(E::file(
            format!("many/f{i:03}"),
            text(1000 + i * 97, 10 + i as u64),
        ));
    }
    entries.push(E::file("big/last", text(5 << 20, 3)));
    entries.push(E::hardlink("big/last-link", "big/last"));
    entries
}

struct LazyImage {
    bed: Bed,
    image: String,
    flat: std::path::PathBuf,
    index: std::path::PathBuf,
    layers: Vec<String>,
}

fn lazy_image() -> LazyImage {
    let bed = Bed::new();
    let mut layers: Vec<_> = rules_layers()
        .iter()
        .map(|e| (Compression::Gzip, tar(e)))
        .collect();
    layers.push((Compression::GzipDefault, tar(&big_layer())));
    // A plain tar layer: read by range, no checkpoints.
    let plain = [
        E::dir("plain"),
        E::file("plain/text", text(700_000, 4)),
        E::file("plain/small", "plain\n"),
    ];
    layers.push((Compression::None, tar(&plain)));
    let (image, written) = bed
        .reg
        .push_layers_written("lazy/app", layers, &bed.path("layout"));
    let flat = umoci_unpack(&bed.path("layout"), &bed.path("umoci-bundle"));
    let index = bed.path("app.index.fl");
    let out = bed
        .fl
        .command()
        .args(["index", &image, "-index", s(&index), "-json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packed = &stats["packed"];
    // The start of each gzip layer, and three more in the big one.
    assert!(packed["checkpoints"].as_u64().unwrap() >= 4 + 3, "{stats}");
    assert_eq!(
        packed["index_bytes"].as_u64(),
        Some(std::fs::metadata(&index).unwrap().len())
    );
    LazyImage {
        bed,
        image,
        flat,
        index,
        layers: written.layers,
    }
}

/// Bytes in the workdir's blob cache.
fn cached_bytes(fl: &Flmount) -> u64 {
    bytes_under(&fl.workdir.join("blobs"))
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_lazy_mount_equals_umoci_and_downloads_no_layer() {
    if !fuse_or_skip("a_lazy_mount_equals_umoci_and_downloads_no_layer") {
        return;
    }
    let img = lazy_image();
    let layer_bytes: u64 = img
        .layers
        .iter()
        .map(|d| std::fs::metadata(img.bed.fl.blob(d)).unwrap().len())
        .sum();

    // Another machine: a fresh workdir, the index handed over as a file.
    let other = Flmount::new();
    let mnt = img.bed.path("mnt");
    let cache = img.bed.path("cache");
    let args = [
        "-image",
        &img.image,
        "-lazy",
        "-index",
        s(&img.index),
        "-cache",
        s(&cache),
    ];
    let m = Mounted::start(&other, &args, &mnt);
    assert!(
        cached_bytes(&other) < 16 << 10,
        "layers were downloaded: {} bytes cached",
        cached_bytes(&other)
    );
    // One small file: one part of one layer, not the layer.
    let small = std::fs::read(mnt.join("many/f150")).unwrap();
    assert_eq!(small, text(1000 + 150 * 97, 160));
    let log = m.stop();
    let (parts, bytes) = parts_read(&log);
    assert_eq!(parts, 1, "{log}");
    assert!(
        bytes < layer_bytes / 3,
        "{bytes} of {layer_bytes} layer bytes read for one small file:\n{log}"
    );

    // The whole tree, as umoci unpacks it (a cold cache again).
    std::fs::remove_dir_all(&cache).unwrap();
    let m = Mounted::start(&other, &args, &mnt);
    assert_same_tree(&img.flat, &mnt, &Ignore::default());
    let log = m.stop();
    let (parts, bytes) = parts_read(&log);
    assert!(parts > 0 && bytes <= layer_bytes + (64 << 10), "{log}");
    assert!(cached_bytes(&other) < 16 << 10, "layers were downloaded");

    // An rfs reader (written from the format alone) reads the index's
    // tree as umoci unpacks it; its content is no store's chunks, so
    // such a reader finds none (a clean failure, not wrong bytes).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/rfs_format.py");
    let out = run_ok(
        std::process::Command::new(common::servers::venv_bin("python"))
            .arg(&script)
            .args(["tree", s(&img.index), s(&img.flat)]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checked"),
        "{out:?}"
    );
    let empty = img.bed.path("no-chunks");
    std::fs::create_dir_all(&empty).unwrap();
    let out = std::process::Command::new(common::servers::venv_bin("python"))
        .arg(&script)
        .args(["check", s(&img.index), s(&empty), s(&img.flat)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FileNotFoundError"),
        "{out:?}"
    );

    // The index in the workdir: found without -index.
    let here = Flmount::new();
    here.ok(&["index", &img.image]);
    let m = Mounted::start(&here, &["-image", &img.image, "-lazy"], &mnt);
    assert_eq!(
        std::fs::read(mnt.join("big/last-link")).unwrap(),
        text(5 << 20, 3)
    );
    m.stop();
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn an_index_pushed_next_to_the_image_is_found_by_every_mount() {
    if !fuse_or_skip("an_index_pushed_next_to_the_image_is_found_by_every_mount") {
        return;
    }
    let bed = Bed::new();
    let layers = vec![
        (Compression::GzipDefault, tar(&big_layer())),
        (Compression::Gzip, tar(&[E::file("etc/motd", "lazy\n")])),
    ];
    let (image, written) = bed
        .reg
        .push_layers_written("lazy/pushed", layers, &bed.path("layout"));
    // Pushed twice (a rebuild): one artifact listed, the latest.
    bed.fl.ok(&["index", &image, "-push"]);
    let err = bed.fl.ok(&["index", &image, "-push"]);
    assert!(err.contains("pushed the seek index"), "{err}");
    // Debian's docker-registry has no referrers API: the fallback tag
    // lists the artifact.
    let tag = written.manifest.replace(':', "-");
    let url = format!("http://{}/v2/lazy/pushed/manifests/{tag}", bed.reg.addr());
    let out = run_ok(std::process::Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.index.v1+json",
        &url,
    ]));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let artifacts = listed["manifests"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{listed}");
    assert_eq!(
        artifacts[0]["artifactType"],
        "application/vnd.flmount.seekindex.v1"
    );

    // A machine that never saw the image: nothing but the reference.
    let other = Flmount::new();
    let mnt = bed.path("mnt");
    let m = Mounted::start(&other, &["-image", &image, "-lazy"], &mnt);
    assert_eq!(std::fs::read(mnt.join("etc/motd")).unwrap(), b"lazy\n");
    assert_eq!(std::fs::read(mnt.join("big/text")).unwrap(), text(6 << 20, 1));
    let log = m.stop();
    assert!(log.contains("fetched the seek index"), "{log}");
    assert!(cached_bytes(&other) < 1 << 20, "layers were downloaded");
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_zstd_layer_is_fetched_whole_once_and_served() {
    if !fuse_or_skip("a_zstd_layer_is_fetched_whole_once_and_served") {
        return;
    }
    let bed = Bed::new();
    let zstd_files = [
        E::dir("z"),
        E::file("z/text", text(3 << 20, 7)),
        E::file("z/small", "zstd\n"),
    ];
    let layers = vec![
        (Compression::GzipDefault, tar(&big_layer())),
        (Compression::Zstd, tar(&zstd_files)),
    ];
    let (image, written) = bed
        .reg
        .push_layers_written("lazy/zstd", layers, &bed.path("layout"));
    // umoci reads no zstd layers: the reference is -extractto (equal to
    // umoci for every gzip image of these tests).
    let flat = bed.path("flat");
    bed.fl.ok(&["-image", &image, "-extractto", s(&flat)]);
    let index = bed.path("z.index.fl");
    bed.fl.ok(&["index", &image, "-index", s(&index)]);
    let zstd_bytes = std::fs::metadata(bed.fl.blob(&written.layers[1])).unwrap().len();

    let other = Flmount::new();
    let mnt = bed.path("mnt");
    let m = Mounted::start(&other, &["-image", &image, "-lazy", "-index", s(&index)], &mnt);
    assert_eq!(std::fs::read(mnt.join("z/small")).unwrap(), b"zstd\n");
    // No layer names the root: its mtime is when each tree was made.
    let dirs = Ignore {
        dir_mtimes: true,
        ..Ignore::default()
    };
    assert_same_tree(&flat, &mnt, &dirs);
    let log = m.stop();
    assert_eq!(
        log.matches("is zstd-compressed").count(),
        1,
        "fetched whole once:\n{log}"
    );
    let (_, bytes) = parts_read(&log);
    assert!(bytes >= zstd_bytes, "{log}");
    assert!(
        cached_bytes(&other) < 16 << 10,
        "layers were stored in the workdir"
    );
}

/// `read N parts of the image's layers (X B) ...` from a mount's log.
fn parts_read(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("of the image's layers"))
        .unwrap_or_else(|| panic!("no layer statistics in the log:\n{log}"));
    let after = &line[line.find("read ").unwrap() + 5..];
    let parts: u64 = after.split_whitespace().next().unwrap().parse().unwrap();
    let inside = &after[after.find('(').unwrap() + 1..after.find(')').unwrap()];
    (parts, parse_size(inside))
}

/// "1.5 MiB", "812 B" as bytes (rounded as printed).
fn parse_size(s: &str) -> u64 {
    let (n, unit) = s.split_once(' ').unwrap();
    let n: f64 = n.parse().unwrap();
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1048576.0,
        "GiB" => 1073741824.0,
        other => panic!("unit {other}"),
    };
    (n * scale) as u64
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_registry_that_serves_other_bytes_gives_eio_never_wrong_bytes() {
    if !fuse_or_skip("a_registry_that_serves_other_bytes_gives_eio_never_wrong_bytes") {
        return;
    }
    let img = lazy_image();
    // The registry's copies of the big gzip layer and of the plain one
    // changed under it: same length, some bytes in the middle different.
    for layer in &img.layers[img.layers.len() - 2..] {
        let stored = img.bed.reg.blob_data_path(layer.strip_prefix("sha256:").unwrap());
        let mut data = std::fs::read(&stored).unwrap();
        let middle = data.len() / 2;
        for b in &mut data[middle..middle + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&stored, &data).unwrap();
    }

    let other = Flmount::new();
    let mnt = img.bed.path("mnt");
    let args = [
        "-image",
        &img.image,
        "-lazy",
        "-index",
        s(&img.index),
        "-timeout",
        "5",
    ];
    let m = Mounted::start(&other, &args, &mnt);
    // Files the damage does not reach read right; the others fail.
    assert_eq!(std::fs::read(mnt.join("many/f000")).unwrap(), text(1000, 10));
    let mut failed = 0;
    for name in ["big/text", "big/random", "big/last"] {
        match std::fs::read(mnt.join(name)) {
            Ok(bytes) => {
                let want = match name {
                    "big/text" => text(6 << 20, 1),
                    "big/random" => pseudo_random(3 << 20, 2),
                    _ => text(5 << 20, 3),
                };
                assert!(bytes == want, "{name}: wrong bytes served");
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
                failed += 1;
            }
        }
    }
    assert!(failed >= 1, "the damage reached no file");
    // The plain layer: its small file before the damage reads, the text
    // file across it does not.
    assert_eq!(std::fs::read(mnt.join("plain/small")).unwrap(), b"plain\n");
    let err = std::fs::read(mnt.join("plain/text")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log = m.stop();
    assert!(log.contains("do not decode to what the index says"), "{log}");
}

#[test]
fn indexes_that_do_not_fit_and_layers_without_one_are_refused() {
    let bed = Bed::new();
    let one = bed.push_gzip("lazy/one", "one", vec![tar(&[E::file("a", "one\n")])]);
    let two = bed.push_gzip("lazy/two", "two", vec![tar(&[E::file("a", "two\n")])]);
    let index = bed.path("one.index.fl");
    bed.fl.ok(&["index", &one, "-index", s(&index)]);
    let mnt = bed.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();

    // No index: not found, with the way to make one.
    let err = bed.fl.fails(&["-image", &two, "-mount", s(&mnt), "-lazy"], 3);
    assert!(err.contains("flmount index"), "{err}");
    // Another image's index.
    let err = bed.fl.fails(
        &["-image", &two, "-mount", s(&mnt), "-lazy", "-index", s(&index)],
        1,
    );
    assert!(err.contains("not of this image"), "{err}");
    // An flist that is not a seek index.
    let flist = bed.path("two.fl");
    bed.pack(&two, &flist, &bed.path("chunks"));
    let err = bed.fl.fails(
        &["-image", &two, "-mount", s(&mnt), "-lazy", "-index", s(&flist)],
        1,
    );
    assert!(err.contains("not a seek index"), "{err}");
    assert!(!mounted_at(&mnt, None));

    // A sparse file: said at index time, no index written.
    let sparse = bed.path("sparse.tar");
    let src = bed.path("sparse-src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("holes")).unwrap();
    f.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"data", 2 << 20).unwrap();
    run_ok(
        std::process::Command::new("tar")
            .args(["--sparse", "-cf"])
            .arg(&sparse)
            .arg("-C")
            .arg(&src)
            .arg("holes"),
    );
    let sparse_image = bed.push_gzip("lazy/sparse", "sl", vec![std::fs::read(&sparse).unwrap()]);
    let err = bed
        .fl
        .fails(&["index", &sparse_image, "-index", s(&bed.path("s.fl"))], 1);
    assert!(err.contains("sparse") && err.contains("holes"), "{err}");
    assert!(!bed.path("s.fl").exists());
    // Flags that do not go together.
    let err = bed
        .fl
        .fails(&["-image", &one, "-extractto", s(&bed.path("x")), "-lazy"], 2);
    assert!(err.contains("-lazy"), "{err}");
}

#[test]
fn a_large_layer_is_extracted_by_several_threads_as_umoci_unpacks_it() {
    let bed = Bed::new();
    let mut entries = vec![E::dir("data")];
    for i in 0..24u64 {
        entries.push(E::file(
            format!("data/t{i:02}"),
            text(1_500_000 + i as usize * 1000, i),
        ));
        entries.push(E::file(format!("data/r{i:02}"), pseudo_random(200_000, i)));
        entries.push(E::symlink(format!("data/l{i:02}"), format!("t{i:02}")));
    }
    entries.push(E::hardlink("data/hard", "data/t05"));
    let layers = vec![
        (
            Compression::Gzip,
            tar(&[E::file("data/t03", "replaced below"), E::file("etc/a", "a\n")]),
        ),
        (Compression::GzipDefault, tar(&entries)),
    ];
    bed.reg.push_layers("lazy/big", layers, &bed.path("layout"));
    let image = format!("{}/lazy/big:t", bed.reg.addr());
    let flat = umoci_unpack(&bed.path("layout"), &bed.path("umoci-bundle"));
    // Directories no layer names (/, /etc) get the time they were made.
    let dirs = Ignore {
        dir_mtimes: true,
        ..Ignore::default()
    };
    // The first extraction reads the changes (recording the seek points)
    // and then the content: from several places at once.
    let first = bed.path("first");
    let log = bed.fl.ok(&["-image", &image, "-extractto", s(&first), "-v"]);
    assert!(log.contains("from 2 places at once"), "{log}");
    assert_same_tree(&flat, &first, &dirs);
    // Again, from the cache.
    let second = bed.path("second");
    let log = bed.fl.ok(&["-image", &image, "-extractto", s(&second), "-v"]);
    assert!(log.contains("places at once"), "{log}");
    assert_same_tree(&flat, &second, &dirs);

    // Damaged seek points are not used: the layer is read from its start.
    let seek = std::fs::read_dir(bed.fl.workdir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seek"))
        .expect("a seek points file");
    let mut bytes = std::fs::read(&seek).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    std::fs::write(&seek, &bytes).unwrap();
    let third = bed.path("third");
    let log = bed.fl.ok(&["-image", &image, "-extractto", s(&third), "-v"]);
    assert!(!log.contains("places at once"), "{log}");
    assert_same_tree(&flat, &third, &dirs);
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn a_lazy_mount_reads_from_a_registry_that_wants_a_token() {
    if !fuse_or_skip("a_lazy_mount_reads_from_a_registry_that_wants_a_token") {
        return;
    }
    const USER: &str = "lazy";
    const PASSWORD: &str = "pw-lazy-never-logged";
    let reg = Registry::start_with(
        false,
        RegistryAuth::Token {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    let mut layout = Layout::new(&dir);
    let layers = vec![
        (Compression::GzipDefault, tar(&big_layer())),
        (Compression::Gzip, tar(&[E::file("etc/motd", "private\n")])),
    ];
    let w = layout.image(&ImageSpec::new("lazy", layers));
    layout.tag_image("t", &w);
    reg.push_with_creds(
        &dir,
        "t",
        "private/app:1",
        &[],
        Some(&format!("{USER}:{PASSWORD}")),
    );
    let image = format!("{}/private/app:1", reg.addr());
    let creds = ["-username", USER, "-password", PASSWORD];

    // The index pushed with a token for pushing; found and read with one
    // for pulling.
    let builder = Flmount::new();
    let out = builder.ok(&[&["index", &image, "-push"][..], &creds].concat());
    assert!(out.contains("pushed the seek index"), "{out}");
    let other = Flmount::new();
    let mnt = tmp.path().join("mnt");
    // Without credentials: refused (exit 4), nothing mounted.
    std::fs::create_dir_all(&mnt).unwrap();
    let err = other.fails(&["-image", &image, "-mount", s(&mnt), "-lazy"], 4);
    assert!(err.contains("authentication"), "{err}");
    assert!(!mounted_at(&mnt, None));
    let m = Mounted::start(
        &other,
        &[&["-image", &image, "-lazy", "-vv"][..], &creds].concat(),
        &mnt,
    );
    assert_eq!(std::fs::read(mnt.join("etc/motd")).unwrap(), b"private\n");
    assert_eq!(std::fs::read(mnt.join("big/text")).unwrap(), text(6 << 20, 1));
    let log = m.stop();
    assert!(log.contains("fetched the seek index"), "{log}");
    assert!(!log.contains(PASSWORD), "the password is in the log");
    for token in reg.issued_tokens() {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a bearer token is in the log");
    }
}
