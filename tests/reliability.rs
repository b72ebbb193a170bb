//! Faults with nothing lost and nothing wrong trusted: a full disk under the
//! workdir or the target, and flmount killed (SIGKILL) at random points of
//! pull, extraction, overlay preparation and pack, many times over; the
//! next run always finishes and equals a clean run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixtures::RulesImage;
use common::fstree::{assert_same_tree, Ignore};
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

/// Files below `dir` whose name says they are unfinished.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(leftovers(&p));
        } else if p.file_name().unwrap().to_string_lossy().starts_with(".flmount-") {
            out.push(p);
        }
    }
    out
}

#[test]
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
        .fl
        .fails(&["-image", &img.image, "-extractto", target.to_str().unwrap()], 7);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!target.exists(), "a partial rootfs was left at the target");
    assert_eq!(
        std::fs::read_dir(&small.0).unwrap().count(),
        0,
        "staging was left behind"
    );

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

#[test]
fn killed_at_random_points_the_next_run_equals_a_clean_run() {
    if !root_or_skip(
        "killed_at_random_points_the_next_run_equals_a_clean_run",
        "the fixture has device nodes and owners; overlay mounts",
    ) {
        return;
    }
    let img = RulesImage::new("rel/kill");
    let fl = Flmount::new();
    let chunks = format!("dir://{}", img.path("chunks").display());
    let flist = img.path("k.fl");
    let runs: Vec<(&str, Vec<String>)> = vec![
        ("pull", vec![]),
        (
            "extract",
            vec!["-extractto".into(), img.path("out").display().to_string()],
        ),
        (
            "pack",
            vec![
                "-flist".into(),
                flist.display().to_string(),
                "-store".into(),
                chunks.clone(),
            ],
        ),
        (
            "overlay",
            vec!["-mount".into(), img.path("mnt").display().to_string()],
        ),
    ];
    std::fs::create_dir_all(img.path("mnt")).unwrap();
    // Deterministic "random" kill delays: 0 to ~150 ms.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for round in 0..8 {
        for (what, extra) in &runs {
            if *what == "extract" {
                let _ = std::fs::remove_dir_all(img.path("out"));
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = Duration::from_millis(seed % 150);
            let mut child = fl
                .command()
                .args(["-image", &img.image])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            child.wait().unwrap();
            if *what == "overlay" && mounted_at(&img.path("mnt"), None) {
                fl.ok(&["-umount", img.path("mnt").to_str().unwrap()]);
            }
        }
        let _ = round;
    }
    assert!(
        kills >= 4,
        "only {kills} runs were killed mid-way: the fixture is too quick to test this"
    );
    // Nothing left half-written is trusted, and no stale lock blocks: each
    // run now finishes and equals a clean one.
    let out = img.path("out");
    let _ = std::fs::remove_dir_all(&out);
    fl.ok(&[
        "-image",
        &img.image,
        "-validate-cache",
        "-extractto",
        out.to_str().unwrap(),
    ]);
    assert_same_tree(&img.flat, &out, &Ignore::default());
    fl.ok(&[
        "-image",
        &img.image,
        "-flist",
        flist.to_str().unwrap(),
        "-store",
        &chunks,
    ]);
    let unpacked = img.path("unpacked");
    fl.ok(&[
        "unpack",
        "-flist",
        flist.to_str().unwrap(),
        unpacked.to_str().unwrap(),
    ]);
    assert_same_tree(&img.flat, &unpacked, &Ignore::default());
    let mnt = img.path("mnt");
    fl.ok(&["-image", &img.image, "-mount", mnt.to_str().unwrap()]);
    assert_same_tree(
        &img.flat,
        &mnt,
        &Ignore {
            dir_mtimes: true,
            ..Ignore::default()
        },
    );
    fl.ok(&["-umount", mnt.to_str().unwrap()]);
    assert!(leftovers(&img.path("out")).is_empty());
}

#[test]
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
