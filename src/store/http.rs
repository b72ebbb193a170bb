//! `http(s)://host/path`: a read-only store, `GET <url>/<hex[0..2]>/<hex>`
//! (a dir store published by any web server).

use std::time::Duration;

use anyhow::Result;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{ChunkId, Store, StoreError, StoreUrl};

pub struct HttpStore {
    client: reqwest::Client,
    base: String,
    url: String,
}

impl HttpStore {
    pub fn new(url: &StoreUrl, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("flmount/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let public = url.public();
        Ok(HttpStore {
            client,
            base: public.trim_end_matches('/').to_owned(),
            url: public,
        })
    }

    fn blob_url(&self, id: &ChunkId) -> String {
        let hex = hex::encode(id);
        format!("{}/{}/{hex}", self.base, &hex[..2])
    }
}

impl Store for HttpStore {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        async move {
            let resp = self
                .client
                .get(self.blob_url(id))
                .send()
                .await
                .map_err(|e| StoreError::unavailable(&self.url, e))?;
            match resp.status() {
                s if s.is_success() => Ok(resp
                    .bytes()
                    .await
                    .map_err(|e| StoreError::unavailable(&self.url, e))?
                    .to_vec()),
                reqwest::StatusCode::NOT_FOUND => Err(StoreError::NotFound(hex::encode(id))),
                s if s.is_server_error() => Err(StoreError::unavailable(&self.url, format!("HTTP {s}"))),
                s => Err(StoreError::refused(&self.url, format!("HTTP {s}"))),
            }
        }
        .boxed()
    }

    fn set<'a>(&'a self, _id: &'a ChunkId, _blob: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        async move { Err(StoreError::refused(&self.url, "http stores are read-only")) }.boxed()
    }

    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let resp = self
                .client
                .head(self.blob_url(id))
                .send()
                .await
                .map_err(|e| StoreError::unavailable(&self.url, e))?;
            Ok(resp.status().is_success())
        }
        .boxed()
    }

    fn public_url(&self) -> &str {
        &self.url
    }
}
