//! A wrapper that keeps a sick cache server from slowing the application down.
//!
//! Lookups fall back to the database when the cache fails, so the worst a cache
//! outage may cost is latency. [`ResilientBackend`] bounds that cost twice over:
//! every operation gets a deadline (a hung server becomes [`BackendError::Timeout`]
//! after, by default, 50 ms), and a circuit breaker stops calling a server that
//! keeps failing, so that requests fail at once with [`BackendError::CircuitOpen`]
//! instead of each waiting for its own timeout.
//!
//! The breaker: *closed* (normal) until `failure_threshold` operations in a row
//! fail; then *open* for `cool_down`, failing everything without calling the
//! server; then *half-open*, letting a single probe through. The probe's success
//! closes the breaker, its failure opens it for another cool-down. Its state
//! machine is in `breaker.rs`; this file wraps a backend's calls in it.
//!
//! Invalidations ([`Backend::set_many`]) are the exception: the breaker never
//! refuses them, it only records their outcome. An invalidation refused
//! without trying is exactly how another process, whose own breaker has
//! already closed on the restarted server, would go on serving the value the
//! write replaced. They still get the deadline, so a hung server costs a write
//! at most the timeout per attempt.

mod breaker;

pub use breaker::BreakerState;

use crate::backend::{Backend, Bytes, Lease, LeaseRead};
use crate::error::BackendError;
use async_trait::async_trait;
use breaker::{Breaker, Permit};
use std::future::Future;
use std::time::Duration;

/// Settings of a [`ResilientBackend`]; start from [`ResilientBackend::builder`].
#[derive(Debug, Clone)]
pub struct ResilientBuilder<B> {
    inner: B,
    timeout: Duration,
    failure_threshold: u32,
    cool_down: Duration,
    retries: u32,
}

impl<B: Backend> ResilientBuilder<B> {
    /// Extra attempts of a read ([`Backend::get_many`]) or an invalidation
    /// ([`Backend::set_many`]) that failed with [`BackendError::Unreachable`]
    /// or [`BackendError::Protocol`] (default 0). Both are idempotent; a
    /// client reconnecting to a restarted server needs one. Timeouts are not
    /// retried (a hung server would cost each retry a deadline), nor are
    /// leases and compare-and-swaps (an attempt that reached the server and
    /// lost its answer must not be repeated).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Deadline of each operation (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures that open the breaker (default 5; at least 1).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// How long the breaker stays open before it lets a probe through (default 1 s).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// The wrapper, its breaker closed.
    pub fn build(self) -> ResilientBackend<B> {
        ResilientBackend {
            inner: self.inner,
            timeout: self.timeout,
            retries: self.retries,
            breaker: Breaker::new(self.failure_threshold, self.cool_down),
        }
    }
}

/// A [`Backend`] wrapper adding a per-operation timeout and a circuit breaker
/// (see the module docs). Its errors are the inner backend's, plus
/// [`BackendError::Timeout`] and [`BackendError::CircuitOpen`].
#[derive(Debug)]
pub struct ResilientBackend<B> {
    inner: B,
    timeout: Duration,
    retries: u32,
    breaker: Breaker,
}

impl<B: Backend> ResilientBackend<B> {
    /// Wraps `inner` with the default settings (50 ms, 5 failures, 1 s cool-down).
    pub fn new(inner: B) -> Self {
        Self::builder(inner).build()
    }

