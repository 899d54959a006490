//! The one-request miss and the near tier on the read path: a lookup's
//! first read that also takes the fill lease, the query, and the fill that
//! runs in the background; near-tier hits and the fills of the near tier.

use super::wait::Pace;
use super::Flash;
use crate::backend::{Bytes, Lease, LeaseRead};
use crate::class::{CacheValue, Class, ClassSpec};
use crate::codec;
use crate::error::{BackendError, Error};
use crate::near::Token;
use crate::stats::Outcome;
use crate::value::FieldValue;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A lease taken by a lookup's first read, with what the fill needs.
pub(super) struct Leased {
    pub(super) lease: Lease,
    /// The stale marker read with it (DYNAMIC), to clear after the fill.
    pub(super) marker: Option<Bytes>,
    /// Cache requests the caller waited for before its query.
    pub(super) round_trips: u32,
}

impl Flash {
    /// Does a lookup's first read also take the lease on a miss? With leases,
    /// for a cache server: a miss then costs the caller one request before
    /// the query instead of two. The in-process store answers the read and
    /// the `add` in well under a microsecond, and a lease entry built for
    /// every read would cost its hits more than that saves.
    pub(super) fn leases_in_first_read(&self) -> bool {
        self.uses_leases() && self.backend().coalesce_reads()
    }

    /// [`Self::read`] that, on a miss, also takes the lease (one request
    /// where the backend can: [`crate::Backend::get_or_lease`]).
    pub(super) async fn read_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
    ) -> Result<LeaseRead, BackendError> {
        let deadline = tokio::time::Instant::now() + self.settings().lease_wait;
        let ttl = self.settings().lease_ttl;
        match self
            .shared_reads()
            .next_read_or_lease(
                self.backend(),
                keys,
                Pace::Now,
                Some((lease, codec::stale_prefix(), ttl)),
                deadline,
            )
            .await
        {
            Some(r) => r,
            None => Err(BackendError::Timeout(self.settings().lease_wait)),
        }
    }

    /// The miss whose first read took the lease: the query, then the fill,
    /// which (with [`crate::Settings::background_fills`]) runs in the
    /// background so that the caller has its row after one cache request.
    /// The lease keeps a late fill harmless (an invalidation overwrites it)
    /// and makes the others wait for this fill, not query themselves.
    pub(super) async fn fill_leased<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        key: &str,
        leased: Leased,
        epoch: u64,
    ) -> Result<(T, Outcome), Error> {
        let spec = &class.spec;
        let claim = self.fill_claims().try_claim(key);
        if self.invalidator().untrusted(key, epoch) {
            self.release_lease(key, &leased.lease).await;
            return self
                .fetch(class, values)
                .await
                .map(|v| (v, Outcome::Degraded));
        }
        let fetched = match self.fetch(class, values).await {
            Ok(v) => v,
            Err(e) => {
                self.release_lease(key, &leased.lease).await;
                return Err(e);
            }
        };
        self.stats().leased_miss(leased.round_trips);
        let Some(bytes) = self.cacheable_bytes(spec, key, &fetched) else {
            // Not cached: the lease goes now, or the next lookups would wait for it.
            self.release_lease(key, &leased.lease).await;
            return Ok((fetched, Outcome::MissNoFill));
        };
        if !self.settings().background_fills {
            let filled = self.store_leased(spec, key, &leased, &bytes).await;
            return Ok((
                fetched,
                if filled {
                    Outcome::Miss
                } else {
                    Outcome::MissNoFill
                },
            ));
        }
        let this = self.clone();
        let spec = class.spec.clone();
        let key = key.to_owned();
        let pending = self.pending_fills().start();
        tokio::spawn(async move {
            let _claim = claim;
            let _pending = pending;
            this.store_leased(&spec, &key, &leased, &bytes).await;
        });
        Ok((fetched, Outcome::Miss))
    }

    /// Stores `bytes` over the lease if it is still there (the end of
    /// [`Self::fill_leased`]); `true` when it was.
    pub(super) async fn store_leased(
        &self,
        spec: &ClassSpec,
        key: &str,
        leased: &Leased,
        bytes: &[u8],
    ) -> bool {
        if !self.settings().fill_delay.is_zero() {
            tokio::time::sleep(self.settings().fill_delay).await;
        }
        let ttl = spec.timeout.unwrap_or(self.settings().default_timeout);
        match self
            .backend()
            .swap_lease(key, &leased.lease, Some(bytes), ttl)
            .await
        {
            Ok(true) => {
                self.stats().fills.fetch_add(1, Relaxed);
                metrics::counter!("flash_fills_total").increment(1);
                if let Some(m) = &leased.marker {
                    self.clear_marker(spec, key, m, bytes).await;
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                self.stats().backend_error("fill", &e);
                false
            }
        }
    }

    /// Gives a lease back (the key is left empty), if it is still there.
    pub(super) async fn release_lease(&self, key: &str, lease: &Lease) {
        if let Err(e) = self
            .backend()
            .swap_lease(key, lease, None, Duration::ZERO)
            .await
        {
            self.stats().backend_error("lease", &e);
        }
    }

    /// The value of `key` from the near tier, if the class has one, the
    /// channel is healthy and the entry is servable as is.
    pub(super) fn near_hit<T: CacheValue>(&self, spec: &ClassSpec, key: &str) -> Option<T> {
        let near = self.near_for(spec)?;
        let bytes = near.get(key)?;
        // The near tier's bytes are not read again by this lookup: counted here.
        let v = self.serve_bytes(spec, key, &bytes, None, self.read_epoch(), true)?;
        near.stats.hits.fetch_add(1, Relaxed);
        Some(v)
    }

    /// [`Self::resolve`] of a first read; a hit also fills the near tier
    /// (guarded by `token`, taken before the read).
    pub(super) async fn resolve_first<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        key: &str,
        raw: Vec<Option<Bytes>>,
        epoch: u64,
        token: Option<Token>,
    ) -> Result<(T, Outcome), Error> {
        if let (Some(token), Some(near)) = (token, self.near_for(&class.spec)) {
            if let Some(v) = self.try_serve::<T>(&class.spec, key, &raw, epoch) {
                if let Some(Some(bytes)) = raw.first() {
                    near.fill(key, bytes, token);
                }
                return Ok((v, Outcome::Hit));
            }
        }
        self.resolve(class, values, key, raw, epoch, false).await
    }
}
