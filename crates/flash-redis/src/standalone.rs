//! [`RedisBackend`]: one standalone server (or a primary behind a proxy).

use crate::conn::{
    bad_url, impl_backend, map_err, set_cmd, Conn, CONNECT_TIMEOUT, RESPONSE_TIMEOUT,
};
use flash_core::{BackendError, Bytes, LeaseRead};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// A standalone Redis server as a flash cache backend.
///
/// Holds one multiplexed connection ([`ConnectionManager`]) that all tasks share
/// and that reconnects by itself after a failure; cloning is cheap.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Conn<ConnectionManager>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to `redis://[[user]:pass@]host:port[/db]` (`rediss://` for TLS
    /// when built with the `tls` feature). Fails when the server cannot be
    /// reached now; see [`Self::connect_lazy`] for a start that never fails.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(|e| bad_url(url, e))?;
        // One retry only: at start-up, an unreachable cache should be reported
        // promptly rather than after a long backoff.
        let config = Self::config().set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(map_err)?;
        Ok(Self::from_connection(conn))
    }

    /// Like [`Self::connect`] but connects on first use: an application can start
    /// while its cache is down (its lookups then fail over to the database).
    /// Only a malformed URL is an error.
    pub fn connect_lazy(url: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url).map_err(|e| bad_url(url, e))?;
        let conn =
            ConnectionManager::new_lazy_with_config(client, Self::config()).map_err(map_err)?;
        Ok(Self::from_connection(conn))
    }

    /// Wraps an existing connection manager (for custom connection settings).
    pub fn from_connection(conn: ConnectionManager) -> Self {
        RedisBackend {
            inner: Conn::new(conn),
        }
    }

    fn config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // After a failed command the manager reconnects in the background,
            // and commands wait for it. One attempt, no backoff: while a server
            // is down a command then fails at once instead of waiting out the
            // client's retry schedule (100 ms doubling by default, longer than
            // an operation's 50 ms deadline), and when it is back the next
            // command reconnects at once. The circuit breaker and flash's own
            // retries decide when to try again.
            .set_number_of_retries(0)
    }
}

impl_backend!(RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// One `MGET`: one round trip.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        self.inner.get_many(keys).await
    }

    /// One script call that reads every key and leases the first on a miss.
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        self.inner.get_or_lease(keys, lease, over, ttl).await
    }

    /// One pipeline of `SET`s: one round trip.
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (k, v) in items {
            pipe.add_command(set_cmd(k, v, ttl)).ignore();
        }
        pipe.query_async::<()>(&mut self.inner.conn.clone())
            .await
            .map_err(map_err)
    }
});
