//! Pulling from a real `docker-registry`: media types, platforms, the
//! cache's reuse and verification, and the failure cases.

mod common;

use std::path::Path;

use common::tarball::{tar, E};
use common::*;

/// A small busybox-based image: a layer with busybox, a layer with config.
fn busybox_layers(label: &str) -> Vec<(Compression, Vec<u8>)> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is part of the test bed");
    vec![
        (
            Compression::Gzip,
            tar(&[
                E::dir("bin/"),
                E::file("bin/busybox", busybox).mode(0o755),
                E::symlink("bin/sh", "busybox"),
            ]),
        ),
        (
            Compression::Gzip,
            tar(&[
                E::dir("etc/"),
                E::file("etc/motd", format!("hello from {label}\n")),
            ]),
        ),
    ]
}

fn push_single(reg: &Registry, dir: &Path, repo_tag: &str, spec: &ImageSpec, extra: &[&str]) -> Written {
    let mut layout = Layout::new(dir);
    let w = layout.image(spec);
    layout.tag_image("t", &w);
    reg.push(dir, "t", repo_tag, extra);
    w
}

fn assert_blob(fl: &Flmount, digest: &str) {
    let path = fl.blob(digest);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{} missing: {e}", path.display()));
    assert_eq!(
        format!("sha256:{}", sha256_hex(&data)),
        digest,
        "{} has wrong content",
        path.display()
    );
}

fn fetched_layers(stderr: &str) -> usize {
    let at = stderr
        .find("; fetched ")
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    stderr[at + 10..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn pulls_an_oci_image_and_reuses_the_cache() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "demo/busybox:1",
        &ImageSpec::new("a", busybox_layers("a")),
        &[],
    );
    let fl = Flmount::new();
    let image = format!("{}/demo/busybox:1", reg.addr());
    let saved = tmp.path().join("config.json");
    let err = fl.ok(&["-image", &image, "-saveconfig", saved.to_str().unwrap()]);
    assert_eq!(fetched_layers(&err), 2, "{err}");
    for d in w.layers.iter().chain([&w.config, &w.manifest]) {
        assert_blob(&fl, d);
    }
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(fl.blob(&w.config)).unwrap()
    );
    let reference =
        std::fs::read_to_string(fl.workdir.join(format!("refs/{}/demo/busybox/1", reg.addr()))).unwrap();
    assert_eq!(reference.trim(), w.manifest);
    assert!(
        std::fs::read_dir(fl.workdir.join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "leftovers in tmp/"
    );

    // A second pull downloads no blob.
    let before = std::fs::metadata(fl.blob(&w.layers[0]))
        .unwrap()
        .modified()
        .unwrap();
    let err = fl.ok(&["-image", &image]);
    assert_eq!(fetched_layers(&err), 0, "{err}");
    assert_eq!(
        before,
        std::fs::metadata(fl.blob(&w.layers[0]))
            .unwrap()
            .modified()
            .unwrap()
    );
}

#[test]
fn a_second_image_fetches_only_its_new_layers() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    push_single(
        &reg,
        &tmp.path().join("a"),
        "app/a:1",
        &ImageSpec::new("a", busybox_layers("a")),
        &[],
    );
    let wb = push_single(
        &reg,
        &tmp.path().join("b"),
        "app/b:1",
        &ImageSpec::new("b", busybox_layers("b")),
        &[],
    );
    let fl = Flmount::new();
    fl.ok(&["-image", &format!("{}/app/a:1", reg.addr())]);
    let err = fl.ok(&["-image", &format!("{}/app/b:1", reg.addr())]);
    assert_eq!(
        fetched_layers(&err),
        1,
        "the shared busybox layer was downloaded again:\n{err}"
    );
    for d in &wb.layers {
        assert_blob(&fl, d);
    }
}

