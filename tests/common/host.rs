//! What the machine gives a test: the test bed's tools, root, free
//! loopback ports; and what a test that cannot run here does (a SKIPPED
//! line, or a failure in CI).

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

/// Panics with a clear message when a test-bed tool is missing.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "the test bed needs `{tool}`, which is not installed: run `scripts/install-testbed.sh` (as root)"
    );
}

/// True when running as root; otherwise says loudly why the test skips.
pub fn root_or_skip(test: &str, why: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, &format!("needs root ({why})"));
    false
}

/// Whether a skipped test must fail instead: in CI (`CI=true`, as CI
/// runs `.ci/run`) or with `FLMOUNT_STRICT=1`, every test runs for real.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("FLMOUNT_STRICT").is_ok_and(|v| v == "1")
}

/// Reports a test that cannot run here: a failure when [`strict`],
/// otherwise a SKIPPED line on stdout and stderr. Root-only tests are
/// normally compiled as ignored where they cannot run (`build.rs`:
/// `cfg(flmount_no_root)`, `cfg(flmount_no_fuse)`), so `cargo test`
/// counts them as ignored; this is the fallback for a test binary built
/// as root and run by another user.
pub fn skip(test: &str, why: &str) {
    assert!(
        !strict(),
        "{test} cannot run here ({why}), and skips are failures in CI (CI=true / FLMOUNT_STRICT=1)"
    );
    println!("SKIPPED {test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port}");
}
