//! `s3://key:secret@host:port/bucket?region=R` (`s3s://` for TLS): any
//! S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, ...)
//! through the `object_store` crate, path-style, one object per chunk named
//! by its hex id. Credentials come from the URL, else from the usual
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment variables.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

use super::codec::MAX_BLOB;
use super::{ChunkId, Store, StoreError, StoreUrl};

pub struct S3Store {
    s3: AmazonS3,
    url: String,
    bucket: String,
}

impl S3Store {
    pub fn new(url: &StoreUrl, timeout: Duration) -> Result<Self> {
        let bucket = url.path.trim_matches('/');
        if url.host.is_empty() || bucket.is_empty() || bucket.contains('/') {
            bail!(
                "invalid s3 store {}: expected s3://key:secret@host:port/bucket?region=R",
                url.public()
            );
        }
        let tls = url.scheme == "s3s";
        let endpoint = match url.port {
            Some(p) => format!("{}://{}:{p}", if tls { "https" } else { "http" }, url.host),
            None => format!("{}://{}", if tls { "https" } else { "http" }, url.host),
        };
        let key = url
            .user
            .clone()
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = url
            .password()
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key), Some(secret)) = (key, secret) else {
            bail!(
                "no credentials for {}: put key:secret in the URL or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                url.public()
            );
        };
        let s3 = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region(url.query_value("region").unwrap_or("us-east-1"))
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            // Client options carry allow_http too: set it there, not before.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(!tls)
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: timeout,
                ..RetryConfig::default()
            })
            .build()
            .with_context(|| format!("configuring the s3 store {}", url.public()))?;
        Ok(S3Store {
            s3,
            url: url.public(),
            bucket: bucket.to_owned(),
        })
    }

    fn error(&self, id: &ChunkId, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } if chain_text(&e).contains("NoSuchBucket") => {
                StoreError::Missing {
                    store: self.url.clone(),
                    what: format!("bucket {:?}", self.bucket),
                }
            }
            object_store::Error::NotFound { .. } => StoreError::NotFound(hex::encode(id)),
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                StoreError::refused(&self.url, e)
            }
            // The innermost causes say what went wrong ("connection refused").
            other => StoreError::unavailable(&self.url, chain_text(&other)),
        }
    }
}

/// An error and its causes, `: `-separated.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

impl Store for S3Store {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        async move {
            let path = Path::from(hex::encode(id));
            let result = self.s3.get(&path).await.map_err(|e| self.error(id, e))?;
            if result.meta.size > MAX_BLOB as u64 {
                return Err(StoreError::refused(
                    &self.url,
                    format!(
                        "its object is {} bytes, a blob is at most {MAX_BLOB}",
                        result.meta.size
                    ),
                ));
            }
            Ok(result.bytes().await.map_err(|e| self.error(id, e))?.into())
        }
        .boxed()
    }

    fn set<'a>(&'a self, id: &'a ChunkId, blob: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let path = Path::from(hex::encode(id));
            self.s3
                .put(&path, PutPayload::from(blob.to_vec()))
                .await
                .map(|_| ())
                .map_err(|e| self.error(id, e))
        }
        .boxed()
    }

    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            match self.s3.head(&Path::from(hex::encode(id))).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.error(id, e)),
            }
        }
        .boxed()
    }

    fn public_url(&self) -> &str {
        &self.url
    }

    fn identity(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        async move {
            let path = Path::from(super::IDENTITY_KEY);
            match self.s3.get(&path).await {
                Ok(r) => {
                    let bytes = r.bytes().await.map_err(|e| self.error(&[0; 32], e))?;
                    Ok(super::parse_identity(&bytes))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.error(&[0; 32], e)),
            }
        }
        .boxed()
    }

    fn set_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            self.s3
                .put(
                    &Path::from(super::IDENTITY_KEY),
                    PutPayload::from(id.as_bytes().to_vec()),
                )
                .await
                .map(|_| ())
                .map_err(|e| self.error(&[0; 32], e))
        }
        .boxed()
    }
}