#[test]
fn docker_media_types_and_every_layer_compression() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let fl = Flmount::new();
    // Docker v2 schema 2 (skopeo converts the manifest and config).
    push_single(
        &reg,
        &tmp.path().join("d"),
        "docker/fmt:1",
        &ImageSpec::new("d", busybox_layers("d")),
        &["--format", "v2s2"],
    );
    fl.ok(&["-image", &format!("{}/docker/fmt:1", reg.addr())]);
    let top = std::fs::read_to_string(fl.workdir.join(format!("refs/{}/docker/fmt/1", reg.addr()))).unwrap();
    let manifest = std::fs::read_to_string(fl.blob(top.trim())).unwrap();
    assert!(
        manifest.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{manifest}"
    );

    // OCI layers: gzip, zstd and plain tar in one image.
    let layers = vec![
        (Compression::Gzip, tar(&[E::file("a", b"gzip")])),
        (Compression::Zstd, tar(&[E::file("b", pseudo_random(300_000, 1))])),
        (Compression::None, tar(&[E::file("c", b"plain")])),
    ];
    let mut layout = Layout::new(&tmp.path().join("z"));
    let w = layout.image(&ImageSpec::new("z", layers));
    let blobs: Vec<Vec<u8>> = w
        .layers
        .iter()
        .chain([&w.config])
        .map(|d| layout.blob(d))
        .collect();
    let manifest = layout.blob(&w.manifest);
    reg.push_raw(
        "oci/mixed",
        "1",
        &blobs,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    );
    let err = fl.ok(&["-image", &format!("{}/oci/mixed:1", reg.addr())]);
    assert_eq!(fetched_layers(&err), 3, "{err}");
    for d in &w.layers {
        assert_blob(&fl, d);
    }
}

#[test]
fn multi_platform_index_and_manifest_list() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    let mut layout = Layout::new(&dir);
    let specs = [
        ImageSpec::new("amd64", busybox_layers("amd64")),
        ImageSpec {
            arch: "arm64",
            variant: Some("v8"),
            ..ImageSpec::new("arm64", busybox_layers("arm64"))
        },
        ImageSpec {
            arch: "arm",
            variant: Some("v7"),
            ..ImageSpec::new("armv7", busybox_layers("armv7"))
        },
    ];
    let written: Vec<Written> = specs.iter().map(|s| layout.image(s)).collect();
    let pairs: Vec<(&ImageSpec, &Written)> = specs.iter().zip(written.iter()).collect();
    layout.tag_index("multi", &pairs);
    reg.push(&dir, "multi", "multi/oci:1", &["--all"]);
    reg.push(&dir, "multi", "multi/docker:1", &["--all", "--format", "v2s2"]);

    for repo in ["multi/oci:1", "multi/docker:1"] {
        let fl = Flmount::new();
        let image = format!("{}/{repo}", reg.addr());
        let label = |args: &[&str]| {
            let saved = fl.home.path().join("cfg.json");
            let mut all = vec!["-image", &image, "-saveconfig", saved.to_str().unwrap()];
            all.extend_from_slice(args);
            fl.ok(&all);
            let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
            cfg["config"]["Labels"]["test"].as_str().unwrap().to_owned()
        };
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(label(&[]), "amd64", "{repo}: host platform");
        }
        assert_eq!(label(&["-platform", "linux/arm64"]), "arm64", "{repo}");
        assert_eq!(label(&["--platform=linux/arm/v7"]), "armv7", "{repo}");
        let err = fl.fails(&["-image", &image, "-platform", "linux/s390x"], 3);
        assert!(
            err.contains("no image for platform linux/s390x")
                && err.contains("linux/amd64, linux/arm64/v8, linux/arm/v7"),
            "{repo}: {err}"
        );
    }
}

#[test]
fn pull_by_digest_works_offline_once_cached() {
    let mut reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "pinned/app:1",
        &ImageSpec::new("p", busybox_layers("p")),
        &[],
    );
    let fl = Flmount::new();
    let image = format!("{}/pinned/app@{}", reg.addr(), w.manifest);
    fl.ok(&["-image", &image]);
    reg.stop();
    let err = fl.ok(&["-image", &image]);
    assert_eq!(fetched_layers(&err), 0, "{err}");
    // A tag whose registry is down: the cached resolution is used, with a warning.
    let tagged = format!("{}/pinned/app:1", reg.addr());
    let err = fl.fails(&["-image", &tagged], 5);
    assert!(err.contains("cannot connect"), "{err}");
    reg.resume();
    fl.ok(&["-image", &tagged]);
    reg.stop();
    let err = fl.ok(&["-image", &tagged]);
    assert!(err.contains("registry unreachable, used the cache"), "{err}");
}

