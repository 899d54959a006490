//! The in-process backend, the embedded default: a moka cache of byte values with
//! per-entry TTL, bounded by total bytes.
//!
//! moka's synchronous cache, not its `future` one: nothing here ever waits
//! (the computes below are plain closures), and a synchronous read lets a
//! lookup's hit skip the boxed future of [`Backend::get_many`]
//! ([`Backend::get_now`]).

use crate::backend::{Backend, Bytes, Lease, LeaseRead};
use crate::error::BackendError;
use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;
use std::time::{Duration, Instant};

/// Stored item; the TTL travels with it so that moka's per-entry expiry can read it.
/// moka clones it on every read: `Bytes` makes that a reference count, and
/// the clone is what `get_many` returns (no copy of the value).
#[derive(Clone, Debug)]
struct Item {
    bytes: Bytes,
    ttl: Option<Duration>,
}

struct PerItemTtl;

impl moka::Expiry<String, Item> for PerItemTtl {
    fn expire_after_create(&self, _: &String, v: &Item, _: Instant) -> Option<Duration> {
        v.ttl
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Item,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.ttl
    }
}

/// An in-process cache. Cloning is cheap and shares the store.
#[derive(Clone)]
pub struct MemoryBackend {
    cache: Cache<String, Item>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::with_capacity_bytes(256 * 1024 * 1024)
    }
}

fn item(value: &[u8], ttl: Duration) -> Item {
    Item {
        bytes: Bytes::copy_from_slice(value),
        ttl: (!ttl.is_zero()).then_some(ttl),
    }
}

impl MemoryBackend {
    /// A store holding at most `bytes` of keys and values (approximately).
    pub fn with_capacity_bytes(bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(bytes)
            .weigher(|k: &String, v: &Item| {
                (k.len() + v.bytes.len() + 48)
                    .try_into()
                    .unwrap_or(u32::MAX)
            })
            .expire_after(PerItemTtl)
            .build();
        MemoryBackend { cache }
    }

    /// Number of entries (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, counts); for tests and benches.
    pub async fn sync(&self) {
        self.cache.run_pending_tasks();
    }

    /// Total weighted size in bytes (after [`Self::sync`]).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.cache.get(k).map(|i| i.bytes));
        }
        Ok(out)
    }

    fn get_now(&self, key: &str) -> Option<Option<Bytes>> {
        Some(self.cache.get(key).map(|i| i.bytes))
    }

    fn answers_now(&self) -> bool {
        true
    }

    // Every write goes through `and_compute_with`: moka serialises those per
    // key, but not against `insert` or `invalidate`, and a compare-and-swap
    // racing a plain insert could otherwise overwrite an invalidation. The
    // per-key lock is held only while a closure that never waits runs.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let new = item(value, ttl);
        self.cache
            .entry(key.to_owned())
            .and_compute_with(|_| Op::Put(new));
        Ok(())
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let result = self
            .cache
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(_) => Op::Nop,
                None => Op::Put(item(value, ttl)),
            });
        Ok(matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_)
        ))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let result = self
            .cache
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) if e.value().bytes == expected => match new {
                        Some(v) => Op::Put(item(v, ttl)),
                        None => Op::Remove,
                    },
                    _ => Op::Nop,
                };
                op
            });
        use moka::ops::compute::CompResult;
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) | CompResult::Removed(_)
        ))
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.cache
            .entry(key.to_owned())
            .and_compute_with(|_| Op::<Item>::Remove);
        Ok(())
    }

    /// The lease is an `add` under moka's per-key compute (atomic against
    /// every other write of the key), the other keys plain reads.
    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        let Some(first) = keys.first() else {
            return Ok(LeaseRead {
                values: Vec::new(),
                lease: None,
                round_trips: 1,
            });
        };
        let mut values = Vec::with_capacity(keys.len());
        let replaceable = |v: &[u8]| !over.is_empty() && v.starts_with(over);
        let hit = self.cache.get(first);
        if let Some(hit) = hit.filter(|h| !replaceable(&h.bytes)) {
            // A hit needs no write: the plain read, without the entry's key copy.
            values.push(Some(hit.bytes));
            for k in &keys[1..] {
                values.push(self.cache.get(k).map(|i| i.bytes));
            }
            return Ok(LeaseRead {
                values,
                lease: None,
                round_trips: 1,
            });
        }
        let result = self
            .cache
            .entry(first.clone())
            .and_compute_with(|current| match current {
                Some(e) if !replaceable(&e.value().bytes) => Op::Nop,
                _ => Op::Put(item(lease, ttl)),
            });
        use moka::ops::compute::CompResult;
        let (first, took) = match result {
            CompResult::Inserted(_) => (None, true),
            CompResult::ReplacedWith(_) => (None, true),
            CompResult::Unchanged(e) => (Some(e.into_value().bytes), false),
            // Nop on a present key leaves it unchanged; anything else is absent.
            _ => (None, false),
        };
        values.push(first);
        for k in &keys[1..] {
            values.push(self.cache.get(k).map(|i| i.bytes));
        }
        Ok(LeaseRead {
            values,
            lease: took.then(|| Lease::Bytes(lease.to_vec())),
            round_trips: 1,
        })
    }

    fn coalesce_reads(&self) -> bool {
        false
    }

    /// Only this process writes it: values need no seal.
    fn shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compare-and-swap racing a plain set must not undo the set: whichever
    /// comes first, the set's value is what stays (this is what keeps a fill from
    /// overwriting an invalidation).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compare_and_swap_never_overwrites_a_concurrent_set() {
        let b = std::sync::Arc::new(MemoryBackend::default());
        let ttl = Duration::from_secs(60);
        for i in 0..3000 {
            let key = format!("race:{i}");
            b.set(&key, b"lease", ttl).await.unwrap();
            let (b1, b2, k1, k2) = (b.clone(), b.clone(), key.clone(), key.clone());
            let fill = tokio::spawn(async move {
                b1.compare_and_swap(&k1, b"lease", Some(b"value"), ttl)
                    .await
                    .unwrap()
            });
            let invalidate = tokio::spawn(async move { b2.set(&k2, b"stale", ttl).await.unwrap() });
            fill.await.unwrap();
            invalidate.await.unwrap();
            let now = b.get_many(std::slice::from_ref(&key)).await.unwrap();
            assert_eq!(
                now,
                vec![Some(Bytes::from_static(b"stale"))],
                "iteration {i}: the fill overwrote the invalidation"
            );
        }
    }
}
