//! What a fill stores: a value encoded (and, in a shared cache, sealed), put
//! over the lease by compare-and-swap, or not at all when it cannot be cached;
//! and the clearing of a stale marker once the value is back.

use super::read::is_lease;
use super::Flash;
use crate::class::{CacheValue, ClassSpec};
use crate::codec::{self, encode_entry, now_ms, Entry};
use crate::error::Error;
use crate::key::stale_key;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

impl Flash {
    /// Encodes and stores a value: over `expected` by compare-and-swap, or
    /// unconditionally when `expected` is `None`. A value over the backend's item
    /// limit is not stored (and a lease it replaced is released). The bytes
    /// stored, or `None` when nothing was.
    pub(super) async fn store_value<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        v: &T,
        expected: Option<&[u8]>,
    ) -> Option<Vec<u8>> {
        let backend = self.backend();
        if !self.settings().fill_delay.is_zero() {
            tokio::time::sleep(self.settings().fill_delay).await;
        }
        let ttl = spec.timeout.unwrap_or(self.settings().default_timeout);
        let Some(bytes) = self.cacheable_bytes(spec, key, v) else {
            if let Some(e) = expected {
                if is_lease(e) {
                    let _ = backend.compare_and_swap(key, e, None, Duration::ZERO).await;
                }
            }
            return None;
        };
        let stored = match expected {
            Some(e) => backend.compare_and_swap(key, e, Some(&bytes), ttl).await,
            None => backend.set(key, &bytes, ttl).await.map(|()| true),
        };
        match stored {
            Ok(true) => {
                self.stats().fills.fetch_add(1, Relaxed);
                metrics::counter!("flash_fills_total").increment(1);
                Some(bytes)
            }
            Ok(false) => None,
            Err(e) => {
                self.stats().backend_error("fill", &e);
                None
            }
        }
    }

    /// After a refresh stored `stored` over a value marked stale by `marker`:
    /// replaces that very marker (compare-and-swap: a newer one stays) with
    /// one that names the stored bytes as fresh.
    pub(super) async fn clear_marker(
        &self,
        spec: &ClassSpec,
        key: &str,
        marker: &[u8],
        stored: &[u8],
    ) {
        let fresh = encode_entry(&Entry::Fresh {
            value_hash: codec::value_hash(stored),
        });
        let ttl = spec.timeout.unwrap_or(self.settings().default_timeout);
        let _ = self
            .backend()
            .compare_and_swap(&stale_key(key), marker, Some(&fresh), ttl)
            .await;
    }

    /// The bytes a fill would store, or `None` when the value cannot be
    /// cached (it does not encode, or is over the backend's item limit).
    pub(super) fn cacheable_bytes<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        v: &T,
    ) -> Option<Vec<u8>> {
        let backend = self.backend();
        let bytes = match self.encode_value(spec, key, v) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(class = %spec.name, error = %e, "value not cacheable");
                return None;
            }
        };
        if bytes.len() > backend.max_value_size() {
            tracing::warn!(class = %spec.name, size = bytes.len(), limit = backend.max_value_size(), "value over the backend's item limit: served, not cached");
            metrics::counter!("flash_too_large_total", "class" => spec.name.clone()).increment(1);
            return None;
        }
        Some(bytes)
    }

    pub(super) fn encode_value<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        v: &T,
    ) -> Result<Vec<u8>, Error> {
        let payload = codec::encode_payload(v).map_err(|e| Error::Encode(e.to_string()))?;
        let (compressed, payload) = match spec.compress_above {
            Some(limit) if payload.len() > limit => (true, codec::compress(&payload)),
            _ => (false, payload),
        };
        let version = self.dynamic_version(&spec.name);
        let entry = encode_entry(&Entry::Value {
            version,
            filled_ms: now_ms(),
            layout: spec.layout,
            compressed,
            payload,
        });
        Ok(match self.sealer() {
            Some(s) => s.seal(key, entry),
            None => entry,
        })
    }
}