#[test]
fn unknown_image_or_tag_is_a_clear_error() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    push_single(
        &reg,
        &tmp.path().join("l"),
        "known/app:1",
        &ImageSpec::new("k", busybox_layers("k")),
        &[],
    );
    let fl = Flmount::new();
    for image in [
        format!("{}/known/app:nope", reg.addr()),
        format!("{}/unknown/app:1", reg.addr()),
    ] {
        let err = fl.fails(&["-image", &image], 3);
        assert!(err.contains("not found"), "{err}");
        assert_eq!(
            err.trim().lines().filter(|l| l.contains("error")).count(),
            1,
            "not one line: {err}"
        );
    }
    let err = fl.fails(&["-image", "Not A Reference"], 2);
    assert!(err.contains("invalid image reference"), "{err}");
}

#[test]
fn registry_down_is_retried_then_reported() {
    let mut reg = Registry::start();
    let addr = reg.addr();
    reg.stop();
    let fl = Flmount::new();
    let start = std::time::Instant::now();
    let err = fl.fails(&["-image", &format!("{addr}/some/app:1")], 5);
    assert!(
        err.contains("cannot connect to registry") && err.contains("after 5 tries"),
        "{err}"
    );
    // Five tries, four waits of the backoff (250 ms doubling): at least
    // 3.75 s; a retry without backoff would take a few milliseconds.
    let took = start.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(3750),
        "gave up after {took:?}: the retries did not back off"
    );
    assert!(took.as_secs() < 30, "retries are not bounded: {took:?}");
    assert!(std::fs::read_dir(fl.workdir.join("blobs/sha256"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "bad/blob:1",
        &ImageSpec::new("c", busybox_layers("c")),
        &[],
    );
    // Same size, different bytes, in the registry's own storage.
    let data_path = reg.blob_data_path(w.layers[0].strip_prefix("sha256:").unwrap());
    let mut data = std::fs::read(&data_path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&data_path, &data).unwrap();

    let fl = Flmount::new();
    let err = fl.fails(&["-image", &format!("{}/bad/blob:1", reg.addr())], 6);
    assert!(
        err.contains("does not match its digest") || err.contains("verification"),
        "{err}"
    );
    assert!(!fl.blob(&w.layers[0]).exists(), "a corrupt blob was cached");
    // Other layers' partial downloads may stay (to be resumed); the corrupt one may not.
    let corrupt_partial = fl
        .workdir
        .join(format!("tmp/sha256-{}.partial", &w.layers[0][7..]));
    assert!(!corrupt_partial.exists(), "the corrupt download was kept");
}

#[test]
fn validate_cache_refetches_a_corrupted_blob() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "val/app:1",
        &ImageSpec::new("v", busybox_layers("v")),
        &[],
    );
    let fl = Flmount::new();
    let image = format!("{}/val/app:1", reg.addr());
    fl.ok(&["-image", &image]);
    let path = fl.blob(&w.layers[0]);
    let mut data = std::fs::read(&path).unwrap();
    data[10] ^= 1;
    std::fs::write(&path, &data).unwrap();
    // Seen at a proxy: the corrupted layer is fetched again, whole; the
    // intact one is not.
    let proxy = FaultProxy::start(reg.port, 0, "503 Service Unavailable");
    let err = fl.ok(&[
        "-image",
        &image.replace(&reg.addr(), &proxy.addr()),
        "-validate-cache",
    ]);
    assert_eq!(fetched_layers(&err), 1, "{err}");
    let gets = |d: &str| proxy.requests_for("GET", &format!("/blobs/{d}"));
    let refetched = gets(&w.layers[0]);
    assert!(
        refetched.len() == 1 && refetched[0].range.is_none(),
        "{refetched:?}"
    );
    assert!(gets(&w.layers[1]).is_empty(), "an intact layer was fetched again");
    assert_blob(&fl, &w.layers[0]);
}

