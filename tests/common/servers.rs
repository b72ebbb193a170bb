//! Chunk-store servers for tests: redis-server (the zdb protocol), moto
//! (S3) and a plain HTTP server, each a child process on a free loopback
//! port, killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, need, wait_for_port};

pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var("FLMOUNT_TESTBED_VENV").unwrap_or_else(|_| "/opt/flmount-testbed/venv".into());
    let p = Path::new(&venv).join("bin").join(name);
    assert!(
        p.exists(),
        "the test bed needs {}: run scripts/install-testbed.sh (as root)",
        p.display()
    );
    p
}

/// A server child process, killed and reaped on drop.
pub struct Server(pub Child, pub u16);

impl Server {
    pub fn spawn(cmd: &mut Command, port: u16, what: &str) -> Server {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        wait_for_port(port, &mut child, what);
        Server(child, port)
    }
    pub fn redis() -> Server {
        need("redis-server");
        let port = free_port();
        Server::spawn(
            Command::new("redis-server").args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ]),
            port,
            "redis-server",
        )
    }
    pub fn http(dir: &Path) -> Server {
        Server::http_on(dir, free_port())
    }
    /// An HTTP server for `dir` on a given port (to restart one).
    pub fn http_on(dir: &Path, port: u16) -> Server {
        Server::spawn(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
                .current_dir(dir),
            port,
            "python3 -m http.server",
        )
    }
    pub fn moto() -> Server {
        let port = free_port();
        Server::spawn(
            Command::new(venv_bin("moto_server")).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            port,
            "moto_server",
        )
    }
}

impl Server {
    /// moto with an empty bucket; returns the server and the bucket's store
    /// URL, credentials included.
    pub fn moto_bucket(bucket: &str) -> (Server, String) {
        let moto = Server::moto();
        super::run_ok(std::process::Command::new("curl").args([
            "-sf",
            "-X",
            "PUT",
            &format!("http://127.0.0.1:{}/{bucket}", moto.1),
        ]));
        let url = format!(
            "s3://AKIDTEST:s3-Secret-99@127.0.0.1:{}/{bucket}?region=us-east-1",
            moto.1
        );
        (moto, url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
