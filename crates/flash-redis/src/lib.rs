//! # flash-redis
//!
//! Redis backends for flash: [`RedisBackend`] for a standalone server (or a
//! primary behind a proxy) and [`RedisClusterBackend`] for Redis Cluster.
//!
//! Both speak the same commands: `MGET` for lookups (on a cluster, one script
//! call per master that reads all of that node's keys), `SET … PX` for fills,
//! `SET … NX PX` for leases, and a small Lua script for compare-and-swap, so
//! that a lease check and the write that follows are one atomic step.
//!
//! # Layout
//!
//! - `conn`: what both share: the connection wrapper with the commands on one
//!   key, the compare-and-swap script, error mapping, limits and timeouts.
//! - `standalone`: [`RedisBackend`].
//! - `cluster`: [`RedisClusterBackend`], its multi-get script and URLs.
//! - `slots`: hash slots and the slot map that groups keys by master.
//! - `bus`: [`RedisBus`], the near tier's invalidation channel (pub/sub).

mod bus;
mod cluster;
mod conn;
mod slots;
mod standalone;

pub use bus::RedisBus;
pub use cluster::RedisClusterBackend;
pub use standalone::RedisBackend;

#[cfg(test)]
mod tests {
    use super::*;
    use flash_core::BackendError;

    #[tokio::test]
    async fn bad_urls_are_bad_url_errors() {
        for url in ["http://x", "redis://host:notaport", "", "redis+cluster://"] {
            let err = if url.contains("cluster") {
                RedisClusterBackend::connect(url).await.unwrap_err()
            } else {
                RedisBackend::connect(url).await.unwrap_err()
            };
            assert!(matches!(err, BackendError::BadUrl { .. }), "{url}: {err:?}");
        }
        assert!(matches!(
            RedisBackend::connect_lazy("nope://").unwrap_err(),
            BackendError::BadUrl { .. }
        ));
    }
}