#[test]
fn an_interrupted_download_is_resumed_and_a_bad_partial_discarded() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![(
        Compression::Gzip,
        tar(&[E::file("big", pseudo_random(3 << 20, 7))]),
    )];
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "resume/app:1",
        &ImageSpec::new("r", layers),
        &[],
    );
    let layer = std::fs::read(reg.blob_data_path(w.layers[0].strip_prefix("sha256:").unwrap())).unwrap();
    let partial_name = format!("sha256-{}.partial", w.layers[0].strip_prefix("sha256:").unwrap());
    // What the registry is asked for the layer, seen at a proxy in front of it.
    let layer_gets = |proxy: &FaultProxy| -> Vec<Option<String>> {
        proxy
            .requests_for("GET", &format!("/blobs/{}", w.layers[0]))
            .into_iter()
            .map(|r| r.range)
            .collect()
    };

    // A good half left by a killed run: resumed with one range request
    // for the rest, never downloaded whole.
    let proxy = FaultProxy::start(reg.port, 0, "503 Service Unavailable");
    let image = format!("{}/resume/app:1", proxy.addr());
    let fl = Flmount::new();
    std::fs::create_dir_all(fl.workdir.join("tmp")).unwrap();
    let half = layer.len() / 2;
    std::fs::write(fl.workdir.join("tmp").join(&partial_name), &layer[..half]).unwrap();
    fl.ok(&["-image", &image, "-v"]);
    assert_blob(&fl, &w.layers[0]);
    assert_eq!(
        layer_gets(&proxy),
        [Some(format!("bytes={half}-"))],
        "the partial download was not resumed from where it stopped"
    );

    // A partial file with wrong bytes: resumed, found bad when verified
    // whole, then downloaded again from the start (no range).
    let proxy = FaultProxy::start(reg.port, 0, "503 Service Unavailable");
    let image = format!("{}/resume/app:1", proxy.addr());
    let fl = Flmount::new();
    std::fs::create_dir_all(fl.workdir.join("tmp")).unwrap();
    std::fs::write(fl.workdir.join("tmp").join(&partial_name), vec![0u8; 1000]).unwrap();
    let err = fl.ok(&["-image", &image]);
    assert!(err.contains("again from the start"), "{err}");
    assert_blob(&fl, &w.layers[0]);
    assert_eq!(
        layer_gets(&proxy),
        [Some("bytes=1000-".to_owned()), None],
        "a bad partial was not resumed, then fetched whole"
    );
}

