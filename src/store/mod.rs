//! Chunk stores: where the encrypted pieces of an flist's files live.
//!
//! One [`Store`] trait, one file per backend, one factory ([`open`]) that
//! turns a store URL into a backend, and a [`Router`] that shards and
//! replicates by the first byte of the chunk id:
//!
//! | URL | backend |
//! | --- | --- |
//! | `dir:///path` | a local directory, blob at `<path>/<hex[0..2]>/<hex>` |
//! | `zdb://[user[:pass]@]host[:port]/[namespace]` | 0-db (Redis protocol: `SELECT`, `GET`, `SET`, `EXISTS`) |
//! | `s3://key:secret@host:port/bucket?region=R`, `s3s://` | S3-compatible object storage, path-style, object = hex id |
//! | `http(s)://host/path` | read-only: `GET <url>/<hex[0..2]>/<hex>` |
//!
//! A store argument may carry a range, `00-7f=URL` (inclusive, lowercase
//! hex); overlapping ranges replicate. Secrets (passwords, secret keys) are
//! never part of a store's public URL, which is what flists and logs get.

pub mod codec;
mod dir;
mod http;
mod router;
mod s3;
mod zdb;

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::future::BoxFuture;

pub use codec::{ChunkRef, CHUNK_SIZE};
pub use router::{ChunkError, ChunkFailure, Route, Router};

/// A chunk id: BLAKE2b-256 of the stored blob.
pub type ChunkId = [u8; 32];

/// What went wrong with a store; callers branch on the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} not found")]
    NotFound(String),
    /// The store itself does not exist (an S3 bucket): not found (exit 3).
    #[error("store {store}: {what} does not exist")]
    Missing { store: String, what: String },
    #[error("store {store} unavailable: {reason}")]
    Unavailable { store: String, reason: String },
    #[error("store {store} refused the request: {reason}")]
    Refused { store: String, reason: String },
    /// The store's answer is not what was asked for (bytes that do not
    /// decode to what the index says): not retried on this store.
    #[error("store {store}: {reason}")]
    Corrupt { store: String, reason: String },
    /// This machine failed (a `dir://` store's disk full, a permission):
    /// not retried, and reported as a local I/O error.
    #[error("store {store}: {reason}")]
    Local { store: String, reason: String },
}

