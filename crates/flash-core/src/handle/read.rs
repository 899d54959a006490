//! The read path: one lookup, from the cache bytes to the value, following the
//! read decision table, and the fill protocol with leases.
//!
//! Fill protocol: a lookup that finds no usable value takes a *lease* on the key
//! (`add` on an absent key, compare-and-swap over a stale marker or garbage),
//! reads the database, and stores the value only if its lease is still there.
//! An invalidation overwrites whatever the key holds, so a fill that read the
//! database before a write committed can never land after the write's
//! invalidation. Callers that lose the lease wait briefly for the winner's
//! value, then read the database themselves without filling.

use super::leased::Leased;
use super::now::Now;
pub(super) use super::now::ReadNow;
use super::opened::Found;
use super::wait::Pace;
use super::Flash;
use super::{read_keys, read_keys_owned};
use crate::backend::{Bytes, LeaseRead};
use crate::class::{CacheValue, Class, ClassSpec, Invalidation};
use crate::codec::{self, decode_entry, encode_entry, now_ms, Decoded, Entry};
use crate::decide::{decide, Action};
use crate::error::{BackendError, Error};
use crate::key::{lock_key, with_key_buf};
use crate::stats::{FlashEvent, Outcome};
use crate::value::FieldValue;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Does the key hold a fill lease? An empty value is one too: the
/// placeholder memcached vivifies for the winner of an `mg … N` (flash never
/// stores empty bytes otherwise).
pub(super) fn is_lease(bytes: &[u8]) -> bool {
    bytes.is_empty() || matches!(decode_entry(bytes), Decoded::Entry(Entry::Lease { .. }))
}

/// A fresh lease entry: a random token, so that a fill can tell its own
/// lease from another's (and from one taken after its own expired).
fn new_lease() -> Vec<u8> {
    encode_entry(&Entry::Lease {
        token: rand::random(),
        at_ms: now_ms(),
    })
}