    /// Starts configuring a wrapper around `inner`.
    pub fn builder(inner: B) -> ResilientBuilder<B> {
        ResilientBuilder {
            inner,
            timeout: Duration::from_millis(50),
            failure_threshold: 5,
            cool_down: Duration::from_secs(1),
            retries: 0,
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The breaker's current state (an open breaker whose cool-down has ended
    /// reports `HalfOpen`: the next operation will probe).
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs one operation of the inner backend under the deadline and the breaker.
    /// `op` is not polled (so does not reach the server) when the breaker refuses.
    async fn guard<T>(
        &self,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let permit = self.breaker.admit()?;
        self.timed(permit, op).await
    }

    /// Runs `op` under the deadline only; its outcome still moves the breaker
    /// (a success closes it: the server is evidently back).
    async fn forced<T>(
        &self,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.timed(self.breaker.force(), op).await
    }

    /// Runs `op` under the deadline and reports its outcome through `permit`.
    async fn timed<T>(
        &self,
        permit: Permit<'_>,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_elapsed) => Err(BackendError::Timeout(self.timeout)),
        };
        let failed = match &result {
            Ok(_) => false,
            Err(e) => is_server_failure(e),
        };
        permit.record(failed, self.inner.name());
        result
    }
}

/// Whether an error says something about the server's health. Caller mistakes
/// (a value over the item limit, a bad URL) must not open the breaker.
fn is_server_failure(e: &BackendError) -> bool {
    match e {
        BackendError::Unreachable(_) | BackendError::Timeout(_) | BackendError::Protocol(_) => true,
        BackendError::CircuitOpen => true,
        BackendError::TooLarge { .. } | BackendError::BadUrl { .. } => false,
    }
}

/// Whether a failed idempotent operation is worth another attempt at once.
fn is_retryable(e: &BackendError) -> bool {
    matches!(e, BackendError::Unreachable(_) | BackendError::Protocol(_))
}

#[async_trait]
impl<B: Backend> Backend for ResilientBackend<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let mut left = self.retries;
        loop {
            match self.guard(self.inner.get_many(keys)).await {
                Err(e) if left > 0 && is_retryable(&e) => left -= 1,
                r => return r,
            }
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.guard(self.inner.set(key, value, ttl)).await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.guard(self.inner.add(key, value, ttl)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.guard(self.inner.compare_and_swap(key, expected, new, ttl))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.guard(self.inner.delete(key)).await
    }

    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        self.guard(self.inner.get_or_lease(keys, lease, over, ttl))
            .await
    }