#[test]
fn concurrent_processes_share_one_workdir() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for (i, name) in ["c/a:1", "c/b:1"].iter().enumerate() {
        let mut layers = busybox_layers(name);
        layers.push((
            Compression::Gzip,
            tar(&[E::file("blob", pseudo_random(2 << 20, i as u64))]),
        ));
        written.push(push_single(
            &reg,
            &tmp.path().join(i.to_string()),
            name,
            &ImageSpec::new(name, layers),
            &[],
        ));
    }
    // Counted at a proxy in front of the registry: each blob is asked for once.
    let proxy = FaultProxy::start(reg.port, 0, "503 Service Unavailable");
    let fl = Flmount::new();
    let children: Vec<_> = ["c/a:1", "c/b:1", "c/a:1", "c/b:1"]
        .iter()
        .map(|n| {
            fl.command()
                .args(["-image", &format!("{}/{n}", proxy.addr()), "-q"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for w in &written {
        for d in w.layers.iter().chain([&w.config, &w.manifest]) {
            assert_blob(&fl, d);
        }
    }
    // Seven distinct blobs (the busybox layer is shared; each image has two
    // more layers and a config): each downloaded by one of the four
    // processes only.
    let mut blobs: Vec<&String> = written
        .iter()
        .flat_map(|w| w.layers.iter().chain([&w.config]))
        .collect();
    blobs.sort();
    blobs.dedup();
    assert_eq!(blobs.len(), 7, "the two images share one layer");
    for d in blobs {
        let gets = proxy.requests_for("GET", &format!("/blobs/{d}"));
        assert_eq!(gets.len(), 1, "{d} was downloaded {} times: {gets:?}", gets.len());
    }
    assert!(std::fs::read_dir(fl.workdir.join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn schema1_manifests_are_refused_clearly() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    push_single(
        &reg,
        &tmp.path().join("l"),
        "old/s1:1",
        &ImageSpec::new("s", busybox_layers("s")),
        &["--format", "v2s1"],
    );
    let fl = Flmount::new();
    // Ask for it the way an old registry would serve it: by tag, with
    // schema 1 as the only thing it has.
    let err = fl.fails(&["-image", &format!("{}/old/s1:1", reg.addr())], 1);
    assert!(err.contains("schema 1"), "{err}");
}

#[test]
fn help_explains_every_flag_and_version_works() {
    let fl = Flmount::new();
    let out = fl.command().arg("-h").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--image",
        "--workdir",
        "--extractto",
        "--mount",
        "--overlaydir",
        "--parallel-downloads",
        "--username",
        "--password",
        "--saveconfig",
        "--validate-cache",
        "--platform",
        "--insecure",
        "--plain-http",
    ] {
        assert!(help.contains(flag), "{flag} missing from -h:\n{help}");
    }
    assert!(help.contains("Examples:"), "{help}");
    let out = fl.command().arg("-version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn server_errors_are_retried_with_backoff_then_reported() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "flaky/app:1",
        &ImageSpec::new("f", busybox_layers("f")),
        &[],
    );

    // Three 503s (some land on oci-client's `/v2/` auth probes, which do
    // not look at the status), then a healthy registry: the manifest fetch
    // is retried and the pull succeeds.
    let proxy = FaultProxy::start(reg.port, 3, "503 Service Unavailable");
    let fl = Flmount::new();
    let err = fl.ok(&["-image", &format!("{}/flaky/app:1", proxy.addr())]);
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(
        err.contains("answered HTTP 503") && err.contains("retrying"),
        "{err}"
    );
    for d in &w.layers {
        assert_blob(&fl, d);
    }

    // A registry that keeps failing: bounded retries, then exit 5.
    let proxy = FaultProxy::start(reg.port, usize::MAX, "502 Bad Gateway");
    let fl = Flmount::new();
    let start = std::time::Instant::now();
    let err = fl.fails(&["-image", &format!("{}/flaky/app:1", proxy.addr())], 5);
    assert!(err.contains("HTTP 502") && err.contains("after 5 tries"), "{err}");
    assert!(start.elapsed().as_secs() < 30, "retries are not bounded");
    let tries = proxy.failed.load(std::sync::atomic::Ordering::SeqCst);
    // 5 manifest attempts; oci-client may precede each with a `/v2/` probe.
    assert!(
        (5..=12).contains(&tries),
        "{tries} connections: retries not bounded as documented"
    );

    // Rate limited (429): retried with backoff the same way.
    let proxy = FaultProxy::start(reg.port, 3, "429 Too Many Requests");
    let fl = Flmount::new();
    let err = fl.ok(&["-image", &format!("{}/flaky/app:1", proxy.addr())]);
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(err.contains("answered HTTP 429"), "{err}");

    // 429 with Retry-After: the registry's wait is honoured (the backoff
    // alone would retry after 250 ms).
    let proxy = FaultProxy::with(
        reg.port,
        2,
        Fault::Status("429 Too Many Requests", "Retry-After: 2\r\n"),
    );
    let fl = Flmount::new();
    let err = fl.ok(&["-image", &format!("{}/flaky/app:1", proxy.addr())]);
    assert!(
        err.contains("Retry-After: 2 s") && err.contains("retrying in 2s"),
        "{err}"
    );
    let connections = proxy.connections.lock().unwrap().clone();
    let last_fault = connections.iter().rev().find(|c| c.1).unwrap().0;
    let next = connections.iter().find(|c| !c.1 && c.0 > last_fault).unwrap().0;
    assert!(
        next - last_fault >= std::time::Duration::from_millis(1900),
        "retried {:?} after a Retry-After of 2 s",
        next - last_fault
    );

    // A registry asking for an hour: reported at once, saying so.
    let proxy = FaultProxy::with(
        reg.port,
        usize::MAX,
        Fault::Status("429 Too Many Requests", "Retry-After: 3600\r\n"),
    );
    let start = std::time::Instant::now();
    let err = fl.fails(&["-image", &format!("{}/flaky/app:1", proxy.addr())], 5);
    assert!(err.contains("asks to wait 3600 s"), "{err}");
    assert!(start.elapsed().as_secs() < 20, "waited for a long Retry-After");
}

#[test]
fn a_stalled_transfer_is_resumed_after_the_timeout() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![(
        Compression::Gzip,
        tar(&[E::file("big", pseudo_random(3 << 20, 11))]),
    )];
    let w = push_single(
        &reg,
        &tmp.path().join("l"),
        "stall/app:1",
        &ImageSpec::new("st", layers),
        &[],
    );
    // The first answer longer than 1 MiB (the layer) stops after 1 MiB and
    // the connection stays open, silent.
    let proxy = FaultProxy::with(reg.port, 1, Fault::StallAfter(1 << 20));
    let fl = Flmount::new();
    let start = std::time::Instant::now();
    let err = fl.ok(&[
        "-image",
        &format!("{}/stall/app:1", proxy.addr()),
        "-timeout",
        "2",
    ]);
    let took = start.elapsed();
    assert_eq!(proxy.failed.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(err.contains("timed out") && err.contains("resuming"), "{err}");
    assert!(
        proxy.ranged.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the download was not resumed with a range request"
    );
    assert!(took.as_secs() < 20, "a 2 s stall timeout took {took:?}");
    assert_blob(&fl, &w.layers[0]);
}
