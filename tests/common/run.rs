//! Running programs from tests: the flmount binary with a private HOME
//! and workdir ([`Flmount`]), a command that must succeed ([`run_ok`]), a
//! command run as `nobody` ([`as_nobody`]), and a command's peak memory
//! ([`run_measuring_memory`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::host::need;

/// A path as a command-line argument (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the flmount binary with a private HOME and DOCKER_CONFIG, so the
/// host's credentials never leak into a test.
pub struct Flmount {
    pub home: tempfile::TempDir,
    pub workdir: PathBuf,
    envs: Vec<(String, String)>,
}

impl Flmount {
    pub fn new() -> Flmount {
        let home = tempfile::tempdir().unwrap();
        let workdir = home.path().join("work");
        Flmount {
            home,
            workdir,
            envs: Vec::new(),
        }
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flmount"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("DOCKER_CONFIG", self.home.path().join(".docker"))
            .env("RUST_BACKTRACE", "1")
            .arg("-workdir")
            .arg(&self.workdir);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "flmount {args:?} failed ({}):\n{stderr}",
            out.status
        );
        stderr
    }

    /// Runs and asserts failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "flmount {args:?}: expected exit {code}:\n{stderr}"
        );
        stderr
    }

    pub fn blob(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').unwrap();
        self.workdir.join("blobs").join(algo).join(hex)
    }
}

/// Runs `cmd` to its end; returns its output and its peak resident memory
/// in KiB. GNU time runs it and reports: the kernel counts in a child's
/// peak the memory of the process it was forked from, so the peak must be
/// taken from a small parent, not from this (large) test process. `cmd`
/// runs with only the environment it sets (as [`Flmount::command`] does).
pub fn run_measuring_memory(cmd: &Command) -> (Output, u64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .env_clear()
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => timed.env(key, v),
            None => timed.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let output = timed
        .output()
        .expect("running /usr/bin/time (Debian package time)");
    let text = std::fs::read_to_string(report.path()).unwrap();
    // On failure GNU time writes "Command exited with non-zero status N" first.
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak memory in GNU time's report: {text:?}"));
    (output, kib)
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `program args` as `nobody` (uid and gid 65534, no groups):
/// whether it succeeded, its stdout (trimmed) and its stderr.
pub fn as_nobody<A: AsRef<OsStr>>(program: &str, args: &[A]) -> (bool, String, String) {
    need("setpriv");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
