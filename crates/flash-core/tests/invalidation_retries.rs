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

/// Read-your-writes in the writing process when its deferred invalidation
/// lands while a read is in flight: the read got the replaced bytes before
/// the markers landed, and the key stopped being pending before the read
/// returned. Such bytes must not be served (single lookup and batch alike).
#[tokio::test]
async fn a_read_in_flight_when_a_deferred_invalidation_lands_is_not_served() {
    use flash_core::{ClassSpec, FetchFn, FieldValue, Outcome, SourceError};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let down = Arc::new(AtomicBool::new(false));
    let backend = Arc::new(
        Hooked::new(MemoryBackend::default())
            .reply_delay(Op::GetMany, Duration::from_millis(150))
            .before({
                let down = down.clone();
                move |call| match call.op == Op::SetMany && down.load(SeqCst) {
                    true => Err(refused()),
                    false => Ok(()),
                }
            }),
    );
    // The "database": one row whose title is `v{n}`.
    let row = Arc::new(AtomicU64::new(1));
    let mut b = Flash::builder().backend_arc(backend.clone());
    let title = b
        .register::<String>(
            ClassSpec::instance("TitleById", "post", &["id"]),
            FetchFn({
                let row = row.clone();
                move |_: Vec<FieldValue>| {
                    let n = row.load(SeqCst);
                    Box::pin(async move { Ok::<_, SourceError>(format!("v{n}")) }) as _
                }
            }),
        )
        .unwrap();
    let flash = b.build().await.unwrap();
    let id: [FieldValue; 1] = [1.into()];
    let mut keys = KeySet::default();
    keys.unset.insert(flash.key_of(&title, &id).unwrap());

    for (round, batch) in [(2u64, false), (3, true)] {
        assert_eq!(flash.lookup(&title, &id).await.unwrap().1, Outcome::Miss);
        assert_eq!(flash.lookup(&title, &id).await.unwrap().1, Outcome::Hit);
        // The write: the row changes, its invalidation is refused and deferred.
        down.store(true, SeqCst);
        row.store(round, SeqCst);
        assert!(flash.apply_invalidation("post", &keys).await.is_err());
        // A lookup after the write returned: its read gets the old bytes at
        // once and answers 150 ms later; meanwhile the retry lands.
        let reader = {
            let (flash, title, id) = (flash.clone(), title.clone(), id.clone());
            tokio::spawn(async move {
                if batch {
                    let mut bt = flash.batch();
                    let h = bt.add(flash.query(&title, id.to_vec()));
                    bt.run().await.take(h).unwrap()
                } else {
                    flash.get(&title, &id).await.unwrap()
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(40)).await;
        down.store(false, SeqCst);
        assert_eq!(flash.retry_pending().await.unwrap(), 1);
        assert_eq!(
            reader.await.unwrap(),
            format!("v{round}"),
            "round {round} (batch: {batch}): the writer's own process served what its write replaced"
        );
    }
}

/// A DYNAMIC class whose multi-get of value and stale marker is not atomic:
/// a reader that read the old value before a refresh stored the new one, and
/// the marker slot after the refresh finished, must not serve the old value
/// (the refresh once deleted the marker, and such a reader saw "no marker").
#[tokio::test]
async fn a_dynamic_refresh_between_a_readers_two_reads_is_not_served_as_fresh() {
    use flash_core::{ClassSpec, FetchFn, FieldValue, Invalidation, Outcome, SourceError};
    use std::sync::atomic::AtomicU64;
    let backend =
        Arc::new(Hooked::new(MemoryBackend::default()).split_reads(Duration::from_millis(100)));
    let row = Arc::new(AtomicU64::new(1));
    let mut b = Flash::builder().backend_arc(backend.clone());
    let title = b
        .register::<String>(
            ClassSpec::instance("TitleById", "post", &["id"]).invalidation(Invalidation::Dynamic),
            FetchFn({
                let row = row.clone();
                move |_: Vec<FieldValue>| {
                    let n = row.load(SeqCst);
                    Box::pin(async move { Ok::<_, SourceError>(format!("v{n}")) }) as _
                }
            }),
        )
        .unwrap();
    let flash = b.build().await.unwrap();
    let id: [FieldValue; 1] = [1.into()];
    let mut keys = KeySet::default();
    keys.dynamic.insert(flash.key_of(&title, &id).unwrap());
    assert_eq!(flash.lookup(&title, &id).await.unwrap().1, Outcome::Miss);
    // The write returns: the row is v2 and the marker is set.
    row.store(2, SeqCst);
    flash.apply_invalidation("post", &keys).await.unwrap();
    // A refreshes (its reads take 100 ms each: about 200 ms until it stores
    // v2 and clears the marker); B reads the value at 150 ms (still v1) and
    // the marker slot at 250 ms (cleared by then).
    let refresher = {
        let (flash, title, id) = (flash.clone(), title.clone(), id.clone());
        tokio::spawn(async move { flash.lookup(&title, &id).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (v, _) = flash.lookup(&title, &id).await.unwrap();
    assert_eq!(
        v, "v2",
        "a lookup that started after the write returned served the old value"
    );
    assert_eq!(refresher.await.unwrap(), ("v2".into(), Outcome::Miss));
    assert_eq!(
        flash.lookup(&title, &id).await.unwrap(),
        ("v2".into(), Outcome::Hit)
    );
}
