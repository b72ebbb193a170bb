//! OCI and Docker image manifests, indexes and manifest lists: the media
//! types flmount accepts, parsing untrusted manifest JSON into checked
//! descriptors, and choosing a platform from an index.

use std::fmt;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::fs::layer::Compression;
use crate::image::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What to send in `Accept` when asking for a manifest. Schema 1 is listed so
/// that a registry answering with it gets a clear "unsupported" error rather
/// than a 404.
pub const ACCEPTED: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
];

pub const SCHEMA1_UNSUPPORTED: &str =
    "this image uses Docker manifest schema 1, which flmount does not support \
     (deprecated since 2017); re-push it with a current Docker or skopeo";

/// Largest manifest or config accepted (the distribution registry's own limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A checked content descriptor: digest validated, size non-negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

impl Descriptor {
    /// The layer's compression, or an error for a media type that is not a layer.
    pub fn layer_compression(&self) -> Result<Compression> {
        let mt = self.media_type.as_str();
        Ok(match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            other => bail!(
                "layer {} has unsupported media type {other:?}",
                self.digest.short()
            ),
        })
    }
}

/// An os/arch/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty());
        if !ok {
            bail!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7");
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// The platform this binary runs on, in Go's GOOS/GOARCH words.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Whether an index entry for `candidate` serves a request for `self`.
    /// A missing variant on either side matches, as containerd's matcher does
    /// for arm64 (`v8` is the default).
    fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && match (&self.variant, &candidate.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// One entry of an image index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A single-platform image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a manifest document turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(Vec<IndexEntry>),
}

/// Whether a manifest document is Docker schema 1 (unsupported): checked
/// before a fetched document is trusted with anything, since a signed
/// schema 1 manifest never matches the digest registries give for it.
pub fn is_schema1(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Envelope>(bytes)
        .is_ok_and(|env| schema1(env.schema_version, env.media_type.as_deref()))
}

/// Whether a schema version and media type say Docker schema 1.
fn schema1(version: Option<i64>, media_type: Option<&str>) -> bool {
    version == Some(1) || matches!(media_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED))
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IndexDoc {
    manifests: Vec<IndexEntry>,
}

impl Manifest {
    /// Parses a manifest document. `content_type` is the registry's
    /// `Content-Type` header, used when the document names no media type.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self> {
        let env: Envelope = serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
        let media_type = env
            .media_type
            .clone()
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_owned()));
        if schema1(env.schema_version, media_type.as_deref()) {
            bail!(SCHEMA1_UNSUPPORTED);
        }
        if env.schema_version != Some(2) {
            bail!(
                "unsupported manifest schemaVersion {:?} (expected 2)",
                env.schema_version
            );
        }
        let is_index = match media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            // OCI allows the field to be absent: tell by the shape.
            None | Some("application/json" | "") => env.manifests.is_some() && env.config.is_none(),
            Some(other) => bail!("unsupported manifest media type {other:?}"),
        };
        if is_index {
            let doc: IndexDoc = serde_json::from_slice(bytes).context("invalid image index")?;
            Ok(Manifest::Index(doc.manifests))
        } else {
            let m: ImageManifest = serde_json::from_slice(bytes).context("invalid image manifest")?;
            for layer in &m.layers {
                layer.layer_compression()?;
            }
            Ok(Manifest::Image(m))
        }
    }
}

/// Picks the entry for `wanted` from an index, or explains what is there.
pub fn choose_platform<'a>(entries: &'a [IndexEntry], wanted: &Platform) -> Result<&'a IndexEntry> {
    let is_manifest =
        |e: &&IndexEntry| matches!(e.descriptor.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST);
    let exact = entries.iter().filter(is_manifest).find(|e| {
        e.platform.as_ref().is_some_and(|p| {
            p.os == wanted.os && p.architecture == wanted.architecture && p.variant == wanted.variant
        })
    });
    if let Some(e) = exact.or_else(|| {
        entries
            .iter()
            .filter(is_manifest)
            .find(|e| e.platform.as_ref().is_some_and(|p| wanted.matches(p)))
    }) {
        return Ok(e);
    }
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
        .filter(|p| p != "unknown/unknown")
        .collect();
    // Not found (exit 3), as an image the registry does not have.
    Err(crate::image::error::RegistryError::new(
        crate::image::error::ErrorKind::NotFound,
        format!(
            "no image for platform {wanted} in this index; available: {} (choose one with -platform)",
            if available.is_empty() {
                "none".to_owned()
            } else {
                available.join(", ")
            }
        ),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":20}}]}}"#,
            d(1),
            d(2)
        );
        let Manifest::Image(m) = Manifest::parse(doc.as_bytes(), None).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.layers[0].layer_compression().unwrap(), Compression::Gzip);
        assert_eq!(m.config.size, 10);

        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{}","size":2}}]}}"#,
            d(1),
            d(3)
        );
        let Manifest::Image(m) = Manifest::parse(oci.as_bytes(), Some(OCI_MANIFEST)).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.layers[0].layer_compression().unwrap(), Compression::Zstd);
    }

    #[test]
    fn rejects_schema1_bad_digests_and_negative_sizes() {
        let s1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = Manifest::parse(s1.as_bytes(), None).unwrap_err().to_string();
        assert!(err.contains("schema 1"), "{err}");
        let bad = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../x","size":1},"layers":[]}"#;
        assert!(Manifest::parse(bad.as_bytes(), Some(OCI_MANIFEST)).is_err());
        let neg = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":-1}},"layers":[]}}"#,
            d(1)
        );
        assert!(Manifest::parse(neg.as_bytes(), Some(OCI_MANIFEST)).is_err());
        let unknown_layer = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{}","size":1}},
            "layers":[{{"mediaType":"application/x-foo","digest":"{}","size":2}}]}}"#,
            d(1),
            d(2)
        );
        assert!(Manifest::parse(unknown_layer.as_bytes(), Some(OCI_MANIFEST)).is_err());
    }

    #[test]
    fn platform_choice() {
        let entry = |p: &str, n| IndexEntry {
            descriptor: Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: Digest::parse(&d(n)).unwrap(),
                size: 1,
            },
            platform: Some(Platform::parse(p).unwrap()),
        };
        let entries = vec![
            entry("linux/amd64", 1),
            entry("linux/arm64/v8", 2),
            entry("linux/arm/v7", 3),
        ];
        let pick = |p: &str| {
            choose_platform(&entries, &Platform::parse(p).unwrap()).map(|e| e.descriptor.digest.clone())
        };
        assert_eq!(pick("linux/amd64").unwrap().to_string(), d(1));
        assert_eq!(pick("linux/arm64").unwrap().to_string(), d(2));
        assert_eq!(pick("linux/arm/v7").unwrap().to_string(), d(3));
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(err.contains("linux/amd64, linux/arm64/v8, linux/arm/v7"), "{err}");
        assert!(pick("linux/arm/v6").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
    }
}