impl StoreError {
    pub(crate) fn unavailable(store: &str, reason: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            store: store.to_owned(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn local(store: &str, reason: impl fmt::Display) -> Self {
        StoreError::Local {
            store: store.to_owned(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn refused(store: &str, reason: impl fmt::Display) -> Self {
        StoreError::Refused {
            store: store.to_owned(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn corrupt(store: &str, reason: impl fmt::Display) -> Self {
        StoreError::Corrupt {
            store: store.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// A place that keeps blobs by chunk id.
pub trait Store: Send + Sync {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;
    fn set<'a>(&'a self, id: &'a ChunkId, blob: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>>;
    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// The URL without secrets: safe for flists and logs.
    fn public_url(&self) -> &str;
    /// For a store of pieces rather than blobs (an image's layers, read
    /// by span): the piece `chunk` names, which the router checks against
    /// its key. `None` for a blob store.
    fn get_piece<'a>(&'a self, _chunk: &'a ChunkRef) -> Option<BoxFuture<'a, Result<Vec<u8>, StoreError>>> {
        None
    }
    /// Makes every blob set so far durable (before an flist names them).
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// The store's identity: the random id in its [`IDENTITY_KEY`] object,
    /// written the first time flmount packs into it. A store that lost its
    /// content (emptied, flushed, made anew) lost this too, so what the
    /// workdir remembers of it is keyed by this and no longer trusted.
    fn identity(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
    fn set_identity<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether the store holds `id`, when asking costs no round trip (a
    /// local directory); `None` otherwise.
    fn holds_locally(&self, _id: &ChunkId) -> Option<bool> {
        None
    }
    /// The directory of a local store.
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }
}

/// The name of a store's identity object (outside the chunk names, which
/// are hex).
pub const IDENTITY_KEY: &str = crate::owned::claim::STORE_IDENTITY;

/// A new random store identity.
pub fn new_identity() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    hex::encode(bytes)
}

/// The identity `text` holds, if it looks like one.
fn parse_identity(text: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(text).ok()?.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// How long one store operation may take before it counts as unavailable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed store URL: scheme, credentials, host, path, query.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub scheme: String,
    pub user: Option<String>,
    password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.public())
    }
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<Self> {
        let u = url::Url::parse(s).map_err(|e| anyhow::anyhow!("invalid store URL {:?}: {e}", redact(s)))?;
        if u.fragment().is_some() || !s.contains("://") {
            bail!(
                "invalid store URL {:?}: expected scheme://[user[:secret]@]host[:port]/path[?query] (write # as %23)",
                redact(s)
            );
        }
        Ok(StoreUrl {
            scheme: u.scheme().to_owned(),
            user: (!u.username().is_empty()).then(|| decode(u.username())),
            password: u.password().map(decode),
            host: u.host_str().unwrap_or_default().to_owned(),
            port: u.port(),
            path: decode(u.path()),
            query: u
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    /// `dir://PATH`.
    pub fn dir(path: &std::path::Path) -> StoreUrl {
        StoreUrl {
            scheme: "dir".into(),
            user: None,
            password: None,
            host: String::new(),
            port: None,
            path: path.to_string_lossy().into_owned(),
            query: Vec::new(),
        }
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The URL with the password / secret left out.
    pub fn public(&self) -> String {
        let mut out = format!("{}://", self.scheme);
        if let Some(u) = &self.user {
            out.push_str(&encode(u));
            out.push('@');
        }
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push_str(&format!(":{p}"));
        }
        out.push_str(&encode_path(&self.path));
        if !self.query.is_empty() {
            let q: Vec<String> = self
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            out.push('?');
            out.push_str(&q.join("&"));
        }
        out
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A path as a URL's path: what would end it or be decoded (`%`, `?`,
/// `#`) and what would be unreadable (spaces, controls) percent-encoded.
fn encode_path(s: &str) -> String {
    const PATH: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');
    percent_encoding::utf8_percent_encode(s, PATH).to_string()
}

/// Everything but unreserved characters (RFC 3986) encoded.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// A URL for messages before it could be parsed: everything between
/// `://` and `@` hidden.
pub fn redact(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***@{}", &s[..a], &s[b + 1..]),
        _ => s.to_owned(),
    }
}

/// Opens the backend for a store URL.
pub fn open(parsed: &StoreUrl, timeout: Duration) -> Result<Box<dyn Store>> {
    let parsed = parsed.clone();
    Ok(match parsed.scheme.as_str() {
        "dir" => Box::new(dir::DirStore::new(&parsed)?),
        "zdb" => Box::new(zdb::ZdbStore::new(&parsed, timeout)?),
        "s3" | "s3s" => Box::new(s3::S3Store::new(&parsed, timeout)?),
        "http" | "https" => Box::new(http::HttpStore::new(&parsed, timeout)?),
        other => bail!(
            "unknown store type {other:?} in {}: use dir://, zdb://, s3://, s3s:// or http(s)://",
            parsed.public()
        ),
    })
}

/// A store as the command line and an flist name it: the range of chunk
/// ids (by first byte) it serves and its URL, credentials included.
/// Parsed once, where the text enters (a flag, the config file, an flist's
/// route table); everything after carries this.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoreSpec {
    pub start: u8,
    pub end: u8,
    pub url: StoreUrl,
}

impl StoreSpec {
    /// `[xx-yy=]URL`; a bare URL serves every chunk.
    pub fn parse(arg: &str) -> Result<StoreSpec> {
        let (start, end, url) = parse_range(arg)?;
        let url = StoreUrl::parse(url)?;
        if !matches!(
            url.scheme.as_str(),
            "dir" | "zdb" | "s3" | "s3s" | "http" | "https"
        ) {
            bail!(
                "unknown store type {:?} in {}: use dir://, zdb://, s3://, s3s:// or http(s)://",
                url.scheme,
                url.public()
            );
        }
        Ok(StoreSpec { start, end, url })
    }

    /// A local directory serving every chunk (no URL text in between).
    pub fn dir(path: &std::path::Path) -> StoreSpec {
        StoreSpec {
            start: 0,
            end: 255,
            url: StoreUrl::dir(path),
        }
    }

    /// Whether it serves every chunk.
    pub fn covers_all(&self) -> bool {
        (self.start, self.end) == (0, 255)
    }
}

/// Splits `00-7f=URL` into the range and the URL; a bare URL covers all.
fn parse_range(arg: &str) -> Result<(u8, u8, &str)> {
    if let Some((range, url)) = arg.split_once('=') {
        if let Some((a, b)) = range.split_once('-') {
            let hex2 = |h: &str| {
                (h.len() == 2
                    && h.bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
                .then(|| u8::from_str_radix(h, 16).ok())
                .flatten()
            };
            if let (Some(start), Some(end)) = (hex2(a), hex2(b)) {
                if start > end {
                    bail!("store range {range} is empty (start after end)");
                }
                return Ok((start, end, url));
            }
            if !range.contains("://") {
                bail!("invalid store range {range:?}: expected two lowercase hex bytes, e.g. 00-7f=dir:///a");
            }
        }
    }
    Ok((0, 255, arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_secrets() {
        let u = StoreUrl::parse("s3://AKID:s3cr%2Fet@127.0.0.1:9000/bucket?region=us-east-1").unwrap();
        assert_eq!((u.user.as_deref(), u.password()), (Some("AKID"), Some("s3cr/et")));
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", Some(9000), "/bucket")
        );
        assert_eq!(u.query_value("region"), Some("us-east-1"));
        assert_eq!(u.public(), "s3://AKID@127.0.0.1:9000/bucket?region=us-east-1");
        assert!(!format!("{u:?}").contains("s3cr"));
        let z = StoreUrl::parse("zdb://user:pw@localhost:9900/ns").unwrap();
        assert_eq!(z.public(), "zdb://user@localhost:9900/ns");
        let d = StoreUrl::parse("dir:///var/lib/chunks").unwrap();
        assert_eq!((d.host.as_str(), d.path.as_str()), ("", "/var/lib/chunks"));
        assert_eq!(redact("zdb://u:pw@h/ns"), "zdb://***@h/ns");
        let odd = std::path::Path::new("/srv/a?b/100%/c d#e");
        let url = StoreUrl::dir(odd).public();
        assert_eq!(StoreUrl::parse(&url).unwrap().path, odd.to_str().unwrap());
        assert_eq!(StoreUrl::parse(&url).unwrap().public(), url);
        assert!(StoreSpec::parse("foo://bar").is_err());
        assert_eq!(StoreSpec::parse("00-7f=dir:///a").unwrap().end, 0x7f);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("00-7f=dir:///a").unwrap(), (0, 0x7f, "dir:///a"));
        assert_eq!(parse_range("dir:///a").unwrap(), (0, 255, "dir:///a"));
        assert!(parse_range("80-7f=dir:///a").is_err());
        assert!(parse_range("0-7F=dir:///a").is_err());
        // An `=` inside a URL's query is not a range.
        assert_eq!(
            parse_range("s3://k:s@h/b?region=x").unwrap().2,
            "s3://k:s@h/b?region=x"
        );
    }
}
