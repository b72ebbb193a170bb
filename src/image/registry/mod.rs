//! Talking to an OCI / Docker registry: transport choice (HTTPS, HTTPS
//! without verification, plain HTTP), authentication (anonymous, basic,
//! bearer-token challenge, negotiated by `oci-client`), bounded retries
//! with backoff that honour `Retry-After`, and verified, resumable blob
//! downloads into the workdir.
//!
//! Manifests and blobs are fetched with flmount's own HTTP client (see
//! [`api`]), authorized with what `oci-client` negotiated, so that every
//! answer's headers are seen: `Retry-After`, `Content-Range`,
//! `Docker-Content-Digest`.
//!
//! Transport rule, as Docker's: a registry on loopback, or named with
//! `-insecure`, is "insecure": HTTPS is tried first with certificate checks
//! off, and plain HTTP used when the registry does not speak TLS.
//! `-plain-http` forces HTTP. Every other registry gets verified HTTPS.

mod api;
pub mod auth;
mod referrers;

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use crate::image::digest::Digest;
use crate::image::manifest::{self, Descriptor};
use crate::image::reference::ImageRef;
use crate::image::workdir::Workdir;
use crate::progress::LayerProgress;

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
/// A `Retry-After` from the registry lengthens the wait, up to
/// `max_retry_after`; a registry asking for more is reported at once.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: crate::retry::Backoff,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: crate::retry::Backoff::REGISTRY,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

pub use crate::image::error::{ErrorKind, RegistryError};

