//! Hand-off to runtimes: `-bundle DIR` gives an OCI runtime bundle that the
//! real `runc` runs (the image's entrypoint, cmd, environment, working
//! directory and user, `/sys/fs/cgroup` mounted), and `-lxcconfig FILE` an
//! LXC config that the real `lxc-start` and `lxc-execute` run the same way.

mod common;

use std::process::Command;

use common::tarball::{tar, E};
use common::*;
use serde_json::json;

/// A busybox image whose config runs a command as a named user.
fn app_image(reg: &Registry, tmp: &std::path::Path) -> String {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let layer = tar(&[
        E::dir("bin"),
        E::file("bin/busybox", &busybox).mode(0o755),
        E::symlink("bin/sh", "busybox"),
        E::symlink("bin/id", "busybox"),
        E::symlink("bin/grep", "busybox"),
        E::dir("dev"),
        E::dir("proc"),
        E::dir("sys"),
        E::dir("etc"),
        E::file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        ),
        E::file("etc/group", b"root:x:0:\napp:x:1001:\n"),
        E::dir("home"),
        E::dir("home/app").owner(1000, 1001),
    ]);
    let spec = ImageSpec {
        process: Some(json!({
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo \"hello from $GREETING as $(id -u):$(id -g) in $(pwd)\""],
            "Env": ["PATH=/bin", "GREETING=the bundle"],
            "WorkingDir": "/home/app",
            "User": "app"
        })),
        ..ImageSpec::new("app", vec![(Compression::Gzip, layer)])
    };
    reg.push_spec("rt/app", &spec, &tmp.join("layout"))
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn a_bundle_runs_with_runc() {
    if !root_or_skip("a_bundle_runs_with_runc", "runc runs containers as root") {
        return;
    }
    need("runc");
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = app_image(&reg, tmp.path());
    let bundle = tmp.path().join("bundle");
    Flmount::new().ok(&["-image", &image, "-bundle", bundle.to_str().unwrap()]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 1001}));
    assert!(bundle.join("rootfs/bin/busybox").is_file());

    let id = format!("flmount-test-{}", std::process::id());
    let state = tmp.path().join("runc-state");
    let out = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runc failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "hello from the bundle as 1000:1001 in /home/app");

    // `runc spec` mounts the cgroup filesystem (read-only); so does the
    // bundle (on cgroup v1, runc puts a tmpfs there with each hierarchy).
    let mut spec = spec;
    spec["process"]["args"] = json!(["/bin/grep", " /sys/fs/cgroup", "/proc/self/mountinfo"]);
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let out = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    let mounts = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && mounts.contains(" /sys/fs/cgroup"),
        "no /sys/fs/cgroup mount in the container ({}):\n{mounts}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_lxc_config_names_the_process() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = app_image(&reg, tmp.path());
    let rootfs = tmp.path().join("rootfs");
    let lxc = tmp.path().join("lxc.conf");
    Flmount::new().ok(&[
        "-image",
        &image,
        "-extractto",
        rootfs.to_str().unwrap(),
        "-lxcconfig",
        lxc.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&lxc).unwrap();
    // LXC splits commands on spaces and ignores quotes: a command with a
    // spaced argument goes through the image's shell.
    for line in [
        "lxc.init.cmd = /bin/sh -c eval${IFS}\"$FLMOUNT_INIT\"",
        "lxc.execute.cmd = /bin/sh -c eval${IFS}\"$FLMOUNT_INIT\"",
        "lxc.environment = FLMOUNT_INIT=unset FLMOUNT_INIT; exec '/bin/sh' '-c' \
         'echo \"hello from $GREETING as $(id -u):$(id -g) in $(pwd)\"'",
        "lxc.init.cwd = /home/app",
        "lxc.init.uid = 1000",
        "lxc.init.gid = 1001",
        "lxc.environment = PATH=/bin",
        "lxc.environment = GREETING=the bundle",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // Without a tree, user names are read from the image's layers.
    let alone = tmp.path().join("alone.conf");
    Flmount::new().ok(&["-image", &image, "-lxcconfig", alone.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&alone).unwrap(),
        text,
        "-lxcconfig alone differs from -lxcconfig with -extractto"
    );
}

/// The config of a container running `rootfs` with flmount's `-lxcconfig`.
fn lxc_container(dir: &std::path::Path, name: &str, rootfs: &std::path::Path, include: &std::path::Path) {
    std::fs::create_dir_all(dir.join("lxcpath")).unwrap();
    std::fs::write(
        dir.join(format!("{name}.conf")),
        format!(
            "lxc.include = {}\nlxc.rootfs.path = dir:{}\nlxc.uts.name = {name}\n\
             lxc.console.path = none\nlxc.net.0.type = empty\n",
            include.display(),
            rootfs.display()
        ),
    )
    .unwrap();
}

#[test]
#[cfg_attr(flmount_no_root, ignore = "needs root: run as root (CI does)")]
fn an_lxc_config_starts_with_lxc_start_and_lxc_execute() {
    if !root_or_skip(
        "an_lxc_config_starts_with_lxc_start_and_lxc_execute",
        "lxc-start runs containers as root",
    ) {
        return;
    }
    need("lxc-start");
    need("lxc-execute");
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = app_image(&reg, tmp.path());
    let rootfs = tmp.path().join("rootfs");
    let lxc = tmp.path().join("init.conf");
    Flmount::new().ok(&[
        "-image",
        &image,
        "-extractto",
        rootfs.to_str().unwrap(),
        "-lxcconfig",
        lxc.to_str().unwrap(),
    ]);
    let name = format!("flmount-test-{}", std::process::id());
    lxc_container(tmp.path(), &name, &rootfs, &lxc);
    let want = "hello from the bundle as 1000:1001 in /home/app";
    for tool in ["lxc-start", "lxc-execute"] {
        let mut cmd = Command::new(tool);
        cmd.args(["-n", &name, "-P"])
            .arg(tmp.path().join("lxcpath"))
            .arg("-f")
            .arg(tmp.path().join(format!("{name}.conf")))
            .arg("-o")
            .arg(tmp.path().join(format!("{tool}.log")))
            .args(["-l", "INFO"])
            .stdin(std::process::Stdio::null());
        if tool == "lxc-start" {
            cmd.arg("-F");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == want,
            "{tool} ({}): {stdout:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(tmp.path().join(format!("{tool}.log"))).unwrap_or_default()
        );
    }
}