impl Flash {
    /// The value of `class` for `values` (in key-field order): from the cache,
    /// or from the class's fetch on a miss (filling the cache).
    pub async fn get<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
    ) -> Result<T, Error> {
        self.lookup(class, values).await.map(|(v, _)| v)
    }

    /// Like [`Self::get`], also telling how the lookup was answered.
    pub async fn lookup<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
    ) -> Result<(T, Outcome), Error> {
        let started = self.settings().time_lookups.then(std::time::Instant::now);
        let spec = &class.spec;
        // The in-process store answers without waiting: its hit is decided on
        // the spot, as a near-tier hit is (no boxed read, no future for the
        // decision, no list of keys), with the key in the thread's buffer.
        // Its other answers go on below with the bytes already read.
        let (span, first) = match self.may_read_now(spec) {
            true => match with_key_buf(|buf| self.lookup_now(class, values, started, buf)) {
                Now::Hit(v) => return Ok((v, Outcome::Hit)),
                Now::Read(span, first) => (Some(span), first),
                Now::NoKey => (None, None),
            },
            false => (None, None),
        };
        let key = self.key_of(class, values)?;
        let span = span.unwrap_or_else(|| self.lookup_span(spec, &key));
        // Built once: the read, the decision and the events all use these.
        let keys = read_keys_owned(spec, key);
        let key = keys[0].as_str();
        let answer = async {
            let result = if self.is_bypassed() {
                self.fetch(class, values)
                    .await
                    .map(|v| (v, Outcome::Bypass))
            } else if let Some(v) = self.near_hit(spec, key) {
                Ok((v, Outcome::Hit))
            } else if self.leases_in_first_read() {
                let token = self.near_for(spec).map(|n| n.token(key));
                let epoch = self.read_epoch();
                let lease = new_lease();
                match self.read_or_lease(&keys, &lease).await {
                    Ok(LeaseRead {
                        values: raw,
                        lease: Some(lease),
                        round_trips,
                    }) => {
                        let leased = Leased {
                            lease,
                            marker: raw.into_iter().nth(1).flatten(),
                            round_trips,
                        };
                        self.fill_leased(class, values, key, leased, epoch).await
                    }
                    Ok(read) => {
                        self.resolve_first(class, values, key, read.values, epoch, token)
                            .await
                    }
                    Err(e) => {
                        self.stats().backend_error("get", &e);
                        self.fetch(class, values)
                            .await
                            .map(|v| (v, Outcome::Degraded))
                    }
                }
            } else {
                let token = self.near_for(spec).map(|n| n.token(key));
                let (epoch, read) = match first {
                    Some(now) => (now.epoch, Ok(now.into_raw())),
                    None => {
                        let epoch = self.read_epoch();
                        (epoch, self.read(&keys).await)
                    }
                };
                match read {
                    Ok(raw) => {
                        self.resolve_first(class, values, key, raw, epoch, token)
                            .await
                    }
                    Err(e) => {
                        self.stats().backend_error("get", &e);
                        self.fetch(class, values)
                            .await
                            .map(|v| (v, Outcome::Degraded))
                    }
                }
            };
            result
        };
        // Entering and leaving a span no subscriber wants is not free (with
        // `log` compatibility, each checks for a logger): skipped then.
        let result = match span.is_disabled() {
            true => answer.await,
            false => answer.instrument(span.clone()).await,
        };
        if let Ok((_, o)) = &result {
            self.lookup_done(spec, key, *o, started, &span);
        }
        result
    }

    /// The span of a lookup of `key`.
    pub(super) fn lookup_span(&self, spec: &ClassSpec, key: &str) -> tracing::Span {
        let span = tracing::debug_span!("flash.lookup", class = %spec.name, key = tracing::field::Empty, outcome = tracing::field::Empty);
        if self.settings().log_keys {
            span.record("key", key);
        }
        span
    }

    /// A lookup answered with `o`: its span's outcome, its counters, its event.
    pub(super) fn lookup_done(
        &self,
        spec: &ClassSpec,
        key: &str,
        o: Outcome,
        started: Option<Instant>,
        span: &tracing::Span,
    ) {
        // As entering it: recording into a span no subscriber wants is not free.
        if !span.is_disabled() {
            span.record("outcome", o.label());
        }
        self.stats().outcome(spec, o, started.map(|t| t.elapsed()));
        self.emit(FlashEvent::Lookup {
            class: &spec.name,
            key,
            outcome: o,
        });
    }

    /// Note this before a cache read and pass it to `resolve` / `try_serve`:
    /// they then refuse bytes that may predate this process's own invalidation.
    pub(super) fn read_epoch(&self) -> u64 {
        self.invalidator().read_epoch()
    }

    /// The first read of a lookup. Concurrent lookups of one key in this
    /// process share reads (each gets a read that started after it asked), so
    /// a burst costs the cache a few requests, not one per caller; the
    /// in-process backend is read directly.
    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let backend = self.backend();
        if !backend.coalesce_reads() {
            return backend.get_many(keys).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings().lease_wait;
        match self
            .shared_reads()
            .next_read(backend, keys, Pace::Now, deadline)
            .await
        {
            Some(r) => r,
            None => Err(BackendError::Timeout(self.settings().lease_wait)),
        }
    }

    /// Calls the class's fallback, counting the database fetch.
    pub(super) async fn fetch<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
    ) -> Result<T, Error> {
        self.stats().db_fetches.fetch_add(1, Relaxed);
        Ok(class.fetch.fetch(values).await?)
    }

    /// The cached value of `key` if the decision table says to serve it as
    /// is (no write, no refresh, no wait): the synchronous part of a lookup.
    /// A rejected entry is not counted here: when this gives nothing, the
    /// caller hands the same bytes to [`Self::resolve`], which counts it (once
    /// per lookup).
    pub(super) fn try_serve<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        raw: &[Option<Bytes>],
        epoch: u64,
    ) -> Option<T> {
        let marker = raw.get(1).and_then(|m| m.as_deref());
        self.serve_bytes(spec, key, raw.first()?.as_deref()?, marker, epoch, false)
    }

    /// [`Self::try_serve`] on the bytes of the key and of its stale marker;
    /// a rejected entry is counted if `count_reject`.
    pub(super) fn serve_bytes<T: CacheValue>(
        &self,
        spec: &ClassSpec,
        key: &str,
        bytes: &[u8],
        marker: Option<&[u8]>,
        epoch: u64,
        count_reject: bool,
    ) -> Option<T> {
        if self.invalidator().untrusted(key, epoch) {
            return None;
        }
        let found = self.decode_value_once::<T>(spec, key, bytes, &mut !count_reject)?;
        let marker = codec::marks_stale(marker, bytes);
        (self.action_for(spec, &found, marker) == Action::Serve).then_some(found.value)
    }

    /// The decision table applied to a decoded value (its age, its dynamic
    /// version against the class's current one, the stale marker).
    fn action_for<T>(&self, spec: &ClassSpec, found: &Found<T>, marker: bool) -> Action {
        // The age decides only with an allowtime: no clock read without one.
        let age = match spec.allowtime {
            Some(_) => Duration::from_millis(now_ms().saturating_sub(found.filled_ms)),
            None => Duration::ZERO,
        };
        let changed = found.version != self.dynamic_version(&spec.name);
        decide(spec.invalidation, spec.allowtime, age, changed, marker)
    }

    /// Decides on the raw bytes read for `key` (and its stale marker).
    pub(super) async fn resolve<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        key: &str,
        raw: Vec<Option<Bytes>>,
        epoch: u64,
        cache_only: bool,
    ) -> Result<(T, Outcome), Error> {
        let spec = &class.spec;
        if self.invalidator().untrusted(key, epoch) {
            // The cache still holds what a write replaced: do not serve or fill it.
            if cache_only {
                return Err(Error::NotCached(key.to_owned()));
            }
            return self
                .fetch(class, values)
                .await
                .map(|v| (v, Outcome::Degraded));
        }
        let mut raw = raw.into_iter();
        let observed = raw.next().flatten();
        let marker = raw.next().flatten();
        let mut counted = false;
        if let Some(found) = observed
            .as_deref()
            .and_then(|b| self.decode_value_once::<T>(spec, key, b, &mut counted))
        {
            let marked =
                codec::marks_stale(marker.as_deref(), observed.as_deref().unwrap_or_default());
            match self.action_for(spec, &found, marked) {
                Action::Serve => return Ok((found.value, Outcome::Hit)),
                _ if cache_only => return Ok((found.value, Outcome::StaleHit)),
                Action::LockRefresh => {
                    let observed = observed.unwrap_or_default();
                    return self
                        .lock_refresh(class, values, key, &observed, marker, found.value)
                        .await;
                }
                Action::Refetch => {
                    let v = self.fetch(class, values).await?;
                    let bytes = observed.unwrap_or_default();
                    let filled = self
                        .store_value(spec, key, &v, Some(&bytes))
                        .await
                        .is_some();
                    return Ok((
                        v,
                        if filled {
                            Outcome::Miss
                        } else {
                            Outcome::MissNoFill
                        },
                    ));
                }
            }
        }
        if cache_only {
            return Err(Error::NotCached(key.to_owned()));
        }
        self.fill(class, values, key, observed, marker, counted)
            .await
    }

    /// The write lock of allowtime and DYNAMIC: one caller refreshes.
    async fn lock_refresh<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        key: &str,
        observed: &[u8],
        marker: Option<Bytes>,
        old: T,
    ) -> Result<(T, Outcome), Error> {
        let spec = &class.spec;
        let backend = self.backend();
        let lock = lock_key(key);
        let token = rand::random::<u64>().to_le_bytes();
        match backend
            .add(&lock, &token, self.settings().lock_timeout)
            .await
        {
            Ok(true) => {
                // Someone may have refreshed between our read and our lock:
                // then their value is the answer and there is nothing to do.
                // (With a stale marker present again, a newer write needs a refresh.)
                if let Ok(mut now) = backend.get_many(&read_keys(spec, key)).await {
                    let marker_now = if now.len() > 1 {
                        now.pop().flatten()
                    } else {
                        None
                    };
                    let current = now.pop().flatten().filter(|c| {
                        c[..] != *observed && !codec::marks_stale(marker_now.as_deref(), c)
                    });
                    if let Some(current) = current {
                        if let Some(found) = self.decode_value::<T>(spec, key, &current) {
                            let _ = backend
                                .compare_and_swap(&lock, &token, None, Duration::ZERO)
                                .await;
                            return Ok((found.value, Outcome::Hit));
                        }
                    }
                }
                let fetched = self.fetch(class, values).await;
                if let Ok(v) = &fetched {
                    let stored = self.store_value(spec, key, v, Some(observed)).await;
                    // Clear the marker only if our value replaced the one it
                    // marks, and only if it is the marker we saw: a write that
                    // came during the refresh left a newer one, which must stay.
                    if let (Some(stored), Some(m)) = (stored, &marker) {
                        self.clear_marker(spec, key, m, &stored).await;
                    }
                }
                let _ = backend
                    .compare_and_swap(&lock, &token, None, Duration::ZERO)
                    .await;
                fetched.map(|v| (v, Outcome::Miss))
            }
            // Someone else refreshes. Serving the old value is the contract of
            // allowtime and OFF; a DYNAMIC class without allowtime promised that a
            // write is visible once it returned, so read the database instead.
            Ok(false) if spec.allowtime.is_some() || spec.invalidation == Invalidation::Off => {
                Ok((old, Outcome::StaleHit))
            }
            Ok(false) => self
                .fetch(class, values)
                .await
                .map(|v| (v, Outcome::MissNoFill)),
            Err(e) => {
                self.stats().backend_error("lock", &e);
                self.fetch(class, values)
                    .await
                    .map(|v| (v, Outcome::Degraded))
            }
        }
    }

    /// The miss path: take the lease, fetch, fill if the lease is still ours.
    /// `counted`: this lookup already counted a rejected entry.
    async fn fill<T: CacheValue>(
        &self,
        class: &Class<T>,
        values: &[FieldValue],
        key: &str,
        mut observed: Option<Bytes>,
        marker: Option<Bytes>,
        mut counted: bool,
    ) -> Result<(T, Outcome), Error> {
        let spec = &class.spec;
        let backend = self.backend();
        let settings = self.settings();
        if !self.uses_leases() {
            let v = self.fetch(class, values).await?;
            let filled = self.store_value(spec, key, &v, None).await.is_some();
            return Ok((
                v,
                if filled {
                    Outcome::Miss
                } else {
                    Outcome::MissNoFill
                },
            ));
        }
        let lease = new_lease();
        let deadline = Instant::now() + settings.lease_wait;
        let mut _claim = None;
        loop {
            _claim = self.fill_claims().try_claim(key);
            let took = match (&_claim, observed.as_deref()) {
                // Another task of this process is on it: wait for its fill.
                (None, _) => Ok(false),
                (Some(_), None) => backend.add(key, &lease, settings.lease_ttl).await,
                (Some(_), Some(b)) if is_lease(b) => Ok(false),
                (Some(_), Some(b)) => {
                    backend
                        .compare_and_swap(key, b, Some(&lease), settings.lease_ttl)
                        .await
                }
            };
            match took {
                Ok(true) => break,
                Ok(false) => _claim = None,
                Err(e) => {
                    self.stats().backend_error("lease", &e);
                    return self
                        .fetch(class, values)
                        .await
                        .map(|v| (v, Outcome::Degraded));
                }
            }
            if Instant::now() >= deadline {
                // An empty value still there after the wait is not a
                // placeholder on its way to a value (a fill takes
                // milliseconds) but bytes someone stored: take it over like
                // any other garbage, so that the key does not stay unfilled.
                let claim = match observed.as_deref() {
                    Some([]) => self.fill_claims().try_claim(key),
                    _ => None,
                };
                if let Some(claim) = claim {
                    if let Ok(true) = backend
                        .compare_and_swap(key, &[], Some(&lease), settings.lease_ttl)
                        .await
                    {
                        _claim = Some(claim);
                        break;
                    }
                }
                return self
                    .fetch(class, values)
                    .await
                    .map(|v| (v, Outcome::MissNoFill));
            }
            self.stats().lease_waits.fetch_add(1, Relaxed);
            let keys = read_keys(spec, key);
            let read = self
                .shared_reads()
                .next_read(backend, &keys, Pace::Poll, deadline.into());
            let marker_now;
            (observed, marker_now) = match read.await {
                Some(Ok(bytes)) => {
                    let mut bytes = bytes.into_iter();
                    (bytes.next().flatten(), bytes.next().flatten())
                }
                Some(Err(e)) => {
                    self.stats().backend_error("get", &e);
                    return self
                        .fetch(class, values)
                        .await
                        .map(|v| (v, Outcome::Degraded));
                }
                // The wait is over; an empty value gets the check above.
                None if observed.as_deref() == Some(&[][..]) => continue,
                None => {
                    return self
                        .fetch(class, values)
                        .await
                        .map(|v| (v, Outcome::MissNoFill))
                }
            };
            // Another's fill: served unless a write marked it since (DYNAMIC).
            if let Some(bytes) = observed.as_deref() {
                if let Some(found) = self.decode_value_once::<T>(spec, key, bytes, &mut counted) {
                    if found.version == self.dynamic_version(&spec.name)
                        && !codec::marks_stale(marker_now.as_deref(), bytes)
                    {
                        return Ok((found.value, Outcome::Hit));
                    }
                }
            }
        }
        // The lease is ours.
        let fetched = match self.fetch(class, values).await {
            Ok(v) => v,
            Err(e) => {
                let _ = backend
                    .compare_and_swap(key, &lease, None, Duration::ZERO)
                    .await;
                return Err(e);
            }
        };
        let stored = self.store_value(spec, key, &fetched, Some(&lease)).await;
        if let (Some(stored), Some(m)) = (&stored, &marker) {
            self.clear_marker(spec, key, m, stored).await;
        }
        let filled = stored.is_some();
        Ok((
            fetched,
            if filled {
                Outcome::Miss
            } else {
                Outcome::MissNoFill
            },
        ))
    }
}
