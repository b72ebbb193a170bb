//! Talking to an OCI / Docker registry: transport choice (HTTPS, HTTPS
//! without verification, plain HTTP), authentication (anonymous, basic,
//! bearer-token challenge, through `oci-client`), bounded retries with
//! backoff, and verified, resumable blob downloads into the workdir.
//!
//! Transport rule, as Docker's: a registry on loopback, or named with
//! `-insecure`, is "insecure": HTTPS is tried first with certificate checks
//! off, and plain HTTP used when the registry does not speak TLS.
//! `-plain-http` forces HTTP. Every other registry gets verified HTTPS.

pub mod auth;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use crate::digest::Digest;
use crate::manifest::{self, Descriptor};
use crate::progress::LayerProgress;
use crate::reference::ImageRef;
use crate::workdir::Workdir;

pub use auth::Credentials;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Accept invalid TLS certificates and fall back to plain HTTP.
    pub insecure: bool,
    /// Use plain HTTP.
    pub plain_http: bool,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response: a stalled transfer
    /// fails after this long and is retried (resuming where it stopped).
    pub read_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            insecure: false,
            plain_http: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// Bounded retries with exponential backoff, for transient failures only.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// What kind of failure a registry call ended in; callers branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network failure, timeout, 5xx, 429: worth retrying.
    Unavailable,
    NotFound,
    Auth,
    /// Content that does not match its digest or size.
    Integrity,
    /// Anything else the registry or its content got wrong.
    Protocol,
}

/// A classified registry failure with a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub kind: ErrorKind,
    pub message: String,
}

/// A connection to one image's repository on its registry.
pub struct RegistryClient {
    client: oci_client::Client,
    auth: RegistryAuth,
    credentials: Option<Credentials>,
    image: ImageRef,
    retry: RetryPolicy,
    scheme: &'static str,
    insecure: bool,
}

