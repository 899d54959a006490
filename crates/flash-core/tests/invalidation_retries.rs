//! A write's invalidation that the cache refuses is retried within the call
//! (a client reconnecting to a restarted server needs one retry); a timeout is
//! not (a hung server would only make each attempt wait); what still fails is
//! kept for the background retry.

use flash_core::{BackendError, Flash, KeySet, MemoryBackend};
use flash_test_kit::{Hooked, Op};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

/// The in-process cache, refusing its first `failures` invalidations with
/// `error`; the invalidations it was asked for, refused or not, are its
/// `set_many` calls.
async fn invalidate_with(failures: u32, error: fn() -> BackendError) -> (bool, u32, Flash, KeySet) {
    let failures = AtomicU32::new(failures);
    let backend = Hooked::new(MemoryBackend::default())
        .name("refusing")
        .coalesce_reads(true)
        .before(move |call| {
            if call.op == Op::SetMany
                && failures
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(error());
            }
            Ok(())
        });
    let backend = Arc::new(backend);
    let flash = Flash::builder()
        .backend_arc(backend.clone())
        .build()
        .await
        .unwrap();
    let mut keys = KeySet::default();
    keys.unset.insert("flash:i__default__c__1__v0".into());
    let applied = flash.apply_invalidation("m", &keys).await.is_ok();
    let attempts = backend.calls(Op::SetMany) as u32;
    (applied, attempts, flash, keys)
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
