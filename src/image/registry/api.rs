//! Answers of the distribution API, read by flmount's own HTTP client:
//! turning a failed request or a non-2xx answer into a classified
//! [`RegistryError`] (with the registry's `Retry-After`), reading a body
//! within a size limit, and telling whether a ranged GET resumed where
//! asked.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, CONTENT_RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use super::{ErrorKind, RegistryError};

/// A request that got no answer: connection refused or reset, a timeout
/// (including a stalled transfer, after the read timeout), TLS.
pub(super) fn request_error(e: &reqwest::Error, registry: &str) -> RegistryError {
    let message = if e.is_connect() {
        format!(
            "cannot connect to registry {registry}: {} (is it running and reachable?)",
            root_cause(e)
        )
    } else if e.is_timeout() {
        format!("registry {registry} timed out: {}", root_cause(e))
    } else {
        format!("network error talking to {registry}: {}", root_cause(e))
    };
    RegistryError::new(ErrorKind::Unavailable, message)
}

/// The innermost cause of a reqwest error ("connection refused"), which its
/// own Display hides behind "error sending request".
pub(super) fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

/// A non-2xx answer about `what` (a manifest or blob), classified by its
/// status and, for 4xx, by the registry's error codes. `storage` names the
/// host that answered when the registry redirected elsewhere (blob
/// storage): its refusals (an expired signed URL) are worth a new try
/// through the registry, never a credentials problem.
pub(super) async fn status_error(
    response: Response,
    what: &str,
    registry: &str,
    storage: Option<&str>,
) -> RegistryError {
    let status = response.status();
    let retry_after = retry_after(response.headers(), SystemTime::now());
    // The body only explains; a hostile registry may send a huge one.
    let body = read_limited(response, 16 << 10, what).await.unwrap_or_default();
    let (codes, text) = error_envelope(&body);
    if let Some(host) = storage {
        return RegistryError {
            kind: ErrorKind::Unavailable,
            message: format!(
                "{host} (where {registry} redirected) answered HTTP {} for {what}: {text}",
                status.as_u16()
            ),
            retry_after,
        };
    }
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => ErrorKind::Unavailable,
        s if s.is_server_error() => ErrorKind::Unavailable,
        _ if codes
            .iter()
            .any(|c| matches!(c.as_str(), "BLOB_UNKNOWN" | "MANIFEST_UNKNOWN" | "NAME_UNKNOWN")) =>
        {
            ErrorKind::NotFound
        }
        _ if codes.iter().any(|c| c == "UNAUTHORIZED" || c == "DENIED") => ErrorKind::Auth,
        _ if codes.iter().any(|c| c == "TOOMANYREQUESTS") => ErrorKind::Unavailable,
        _ => ErrorKind::Protocol,
    };
    let message = match kind {
        ErrorKind::NotFound => format!("{what} not found on {registry}"),
        ErrorKind::Auth => format!(
            "authentication to {registry} failed for {what} (HTTP {}): wrong or missing credentials \
             (give -username and -password, or log in with docker/podman)",
            status.as_u16()
        ),
        _ => {
            let mut m = format!("registry {registry} answered HTTP {}", status.as_u16());
            if !text.is_empty() {
                m.push_str(": ");
                m.push_str(&text);
            }
            if let Some(wait) = retry_after {
                m.push_str(&format!(" (Retry-After: {} s)", wait.as_secs()));
            }
            m
        }
    };
    RegistryError {
        kind,
        message,
        retry_after,
    }
}

/// The error codes of a registry's JSON error body, and a short readable
/// text (its messages, or the start of a non-JSON body).
fn error_envelope(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let (codes, text) = match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => (
            env.errors.iter().map(|e| e.code.to_ascii_uppercase()).collect(),
            env.errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(_) => (Vec::new(), String::from_utf8_lossy(body).into_owned()),
    };
    let text = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    (codes, text)
}

/// `Retry-After` as seconds or an HTTP date, as a wait from `now`.
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The whole body, refused when it exceeds `limit` bytes.
pub(super) async fn read_limited(
    mut response: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let registry = response.url().host_str().unwrap_or_default().to_owned();
    let too_big = || {
        RegistryError::new(
            ErrorKind::Protocol,
            format!("{what}: the registry's answer is larger than the {limit} bytes allowed"),
        )
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e, &registry))? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether an answer to a GET from byte `offset` holds the content from
/// that byte (206 with a matching `Content-Range`), not the whole blob.
pub(super) fn resumes_at(response: &Response, offset: u64) -> bool {
    response.status() == StatusCode::PARTIAL_CONTENT
        && response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|start| start.trim().parse::<u64>().ok())
            == Some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        h.insert(RETRY_AFTER, earlier.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn error_bodies_are_read_for_codes_and_kept_short() {
        let (codes, text) =
            error_envelope(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#);
        assert_eq!(codes, ["MANIFEST_UNKNOWN"]);
        assert_eq!(text, "manifest unknown");
        let (codes, text) = error_envelope(&[b'x'; 5000]);
        assert!(codes.is_empty());
        assert_eq!(text.len(), 200);
        let (_, text) = error_envelope(b"line\nbreak\x1b[31m");
        assert_eq!(text, "line break [31m");
    }
}
