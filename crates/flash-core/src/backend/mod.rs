//! The cache backend trait: what flash needs from memcached, Redis or an
//! in-process store. Implementations live in their own crates (or, for the
//! in-process one, behind the `memory` feature).

#[cfg(feature = "memory")]
pub mod memory;
pub mod resilient;

use crate::error::BackendError;
use async_trait::async_trait;
pub use bytes::Bytes;
use std::time::Duration;

/// A fill lease taken by [`Backend::get_or_lease`]: how the key is known to
/// still be the caller's when its value is stored ([`Backend::swap_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// The key holds exactly these bytes: the lease entry the caller passed.
    Bytes(Vec<u8>),
    /// The key holds the server's own empty placeholder, known by its
    /// compare-and-swap token (memcached's `mg … N`: the item it vivified and
    /// the `W` flag that made this caller the winner). Readers see an empty
    /// value while it is there.
    Token(u64),
}

/// What [`Backend::get_or_lease`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRead {
    /// The values of the keys, in order. When `lease` is taken, the first is
    /// `None` (the key held nothing before the lease).
    pub values: Vec<Option<Bytes>>,
    /// The lease, when the first key held nothing and now holds the caller's.
    pub lease: Option<Lease>,
    /// Requests the caller waited for, one after the other (1 when the backend
    /// reads and leases in one request; the default implementation needs 2 on
    /// a miss).
    pub round_trips: u32,
}

/// A cache server, seen as bytes in and bytes out.
///
/// `ttl` of [`Duration::ZERO`] means "no expiry". Keys are at most 250 bytes of
/// printable ASCII (see [`crate::key`]). Every operation is atomic on its key;
/// `compare_and_swap` is what makes leases (and so stale-free fills) possible.
///
/// Values come back as [`Bytes`]: a clone is a reference count, so a backend
/// hands out what it holds (the in-process store) or the buffer its client
/// parsed (`Bytes::from(vec)` moves it) without copying the value.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and metrics ("memory", "redis", "memcache").
    fn name(&self) -> &'static str;

    /// The values of `keys`, in order; one round trip per server.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError>;

    /// Stores `value` unconditionally.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError>;

    /// Stores `value` only if `key` holds nothing; `true` when it did.
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError>;

    /// Replaces the value of `key` with `new` (or deletes it when `new` is `None`)
    /// only if it currently holds exactly `expected`; `true` when it did.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Removes `key`; no error when it is absent.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// Stores several values unconditionally. Flash writes invalidation markers
    /// with it and nothing else, so wrappers treat it as an invalidation (the
    /// circuit breaker of [`resilient::ResilientBackend`] never refuses it).
    /// The default sends them one by one; backends override with a pipeline.
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        for (k, v) in items {
            self.set(k, v, ttl).await?;
        }
        Ok(())
    }

    /// Reads `keys` and, when the first holds nothing or a value that starts
    /// with `over` (an invalidation's marker; empty `over`: only nothing),
    /// makes it hold a lease for `ttl` (`lease`, or the server's own
    /// placeholder): a miss and its lease in one request where the server can
    /// (a Redis script, memcached's `mg` with vivify-on-miss). The default
    /// reads, then `add`s the lease or swaps it over the marker (two requests
    /// on a miss); a lost race is no lease.
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        let values = self.get_many(keys).await?;
        let took = match (keys.first(), values.first()) {
            (Some(key), Some(None)) => self.add(key, lease, ttl).await?,
            (Some(key), Some(Some(v))) if !over.is_empty() && v.starts_with(over) => {
                self.compare_and_swap(key, v, Some(lease), ttl).await?
            }
            _ => {
                return Ok(LeaseRead {
                    values,
                    lease: None,
                    round_trips: 1,
                })
            }
        };
        Ok(LeaseRead {
            values,
            lease: took.then(|| Lease::Bytes(lease.to_vec())),
            round_trips: 2,
        })
    }

    /// Replaces the value of `key` with `new` (or deletes it when `new` is
    /// `None`) only if it still holds `lease`; `true` when it did. The default
    /// compares bytes ([`Self::compare_and_swap`]); a backend that issues
    /// [`Lease::Token`] overrides it.
    async fn swap_lease(
        &self,
        key: &str,
        lease: &Lease,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        match lease {
            Lease::Bytes(b) => self.compare_and_swap(key, b, new, ttl).await,
            Lease::Token(_) => Err(BackendError::Protocol(
                "a lease token from another backend".into(),
            )),
        }
    }

    /// The largest value the backend stores; larger values are served but not cached.
    fn max_value_size(&self) -> usize {
        usize::MAX
    }

    /// The value of `key` read without waiting, when the backend can (an
    /// in-process store): a lookup's hit then decides on it without a
    /// future. `None` (the default, a server): read it with
    /// [`Self::get_many`]. A backend answers all keys this way or none.
    fn get_now(&self, _key: &str) -> Option<Option<Bytes>> {
        None
    }

    /// Does [`Self::get_now`] answer (the same for every key and call)? Lets
    /// a caller choose its path once instead of probing a key.
    fn answers_now(&self) -> bool {
        false
    }

    /// Should concurrent reads of one key in a process share one request?
    /// Yes for a server (a burst would queue on its connections); an
    /// in-process store answers faster than the coordination would cost.
    fn coalesce_reads(&self) -> bool {
        true
    }

    /// Can anything but this process write the store (another process,
    /// another client of the server)? Then flash seals each value with a tag
    /// of its key and a checksum (a keyed MAC with a secret) and checks it on
    /// every read (see [`crate::seal`]). Yes by default; the in-process
    /// store says no.
    fn shared(&self) -> bool {
        true
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        (**self).get_many(keys).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        (**self).set(key, value, ttl).await
    }
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        (**self).add(key, value, ttl).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        (**self).compare_and_swap(key, expected, new, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        (**self).delete(key).await
    }
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        (**self).set_many(items, ttl).await
    }
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        (**self).get_or_lease(keys, lease, over, ttl).await
    }
    async fn swap_lease(
        &self,
        key: &str,
        lease: &Lease,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        (**self).swap_lease(key, lease, new, ttl).await
    }
    fn max_value_size(&self) -> usize {
        (**self).max_value_size()
    }
    fn get_now(&self, key: &str) -> Option<Option<Bytes>> {
        (**self).get_now(key)
    }
    fn answers_now(&self) -> bool {
        (**self).answers_now()
    }
    fn coalesce_reads(&self) -> bool {
        (**self).coalesce_reads()
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
}
