//! The README's exit codes, one table: each error class driven for real
//! (a missing flist, an unknown tag, a wrong archive, a corrupt cached
//! layer, a bad store, a platform no index has, a busy mount, a bad
//! digest, a missing bucket, a file as mount point, a name that does not
//! resolve, an unsupported transport, ...), checked for its exit code and
//! for a message that names the thing. Everything lives in temporary
//! directories.

mod common;

use std::time::{Duration, Instant};

use common::servers::Server;
use common::tarball::{tar, E};
use common::*;

/// One row: what was run, the code it must exit with, and words the
/// message must hold.
struct Row<'a> {
    what: &'a str,
    args: Vec<String>,
    code: i32,
    says: Vec<String>,
}

fn check(fl: &Flmount, rows: &[Row]) {
    let mut failures = Vec::new();
    for row in rows {
        let args: Vec<&str> = row.args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let out = fl.run(&args);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let missing: Vec<&String> = row.says.iter().filter(|s| !err.contains(s.as_str())).collect();
        if code != Some(row.code) || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {code:?} (want {}), missing {missing:?} in:\n{err}",
                row.what, row.code
            ));
        }
        // Nothing here is worth a retry: every row answers at once.
        if took > Duration::from_secs(4) {
            failures.push(format!("{}: took {took:?}", row.what));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

fn row(what: &str, args: &[&str], code: i32, says: &[&str]) -> Row<'static> {
    Row {
        what: Box::leak(what.to_owned().into_boxed_str()),
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn every_error_class_has_its_exit_code_and_names_the_thing() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let layer = tar(&[E::dir("etc"), E::file("etc/hello", b"hello\n")]);
    let image = reg.push_layers("err/app", vec![(Compression::Gzip, layer)], &t.join("layout"));
    let fl = Flmount::new();
    fl.ok(&["-image", &image]);

    // A multi-platform OCI layout.
    let multi = t.join("multi");
    let mut layout = Layout::new(&multi);
    let specs = [ImageSpec {
        arch: "arm64",
        variant: Some("v8"),
        ..ImageSpec::new("arm64", vec![(Compression::Gzip, tar(&[E::dir("x")]))])
    }];
    let written: Vec<Written> = specs.iter().map(|sp| layout.image(sp)).collect();
    let pairs: Vec<(&ImageSpec, &Written)> = specs.iter().zip(written.iter()).collect();
    layout.tag_index("multi", &pairs);

    // A docker archive, and a file that is no archive at all.
    let docker_archive = t.join("docker.tar");
    run_ok(
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("docker-archive:{}:err/app:1", docker_archive.display())),
    );
    let afile = t.join("afile");
    std::fs::write(&afile, "not a directory").unwrap();
    let missing_fl = t.join("missing.fl");
    let (moto, _) = Server::moto_bucket("present");
    let no_bucket = format!("s3://key:secret@127.0.0.1:{}/absent", moto.1);
    let bucket_fl = t.join("bucket.fl");
    let mount_dir = t.join("mnt");
    std::fs::create_dir(&mount_dir).unwrap();

    let layout_src = format!("oci:{}", s(&t.join("layout")));
    let rows = vec![
        row(
            "a missing flist (serve)",
            &["-flist", s(&missing_fl), "-mount", s(&mount_dir)],
            3,
            &[s(&missing_fl)],
        ),
        row(
            "a missing flist (flist inspect)",
            &["flist", "inspect", s(&missing_fl)],
            3,
            &[s(&missing_fl)],
        ),
        row(
            "a missing flist (unpack)",
            &["unpack", "-flist", s(&missing_fl), s(&t.join("out"))],
            3,
            &[s(&missing_fl)],
        ),
        row(
            "an unknown tag in an OCI layout",
            &["-image", &format!("{layout_src}:nope")],
            3,
            &["\"nope\""],
        ),
        row(
            "an oci-archive: that is a docker archive",
            &["-image", &format!("oci-archive:{}", s(&docker_archive))],
            2,
            &[s(&docker_archive), "docker-archive:"],
        ),
        row(
            "an unknown image in a docker archive",
            &[
                "-image",
                &format!("docker-archive:{}:err/other:1", s(&docker_archive)),
            ],
            3,
            &["err/other:1"],
        ),
        row(
            "-store with an unknown scheme, before any work",
            &[
                "-image",
                "never.invalid/x",
                "-flist",
                s(&t.join("x.fl")),
                "-store",
                "foo://bar",
            ],
            2,
            &["foo://bar"],
        ),
        row(
            "no image for the platform",
            &[
                "-image",
                &format!("oci:{}:multi", s(&multi)),
                "-platform",
                "linux/s390x",
            ],
            3,
            &["linux/s390x", "linux/arm64/v8"],
        ),
        row(
            "an invalid digest in content rm",
            &["content", "rm", "sha256:xyz"],
            2,
            &["sha256:xyz"],
        ),
        row(
            "an invalid digest in content path",
            &["content", "path", "md5:00"],
            2,
            &["md5:00"],
        ),
        row(
            "a file as the mount point",
            &["-image", &image, "-mount", s(&afile)],
            7,
            &[s(&afile)],
        ),
        row(
            "a name that does not resolve",
            &["-image", "registry.flmount.invalid/x:1"],
            5,
            &["cannot resolve registry.flmount.invalid"],
        ),
        row(
            "an unsupported transport",
            &["-image", "containers-storage:alpine"],
            2,
            &["unsupported transport containers-storage"],
        ),
        row(
            "an image the registry does not have",
            &["-image", &format!("{}/err/none:1", reg.addr())],
            3,
            &["err/none:1"],
        ),
        row(
            "a missing S3 bucket",
            &["-image", &image, "-flist", s(&bucket_fl), "-store", &no_bucket],
            3,
            &["bucket \"absent\""],
        ),
        row(
            "images rm of an image never pulled",
            &["images", "rm", "err/never:1"],
            3,
            &["err/never:1"],
        ),
        row(
            "-umount of a directory nothing is mounted on",
            &["-umount", s(&mount_dir)],
            3,
            &["nothing is mounted there", s(&mount_dir)],
        ),
    ];
    check(&fl, &rows);
    assert!(!bucket_fl.exists(), "an flist was written for a missing bucket");
}