impl RegistryClient {
    /// Chooses the transport, finds credentials and authenticates (so a
    /// wrong password is reported here, once, clearly).
    pub async fn connect(
        image: &ImageRef,
        transport: &Transport,
        flags: Option<Credentials>,
    ) -> Result<Self> {
        let host = image.registry_host().to_owned();
        let insecure = transport.insecure || image.is_loopback();
        let protocol = if transport.plain_http || (insecure && !speaks_tls(&host, transport).await) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let protocol_is_http = protocol == ClientProtocol::Http;
        tracing::debug!(registry = %host, ?protocol, insecure, "transport chosen");
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: insecure,
            connect_timeout: Some(transport.connect_timeout),
            read_timeout: Some(transport.read_timeout),
            platform_resolver: None,
            user_agent: concat!("flmount/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config).context("creating the registry client")?;
        let (credentials, source) = auth::lookup(image.registry(), flags)?;
        tracing::debug!(registry = %host, ?source, user = credentials.as_ref().map(|c| c.username.as_str()), "credentials");
        let auth = credentials
            .as_ref()
            .map_or(RegistryAuth::Anonymous, |c| c.to_auth());
        let this = RegistryClient {
            client,
            auth,
            credentials,
            image: image.clone(),
            retry: transport.retry,
            scheme: if protocol_is_http { "http" } else { "https" },
            insecure,
        };
        this.with_retry("authenticating", || async {
            this.client
                .auth(this.image.oci(), &this.auth, RegistryOperation::Pull)
                .await
                .map(|_| ())
        })
        .await?;
        Ok(this)
    }

    /// Fetches the manifest named by `reference` (a tag or digest of this
    /// image's repository). Returns its bytes and digest; when the
    /// reference is a digest the content has been checked against it.
    pub async fn fetch_manifest(&self, reference: &oci_client::Reference) -> Result<(Vec<u8>, Digest)> {
        let fetched = self
            .with_retry("fetching the manifest", || async {
                self.client
                    .pull_manifest_raw(reference, &self.auth, manifest::ACCEPTED)
                    .await
            })
            .await;
        let (bytes, digest) = match fetched {
            Err(e) if error_kind(&e) == Some(ErrorKind::Integrity) && self.is_schema1(reference).await => {
                return Err(protocol_error(manifest::SCHEMA1_UNSUPPORTED.to_owned()));
            }
            other => other?,
        };
        if bytes.len() as u64 > manifest::MAX_MANIFEST_BYTES {
            return Err(protocol_error(format!(
                "manifest of {reference} is {} bytes, more than the {} allowed",
                bytes.len(),
                manifest::MAX_MANIFEST_BYTES
            )));
        }
        // oci-client checked the body against the requested digest and the
        // Docker-Content-Digest header; recompute so the cache key is ours.
        let algorithm = Digest::parse(&digest)
            .map(|d| d.algorithm())
            .unwrap_or(crate::digest::Algorithm::Sha256);
        Ok((bytes.to_vec(), Digest::of(algorithm, &bytes)))
    }

    /// Downloads the blob `desc` into the workdir, verified, resuming a
    /// partial download left by an earlier attempt or run. Returns the bytes
    /// transferred (0 when the blob was already cached).
    pub async fn fetch_blob(
        &self,
        workdir: &Workdir,
        desc: &Descriptor,
        progress: &LayerProgress,
    ) -> Result<u64> {
        let Some(mut writer) = workdir.begin_blob(&desc.digest, desc.size).await? else {
            return Ok(0);
        };
        let oci_desc = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.to_string(),
            size: desc.size as i64,
            ..Default::default()
        };
        let resumed_from = writer.offset();
        let mut transferred = 0u64;
        // A failure of the workdir itself (disk full), not of the registry.
        let mut local_failure: Option<anyhow::Error> = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let offset = writer.offset();
            progress.set_position(offset);
            let result: Result<(), OciDistributionError> = async {
                if offset == desc.size {
                    return Ok(());
                }
                let response = self
                    .client
                    .pull_blob_stream_partial(self.image.oci(), &oci_desc, offset, None)
                    .await?;
                let mut stream = match response {
                    oci_client::client::BlobResponse::Partial(s) => s,
                    oci_client::client::BlobResponse::Full(s) => {
                        if offset > 0 {
                            tracing::debug!(blob = %desc.digest.short(), "registry ignored the range request; restarting");
                            writer.restart().await.map_err(io_error)?;
                            progress.set_position(0);
                        }
                        s
                    }
                };
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if let Err(e) = writer.write(&chunk).await {
                        if is_local_io(&e) {
                            local_failure = Some(e);
                            return Err(OciDistributionError::GenericError(None));
                        }
                        return Err(integrity_as_oci(e));
                    }
                    transferred += chunk.len() as u64;
                    progress.inc(chunk.len() as u64);
                }
                Ok(())
            }
            .await;
            if let Some(e) = local_failure.take() {
                return Err(e.context(format!("downloading blob {}", desc.digest)));
            }
            match result {
                Ok(()) => break,
                Err(e) => {
                    let err = classify(&e, &self.image);
                    if err.kind != ErrorKind::Unavailable || attempt >= self.retry.attempts {
                        let _ = writer.suspend().await;
                        return Err(anyhow::Error::new(err).context(format!(
                            "downloading blob {} from {}",
                            desc.digest,
                            self.image.registry()
                        )));
                    }
                    let delay = self.retry.delay(attempt);
                    tracing::warn!(blob = %desc.digest.short(), attempt, error = %err, "download interrupted; resuming in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if let Err(e) = writer.commit().await {
            if is_local_io(&e) {
                // The workdir failed (disk full while syncing), not the content.
                return Err(e.context(format!("storing blob {}", desc.digest)));
            }
            if resumed_from > 0 {
                // The partial file left by an earlier run may hold bad bytes:
                // it is gone now; download once more from the start.
                tracing::warn!(blob = %desc.digest.short(), "resumed download failed verification ({e:#}); downloading it again from the start");
                return Box::pin(self.fetch_blob(workdir, desc, progress)).await;
            }
            return Err(anyhow::Error::new(RegistryError {
                kind: ErrorKind::Integrity,
                message: format!("{e:#}"),
            }));
        }
        Ok(transferred)
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of tries.
    async fn with_retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = classify(&e, &self.image);
                    if err.kind != ErrorKind::Unavailable || attempt >= self.retry.attempts {
                        let tries = if attempt > 1 {
                            format!(" (after {attempt} tries)")
                        } else {
                            String::new()
                        };
                        return Err(
                            anyhow::Error::new(err).context(format!("{what} for {}{tries}", self.image))
                        );
                    }
                    let delay = self.retry.delay(attempt);
                    tracing::warn!(registry = %self.image.registry(), attempt, error = %err, "{what} failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let d = self.first_delay.saturating_mul(1u32 << (attempt - 1).min(16));
        d.min(self.max_delay)
    }
}

impl RegistryClient {
    /// oci-client checks a manifest against its digest before returning it,
    /// which a signed schema 1 manifest never passes (its digest leaves out
    /// the signatures). When a manifest fails that check, fetch it once more,
    /// raw, only to tell whether it is schema 1 and say so plainly.
    async fn is_schema1(&self, reference: &oci_client::Reference) -> bool {
        let Ok(http) = reqwest::Client::builder()
            .danger_accept_invalid_certs(self.insecure)
            .timeout(Duration::from_secs(30))
            .build()
        else {
            return false;
        };
        let target = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{target}",
            self.scheme,
            self.image.registry_host(),
            reference.repository()
        );
        let get = |auth: Option<String>| {
            let mut req = http.get(&url).header("accept", manifest::ACCEPTED.join(", "));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            req.send()
        };
        let basic = self.credentials.as_ref().map(|c| c.basic_header());
        let Ok(mut resp) = get(basic.clone()).await else {
            return false;
        };
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_default();
            let Some(token) = bearer_token(&http, &challenge, basic.as_deref()).await else {
                return false;
            };
            let Ok(r) = get(Some(format!("Bearer {token}"))).await else {
                return false;
            };
            resp = r;
        }
        match resp.bytes().await {
            Ok(body) if body.len() as u64 <= manifest::MAX_MANIFEST_BYTES => {
                serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v["schemaVersion"] == 1)
            }
            _ => false,
        }
    }
}

