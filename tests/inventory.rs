//! What the workdir holds: `images` (and `images rm`), `content ls | path |
//! rm`, `inspect` (no layers fetched), and `gc`, which removes what no
//! cached image references but never what a live overlay or FUSE mount
//! uses.

mod common;

use std::path::Path;

use common::tarball::{tar, E};
use common::*;
use serde_json::Value;

/// Two images sharing a base layer: `inv/a:t` and `inv/b:t`.
fn two_images(reg: &Registry, tmp: &Path) -> (String, String) {
    let ((a, _), (b, _)) = two_images_written(reg, tmp);
    (a, b)
}

/// [`two_images`], with the digests pushed: what the workdir must hold.
fn two_images_written(reg: &Registry, tmp: &Path) -> ((String, Written), (String, Written)) {
    let base = tar(&[E::dir("etc"), E::file("etc/base", pseudo_random(300_000, 1))]);
    let a = tar(&[E::file("etc/a", pseudo_random(200_000, 2))]);
    let b = tar(&[E::file("etc/b", pseudo_random(200_000, 3))]);
    let image = |name: &str, top: Vec<u8>| {
        reg.push_layers_written(
            name,
            vec![(Compression::Gzip, base.clone()), (Compression::Gzip, top)],
            &tmp.join(name.replace('/', "-")),
        )
    };
    (image("inv/a", a), image("inv/b", b))
}