/// A connection to one image's repository on its registry.
pub struct RegistryClient {
    /// Negotiates authorization (the bearer-token dance).
    client: oci_client::Client,
    /// Fetches manifests and blobs.
    http: reqwest::Client,
    auth: RegistryAuth,
    credentials: Option<Credentials>,
    /// The `Authorization` header for API requests, renewed on a 401.
    authorization: Mutex<Option<HeaderValue>>,
    image: ImageRef,
    retry: RetryPolicy,
    read_timeout: Duration,
    /// `{scheme}://{host}/v2/{repository}`
    base: String,
    base_url: reqwest::Url,
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
        resolvable(&host, transport.connect_timeout).await?;
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
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(transport.connect_timeout)
            .read_timeout(transport.read_timeout)
            .user_agent(concat!("flmount/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("creating the HTTP client")?;
        let (credentials, source) = auth::lookup(image.registry(), flags)?;
        tracing::debug!(registry = %host, ?source, user = credentials.as_ref().map(|c| c.username.as_str()), "credentials");
        let auth = credentials
            .as_ref()
            .map_or(RegistryAuth::Anonymous, |c| c.to_auth());
        let scheme = if protocol_is_http { "http" } else { "https" };
        let base = format!("{scheme}://{host}/v2/{}", image.repository());
        let base_url = reqwest::Url::parse(&base).with_context(|| format!("registry address {base}"))?;
        let this = RegistryClient {
            client,
            http,
            auth,
            credentials,
            authorization: Mutex::new(None),
            base,
            base_url,
            image: image.clone(),
            retry: transport.retry,
            read_timeout: transport.read_timeout,
        };
        this.with_retry("authenticating", || this.authorize()).await?;
        Ok(this)
    }

    /// Negotiates the `Authorization` header: a bearer token when the
    /// registry challenges for one. Basic credentials are sent only once a
    /// 401 asks for them (see [`RegistryClient::get`]).
    async fn authorize(&self) -> Result<(), RegistryError> {
        let token = self
            .client
            .auth(self.image.oci(), &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| classify(&e, &self.image))?;
        let value = token.map(|t| self.header(&format!("Bearer {t}"))).transpose()?;
        *self.authorization.lock().unwrap() = value;
        Ok(())
    }

    /// An `Authorization` value, marked sensitive so it is never logged.
    fn header(&self, value: &str) -> Result<HeaderValue, RegistryError> {
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            RegistryError::new(
                ErrorKind::Auth,
                format!(
                    "{} gave a token that is not a valid header",
                    self.image.registry()
                ),
            )
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// Answers a 401: basic credentials when the challenge asks for them
    /// and we have some; else a new token (the old one may have expired).
    /// A token that cannot be renewed, after one was given, is taken as a
    /// passing failure of the token service.
    async fn reauthorize(&self, challenge: &str) -> Result<(), RegistryError> {
        if let Some(c) = &self.credentials {
            if challenge.trim_start().to_ascii_lowercase().starts_with("basic") {
                let basic = self.header(&c.basic_header())?;
                *self.authorization.lock().unwrap() = Some(basic);
                return Ok(());
            }
        }
        let had_token = self.authorization.lock().unwrap().is_some();
        self.authorize().await.map_err(|mut e| {
            if had_token && e.kind == ErrorKind::Auth {
                e.kind = ErrorKind::Unavailable;
                e.message = format!("renewing the token for {}: {}", self.image.registry(), e.message);
            }
            e
        })
    }

    /// GETs `{base}/{path}` (a manifest or blob), from byte `offset` (up
    /// to byte `end`, exclusive, when given), authorized; a 401 is
    /// answered once (see [`Self::reauthorize`]); a resume the registry
    /// cannot serve (416) is asked for whole. Any answer but 2xx is a
    /// classified error.
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        offset: u64,
        end: Option<u64>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = format!("{}/{path}", self.base);
        let mut offset = offset;
        let mut answered_401 = false;
        loop {
            let mut request = self.http.get(&url);
            if let Some(a) = accept {
                request = request.header(ACCEPT, a);
            }
            match end {
                Some(end) => request = request.header(RANGE, format!("bytes={offset}-{}", end - 1)),
                None if offset > 0 => request = request.header(RANGE, format!("bytes={offset}-")),
                None => {}
            }
            let authorization = self.authorization.lock().unwrap().clone();
            if let Some(a) = authorization {
                request = request.header(AUTHORIZATION, a);
            }
            let response = request
                .send()
                .await
                .map_err(|e| api::request_error(&e, self.image.registry()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            // Blobs are often redirected to storage elsewhere (S3, a CDN),
            // whose refusals are not about our credentials.
            let elsewhere = (response.url().host_str(), response.url().port_or_known_default())
                != (self.base_url.host_str(), self.base_url.port_or_known_default());
            if status == StatusCode::UNAUTHORIZED && !answered_401 && !elsewhere {
                tracing::debug!(registry = %self.image.registry(), "401: authorizing again");
                answered_401 = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.reauthorize(&challenge).await?;
                continue;
            }
            if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 && end.is_none() {
                tracing::debug!(registry = %self.image.registry(), "416 for a range from byte {offset}: asking for it whole");
                offset = 0;
                continue;
            }
            let storage = elsewhere.then(|| response.url().host_str().unwrap_or_default().to_owned());
            return Err(api::status_error(response, what, self.image.registry(), storage.as_deref()).await);
        }
    }

    /// Fetches the manifest named by `reference` (a tag or digest of this
    /// image's repository). Returns its bytes and digest, in the algorithm
    /// of the digest asked for (or else of the registry's
    /// `Docker-Content-Digest`), checked against the registry's
    /// `Docker-Content-Digest` when it sends one.
    pub async fn fetch_manifest(&self, reference: &oci_client::Reference) -> Result<(Vec<u8>, Digest)> {
        let (target, what) = match (reference.digest(), reference.tag()) {
            (Some(d), _) => (
                d,
                format!("{}/{}@{d}", self.image.registry(), reference.repository()),
            ),
            (None, tag) => {
                let tag = tag.unwrap_or("latest");
                (
                    tag,
                    format!("{}/{}:{tag}", self.image.registry(), reference.repository()),
                )
            }
        };
        let accept = manifest::ACCEPTED.join(", ");
        let (bytes, claimed) = self
            .with_retry("fetching the manifest", || async {
                let fetch = async {
                    let response = self
                        .get(&format!("manifests/{target}"), Some(&accept), 0, None, &what)
                        .await?;
                    let claimed = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| Digest::parse(v.trim()).ok());
                    let bytes = api::read_limited(response, manifest::MAX_MANIFEST_BYTES, &what).await?;
                    Ok((bytes, claimed))
                };
                // The read timeout bounds each pause, not a registry that
                // sends a small document one byte at a time.
                let deadline = self.read_timeout * 2;
                tokio::time::timeout(deadline, fetch).await.unwrap_or_else(|_| {
                    Err(RegistryError::new(
                        ErrorKind::Unavailable,
                        format!(
                            "registry {} took over {deadline:?} to send {what}",
                            self.image.registry()
                        ),
                    ))
                })
            })
            .await?;
        if manifest::is_schema1(&bytes) {
            return Err(protocol_error(manifest::SCHEMA1_UNSUPPORTED.to_owned()));
        }
        let asked = reference.digest().and_then(|d| Digest::parse(d).ok());
        let algorithm = asked
            .as_ref()
            .or(claimed.as_ref())
            .map_or(crate::image::digest::Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of(algorithm, &bytes);
        if let Some(claimed) = claimed.filter(|c| c.algorithm() == algorithm) {
            if claimed != digest {
                return Err(anyhow::Error::new(RegistryError::new(
                    ErrorKind::Integrity,
                    format!("the manifest {what} does not match the digest the registry gives for it: {claimed} announced, {digest} received"),
                )));
            }
        }
        Ok((bytes, digest))
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
        let what = format!("blob {} of {}", desc.digest, self.image);
        let path = format!("blobs/{}", desc.digest);
        let resumed_from = writer.offset();
        let mut transferred = 0u64;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let offset = writer.offset();
            progress.set_position(offset);
            let result: Result<(), Failure> = async {
                if offset == desc.size {
                    return Ok(());
                }
                let mut response = self.get(&path, None, offset, None, &what).await?;
                if offset > 0 && !api::resumes_at(&response, offset) {
                    writer.restart().await.map_err(Failure::Local)?;
                    progress.set_position(0);
                    if response.status() != StatusCode::OK {
                        // Part of the blob, but not from where we asked.
                        return Err(RegistryError::new(
                            ErrorKind::Unavailable,
                            format!("the registry answered a request for {what} from byte {offset} with other bytes; downloading it again whole"),
                        )
                        .into());
                    }
                    tracing::debug!(blob = %desc.digest.short(), "registry ignored the range request; restarting");
                }
                while let Some(chunk) = response
                    .chunk()
                    .await
                    .map_err(|e| api::request_error(&e, self.image.registry()))?
                {
                    writer.write(&chunk).await.map_err(|e| {
                        if is_local_io(&e) {
                            Failure::Local(e)
                        } else {
                            Failure::Registry(RegistryError::new(ErrorKind::Integrity, format!("{e:#}")))
                        }
                    })?;
                    transferred += chunk.len() as u64;
                    progress.inc(chunk.len() as u64);
                }
                if writer.offset() < desc.size {
                    return Err(RegistryError::new(
                        ErrorKind::Unavailable,
                        format!("the transfer of {what} ended at byte {} of {}", writer.offset(), desc.size),
                    )
                    .into());
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => break,
                Err(Failure::Local(e)) => return Err(e.context(format!("downloading blob {}", desc.digest))),
                Err(Failure::Registry(err)) => {
                    if writer.offset() > offset {
                        // It moved forward: only tries without progress count.
                        attempt = 1;
                    }
                    let delay = match self.retry.next_delay(attempt, &err) {
                        Ok(delay) => delay,
                        Err(note) => {
                            let _ = writer.suspend().await;
                            return Err(anyhow::Error::new(err).context(format!(
                                "downloading blob {} from {}{note}",
                                desc.digest,
                                self.image.registry()
                            )));
                        }
                    };
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
            return Err(anyhow::Error::new(RegistryError::new(
                ErrorKind::Integrity,
                format!("{e:#}"),
            )));
        }
        Ok(transferred)
    }

    /// Bytes `[start, end)` of the blob `digest`, with one ranged GET,
    /// retried as manifests are. A registry that answers with other bytes
    /// than those asked for (no range support, another range) is an
    /// error: a lazy read never downloads a whole layer.
    pub async fn fetch_range(&self, digest: &Digest, start: u64, end: u64) -> Result<Vec<u8>> {
        if start >= end {
            anyhow::bail!("an empty range ({start}-{end}) of blob {digest}");
        }
        let what = format!("bytes {start}-{end} of blob {digest} of {}", self.image);
        let path = format!("blobs/{digest}");
        self.with_retry("reading part of a layer", || async {
            let response = self.get(&path, None, start, Some(end), &what).await?;
            if !api::resumes_at(&response, start) {
                return Err(RegistryError::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} does not serve parts of blobs ({what} answered {}): -lazy needs ranged reads",
                        self.image.registry(),
                        response.status()
                    ),
                ));
            }
            let body = api::read_limited(response, end - start, &what).await?;
            if (body.len() as u64) < end - start {
                return Err(RegistryError::new(
                    ErrorKind::Unavailable,
                    format!("{what}: the answer ended after {} bytes", body.len()),
                ));
            }
            Ok(body)
        })
        .await
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of tries.
    async fn with_retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    let delay = match self.retry.next_delay(attempt, &err) {
                        Ok(delay) => delay,
                        Err(note) => {
                            return Err(
                                anyhow::Error::new(err).context(format!("{what} for {}{note}", self.image))
                            )
                        }
                    };
                    tracing::warn!(registry = %self.image.registry(), attempt, error = %err, "{what} failed; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Why a download attempt stopped.
enum Failure {
    /// The registry or the network: maybe worth another try.
    Registry(RegistryError),
    /// This machine (disk full): never retried.
    Local(anyhow::Error),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Registry(e)
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }

    /// How long to wait before attempt `attempt + 1` after `err`; or, to
    /// give up, why, as a note for the error message: the error is
    /// permanent, the tries are used up, or the registry asks for a longer
    /// wait than we allow.
    fn next_delay(&self, attempt: u32, err: &RegistryError) -> Result<Duration, String> {
        let tries = || {
            if attempt > 1 {
                format!(" (after {attempt} tries)")
            } else {
                String::new()
            }
        };
        if err.kind != ErrorKind::Unavailable || attempt >= self.attempts {
            return Err(tries());
        }
        match err.retry_after {
            Some(asked) if asked > self.max_retry_after => Err(format!(
                "{}: the registry asks to wait {} s before trying again, longer than the {} s flmount waits",
                tries(),
                asked.as_secs(),
                self.max_retry_after.as_secs()
            )),
            Some(asked) => Ok(asked.max(self.delay(attempt))),
            None => Ok(self.delay(attempt)),
        }
    }
}

/// The kind of the first classified registry error in a chain.
pub fn error_kind(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<RegistryError>())
        .map(|r| r.kind)
}

/// A registry whose name does not resolve is unavailable at once (exit 5),
/// not retried nor taken for an authentication failure. Skipped when a
/// proxy is configured: the proxy resolves names then.
async fn resolvable(host: &str, timeout: Duration) -> Result<(), RegistryError> {
    let proxied = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if proxied || name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let failed =
        |why: String| RegistryError::new(ErrorKind::Unavailable, format!("cannot resolve {name}: {why}"));
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, 443))).await {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(_) => Ok(()),
            None => Err(failed("no address".into())),
        },
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {} s", timeout.as_secs()))),
    }
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
    anyhow::Error::new(RegistryError::new(ErrorKind::Protocol, message))
}

