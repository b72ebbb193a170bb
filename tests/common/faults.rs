//! Network faults for tests: TCP proxies in front of a real server that
//! answer HTTP errors or stall a transfer ([`FaultProxy`]), or go down
//! mid-way ([`CutProxy`]).

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a [`FaultProxy`] does to a connection it faults.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Answer the request with this status line (e.g. `503 Service
    /// Unavailable`), these extra header lines (each ending in `\r\n`) and
    /// `Connection: close`.
    Status(&'static str, &'static str),
    /// Forward the connection, but stop sending the server's answer after
    /// this many bytes, keeping the connection open: a stalled transfer.
    StallAfter(usize),
}

/// A TCP proxy in front of a server that faults the first `failures` HTTP
/// connections, then forwards every later connection untouched. TLS
/// handshakes are refused without counting. It records when each
/// connection was faulted or forwarded, and how many requests asked for a
/// byte range.
pub struct FaultProxy {
    pub port: u16,
    /// Connections faulted so far.
    pub failed: Arc<AtomicUsize>,
    /// Requests with a `Range` header so far.
    pub ranged: Arc<AtomicUsize>,
    /// (when, faulted) for each HTTP connection, in order.
    pub connections: Arc<Mutex<Vec<(Instant, bool)>>>,
    /// Every request forwarded to the server, in order.
    pub requests: Arc<Mutex<Vec<Request>>>,
}

/// A request a [`FaultProxy`] forwarded: what the server was asked.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The `Range` header's value, if any (`bytes=N-`).
    pub range: Option<String>,
}

impl FaultProxy {
    /// The requests forwarded so far with this method and a path ending in `suffix`.
    pub fn requests_for(&self, method: &str, suffix: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .cloned()
            .collect()
    }
}

/// Takes each complete request head (up to its blank line) out of `pending`:
/// the requests flmount sends a registry have no body.
fn parse_requests(pending: &mut Vec<u8>, out: &Mutex<Vec<Request>>) {
    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let (Some(method), Some(path)) = (first.next(), first.next()) else {
            continue;
        };
        let range = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_owned());
        out.lock().unwrap().push(Request {
            method: method.to_owned(),
            path: path.to_owned(),
            range,
        });
    }
}

impl FaultProxy {
    /// Answers the first `failures` connections with `status`.
    pub fn start(target_port: u16, failures: usize, status: &'static str) -> FaultProxy {
        FaultProxy::with(target_port, failures, Fault::Status(status, ""))
    }

    pub fn with(target_port: u16, failures: usize, fault: Fault) -> FaultProxy {
        use std::io::Read;
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = FaultProxy {
            port,
            failed: Arc::default(),
            ranged: Arc::default(),
            connections: Arc::default(),
            requests: Arc::default(),
        };
        let (failed, ranged, connections, requests) = (
            proxy.failed.clone(),
            proxy.ranged.clone(),
            proxy.connections.clone(),
            proxy.requests.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let mut first = [0u8; 1];
                let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
                // A TLS handshake (a client probing for HTTPS) is refused
                // without counting: only HTTP requests get the fault.
                if client.peek(&mut first).unwrap_or(0) == 0 || first[0] == 0x16 {
                    continue;
                }
                let _ = client.set_read_timeout(None);
                // A status fault is claimed by the connection; a stall, by
                // the first connections whose answers grow long enough.
                let claim = {
                    let failed = failed.clone();
                    move || {
                        failed
                            .fetch_update(SeqCst, SeqCst, |n| (n < failures).then_some(n + 1))
                            .is_ok()
                    }
                };
                let stall_after = match fault {
                    Fault::StallAfter(n) => n,
                    Fault::Status(..) => usize::MAX,
                };
                let faulted = matches!(fault, Fault::Status(..)) && claim();
                connections.lock().unwrap().push((Instant::now(), faulted));
                if let (true, Fault::Status(status, headers)) = (faulted, fault) {
                    let mut buf = [0u8; 4096];
                    let _ = client.read(&mut buf);
                    let body = "injected fault";
                    let _ = write!(
                        client,
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                let (ranged, requests) = (ranged.clone(), requests.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut pending = Vec::new();
                    while let Ok(n @ 1..) = c1.read(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        ranged.fetch_add(text.matches("\r\nrange: bytes=").count(), SeqCst);
                        pending.extend_from_slice(&buf[..n]);
                        parse_requests(&mut pending, &requests);
                        if s1.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut sent = 0usize;
                    let mut limit = stall_after;
                    while let Ok(n @ 1..) = s2.read(&mut buf) {
                        if sent + n >= limit {
                            if claim() {
                                // Stalled: nothing more is sent; the connection
                                // stays open until the client gives up on it.
                                let _ = c2.write_all(&buf[..limit - sent]);
                                return;
                            }
                            limit = usize::MAX;
                        }
                        if c2.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        sent += n;
                    }
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        proxy
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A TCP proxy that goes down mid-way: it forwards connections to
/// `target` until `after` bytes from clients have been forwarded, then
/// drops every connection and stops listening (new connections are
/// refused), as a store that dies during a transfer.
pub struct CutProxy {
    pub port: u16,
    /// Bytes from clients forwarded so far.
    pub forwarded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    pub fn start(target: u16, after: usize) -> CutProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = CutProxy {
            port,
            forwarded: Default::default(),
            cut: Default::default(),
        };
        let (forwarded, cut) = (proxy.forwarded.clone(), proxy.cut.clone());
        std::thread::spawn(move || {
            let mut sockets: Vec<std::net::TcpStream> = Vec::new();
            while !cut.load(SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let server = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
                        sockets.push(client.try_clone().unwrap());
                        sockets.push(server.try_clone().unwrap());
                        let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        let (mut c2, mut s2) = (client, server);
                        let (forwarded, cut) = (forwarded.clone(), cut.clone());
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 16 << 10];
                            while let Ok(n @ 1..) = c1.read(&mut buf) {
                                if cut.load(SeqCst) {
                                    return;
                                }
                                let total = forwarded.fetch_add(n, SeqCst) + n;
                                if total >= after {
                                    cut.store(true, SeqCst);
                                    return;
                                }
                                if s1.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        });
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut s2, &mut c2);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
            // Down: every connection dropped, the port no longer listens.
            drop(listener);
            for s in sockets {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        });
        proxy
    }
}
