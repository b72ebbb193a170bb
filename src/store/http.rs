//! `http(s)://host/path`: a read-only store, `GET <url>/<hex[0..2]>/<hex>`
//! (a dir store published by any web server).

use std::time::Duration;

use anyhow::Result;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::codec::MAX_BLOB;
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

    /// A blob's body, read into one buffer as it arrives; a body longer
    /// than any blob (announced or not) is refused before it is read.
    async fn body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, StoreError> {
        let too_long = |n: u64| {
            StoreError::refused(
                &self.url,
                format!("it answered {n} bytes or more for a blob of at most {MAX_BLOB}"),
            )
        };
        let announced = resp.content_length().unwrap_or(0);
        if announced > MAX_BLOB as u64 {
            return Err(too_long(announced));
        }
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(part) = resp
            .chunk()
            .await
            .map_err(|e| StoreError::unavailable(&self.url, e))?
        {
            if body.len() + part.len() > MAX_BLOB {
                return Err(too_long((body.len() + part.len()) as u64));
            }
            body.extend_from_slice(&part);
        }
        Ok(body)
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
                s if s.is_success() => self.body(resp).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A server that answers every request with `head` and then `body`
    /// bytes of `x` (a store that lies about what a blob is).
    fn lying_store(head: &'static str, body: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut request = [0u8; 4096];
                let _ = conn.read(&mut request);
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&vec![b'x'; body]);
            }
        });
        format!("http://127.0.0.1:{port}/chunks")
    }

    /// A body longer than any blob is refused, whether its length was
    /// announced or not; a blob-sized one is read.
    #[tokio::test]
    async fn an_answer_longer_than_a_blob_is_refused() {
        let get = |url: String| async move {
            let store = HttpStore::new(&StoreUrl::parse(&url).unwrap(), Duration::from_secs(10)).unwrap();
            store.get(&[7; 32]).await
        };
        let announced = lying_store(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n",
            1000,
        );
        let err = get(announced).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("1000000000 bytes"), "{err}");
        let unannounced = lying_store("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 2 * MAX_BLOB);
        let err = get(unannounced).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused { .. }), "{err}");
        let honest = lying_store("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", MAX_BLOB);
        assert_eq!(get(honest).await.unwrap().len(), MAX_BLOB);
    }
}
