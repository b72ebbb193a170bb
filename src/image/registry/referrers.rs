//! Artifacts that refer to an image, kept in the image's own repository
//! (OCI distribution 1.1): pushing one with a `subject`, and finding one
//! by its `artifactType`.
//!
//! Where the registry has the referrers API (`GET
//! /v2/<repo>/referrers/<digest>`), it lists what refers to the image
//! itself. Where it does not (Debian's `docker-registry`, distribution
//! 2.x, answers 404), the spec's fallback is used on both sides: an image
//! index tagged `sha256-<hex of the subject>` lists the referrers, and the
//! pusher adds its artifact to it.

use anyhow::{Context, Result};
use oci_client::RegistryOperation;
use reqwest::header::HeaderValue;
use serde_json::{json, Value};

use super::{api, ErrorKind, RegistryClient, RegistryError};
use crate::image::digest::Digest;
use crate::image::manifest::Descriptor;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI empty descriptor's content (`{}`): an artifact's config.
const EMPTY: &[u8] = b"{}";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The largest referrers list or artifact manifest read.
const MAX_DOCUMENT: u64 = 4 << 20;

impl RegistryClient {
    fn at_digest(&self, digest: &str) -> oci_client::Reference {
        let image = self.image.oci();
        oci_client::Reference::with_digest(
            image.registry().to_owned(),
            image.repository().to_owned(),
            digest.to_owned(),
        )
    }

    /// Pushes `content` as an artifact of type `artifact_type` (its one
    /// layer of type `media_type`) that refers to the manifest `subject`;
    /// returns the artifact manifest's digest.
    pub async fn push_referrer(
        &self,
        subject: &Descriptor,
        artifact_type: &str,
        media_type: &str,
        content: Vec<u8>,
    ) -> Result<Digest> {
        let image = self.image.oci();
        self.client
            .auth(image, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| super::classify(&e, &self.image))
            .context("authorizing a push")?;
        let push = |e: oci_client::errors::OciDistributionError| super::classify(&e, &self.image);
        let empty = Digest::of(crate::image::digest::Algorithm::Sha256, EMPTY);
        let layer = Digest::of(crate::image::digest::Algorithm::Sha256, &content);
        let size = content.len();
        self.client
            .push_blob(image, EMPTY.to_vec(), &empty.to_string())
            .await
            .map_err(push)?;
        self.client
            .push_blob(image, content, &layer.to_string())
            .await
            .map_err(push)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": empty.to_string(), "size": EMPTY.len()},
            "layers": [{"mediaType": media_type, "digest": layer.to_string(), "size": size}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
        });
        let bytes = serde_json::to_vec(&manifest)?;
        let digest = Digest::of(crate::image::digest::Algorithm::Sha256, &bytes);
        self.client
            .push_manifest_raw(
                &self.at_digest(&digest.to_string()),
                bytes.clone(),
                HeaderValue::from_static(MANIFEST),
            )
            .await
            .map_err(push)?;
        if self.referrers_api(&subject.digest).await?.is_none() {
            // No referrers API: add the artifact to the fallback tag's index.
            let mut entries = self.tagged_referrers(&subject.digest).await?;
            entries.retain(|e| e["digest"] != json!(digest.to_string()));
            entries.push(json!({
                "mediaType": MANIFEST,
                "digest": digest.to_string(),
                "size": bytes.len(),
                "artifactType": artifact_type,
            }));
            let index =
                serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}))?;
            let tag = oci_client::Reference::with_tag(
                image.registry().to_owned(),
                image.repository().to_owned(),
                fallback_tag(&subject.digest),
            );
            self.client
                .push_manifest_raw(&tag, index, HeaderValue::from_static(INDEX))
                .await
                .map_err(push)?;
        }
        Ok(digest)
    }

    /// The newest artifact of type `artifact_type` that refers to the
    /// manifest `subject`: its one layer's descriptor, or `None`.
    pub async fn find_referrer(&self, subject: &Digest, artifact_type: &str) -> Result<Option<Descriptor>> {
        let entries = match self.referrers_api(subject).await? {
            Some(entries) => entries,
            None => self.tagged_referrers(subject).await?,
        };
        let Some(artifact) = entries
            .iter()
            .rev()
            .find(|e| e["artifactType"] == json!(artifact_type))
        else {
            return Ok(None);
        };
        let digest = Digest::parse(artifact["digest"].as_str().unwrap_or_default())
            .context("a referrer with an invalid digest")?;
        let what = format!("the artifact {digest} of {}", self.image);
        let bytes = self
            .document(&format!("manifests/{digest}"), MANIFEST, &what)
            .await?
            .with_context(|| format!("{what} is listed but missing"))?;
        if Digest::of(digest.algorithm(), &bytes) != digest {
            return Err(RegistryError::new(
                ErrorKind::Integrity,
                format!("{what} does not match its digest"),
            )
            .into());
        }
        let manifest: Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{what} is not JSON"))?;
        if manifest["subject"]["digest"] != json!(subject.to_string())
            || manifest["artifactType"] != json!(artifact_type)
        {
            return Err(RegistryError::new(
                ErrorKind::Integrity,
                format!("{what} is listed as a {artifact_type} of {subject}, but says otherwise"),
            )
            .into());
        }
        let layer = &manifest["layers"][0];
        let descriptor: Descriptor =
            serde_json::from_value(layer.clone()).with_context(|| format!("{what} has no valid layer"))?;
        Ok(Some(descriptor))
    }

    /// What the referrers API lists for `subject`; `None` when the
    /// registry has no such API (404).
    async fn referrers_api(&self, subject: &Digest) -> Result<Option<Vec<Value>>> {
        let what = format!("the referrers of {subject}");
        let index = self
            .document(&format!("referrers/{subject}"), INDEX, &what)
            .await?;
        index.map(|bytes| manifests_of(&bytes, &what)).transpose()
    }

    /// The entries of the fallback tag's index (none when it is missing).
    async fn tagged_referrers(&self, subject: &Digest) -> Result<Vec<Value>> {
        let what = format!("the referrers tag of {subject}");
        match self
            .document(&format!("manifests/{}", fallback_tag(subject)), INDEX, &what)
            .await?
        {
            Some(bytes) => manifests_of(&bytes, &what),
            None => Ok(Vec::new()),
        }
    }

    /// A small JSON document; `None` on 404.
    async fn document(&self, path: &str, accept: &str, what: &str) -> Result<Option<Vec<u8>>> {
        self.with_retry(&format!("reading {what}"), || async {
            match self.get(path, Some(accept), 0, None, what).await {
                Ok(response) => api::read_limited(response, MAX_DOCUMENT, what).await.map(Some),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// The referrers tag schema's tag: `sha256-<hex>`.
fn fallback_tag(subject: &Digest) -> String {
    subject.to_string().replace(':', "-")
}

fn manifests_of(bytes: &[u8], what: &str) -> Result<Vec<Value>> {
    let index: Value = serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))?;
    Ok(index["manifests"].as_array().cloned().unwrap_or_default())
}
