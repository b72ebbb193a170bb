//! Chunk stores for tests, each on a free loopback port: redis-server
//! (the zdb protocol), moto (S3) and python's HTTP server as child
//! processes killed and reaped on drop; and in-process stand-ins: an HTTP
//! store that counts its GETs, and 0-db's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::host::{free_port, need, wait_for_port};
use super::run::run_ok;

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
        Server::redis_with(&[])
    }
    /// A redis-server with extra arguments (e.g. `--requirepass`).
    pub fn redis_with(extra: &[&str]) -> Server {
        need("redis-server");
        let port = free_port();
        Server::spawn(
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                ])
                .args(extra),
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
        run_ok(Command::new("curl").args([
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
/// Dropped, it stops listening and closes every connection: a store that
/// went down.
pub struct CountingHttp {
    pub port: u16,
    gets: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl CountingHttp {
    pub fn start(dir: &Path) -> CountingHttp {
        CountingHttp::start_on(dir, 0)
    }

    /// On a given port (0: any), e.g. to bring a stopped store back.
    pub fn start_on(dir: &Path, port: u16) -> CountingHttp {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut server = CountingHttp {
            port,
            gets: Default::default(),
            stop: Default::default(),
            connections: Default::default(),
            accepting: None,
        };
        let (gets, stop, dir) = (server.gets.clone(), server.stop.clone(), dir.to_owned());
        let connections = server.connections.clone();
        server.accepting = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                connections.lock().unwrap().push(conn.try_clone().unwrap());
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
        }));
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
        // Wakes the accept loop so it sees the flag and closes the listener.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accepting.take() {
            let _ = t.join();
        }
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Keys and values by namespace.
type Namespaces = std::sync::Arc<
    std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>>,
>;

/// A stand-in for 0-db's namespaces on the wire, as the real 0-db answers
/// (`SELECT ns [password]`, `GET`, `SET` answering the key, `EXISTS`; the
/// replies were taken from 0-db v2.0.7): connections start in `default`
/// (open); `ns` needs `password`. For CI, where 0-db cannot be built.
pub struct ZdbNamespaces {
    pub port: u16,
    /// Keys stored per namespace.
    data: Namespaces,
}

impl ZdbNamespaces {
    pub fn start(ns: &str, password: &str) -> ZdbNamespaces {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = ZdbNamespaces {
            port,
            data: Default::default(),
        };
        server
            .data
            .lock()
            .unwrap()
            .insert("default".into(), Default::default());
        server.data.lock().unwrap().insert(ns.into(), Default::default());
        let (data, ns, password) = (server.data.clone(), ns.to_owned(), password.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (data, ns, password) = (data.clone(), ns.clone(), password.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut w = conn;
                    let mut current = "default".to_owned();
                    let line = |r: &mut BufReader<std::net::TcpStream>| -> Option<String> {
                        let mut l = String::new();
                        (r.read_line(&mut l).ok()? > 0).then(|| l.trim_end().to_owned())
                    };
                    loop {
                        let Some(head) = line(&mut r) else { return };
                        let Some(n) = head.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
                            return;
                        };
                        let mut args: Vec<Vec<u8>> = Vec::new();
                        for _ in 0..n {
                            let Some(len) =
                                line(&mut r).and_then(|l| l.strip_prefix('$')?.parse::<usize>().ok())
                            else {
                                return;
                            };
                            let mut arg = vec![0u8; len + 2];
                            if r.read_exact(&mut arg).is_err() {
                                return;
                            }
                            arg.truncate(len);
                            args.push(arg);
                        }
                        let cmd = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
                        let bulk = |b: &[u8]| [format!("${}\r\n", b.len()).as_bytes(), b, b"\r\n"].concat();
                        let mut store = data.lock().unwrap();
                        let reply: Vec<u8> = match (cmd.as_str(), args.len()) {
                            ("PING", _) => b"+PONG\r\n".to_vec(),
                            ("SELECT", 2 | 3) => {
                                let want = String::from_utf8_lossy(&args[1]).into_owned();
                                let given = args.get(2).map(|p| String::from_utf8_lossy(p).into_owned());
                                if !store.contains_key(&want) {
                                    b"-Namespace not found\r\n".to_vec()
                                } else if want == ns && given.is_none() {
                                    b"-Namespace protected and private\r\n".to_vec()
                                } else if want == ns && given.as_deref() != Some(password.as_str()) {
                                    b"-Access denied\r\n".to_vec()
                                } else {
                                    current = want;
                                    b"+OK\r\n".to_vec()
                                }
                            }
                            ("GET", 2) => match store[&current].get(&args[1]) {
                                Some(v) => bulk(v),
                                None => b"$-1\r\n".to_vec(),
                            },
                            ("SET", 3) => {
                                let key = args[1].clone();
                                store
                                    .get_mut(&current)
                                    .unwrap()
                                    .insert(key.clone(), args[2].clone());
                                bulk(&key)
                            }
                            ("EXISTS", 2) => {
                                format!(":{}\r\n", u8::from(store[&current].contains_key(&args[1])))
                                    .into_bytes()
                            }
                            _ => b"-Unsupported command\r\n".to_vec(),
                        };
                        drop(store);
                        if w.write_all(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        server
    }

    /// How many keys namespace `ns` holds.
    pub fn keys(&self, ns: &str) -> usize {
        self.data.lock().unwrap().get(ns).map_or(0, |m| m.len())
    }
}
