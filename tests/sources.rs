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
    let err = fl.fails(&["-image", &format!("oci:{}:three", layout.display())], 1);
    assert!(err.contains("no image tagged \"three\""), "{err}");

    // Change one byte of the biggest blob (a layer): refused, not imported.
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
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
