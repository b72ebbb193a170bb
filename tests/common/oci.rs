//! OCI image layouts written by hand, for full control over what a test
//! image holds: layers and their compression, configs, platforms and
//! indexes; with the digests written, for assertions.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::Digest as _;

#[derive(Clone, Copy, Debug)]
pub enum Compression {
    None,
    /// gzip at level 1 (fast to build; zlib-ng's level 1 writes deflate
    /// blocks of megabytes).
    Gzip,
    /// gzip at the default level, as Docker and Go write layers (deflate
    /// blocks of tens of KiB).
    GzipDefault,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip | Compression::GzipDefault => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip | Compression::GzipDefault => {
                let level = match self {
                    Compression::Gzip => flate2::Compression::fast(),
                    _ => flate2::Compression::default(),
                };
                let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// An OCI image layout on disk, built by hand for full control.
pub struct Layout {
    pub dir: PathBuf,
    /// (tag, descriptor json) entries of index.json
    tags: Vec<serde_json::Value>,
}

/// What one image of a layout is made of.
pub struct ImageSpec<'a> {
    pub layers: Vec<(Compression, Vec<u8>)>,
    pub os: &'a str,
    pub arch: &'a str,
    pub variant: Option<&'a str>,
    /// Distinguishes otherwise identical configs.
    pub label: &'a str,
    /// The config's `config` object (entrypoint, cmd, env, ...), if not
    /// the default `/bin/sh` entrypoint.
    pub process: Option<serde_json::Value>,
    /// Layers built elsewhere (e.g. streamed, too big to hold as a tar),
    /// stacked above `layers`.
    pub prebuilt: Vec<PrebuiltLayer>,
}

/// A compressed layer blob with the digest of its uncompressed tar.
pub struct PrebuiltLayer {
    pub media_type: &'static str,
    pub blob: Vec<u8>,
    pub diff_id: String,
}

impl<'a> ImageSpec<'a> {
    pub fn new(label: &'a str, layers: Vec<(Compression, Vec<u8>)>) -> Self {
        ImageSpec {
            layers,
            os: "linux",
            arch: "amd64",
            variant: None,
            label,
            process: None,
            prebuilt: Vec::new(),
        }
    }
}

/// A written image: digests for assertions.
pub struct Written {
    pub manifest: String,
    pub manifest_size: usize,
    pub config: String,
    pub layers: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let l = Layout {
            dir: dir.to_owned(),
            tags: Vec::new(),
        };
        l.write_index();
        l
    }

    /// The bytes of a blob of this layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        std::fs::read(
            self.dir
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap()
    }

    fn put(&self, data: &[u8]) -> String {
        let hex = sha256_hex(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), data).unwrap();
        format!("sha256:{hex}")
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.tags});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Writes the blobs and manifest of one image; returns its digests.
    pub fn image(&mut self, spec: &ImageSpec) -> Written {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layers = Vec::new();
        let built: Vec<PrebuiltLayer> = spec
            .layers
            .iter()
            .map(|(c, tar)| PrebuiltLayer {
                media_type: c.media_type(),
                blob: c.compress(tar),
                diff_id: format!("sha256:{}", sha256_hex(tar)),
            })
            .collect();
        for layer in built.iter().chain(&spec.prebuilt) {
            let digest = self.put(&layer.blob);
            diff_ids.push(layer.diff_id.clone());
            layer_descs
                .push(json!({"mediaType": layer.media_type, "digest": digest, "size": layer.blob.len()}));
            layers.push(digest);
        }
        let mut platform = json!({"os": spec.os, "architecture": spec.arch});
        if let Some(v) = spec.variant {
            platform["variant"] = json!(v);
        }
        let mut config = platform.clone();
        config["config"] = spec.process.clone().unwrap_or_else(
            || json!({"Entrypoint": ["/bin/sh"], "Env": ["PATH=/bin"], "Labels": {"test": spec.label}}),
        );
        let history: Vec<_> = diff_ids
            .iter()
            .map(|d| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("layer {d}")}))
            .collect();
        config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        config["history"] = json!(history);
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = self.put(&manifest);
        Written {
            manifest: manifest_digest,
            manifest_size: manifest.len(),
            config: config_digest,
            layers,
        }
    }

    /// Tags a single-platform image.
    pub fn tag_image(&mut self, tag: &str, w: &Written) {
        self.tags.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": w.manifest, "size": w.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }

    /// Tags an index over several platform images; returns the index digest.
    pub fn tag_index(&mut self, tag: &str, images: &[(&ImageSpec, &Written)]) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|(spec, w)| {
                let mut platform = json!({"os": spec.os, "architecture": spec.arch});
                if let Some(v) = spec.variant {
                    platform["variant"] = json!(v);
                }
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": w.manifest, "size": w.manifest_size, "platform": platform})
            })
            .collect();
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
        let digest = self.put(&index);
        self.tags.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
        digest
    }
}
