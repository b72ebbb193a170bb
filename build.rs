//! Build-time facts for the test suite only (nothing in the library or the
//! binary depends on them): where the root-only tests cannot run, they are
//! compiled as ignored, so `cargo test` reports them as ignored, not as
//! passes. `cfg(flmount_no_root)`: built by a user who is not root;
//! `cfg(flmount_no_fuse)`: no `/dev/fuse`. Neither is ever set in CI
//! (`CI=true`, or `FLMOUNT_STRICT=1` as `.ci/run` sets): there every test
//! runs, and one that cannot fails (`tests/common/host.rs: skip`).

use std::os::unix::fs::MetadataExt;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(flmount_no_root)");
    println!("cargo::rustc-check-cfg=cfg(flmount_no_fuse)");
    println!("cargo::rerun-if-changed=build.rs");
    // /proc/self belongs to the effective user of the process reading it.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let fuse = std::path::Path::new("/dev/fuse").exists();
    if root && fuse {
        // Nothing to ignore, whatever the environment: no rebuild when
        // CI or FLMOUNT_STRICT change.
        return;
    }
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=FLMOUNT_STRICT");
    let strict = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FLMOUNT_STRICT").is_ok_and(|v| v == "1");
    if strict {
        return;
    }
    if !root {
        println!("cargo::rustc-cfg=flmount_no_root");
    }
    if !fuse {
        println!("cargo::rustc-cfg=flmount_no_fuse");
    }
}
