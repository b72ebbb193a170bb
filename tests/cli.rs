//! What a user meets first: mistyped single-dash flags, `-json` on every
//! command that prints, one count of chunks, `-` as standard output,
//! `-extractto -` refusing a terminal, `gc -dry-run` saying what it would
//! remove. Everything in temporary directories.

mod common;

use std::path::Path;
use std::process::Command;

use common::tarball::{tar, E};
use common::*;

/// A small image with a file a later layer replaces.
fn image(reg: &Registry, tmp: &Path) -> String {
    let first = tar(&[
        E::dir("etc"),
        E::file("etc/big", pseudo_random(1_500_000, 1)),
        E::file("etc/keep", pseudo_random(700_000, 2)),
    ]);
    let second = tar(&[E::dir("etc"), E::file("etc/big", pseudo_random(600_000, 3))]);
    reg.push_layers(
        "cli/app",
        vec![(Compression::Gzip, first), (Compression::Gzip, second)],
        &tmp.join("layout"),
    )
}

fn json_out(fl: &Flmount, args: &[&str]) -> serde_json::Value {
    let out = fl.run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_mistyped_single_dash_flag_gets_the_near_one() {
    let fl = Flmount::new();
    let err = fl.fails(&["-imgae", "x"], 2);
    assert!(err.contains("--image") && !err.contains("'-i'"), "{err}");
    // Clusters of short flags still work.
    let out = fl.run(&["-vv", "images"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn json_everywhere_and_one_count_of_chunks() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = image(&reg, tmp.path());
    let fl = Flmount::new();
    let flist = tmp.path().join("app.fl");
    let store = tmp.path().join("store");
    let summary = json_out(
        &fl,
        &[
            "-image",
            &image,
            "-flist",
            s(&flist),
            "-store",
            &format!("dir://{}", s(&store)),
            "-json",
        ],
    );
    let packed = &summary["packed"];
    let inspect = json_out(&fl, &["flist", "inspect", s(&flist), "-json"]);
    // One definition: the distinct chunks the flist names.
    assert_eq!(packed["chunks"], inspect["chunks"], "{packed} vs {inspect}");
    let chunks = packed["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "{packed}");
    assert_eq!(
        packed["uploaded"].as_u64().unwrap() + packed["skipped"].as_u64().unwrap(),
        chunks
    );
    // The store holds what was uploaded: named chunks plus the replaced file's.
    let stored = files_under(&store)
        .iter()
        .filter(|p| p.file_name().unwrap().len() == 64)
        .count() as u64;
    let replaced = packed["uploaded_replaced"].as_u64().unwrap();
    assert!(replaced >= 1, "the replaced file's chunks: {packed}");
    assert_eq!(
        stored,
        packed["uploaded"].as_u64().unwrap() + replaced,
        "{packed}"
    );

    let ls = json_out(&fl, &["flist", "ls", s(&flist), "-json"]);
    assert!(
        ls.as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/etc/big" && e["size"] == 600_000),
        "{ls}"
    );
    let tags = json_out(&fl, &["flist", "tag", s(&flist), "-json"]);
    assert_eq!(tags["version"], "v2", "{tags}");
    let routes = json_out(&fl, &["flist", "store", s(&flist), "-json"]);
    assert_eq!(routes[0]["url"], format!("dir://{}", s(&store)), "{routes}");
    let rm = json_out(&fl, &["images", "rm", &image, "-json"]);
    assert_eq!(rm["forgotten"][0]["tag"], "t", "{rm}");
}

#[test]
fn dash_is_standard_output_for_saveconfig() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = image(&reg, tmp.path());
    let fl = Flmount::new();
    let out = fl
        .command()
        .current_dir(tmp.path())
        .args(["-image", &image, "-saveconfig", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["os"], "linux");
    assert!(!tmp.path().join("-").exists(), "a file named - was written");
}

#[test]
fn a_tar_stream_is_not_written_to_a_terminal() {
    need("script");
    let fl = Flmount::new();
    // `script` gives the command a terminal as its standard output.
    let cmd = format!(
        "{} -workdir {} -image never.invalid/x -extractto -; echo rc=$?",
        env!("CARGO_BIN_EXE_flmount"),
        s(&fl.workdir)
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("terminal") && text.contains("rc=2"), "{text}");
}

#[test]
fn gc_dry_run_lists_what_it_would_remove_and_gc_reports_under_q() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = image(&reg, tmp.path());
    let fl = Flmount::new();
    fl.ok(&["-image", &image]);
    fl.ok(&["images", "rm", &image]);
    let out = fl.run(&["gc", "-dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let listed = text.lines().filter(|l| l.starts_with("would remove /")).count();
    // A manifest, a config and two layers.
    assert_eq!(listed, 4, "{text}");
    assert!(
        text.contains("would remove 4 blobs, 0 overlay layer dirs"),
        "{text}"
    );
    let out = fl.run(&["-q", "gc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("removed 4 blobs") && text.contains(", 0 flists,"),
        "{text}"
    );
    let images = String::from_utf8_lossy(&fl.run(&["images"]).stdout).into_owned();
    assert!(!images.contains("1 minutes"), "{images}");
}

#[test]
fn inspect_shows_an_index_with_its_platforms_and_the_digest_images_shows() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    let mut layout = Layout::new(&dir);
    let layer = |label: &str| {
        vec![(
            Compression::Gzip,
            tar(&[E::dir("etc"), E::file("etc/label", label.as_bytes())]),
        )]
    };
    let specs = [
        ImageSpec::new("amd64", layer("amd64")),
        ImageSpec {
            arch: "arm64",
            variant: Some("v8"),
            ..ImageSpec::new("arm64", layer("arm64"))
        },
    ];
    let written: Vec<Written> = specs.iter().map(|sp| layout.image(sp)).collect();
    let pairs: Vec<(&ImageSpec, &Written)> = specs.iter().zip(written.iter()).collect();
    let index = layout.tag_index("multi", &pairs);
    reg.push(&dir, "multi", "cli/multi:1", &["--all"]);
    let image = format!("{}/cli/multi:1", reg.addr());
    let fl = Flmount::new();

    // -platform after the subcommand; an index with its platforms.
    let info = json_out(&fl, &["inspect", &image, "-platform", "linux/arm64", "-json"]);
    assert_eq!(info["index"], true, "{info}");
    assert_eq!(info["platform"], "linux/arm64/v8", "{info}");
    assert_eq!(info["platforms"].as_array().unwrap().len(), 2, "{info}");
    assert_eq!(info["manifest"], written[1].manifest, "{info}");
    let top = info["digest"].as_str().unwrap().to_owned();
    assert_eq!(top, index, "{info}");
    // inspect adds no image; the pulled image shows the same digest.
    assert_eq!(json_out(&fl, &["images", "-json"]), serde_json::json!([]));
    fl.ok(&["-image", &image]);
    let images = json_out(&fl, &["images", "-json"]);
    assert_eq!(images[0]["digest"], top.as_str(), "{images}");

    // -raw: the index as the registry gave it; -config: the config.
    let out = fl.run(&["inspect", &image, "-raw"]);
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    let out = fl.run(&["inspect", &image, "-config", "-platform", "linux/arm64"]);
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["architecture"], "arm64", "{config}");
    let text = String::from_utf8(fl.run(&["inspect", &image]).stdout).unwrap();
    assert!(
        text.contains("index:       2 platforms") && text.contains("linux/arm64/v8"),
        "{text}"
    );
}

#[test]
#[cfg_attr(
    any(flmount_no_root, flmount_no_fuse),
    ignore = "needs root and /dev/fuse (CI has both)"
)]
fn rfs_spellings_and_a_daemon_mount_that_exists_when_the_command_returns() {
    if !common::mounts::fuse_or_skip("rfs_spellings_and_a_daemon_mount_that_exists_when_the_command_returns")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tree");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hello"), "hello from rfs\n").unwrap();
    let fl = Flmount::new();
    let flist = tmp.path().join("x.fl");
    let store = format!("dir://{}", s(&tmp.path().join("store")));
    // rfs: rfs pack -m x.fl -s dir:///s DIR
    fl.ok(&["pack", "-m", s(&flist), "-s", &store, s(&dir)]);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // rfs: rfs mount -m x.fl -d /mnt; the mount exists when it returns.
    let started = std::time::Instant::now();
    let out = fl.run(&["mount", "-m", s(&flist), "-d", s(&mnt)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let read = std::fs::read_to_string(mnt.join("etc/hello"));
    let umount = fl.run(&["-umount", s(&mnt)]);
    assert_eq!(read.unwrap(), "hello from rfs\n");
    assert!(
        umount.status.success(),
        "{}",
        String::from_utf8_lossy(&umount.stderr)
    );
    assert!(!common::mounts::is_mounted(&mnt));
    // The long spelling, and a server that cannot mount: its error and code.
    let out = fl.run(&[
        "-flist",
        s(&tmp.path().join("none.fl")),
        "-mount",
        s(&mnt),
        "-daemon",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.fl"));
    // -daemon has no meaning for an overlay mount, which returns anyway.
    fl.fails(&["-image", "x", "-mount", s(&mnt), "-daemon"], 2);
}

#[test]
fn bash_completes_single_dash_flags_and_paths_after_them() {
    need("bash");
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("flmount.bash");
    let out = Flmount::new().run(&["completions", "bash"]);
    std::fs::write(&script, &out.stdout).unwrap();
    std::fs::create_dir(tmp.path().join("rootfs-here")).unwrap();
    let probe = format!(
        "source {}\n\
         COMP_WORDS=(flmount -ima); COMP_CWORD=1; _flmount flmount -ima flmount; echo \"A=${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(flmount -extractto root); COMP_CWORD=2; _flmount flmount root -extractto; echo \"B=${{COMPREPLY[*]}}\"\n",
        s(&script)
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(probe)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("A=-image\n"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("B=rootfs-here\n"), "{text}");
}
