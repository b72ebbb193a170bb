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

/// A static HTTP file server for a directory (a dir store served as an
/// HTTP store) that counts the GET requests for each path: how often each
/// chunk was fetched, seen at the store, not in flmount's own figures.
pub struct CountingHttp {
    pub port: u16,
    gets: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CountingHttp {
    pub fn start(dir: &Path) -> CountingHttp {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = CountingHttp {
            port,
            gets: Default::default(),
            stop: Default::default(),
        };
        let (gets, stop, dir) = (server.gets.clone(), server.stop.clone(), dir.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (gets, dir) = (gets.clone(), dir.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            if header == "\r\n" {
                                break;
                            }
                            if let Some((k, v)) = header.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let _ = std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink());
                        let mut parts = line.split(' ');
                        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
                        if method == "GET" {
                            *gets.lock().unwrap().entry(path.to_owned()).or_default() += 1;
                        }
                        let file = dir.join(path.trim_start_matches('/'));
                        let body = if path.contains("..") {
                            None
                        } else {
                            std::fs::read(&file).ok().filter(|_| file.is_file())
                        };
                        let head = match &body {
                            Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()),
                            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                        };
                        if conn.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        if let (Some(b), "GET") = (&body, method) {
                            if conn.write_all(b).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET requests by path so far.
    pub fn gets(&self) -> std::collections::BTreeMap<String, usize> {
        self.gets.lock().unwrap().clone()
    }
}

impl Drop for CountingHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
