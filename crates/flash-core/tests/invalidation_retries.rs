//! A write's invalidation that the cache refuses is retried within the call
//! (a client reconnecting to a restarted server needs one retry); a timeout is
//! not (a hung server would only make each attempt wait); what still fails is
//! kept for the background retry.

use async_trait::async_trait;
use flash_core::{Backend, BackendError, Flash, KeySet, MemoryBackend};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// The in-process cache, refusing its first `failures` invalidations with `error`.
struct Refusing {
    inner: MemoryBackend,
    failures: AtomicU32,
    error: fn() -> BackendError,
    attempts: AtomicU32,
}

#[async_trait]
impl Backend for Refusing {
    fn name(&self) -> &'static str {
        "refusing"
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.inner.add(key, value, ttl).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.compare_and_swap(key, expected, new, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        self.attempts.fetch_add(1, SeqCst);
        if self
            .failures
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err((self.error)());
        }
        self.inner.set_many(items, ttl).await
    }
}

async fn invalidate_with(failures: u32, error: fn() -> BackendError) -> (bool, u32, Flash, KeySet) {
    let backend = Arc::new(Refusing {
        inner: MemoryBackend::default(),
        failures: AtomicU32::new(failures),
        error,
        attempts: AtomicU32::new(0),
    });
    let flash = Flash::builder()
        .backend_arc(backend.clone())
        .build()
        .await
        .unwrap();
    let mut keys = KeySet::default();
    keys.unset.insert("flash:i__default__c__1__v0".into());
    let applied = flash.apply_invalidation("m", &keys).await.is_ok();
    (applied, backend.attempts.load(SeqCst), flash, keys)
}

fn refused() -> BackendError {
    BackendError::Unreachable("connection reset".into())
}

#[tokio::test]
async fn a_refused_invalidation_is_retried_twice_within_the_write() {
    let (applied, attempts, _, _) = invalidate_with(2, refused).await;
    assert!(applied, "the third attempt landed");
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn what_still_fails_is_kept_for_the_background_retry() {
    let (applied, attempts, flash, keys) = invalidate_with(3, refused).await;
    assert!(!applied);
    assert_eq!(attempts, 3, "one try and two retries");
    assert_eq!(
        flash.retry_pending().await.unwrap(),
        keys.len(),
        "the keys waited for the retry task"
    );
}

#[tokio::test]
async fn a_timeout_is_not_retried() {
    let (applied, attempts, _, _) =
        invalidate_with(1, || BackendError::Timeout(Duration::from_millis(50))).await;
    assert!(!applied);
    assert_eq!(attempts, 1);
}
