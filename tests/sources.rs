//! Image sources beyond a registry, as skopeo writes them: `oci:DIR:TAG`,
//! `oci-archive:FILE:TAG` and `docker-archive:FILE:REF`, each extracted and
//! compared with the extraction of the same image pulled from the registry;
//! tampered content and ambiguous names are refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixtures::RulesImage;
use common::fstree::{assert_same_tree, Ignore};
use common::*;

/// `skopeo copy` of the rules image from the registry to `dest`.
fn skopeo_copy(img: &RulesImage, dest: &str) {
    need("skopeo");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}", img.image))
            .arg(dest),
    );
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn layouts_and_archives_extract_like_the_registry_image() {
    if !root_or_skip(
        "layouts_and_archives_extract_like_the_registry_image",
        "the fixture has device nodes and owners",
    ) {
        return;
    }
    let img = RulesImage::new("src/rules");
    let layout = img.path("layout-copy");
    let oci_archive = img.path("rules-oci.tar");
    let docker_archive = img.path("rules-docker.tar");
    skopeo_copy(&img, &format!("oci:{}:v1", layout.display()));
    skopeo_copy(&img, &format!("oci-archive:{}:v1", oci_archive.display()));
    skopeo_copy(
        &img,
        &format!("docker-archive:{}:src/rules:v1", docker_archive.display()),
    );
    for (name, source) in [
        ("oci", format!("oci:{}:v1", layout.display())),
        ("oci-untagged", format!("oci:{}", layout.display())),
        ("oci-archive", format!("oci-archive:{}:v1", oci_archive.display())),
        (
            "docker-archive",
            format!("docker-archive:{}", docker_archive.display()),
        ),
    ] {
        // A fresh workdir each time: nothing comes from the registry pull.
        let fl = Flmount::new();
        let target = img.path(&format!("from-{name}"));
        let log = fl.ok(&["-image", &source, "-extractto", target.to_str().unwrap()]);
        assert!(log.contains(".local/"), "{name}: {log}");
        assert_same_tree(&img.flat, &target, &Ignore::default());
    }
}

#[test]
fn tampered_layouts_and_ambiguous_names_are_refused() {
    let img = RulesImage::new("src/bad");
    let layout = img.path("layout");
    skopeo_copy(&img, &format!("oci:{}:one", layout.display()));
    skopeo_copy(&img, &format!("oci:{}:two", layout.display()));
    let fl = Flmount::new();
    let err = fl.fails(&["-image", &format!("oci:{}", layout.display())], 1);
    assert!(
        err.contains("name one with :TAG") && err.contains("one") && err.contains("two"),
        "{err}"
    );
    let err = fl.fails(&["-image", &format!("oci:{}:three", layout.display())], 3);
    assert!(err.contains("no image tagged \"three\""), "{err}");

    // Change one byte of the biggest blob (a layer): refused, not imported.
    let biggest = largest_file(&layout.join("blobs/sha256"));
    let mut data = std::fs::read(&biggest).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1;
    std::fs::write(&biggest, data).unwrap();
    let err = fl.fails(&["-image", &format!("oci:{}:one", layout.display())], 1);
    assert!(err.contains("does not match its descriptor"), "{err}");
    let hex = biggest.file_name().unwrap().to_str().unwrap();
    assert!(
        !fl.workdir.join("blobs/sha256").join(hex).exists(),
        "a tampered blob was imported"
    );
    assert!(!Path::new(&fl.workdir.join("tmp")).read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("import-")));
}

/// The JSON `images -json` prints.
fn images(fl: &Flmount) -> Vec<serde_json::Value> {
    let out = fl.run(&["images", "-json"]);
    assert!(out.status.success());
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn sources_keep_their_names_and_every_image_is_removable() {
    let img = RulesImage::new("src/names");
    let layout = img.path("layout-copy");
    let archive = img.path("bb.tar");
    skopeo_copy(&img, &format!("oci:{}:v1", layout.display()));
    // skopeo's own spelling of the name inside a docker archive.
    skopeo_copy(&img, &format!("docker-archive:{}:newb/bb:1", archive.display()));
    let fl = Flmount::new();
    fl.ok(&[
        "-image",
        &format!("docker-archive:{}:newb/bb:1", archive.display()),
    ]);
    fl.ok(&[
        "-image",
        &format!("docker-archive:{}:docker.io/newb/bb:1", archive.display()),
    ]);
    fl.ok(&["-image", &format!("oci:{}:v1", layout.display())]);
    let list = images(&fl);
    let names: Vec<(String, String)> = list
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().into(),
                i["tag"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("docker-archive.local/newb/bb".to_owned(), "1".to_owned()),
            ("oci.local/layout-copy".to_owned(), "v1".to_owned())
        ],
        "{list:?}"
    );
    let table = String::from_utf8(fl.run(&["images"]).stdout).unwrap();
    assert!(!table.contains("@sha256"), "{table}");

    // Removed by the spelling that pulled them, or by a digest as shown.
    fl.ok(&["images", "rm", &format!("oci:{}:v1", layout.display())]);
    let short = list[0]["digest"].as_str().unwrap()[..19].to_owned(); // sha256:<12 hex>
                                                                      // inspect and content path take the short digest too; inspect adds nothing.
    let out = fl.run(&["inspect", &short]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-archive.local/newb/bb:1"));
    let out = fl.run(&["content", "path", &short[7..]]);
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(Path::new(&path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&short[7..]));
    assert!(Path::new(&path).is_file());
    assert_eq!(images(&fl).len(), 1);
    fl.ok(&["images", "rm", &short]);
    assert!(images(&fl).is_empty());
    fl.fails(&["images", "rm", &short], 3);

    // inspect of a layout copies no layer and adds no image.
    let fresh = Flmount::new();
    let out = fresh.run(&["inspect", &format!("oci:{}:v1", layout.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let layers = std::fs::read_dir(fresh.workdir.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(layers, 2, "inspect copied more than the manifest and config");
    assert!(images(&fresh).is_empty(), "inspect added an image");
}

#[test]
fn unsupported_transports_and_wrong_archives_are_usage_errors() {
    let fl = Flmount::new();
    for src in [
        "dir:/nonexistent",
        "containers-storage:alpine",
        "docker-daemon:alpine:latest",
    ] {
        let started = std::time::Instant::now();
        let err = fl.fails(&["-image", src], 2);
        assert!(err.contains("unsupported transport"), "{src}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{src}: retried"
        );
    }
    // A docker archive given as an OCI archive: named, no temporary path.
    let img = RulesImage::new("src/wrong");
    let archive = img.path("docker.tar");
    skopeo_copy(&img, &format!("docker-archive:{}:wrong/x:1", archive.display()));
    let err = fl.fails(&["-image", &format!("oci-archive:{}", archive.display())], 2);
    assert!(
        err.contains("docker-archive:")
            && err.contains(archive.to_str().unwrap())
            && !err.contains("import-"),
        "{err}"
    );
}
