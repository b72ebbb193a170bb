//! `-daemon` (rfs's `-d`): the command runs again as a child in its own
//! session, and this process returns once the child's mount is ready
//! (its `READY=1`, the notification a systemd unit gets, sent to a socket
//! of ours), or with the child's exit code if it ends first. The child's
//! log is relayed until then.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// Runs this command line again, without `-daemon`, detached.
pub fn run_detached() -> ExitCode {
    match detach() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flmount: error: -daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn detach() -> Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| !matches!(a.to_str(), Some("-daemon" | "--daemon" | "-d")))
        .collect();
    let dir = tempfile::Builder::new()
        .prefix("flmount-daemon-")
        .tempdir()
        .context("creating the readiness socket's directory")?;
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).context("creating the readiness socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let exe = std::env::current_exe().context("finding flmount's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the background server")?;
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        });
    }
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                // Give the relay a moment for the "mounted" line.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(ExitCode::SUCCESS);
            }
        }
        if let Some(status) = child.try_wait()? {
            std::thread::sleep(Duration::from_millis(50));
            let code = status.code().unwrap_or(1).clamp(0, 255) as u8;
            return Ok(ExitCode::from(if code == 0 { 1 } else { code }));
        }
    }
}