/// The digests of the blobs in a workdir, from its files (not from flmount).
fn blobs_on_disk(fl: &Flmount) -> std::collections::BTreeSet<String> {
    files_under(&fl.workdir.join("blobs/sha256"))
        .iter()
        .map(|p| format!("sha256:{}", p.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// Every blob of an image, as pushed.
fn blobs_of(w: &Written) -> std::collections::BTreeSet<String> {
    w.layers.iter().chain([&w.config, &w.manifest]).cloned().collect()
}

fn json(fl: &Flmount, args: &[&str]) -> Value {
    let out = fl.run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn roles(fl: &Flmount) -> Vec<(String, String)> {
    json(fl, &["content", "ls", "-json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_owned(),
                b["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn images_content_and_inspect() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let ((a, wa), (b, wb)) = two_images_written(&reg, tmp.path());

    // inspect fetches the manifest and config, not the layers.
    let fl = Flmount::new();
    let info = json(&fl, &["inspect", &a, "-json"]);
    assert_eq!(info["digest"], wa.manifest.as_str());
    assert_eq!(info["layers"][0]["digest"], wa.layers[0].as_str());
    assert_eq!(info["layers"][1]["digest"], wa.layers[1].as_str());
    assert_eq!(
        blobs_on_disk(&fl),
        [wa.manifest.clone(), wa.config.clone()].into(),
        "inspect fetched more than the manifest and config"
    );
    assert_eq!(info["layers"].as_array().unwrap().len(), 2);
    assert_eq!(info["platform"], "linux/amd64");
    assert_eq!(info["config"]["config"]["Entrypoint"][0], "/bin/sh");
    let layer = info["layers"][1]["digest"].as_str().unwrap().to_owned();
    assert!(
        roles(&fl).iter().all(|(_, r)| r != "layer"),
        "inspect fetched layers"
    );
    let text = fl.run(&["inspect", &a]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&layer));

    let summary = json(&fl, &["-image", &a, "-json"]);
    assert_eq!(summary["pull"]["layers"], 2);
    assert_eq!(summary["output"], "cache");
    assert_eq!(summary["digest"], wa.manifest.as_str());
    fl.ok(&["-image", &b]);
    let mut both = blobs_of(&wa);
    both.extend(blobs_of(&wb));
    assert_eq!(
        blobs_on_disk(&fl),
        both,
        "the workdir does not hold exactly both images"
    );
    // A local I/O failure has its own exit code.
    fl.fails(&["-image", &b, "-extractto", "/etc/hostname/rootfs"], 7);
    let images = json(&fl, &["images", "-json"]);
    let names: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("inv/a")) && names.iter().any(|n| n.ends_with("inv/b")),
        "{images}"
    );
    assert!(images[0]["size"].as_u64().unwrap() > 400_000);
    // content ls names each blob on disk once, with the role it was pushed in.
    let roles = roles(&fl);
    let listed: std::collections::BTreeSet<String> = roles.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(listed, both, "{roles:?}");
    assert_eq!(roles.len(), both.len(), "{roles:?}");
    for (digest, role) in &roles {
        let expected = if [&wa, &wb].iter().any(|w| w.layers.contains(digest)) {
            "layer"
        } else if [&wa.config, &wb.config].contains(&digest) {
            "config"
        } else {
            "manifest"
        };
        assert_eq!(role, expected, "{digest}");
    }

    let out = fl.run(&["content", "path", &layer]);
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(Path::new(&path).is_file(), "{path}");
    fl.ok(&["content", "rm", &layer]);
    assert!(!Path::new(&path).exists());
    fl.fails(&["content", "path", &layer], 3);
    // The next use fetches it again.
    fl.ok(&["-image", &a]);
    assert!(Path::new(&path).is_file());
    fl.fails(&["images", "rm", "inv/never:t"], 3);
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn gc_keeps_what_images_and_live_mounts_use() {
    if !root_or_skip("gc_keeps_what_images_and_live_mounts_use", "overlay mounts") {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let ((a, wa), (b, wb)) = two_images_written(&reg, tmp.path());
    let fl = Flmount::new();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    fl.ok(&["-image", &a, "-mount", mnt.to_str().unwrap()]);
    fl.ok(&["-image", &b]);
    std::fs::write(fl.workdir.join("tmp/leftover.partial"), b"x").unwrap();

    // b forgotten, a forgotten but mounted: only b's own blobs go.
    fl.ok(&["images", "rm", &b]);
    fl.ok(&["images", "rm", &a]);
    // What gc must remove, from the pushed digests: b's manifest, config
    // and top layer; the shared base layer and all of a stay.
    let before = blobs_on_disk(&fl);
    let mut both = blobs_of(&wa);
    both.extend(blobs_of(&wb));
    assert_eq!(before, both);
    let gone: std::collections::BTreeSet<String> =
        [wb.manifest.clone(), wb.config.clone(), wb.layers[1].clone()].into();
    let dry = json(&fl, &["gc", "-dry-run", "-json"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["removed"]["blobs"], gone.len(), "{dry}");
    assert_eq!(blobs_on_disk(&fl), before, "the dry run removed blobs");
    assert!(
        fl.workdir.join("tmp/leftover.partial").exists(),
        "the dry run removed a partial"
    );
    fl.ok(&["gc"]);
    let after = blobs_on_disk(&fl);
    assert_eq!(
        after,
        blobs_of(&wa),
        "a's manifest, config and two layers stay, nothing else"
    );
    assert_eq!(
        before
            .difference(&after)
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        gone
    );
    for digest in &after {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert_eq!(sha256_hex(&std::fs::read(fl.blob(digest)).unwrap()), hex);
    }
    assert!(!fl.workdir.join("tmp/leftover.partial").exists());
    assert_eq!(std::fs::read_dir(fl.workdir.join("overlays")).unwrap().count(), 2);
    assert!(mnt.join("etc/a").is_file(), "the live overlay mount broke");

    // Unmounted, nothing references a's content any more.
    fl.ok(&["-umount", mnt.to_str().unwrap()]);
    fl.ok(&["gc"]);
    assert!(blobs_on_disk(&fl).is_empty());
    assert!(roles(&fl).is_empty());
    assert_eq!(std::fs::read_dir(fl.workdir.join("overlays")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(fl.workdir.join("l")).unwrap().count(), 0);
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn gc_spares_a_live_fuse_mount_and_forgets_removed_chunks() {
    if !root_or_skip(
        "gc_spares_a_live_fuse_mount_and_forgets_removed_chunks",
        "FUSE mounts",
    ) {
        return;
    }
    if !common::mounts::fuse_or_skip("gc_spares_a_live_fuse_mount_and_forgets_removed_chunks") {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = two_images(&reg, tmp.path());
    let fl = Flmount::new();
    let mnt = tmp.path().join("fuse");
    std::fs::create_dir_all(&mnt).unwrap();
    // Killed and unmounted when dropped, should an assertion fail.
    let mut server = common::mounts::Mounted::start(&fl, &["-image", &a, "-fuse"], &mnt);
    let store = fl.workdir.join("store");
    let chunks = |dir: &Path| {
        files_under(dir)
            .iter()
            .filter(|p| p.file_name().unwrap().len() == 64)
            .count()
    };
    let stored = chunks(&store);
    assert!(stored > 0);
    fl.ok(&["images", "rm", &a]);
    fl.ok(&["gc"]);
    assert_eq!(chunks(&store), stored, "gc removed chunks a live mount serves");
    assert_eq!(std::fs::read_dir(fl.workdir.join("flists")).unwrap().count(), 1);
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    assert_eq!(
        std::fs::read(mnt.join("etc/a")).unwrap(),
        pseudo_random(200_000, 2)
    );

    fl.ok(&["-umount", mnt.to_str().unwrap()]);
    server.wait_exit(std::time::Duration::from_secs(20));
    fl.ok(&["gc"]);
    assert_eq!(chunks(&store), 0);
    assert_eq!(std::fs::read_dir(fl.workdir.join("flists")).unwrap().count(), 0);
    // The chunk index forgot them: packing again stores them again.
    let log = fl.ok(&[
        "-image",
        &a,
        "-flist",
        tmp.path().join("again.fl").to_str().unwrap(),
        "-store",
        &format!("dir://{}", store.display()),
    ]);
    assert!(log.contains(", 0 already stored"), "{log}");
}

#[test]
fn the_config_file_gives_defaults_and_mirrors() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = two_images(&reg, tmp.path());
    let fl = Flmount::new();
    let home = fl.home.path();
    let work = home.join("from-config");
    let chunks = tmp.path().join("chunks");
    std::fs::create_dir_all(home.join(".config/flmount")).unwrap();
    // A registry that does not exist, mirrored by the test registry.
    let config = format!(
        "workdir = \"{}\"\nstores = [\"dir://{}\"]\ncache_size = \"64M\"\n[mirrors]\n\"127.0.0.1:9\" = \"{}\"\n",
        work.display(),
        chunks.display(),
        reg.addr()
    );
    std::fs::write(home.join(".config/flmount/config.toml"), config).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flmount"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .args(args)
            .output()
            .unwrap()
    };
    let repo_tag = a.split_once('/').unwrap().1;
    let flist = tmp.path().join("a.fl");
    let out = run(&[
        "-image",
        &format!("127.0.0.1:9/{repo_tag}"),
        "-flist",
        flist.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        std::fs::read_dir(work.join("blobs/sha256")).unwrap().count() >= 4,
        "not in the config's workdir"
    );
    assert!(
        chunks.is_dir() && flist.is_file(),
        "not packed into the config's store: {stderr}"
    );

    std::fs::write(home.join(".config/flmount/config.toml"), "wrokdir = \"/x\"\n").unwrap();
    let out = run(&["images"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.toml"));
}
