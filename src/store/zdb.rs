//! `zdb://[user[:pass]@]host[:port]/[namespace]`: 0-db over the Redis
//! protocol (`SELECT ns [pass]`, `GET`, `SET`, `EXISTS`); keys are the raw
//! 32-byte chunk ids. One multiplexed connection, re-made after a failure.

use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::{ChunkId, Store, StoreError, StoreUrl};

pub struct ZdbStore {
    client: redis::Client,
    namespace: Option<String>,
    password: Option<String>,
    conn: Mutex<Option<MultiplexedConnection>>,
    timeout: Duration,
    url: String,
}

impl ZdbStore {
    pub fn new(url: &StoreUrl, timeout: Duration) -> Result<Self> {
        if url.host.is_empty() {
            bail!(
                "invalid zdb store {}: expected zdb://host[:port]/[namespace]",
                url.public()
            );
        }
        let port = url.port.unwrap_or(9900);
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(url.host.clone(), port),
            redis: Default::default(),
        };
        let namespace = Some(url.path.trim_matches('/').to_owned()).filter(|n| !n.is_empty());
        Ok(ZdbStore {
            client: redis::Client::open(info)?,
            namespace,
            password: url.password().map(str::to_owned),
            conn: Mutex::new(None),
            timeout,
            url: url.public(),
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let mut conn = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| StoreError::unavailable(&self.url, "connection timed out"))?
            .map_err(|e| StoreError::unavailable(&self.url, e))?;
        if let Some(ns) = &self.namespace {
            let mut select = redis::cmd("SELECT");
            select.arg(ns);
            if let Some(p) = &self.password {
                select.arg(p);
            }
            select
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| StoreError::refused(&self.url, format!("selecting namespace {ns}: {e}")))?;
        } else if let Some(p) = &self.password {
            // No namespace: the server's own password (0-db's admin one, a
            // redis `requirepass`).
            let mut auth = redis::cmd("AUTH");
            auth.arg(p);
            match auth.query_async::<()>(&mut conn).await {
                Ok(()) => {}
                // A server that asks for no password takes the store as is.
                Err(e) if e.to_string().contains("without any password configured") => {}
                Err(e) => return Err(StoreError::refused(&self.url, format!("authenticating: {e}"))),
            }
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    *self.conn.lock().await = None;
                    Err(StoreError::unavailable(&self.url, e))
                } else {
                    Err(StoreError::refused(&self.url, e))
                }
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(StoreError::unavailable(&self.url, "timed out"))
            }
        }
    }
}

impl Store for ZdbStore {
    fn get<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(&id[..]);
            self.run::<Option<Vec<u8>>>(cmd)
                .await?
                .ok_or_else(|| StoreError::NotFound(hex::encode(id)))
        }
        .boxed()
    }

    fn set<'a>(&'a self, id: &'a ChunkId, blob: &'a [u8]) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&id[..]).arg(blob);
            self.run::<redis::Value>(cmd).await.map(|_| ())
        }
        .boxed()
    }

    fn exists<'a>(&'a self, id: &'a ChunkId) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(&id[..]);
            Ok(self.run::<i64>(cmd).await? > 0)
        }
        .boxed()
    }

    fn public_url(&self) -> &str {
        &self.url
    }

    fn identity(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(super::IDENTITY_KEY);
            Ok(self
                .run::<Option<Vec<u8>>>(cmd)
                .await?
                .and_then(|t| super::parse_identity(&t)))
        }
        .boxed()
    }

    fn set_identity<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(super::IDENTITY_KEY).arg(id);
            self.run::<redis::Value>(cmd).await.map(|_| ())
        }
        .boxed()
    }
}
