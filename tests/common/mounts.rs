//! Mounts in tests: what is mounted where ([`mounted_at`]); a served
//! flist ([`Mounted`]): `flmount ... -mount DIR` started as systemd would
//! (a NOTIFY_SOCKET), returned once it reported READY=1, and stopped,
//! killed and unmounted whatever happens to the test; and the test's own
//! mounts ([`OwnMount`]).

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::host::{need, root_or_skip, skip};
use super::run::{run_ok, Flmount};

/// Whether something of type `fstype` (any type for `None`) is mounted at
/// `dir`, from /proc/self/mounts (no stat of `dir`, which could hang).
pub fn mounted_at(dir: &Path, fstype: Option<&str>) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts.lines().any(|l| {
        let mut f = l.split(' ').skip(1);
        f.next() == dir.to_str() && fstype.is_none_or(|t| f.next() == Some(t))
    })
}

/// True when FUSE mounts can be made here; otherwise says why the test skips.
pub fn fuse_or_skip(test: &str) -> bool {
    if !root_or_skip(test, "FUSE mounts with device nodes, owners and allow_other") {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip(test, "/dev/fuse is missing (no FUSE in this kernel or container)");
        return false;
    }
    need("fusermount3");
    true
}

pub fn is_mounted(dir: &Path) -> bool {
    mounted_at(dir, Some("fuse.flmount"))
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// A running `flmount ... -mount DIR` process.
pub struct Mounted {
    pub child: Option<Child>,
    pub dir: PathBuf,
    log: PathBuf,
    _notify: tempfile::TempDir,
}

impl Mounted {
    pub fn start(fl: &Flmount, args: &[&str], dir: &Path) -> Mounted {
        if !mounted_at(dir, None) {
            std::fs::create_dir_all(dir).unwrap();
        }
        let notify = tempfile::tempdir().unwrap();
        let socket_path = notify.path().join("notify");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let log = notify.path().join("log");
        let child = fl
            .command()
            .args(args)
            .args(["-mount", dir.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            dir: dir.to_owned(),
            log,
            _notify: notify,
        };
        let mut buf = [0u8; 512];
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("no READY=1 from flmount ({e}):\n{}", m.log()),
        };
        let message = String::from_utf8_lossy(&buf[..n]);
        assert!(message.contains("READY=1"), "unexpected notification {message:?}");
        assert!(
            is_mounted(dir),
            "READY=1 came before the mount was up:\n{}",
            m.log()
        );
        m.child_alive();
        m
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn child_alive(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("flmount exited with {status}:\n{}", self.log());
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for the process to end by itself (after an unmount or a
    /// signal); asserts a clean exit and that the mount is gone.
    pub fn wait_exit(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("flmount did not exit within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "flmount exited with {status}:\n{log}");
        assert!(!is_mounted(&self.dir), "the mount outlived its process");
        log
    }

    /// SIGKILL: the server dies without unmounting; its watcher must take
    /// the mount down (within a generous deadline).
    pub fn kill_and_wait_unmounted(&mut self) {
        signal(self.pid(), libc::SIGKILL);
        let _ = self.child.take().unwrap().wait();
        let deadline = Instant::now() + Duration::from_secs(40);
        while is_mounted(&self.dir) {
            assert!(
                Instant::now() < deadline,
                "the mount outlived its killed server:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as systemd stops a unit.
    pub fn stop(mut self) -> String {
        signal(self.pid(), libc::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A mount the test made itself (a tmpfs, a bind mount), unmounted when
/// dropped: what flmount must leave alone.
pub struct OwnMount(pub PathBuf);

impl OwnMount {
    pub fn tmpfs(dir: &Path) -> OwnMount {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m", "flmount-test"])
                .arg(dir),
        );
        OwnMount(dir.to_owned())
    }

    pub fn bind(from: &Path, dir: &Path) -> OwnMount {
        std::fs::create_dir_all(dir).unwrap();
        run_ok(Command::new("mount").arg("--bind").arg(from).arg(dir));
        OwnMount(dir.to_owned())
    }
}

impl Drop for OwnMount {
    fn drop(&mut self) {
        while mounted_at(&self.0, None) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