#[test]
fn a_corrupt_cached_layer_is_an_integrity_error_with_a_way_out() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar(&[E::dir("etc"), E::file("etc/hello", pseudo_random(200_000, 7))]);
    let image = reg.push_layers(
        "err/corrupt",
        vec![(Compression::Gzip, layer.clone())],
        &tmp.path().join("l"),
    );
    let fl = Flmount::new();
    fl.ok(&["-image", &image]);
    // Damage the cached layer in the middle of its deflate stream.
    let biggest = largest_file(&fl.workdir.join("blobs/sha256"));
    let mut data = std::fs::read(&biggest).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&biggest, data).unwrap();
    let target = tmp.path().join("rootfs");
    let err = fl.fails(&["-image", &image, "-extractto", s(&target)], 6);
    assert!(
        err.contains("-validate-cache") && err.contains(biggest.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    // The way out works.
    fl.ok(&[
        "-image",
        &image,
        "-validate-cache",
        "-extractto",
        s(&target),
        "-force",
    ]);
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn a_busy_mount_is_a_local_error_naming_it() {
    if !root_or_skip("a_busy_mount_is_a_local_error_naming_it", "overlay mounts") {
        return;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar(&[E::dir("etc"), E::file("etc/hello", b"hello\n")]);
    let image = reg.push_layers(
        "err/busy",
        vec![(Compression::Gzip, layer)],
        &tmp.path().join("l"),
    );
    let fl = Flmount::new();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    fl.ok(&["-image", &image, "-mount", s(&mnt)]);
    // A process whose working directory is inside the mount keeps it busy.
    let mut holder = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(mnt.join("etc"))
        .spawn()
        .unwrap();
    let out = fl.run(&["-umount", s(&mnt)]);
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    let out = fl.run(&["-umount", s(&mnt), "-json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["unmounted"], "overlay", "{done}");
    assert_eq!(code, Some(7), "{err}");
    assert!(
        err.contains(s(&mnt)) && err.to_lowercase().contains("busy"),
        "{err}"
    );
}
