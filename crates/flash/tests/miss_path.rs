//! The miss path: the first read takes the lease (one cache request where the
//! backend can), the caller has its row after that request and the query, and
//! the fill runs in the background under the lease. On the cache of
//! `FLASH_CACHE_URL`, through the backend's own `get_or_lease`.

mod common;

use common::*;
use flash::config::{cache_backend, cache_url};
use flash_core::{FlashBuilder, Outcome};
use flash_sea_orm::by;
use flash_test_kit::entities::event;
use sea_orm::{ActiveModelTrait, Set};
use std::time::{Duration, Instant};

/// The pause between a miss's query and its fill: longer than a caller may
/// take, so that a caller who waited for its fill would be seen.
const FILL_DELAY: Duration = Duration::from_millis(300);

async fn harness_native(configure: impl FnOnce(FlashBuilder) -> FlashBuilder) -> Harness {
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let configure = |b: FlashBuilder| configure(b.lease_wait(Duration::from_secs(3)));
    harness_leasing(backend, configure, |_| (), quiet_drain(), true)
        .await
        .0
}

#[tokio::test]
async fn a_miss_waits_for_one_cache_request_and_not_for_its_fill() {
    let h = harness_native(|b| b.unsafe_fill_delay(FILL_DELAY)).await;
    // Written around flash: the key holds nothing (a cold miss).
    let e = event::ActiveModel {
        slug: Set("one-trip".into()),
        title: Set("Title of one-trip".into()),
        city: Set("Oslo".into()),
        ..Default::default()
    }
    .insert(&h.db)
    .await
    .unwrap();
    let events = h.fdb.cache::<event::Entity>();
    let flash = h.fdb.flash();
    h.take_queries();
    let before = flash.stats().snapshot();

    let started = Instant::now();
    let (row, outcome) = events
        .get_with_outcome(by(event::Column::Slug, "one-trip"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!((row.as_ref(), outcome), (Some(&e), Outcome::Miss));
    assert!(
        took < FILL_DELAY - Duration::from_millis(50),
        "the caller did not wait for the fill ({took:?})"
    );
    let after = flash.stats().snapshot();
    assert_eq!(after.leased_misses - before.leased_misses, 1);
    assert_eq!(
        after.leased_round_trips - before.leased_round_trips,
        1,
        "one cache request before the query"
    );
    assert_eq!(h.take_queries(), 1);

    // A lookup while the fill is on its way waits for it: no second query.
    let (row, outcome) = events
        .get_with_outcome(by(event::Column::Slug, "one-trip"))
        .await
        .unwrap();
    assert_eq!((row.as_ref(), outcome), (Some(&e), Outcome::Hit));
    assert_eq!(h.take_queries(), 0, "the waiter got the fill's value");

    flash.settled().await;
    assert_eq!(flash.stats().snapshot().fills - before.fills, 1);
    let (_, outcome) = events
        .get_with_outcome(by(event::Column::Slug, "one-trip"))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Hit);
    assert_eq!(h.take_queries(), 0);
}

/// A miss over a write's marker: the marker is leased over in the same
/// request on Redis, Redis Cluster and the in-process store; memcached's
/// vivify acts on absent keys only, so there it takes a second request.
#[tokio::test]
async fn a_miss_after_a_write_leases_over_its_marker() {
    let h = harness_native(|b| b).await;
    let e = add_event(&h.fdb, "after-write", "Oslo").await;
    let events = h.fdb.cache::<event::Entity>();
    let flash = h.fdb.flash();
    let before = flash.stats().snapshot();
    let (row, outcome) = events
        .get_with_outcome(by(event::Column::Slug, "after-write"))
        .await
        .unwrap();
    assert_eq!((row.as_ref(), outcome), (Some(&e), Outcome::Miss));
    let after = flash.stats().snapshot();
    let want = if cache_url().starts_with("memcache") {
        2
    } else {
        1
    };
    assert_eq!(
        after.leased_misses - before.leased_misses,
        1,
        "the first read took the lease"
    );
    assert_eq!(after.leased_round_trips - before.leased_round_trips, want);
    flash.settled().await;
    let (_, outcome) = events
        .get_with_outcome(by(event::Column::Slug, "after-write"))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Hit);
}

/// A write lands between a miss's query and its background fill. With
/// the lease the fill is refused and the next lookup reads the new row;
/// without leases (the test-only switch) the same schedule leaves the old
/// row in the cache, which shows that the test can see the race.
async fn late_fill_after_a_write(leases: bool) -> String {
    let h = harness_native(|b| {
        let b = b.unsafe_fill_delay(FILL_DELAY);
        if leases {
            b
        } else {
            b.unsafe_disable_leases()
        }
    })
    .await;
    let e = add_event(&h.fdb, "late-fill", "Oslo").await;
    let fdb = h.fdb.clone();
    let lookup = tokio::spawn(async move {
        fdb.cache::<event::Entity>()
            .get(by(event::Column::Slug, "late-fill"))
            .await
            .unwrap()
    });
    // The query is done well within this; the fill waits FILL_DELAY.
    tokio::time::sleep(FILL_DELAY / 3).await;
    let mut am: event::ActiveModel = e.clone().into();
    am.title = Set("New title".into());
    h.fdb.update(am).await.unwrap();
    let old = lookup.await.unwrap();
    assert_eq!(old.title, e.title, "the lookup read before the write");
    h.fdb.flash().settled().await;
    tokio::time::sleep(FILL_DELAY).await;
    h.fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Slug, "late-fill"))
        .await
        .unwrap()
        .title
}

#[tokio::test]
async fn a_late_background_fill_does_not_survive_a_write() {
    assert_eq!(late_fill_after_a_write(true).await, "New title");
}

#[tokio::test]
async fn without_leases_the_late_fill_leaves_the_old_row() {
    assert_eq!(
        late_fill_after_a_write(false).await,
        "Title of late-fill",
        "the schedule must produce the stale fill that leases prevent"
    );
}