/// Answers a `Bearer realm=..,service=..,scope=..` challenge with a token.
async fn bearer_token(http: &reqwest::Client, challenge: &str, basic: Option<&str>) -> Option<String> {
    let params = challenge.strip_prefix("Bearer ")?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in params.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"').to_owned();
        match k {
            "realm" => realm = Some(v),
            "service" | "scope" => query.push((k.to_owned(), v)),
            _ => {}
        }
    }
    let mut req = http.get(realm?).query(&query);
    if let Some(b) = basic {
        req = req.header("authorization", b);
    }
    let body: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .map(str::to_owned)
}

/// The kind of the first classified registry error in a chain.
pub fn error_kind(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<RegistryError>())
        .map(|r| r.kind)
}

/// Whether `host` answers TLS (any HTTP answer over HTTPS counts).
async fn speaks_tls(host: &str, transport: &Transport) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .connect_timeout(transport.connect_timeout)
        .timeout(transport.connect_timeout)
        .build()
    else {
        return false;
    };
    let ok = client.get(format!("https://{host}/v2/")).send().await.is_ok();
    tracing::debug!(host, tls = ok, "probed the registry for TLS");
    ok
}

fn protocol_error(message: String) -> anyhow::Error {
    anyhow::Error::new(RegistryError {
        kind: ErrorKind::Protocol,
        message,
    })
}

fn io_error(e: anyhow::Error) -> OciDistributionError {
    OciDistributionError::IoError(std::io::Error::other(format!("{e:#}")))
}

/// Whether `e` is a failure of this machine (disk full, permissions): an
/// operating-system error somewhere in its chain.
fn is_local_io(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error().is_some())
    })
}

/// A write refused by the workdir (oversize blob) is an integrity failure.
fn integrity_as_oci(e: anyhow::Error) -> OciDistributionError {
    OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
        expected: "content within its descriptor's size".into(),
        actual: format!("{e:#}"),
    })
}

/// Turns an oci-client error into a classified, readable one.
fn classify(e: &OciDistributionError, image: &ImageRef) -> RegistryError {
    use OciDistributionError as E;
    let registry = image.registry();
    let (kind, message) = match e {
        E::RequestError(re) => (
            ErrorKind::Unavailable,
            if re.is_connect() {
                format!(
                    "cannot connect to registry {registry}: {} (is it running and reachable?)",
                    root_cause(re)
                )
            } else if re.is_timeout() {
                format!("registry {registry} timed out: {}", root_cause(re))
            } else {
                format!("network error talking to {registry}: {}", root_cause(re))
            },
        ),
        E::IoError(io) => (
            ErrorKind::Unavailable,
            format!("transfer from {registry} failed: {io}"),
        ),
        E::ServerError { code, message, .. } if *code >= 500 || *code == 429 => (
            ErrorKind::Unavailable,
            format!(
                "registry {registry} answered HTTP {code}: {}",
                message.trim().chars().take(200).collect::<String>()
            ),
        ),
        E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => {
            (ErrorKind::NotFound, format!("{image} not found on {registry}"))
        }
        E::ServerError { code: 401 | 403, .. }
        | E::UnauthorizedError { .. }
        | E::AuthenticationFailure(_) => (
            ErrorKind::Auth,
            format!(
                "authentication to {registry} failed: wrong or missing credentials \
                 (give -username and -password, or log in with docker/podman)"
            ),
        ),
        E::ServerError { code, message, .. } => (
            ErrorKind::Protocol,
            format!(
                "registry {registry} answered HTTP {code}: {}",
                message.trim().chars().take(200).collect::<String>()
            ),
        ),
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            let text: Vec<String> = envelope.errors.iter().map(|e| e.message.clone()).collect();
            let joined = codes.join(",");
            if joined.contains("Unknown") {
                (
                    ErrorKind::NotFound,
                    format!("{image} not found on {registry} ({})", text.join("; ")),
                )
            } else if joined.contains("Unauthorized") || joined.contains("Denied") {
                (
                    ErrorKind::Auth,
                    format!("access to {image} denied by {registry} ({})", text.join("; ")),
                )
            } else {
                (
                    ErrorKind::Protocol,
                    format!("registry {registry} refused the request: {}", text.join("; ")),
                )
            }
        }
        E::DigestError(d) => (
            ErrorKind::Integrity,
            format!("content from {registry} failed verification: {d}"),
        ),
        other => (ErrorKind::Protocol, format!("registry {registry}: {other}")),
    };
    RegistryError { kind, message }
}

/// The innermost cause of a reqwest error ("connection refused"), which its
/// own Display hides behind "error sending request".
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(250));
        assert_eq!(p.delay(2), Duration::from_millis(500));
        assert_eq!(p.delay(30), Duration::from_secs(8));
    }
}