/// Whether `e` is a failure of this machine (disk full, permissions): an
/// operating-system error somewhere in its chain.
fn is_local_io(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error().is_some())
    })
}

/// Turns an oci-client error (from negotiating authorization) into a
/// classified, readable one.
fn classify(e: &OciDistributionError, image: &ImageRef) -> RegistryError {
    use OciDistributionError as E;
    let registry = image.registry();
    let (kind, message) = match e {
        E::RequestError(re) => return api::request_error(re, registry),
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
    RegistryError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_lengthens_the_wait_within_a_limit() {
        let p = RetryPolicy::default();
        // The schedule's delay, up to a quarter more (jitter).
        let within = |d: Result<Duration, String>, base: u64| {
            let (d, base) = (d.unwrap(), Duration::from_millis(base));
            assert!(d >= base && d <= base + base / 4, "{d:?} for {base:?}");
        };
        let mut err = RegistryError::new(ErrorKind::Unavailable, "429".into());
        within(p.next_delay(1, &err), 250);
        err.retry_after = Some(Duration::from_secs(3));
        assert_eq!(p.next_delay(1, &err), Ok(Duration::from_secs(3)));
        err.retry_after = Some(Duration::ZERO);
        within(p.next_delay(2, &err), 500);
        err.retry_after = Some(Duration::from_secs(3600));
        assert!(p.next_delay(1, &err).unwrap_err().contains("wait 3600 s"));
        err.retry_after = None;
        assert_eq!(p.next_delay(5, &err), Err(" (after 5 tries)".into()));
        err.kind = ErrorKind::NotFound;
        assert_eq!(p.next_delay(1, &err), Err(String::new()));
    }
}
