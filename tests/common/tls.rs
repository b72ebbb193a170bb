//! TLS for the test servers: self-signed certificates for 127.0.0.1,
//! made with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::host::need;
use super::run::run_ok;

/// A self-signed certificate for 127.0.0.1, made with openssl.
pub fn self_signed_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    need("openssl");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]));
    (cert, key)
}