    async fn swap_lease(
        &self,
        key: &str,
        lease: &Lease,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.guard(self.inner.swap_lease(key, lease, new, ttl))
            .await
    }

    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let mut left = self.retries;
        loop {
            match self.forced(self.inner.set_many(items, ttl)).await {
                Err(e) if left > 0 && is_retryable(&e) => left -= 1,
                r => return r,
            }
        }
    }

    fn max_value_size(&self) -> usize {
        self.inner.max_value_size()
    }

    fn coalesce_reads(&self) -> bool {
        self.inner.coalesce_reads()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// A backend that fails (or hangs) on demand and counts the calls reaching
    /// it; it stores nothing (reads find nothing, writes succeed).
    #[derive(Default)]
    struct Flaky {
        failing: AtomicBool,
        delay_ms: AtomicU64,
        calls: AtomicUsize,
    }

    impl Flaky {
        /// One call: `ok`, unless the test made the server fail.
        async fn op<T>(&self, ok: T) -> Result<T, BackendError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            match self.failing.load(Ordering::SeqCst) {
                true => Err(BackendError::Unreachable("fake server down".into())),
                false => Ok(ok),
            }
        }
    }

    #[async_trait]
    impl Backend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
            self.op(vec![None; keys.len()]).await
        }
        async fn set(&self, _: &str, _: &[u8], _: Duration) -> Result<(), BackendError> {
            self.op(()).await
        }
        async fn add(&self, _: &str, _: &[u8], _: Duration) -> Result<bool, BackendError> {
            self.op(true).await
        }
        async fn compare_and_swap(
            &self,
            _: &str,
            _: &[u8],
            _: Option<&[u8]>,
            _: Duration,
        ) -> Result<bool, BackendError> {
            self.op(true).await
        }
        async fn delete(&self, _: &str) -> Result<(), BackendError> {
            self.op(()).await
        }
    }

    fn wrapped(cool_down: Duration) -> ResilientBackend<Flaky> {
        ResilientBackend::builder(Flaky::default())
            .failure_threshold(3)
            .cool_down(cool_down)
            .timeout(Duration::from_millis(50))
            .build()
    }

    fn calls(b: &ResilientBackend<Flaky>) -> usize {
        b.inner().calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let b = wrapped(Duration::from_secs(60));
        b.inner().failing.store(true, Ordering::SeqCst);
        for i in 0..3 {
            assert_eq!(b.state(), BreakerState::Closed, "closed before failure {i}");
            assert!(matches!(
                b.delete("k").await,
                Err(BackendError::Unreachable(_))
            ));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(calls(&b), 3);
        for _ in 0..10 {
            assert!(matches!(
                b.set("k", b"v", Duration::ZERO).await,
                Err(BackendError::CircuitOpen)
            ));
        }
        assert_eq!(calls(&b), 3, "no call reaches the inner backend while open");
    }

    #[tokio::test]
    async fn a_success_resets_the_failure_count() {
        let b = wrapped(Duration::from_secs(60));
        b.inner().failing.store(true, Ordering::SeqCst);
        b.delete("k").await.unwrap_err();
        b.delete("k").await.unwrap_err();
        b.inner().failing.store(false, Ordering::SeqCst);
        b.delete("k").await.unwrap();
        b.inner().failing.store(true, Ordering::SeqCst);
        b.delete("k").await.unwrap_err();
        b.delete("k").await.unwrap_err();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "failures were not consecutive"
        );
    }

    #[tokio::test]
    async fn probes_after_cool_down_and_closes_on_recovery() {
        let b = wrapped(Duration::from_millis(100));
        b.inner().failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            b.delete("k").await.unwrap_err();
        }
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);

        // A failed probe reopens the breaker for another cool-down.
        assert!(matches!(
            b.delete("k").await,
            Err(BackendError::Unreachable(_))
        ));
        assert_eq!(calls(&b), 4, "exactly one probe went through");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(
            b.delete("k").await,
            Err(BackendError::CircuitOpen)
        ));
        assert_eq!(calls(&b), 4);

        // The server recovers: the next probe succeeds and closes the breaker.
        b.inner().failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(b.get_many(&["k".into()]).await.unwrap(), vec![None]);
        assert_eq!(b.state(), BreakerState::Closed);
        b.delete("k").await.unwrap();
        assert_eq!(calls(&b), 6);
    }

    #[tokio::test]
    async fn invalidations_are_attempted_while_open_and_a_success_closes() {
        let b = wrapped(Duration::from_secs(60));
        b.inner().failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            b.delete("k").await.unwrap_err();
        }
        assert_eq!(b.state(), BreakerState::Open);
        let items = vec![("k".to_string(), b"m".to_vec())];
        assert!(matches!(
            b.set_many(&items, Duration::ZERO).await,
            Err(BackendError::Unreachable(_))
        ));
        assert_eq!(calls(&b), 4, "the invalidation reached the server");
        assert_eq!(b.state(), BreakerState::Open, "its failure keeps it open");
        assert!(matches!(
            b.get_many(&["k".into()]).await,
            Err(BackendError::CircuitOpen)
        ));
        b.inner().failing.store(false, Ordering::SeqCst);
        b.set_many(&items, Duration::ZERO).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed, "its success closes it");
        assert_eq!(b.get_many(&["k".into()]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn only_one_probe_at_a_time() {
        let b = std::sync::Arc::new(wrapped(Duration::from_millis(50)));
        b.inner().failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            b.delete("k").await.unwrap_err();
        }
        b.inner().failing.store(false, Ordering::SeqCst);
        b.inner().delay_ms.store(30, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let probe = tokio::spawn({
            let b = b.clone();
            async move { b.delete("k").await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            matches!(b.delete("k").await, Err(BackendError::CircuitOpen)),
            "second caller during the probe"
        );
        probe.await.unwrap().unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn slow_operations_time_out_and_count_as_failures() {
        let b = wrapped(Duration::from_secs(60));
        b.inner().delay_ms.store(1_000, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let err = b.add("k", b"v", Duration::ZERO).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Timeout(d) if d == Duration::from_millis(50)),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "timed out promptly"
        );
        b.add("k", b"v", Duration::ZERO).await.unwrap_err();
        b.add("k", b"v", Duration::ZERO).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open, "timeouts open the breaker");
    }

    #[tokio::test]
    async fn caller_mistakes_do_not_open_the_breaker() {
        assert!(!is_server_failure(&BackendError::TooLarge {
            size: 2,
            limit: 1
        }));
        assert!(is_server_failure(&BackendError::Protocol("x".into())));
        let b = ResilientBackend::new(Flaky::default());
        assert_eq!(b.name(), "flaky");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn reads_and_invalidations_are_retried_leases_are_not() {
        let b = ResilientBackend::builder(Flaky::default())
            .failure_threshold(100)
            .retries(2)
            .build();
        b.inner().failing.store(true, Ordering::SeqCst);
        b.get_many(&["k".into()]).await.unwrap_err();
        assert_eq!(calls(&b), 3, "one read, two retries");
        b.set_many(&[("k".into(), b"m".to_vec())], Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(calls(&b), 6, "one invalidation, two retries");
        b.add("k", b"lease", Duration::ZERO).await.unwrap_err();
        assert_eq!(calls(&b), 7, "a lease is not retried");
        let no_retry = wrapped(Duration::from_secs(60));
        no_retry.inner().failing.store(true, Ordering::SeqCst);
        no_retry.get_many(&["k".into()]).await.unwrap_err();
        assert_eq!(calls(&no_retry), 1, "no retries by default");
    }
}
