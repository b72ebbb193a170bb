//! Image references as Docker resolves them: `alpine` is
//! `docker.io/library/alpine:latest`, `host:port/repo:tag` names its own
//! registry, `repo@sha256:...` pins a digest. Parsing and normalisation are
//! oci-spec's port of Docker's own `normalize.go`; this module adds what
//! flmount decides from a reference: the canonical name used in the cache
//! and whether its registry is on this machine's loopback (plain HTTP by
//! default, as Docker treats it).

use std::fmt;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use crate::image::digest::Digest;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self> {
        let inner = oci_client::Reference::try_from(s).map_err(|e| {
            anyhow::anyhow!(
                "invalid image reference {s:?}: {e} (expected e.g. alpine, alpine:3.20, \
                 registry.example.com:5000/team/app:1.0 or repo@sha256:<64 hex>)"
            )
        })?;
        if inner.repository().chars().any(|c| c.is_ascii_uppercase()) {
            bail!("invalid image reference {s:?}: repository names must be lowercase");
        }
        let digest = inner
            .digest()
            .map(Digest::parse)
            .transpose()
            .with_context(|| format!("invalid image reference {s:?}"))?;
        Ok(ImageRef { inner, digest })
    }

    /// The registry as named (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The host that actually serves the registry API (`index.docker.io` for Docker Hub).
    pub fn registry_host(&self) -> &str {
        self.inner.resolve_registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The oci-client form, for registry calls.
    pub fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }

    /// The same repository at another digest (a platform's manifest, a blob's repository).
    pub fn with_digest(&self, digest: &Digest) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.registry().to_owned(),
            self.repository().to_owned(),
            digest.to_string(),
        )
    }

    /// The same repository, tag and digest on another registry (a mirror).
    pub fn on_registry(&self, registry: &str) -> Result<ImageRef> {
        let mut s = format!("{registry}/{}", self.repository());
        if let Some(tag) = self.tag() {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        ImageRef::parse(&s)
    }

    /// Whether the registry host is this machine (`localhost`, 127.0.0.0/8, `::1`).
    pub fn is_loopback(&self) -> bool {
        host_is_loopback(self.registry())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// `host`, `host:port`, `[v6]:port`: is it a loopback address?
pub fn host_is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_normalisation() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.registry_host(), "index.docker.io");
        let r = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/nginx:1.27");
        let r = ImageRef::parse("user/app").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:latest");
        let r = ImageRef::parse("ghcr.io/org/tool:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("ghcr.io", "org/tool", Some("v1"))
        );
    }

    #[test]
    fn ports_and_localhost() {
        let r = ImageRef::parse("127.0.0.1:5000/busybox:1").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "busybox");
        assert!(r.is_loopback());
        assert!(ImageRef::parse("localhost/app").unwrap().is_loopback());
        assert!(ImageRef::parse("localhost:5000/app").unwrap().is_loopback());
        assert!(ImageRef::parse("127.8.9.10:1/app").unwrap().is_loopback());
        assert!(host_is_loopback("[::1]:5000"));
        assert!(!ImageRef::parse("registry.local:5000/app").unwrap().is_loopback());
        assert!(!ImageRef::parse("alpine").unwrap().is_loopback());
        assert!(!host_is_loopback("localhost.evil.com"));
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        let r = ImageRef::parse(&format!("alpine@sha256:{hex}")).unwrap();
        assert_eq!(r.digest().unwrap().hex(), hex);
        assert_eq!(r.tag(), None);
        assert!(ImageRef::parse("alpine@sha256:abc").is_err());
        assert!(ImageRef::parse(&format!("alpine@md5:{hex}")).is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "UPPER/case", "a b", "alpine:tag with space", "-x"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
