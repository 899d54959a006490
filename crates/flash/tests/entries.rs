//! Self-checking entries, on the cache of FLASH_CACHE_URL: bytes that are not
//! this key's value of this layout are a miss (counted) and are refilled.
//!
//! A shared cache (a server) seals values with a tag of their key and bytes:
//! another key's or class's value, a flipped byte, a cut, trailing bytes and
//! a writer without the secret are all caught. The in-process store is
//! written by this process only and carries no seal; there the layout check
//! and the exact decoding (trailing bytes, another class's layout) still hold.

mod common;

use common::event_v2;
use common::*;
use flash_core::{Backend, Outcome};
use flash_sea_orm::{by, CacheMeta, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation};

fn rejected(fdb: &FlashDb) -> u64 {
    fdb.flash().stats().snapshot().rejected_entries
}

async fn raw(h: &Harness, key: &str) -> Vec<u8> {
    flash_test_kit::owned(h.backend.get_many(&[key.to_owned()]).await.unwrap())[0]
        .clone()
        .unwrap_or_else(|| panic!("{key} holds a value"))
}

async fn plant(h: &Harness, key: &str, bytes: &[u8]) {
    h.backend
        .set(key, bytes, std::time::Duration::from_secs(60))
        .await
        .unwrap();
}

/// The prefix of the harness's keys (the part before the cache type).
fn prefix_of(key: &str) -> String {
    key[..key.find("i__default__").expect("an instance key")].to_owned()
}

/// A lookup of event `id` is a miss that returns the right row, counts one
/// rejected entry, and the next one is a hit.
async fn refilled(h: &Harness, e: &event::Model, what: &str) {
    let events = h.fdb.cache::<event::Entity>();
    let before = rejected(&h.fdb);
    let (row, o) = events
        .get_with_outcome(by(event::Column::Id, e.id))
        .await
        .unwrap();
    assert_eq!((row.as_ref(), o), (Some(e), Outcome::Miss), "{what}");
    assert_eq!(rejected(&h.fdb), before + 1, "{what}: counted");
    h.fdb.flash().settled().await;
    let (row, o) = events
        .get_with_outcome(by(event::Column::Id, e.id))
        .await
        .unwrap();
    assert_eq!(
        (row.as_ref(), o),
        (Some(e), Outcome::Hit),
        "{what}: refilled"
    );
}

#[tokio::test]
async fn wrong_bytes_are_misses_and_are_refilled() {
    let h = quiet_harness().await;
    let shared = h.backend.shared();
    let a = add_event(&h.fdb, "alpha", "Oslo").await;
    let b = add_event(&h.fdb, "bravo", "Bergen").await;
    h.settle().await;
    let events = h.fdb.cache::<event::Entity>();
    let key_a = events.cache_key(&by(event::Column::Id, a.id)).unwrap();
    let key_b = events.cache_key(&by(event::Column::Id, b.id)).unwrap();
    events.get(by(event::Column::Id, a.id)).await.unwrap();
    events.get(by(event::Column::Id, b.id)).await.unwrap();
    // The fills land in the background: read the bytes once they are stored.
    h.fdb.flash().settled().await;
    let good_a = raw(&h, &key_a).await;
    let good_b = raw(&h, &key_b).await;

    // Trailing bytes, and another class's value (another layout): on every cache.
    let mut longer = good_a.clone();
    longer.extend_from_slice(b"\0\0");
    plant(&h, &key_a, &longer).await;
    refilled(&h, &a, "trailing bytes").await;

    let parts = h.fdb.cache::<participation::Entity>();
    let lookup = by(participation::Column::UserId, 1);
    assert!(parts.filter(lookup.clone()).await.unwrap().is_empty());
    let list_key = parts
        .filter_query(&lookup)
        .unwrap()
        .key(h.fdb.flash())
        .unwrap();
    plant(&h, &list_key, &good_a).await;
    let before = rejected(&h.fdb);
    let (rows, o) = parts.filter_with_outcome(lookup.clone()).await.unwrap();
    assert_eq!(
        (rows.len(), o),
        (0, Outcome::Miss),
        "an event's entry under a list key"
    );
    // Counted once, though the lookup reads the key again to take its
    // lease over bytes that are not one.
    assert_eq!(
        rejected(&h.fdb),
        before + 1,
        "the rejection is counted once"
    );

    // A batch decides on the bytes twice (the hit check, then the miss
    // path): one rejection all the same.
    plant(&h, &key_a, &longer).await;
    let before = rejected(&h.fdb);
    let mut batch = h.fdb.flash().batch();
    let handle = batch.add(events.get_query(&by(event::Column::Id, a.id)).unwrap());
    let (row, o) = batch.run().await.take_with_outcome(handle).unwrap();
    assert_eq!((row.as_ref(), o), (Some(&a), Outcome::Miss), "batch");
    assert_eq!(
        rejected(&h.fdb),
        before + 1,
        "a batch counts a bad entry once"
    );
    h.fdb.flash().settled().await;

    if !shared {
        // The in-process store has no seal: what only a seal catches is not
        // tested on it (no other client can write it).
        return;
    }
    plant(&h, &key_a, &good_b).await;
    refilled(&h, &a, "another key's entry").await;

    let mut flipped = good_a.clone();
    let mid = flipped.len() - 20; // inside the payload, before the tag
    flipped[mid] ^= 0x01;
    plant(&h, &key_a, &flipped).await;
    refilled(&h, &a, "a flipped byte").await;

    plant(&h, &key_a, &good_a[..good_a.len() - 5]).await;
    refilled(&h, &a, "truncated").await;
}

#[tokio::test]
async fn two_layouts_of_one_table_never_read_each_other() {
    let h = quiet_harness().await;
    let e = add_event(&h.fdb, "layout-slug", "Oslo").await;
    assert_ne!(e.slug, e.title, "swapped strings would show");
    h.settle().await;
    let events = h.fdb.cache::<event::Entity>();
    let key = events.cache_key(&by(event::Column::Id, e.id)).unwrap();
    let mut reg = Registrar::new(h.db.clone())
        .capture(false)
        .configure(|b| b.backend_arc(h.backend.clone()).prefix(prefix_of(&key)));
    reg.entity(CacheMeta::<event_v2::Entity>::new().get_key([event_v2::Column::Id]))
        .unwrap();
    let other = reg.build().await.unwrap();
    let v2 = other.cache::<event_v2::Entity>();
    assert_eq!(
        v2.cache_key(&by(event_v2::Column::Id, e.id)).unwrap(),
        key,
        "one key"
    );

    for round in 0..2 {
        // The current code fills; the other reads a miss and the right values.
        assert_eq!(events.get(by(event::Column::Id, e.id)).await.unwrap(), e);
        let before = rejected(&other);
        let (row, o) = v2
            .get_with_outcome(by(event_v2::Column::Id, e.id))
            .await
            .unwrap();
        assert_eq!(o, Outcome::Miss, "round {round}");
        let row = row.expect("the row");
        assert_eq!(
            (row.slug.as_str(), row.title.as_str()),
            (e.slug.as_str(), e.title.as_str())
        );
        assert_eq!(rejected(&other), before + 1);
        // And the other way round.
        let before = rejected(&h.fdb);
        let (row, o) = events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap();
        assert_eq!((row, o), (Some(e.clone()), Outcome::Miss), "round {round}");
        // Counted once, though the lookup reads the key again to take its
        // lease over bytes that are not one.
        assert_eq!(rejected(&h.fdb), before + 1, "counted once");
    }
}

#[tokio::test]
async fn with_a_secret_an_entry_written_without_it_is_a_miss() {
    let h = quiet_harness().await;
    if !h.backend.shared() {
        return; // the in-process store carries no seal
    }
    let e = add_event(&h.fdb, "secret-slug", "Oslo").await;
    h.settle().await;
    let events = h.fdb.cache::<event::Entity>();
    let key = events.cache_key(&by(event::Column::Id, e.id)).unwrap();
    let mut reg = Registrar::new(h.db.clone()).capture(false).configure(|b| {
        b.backend_arc(h.backend.clone())
            .prefix(prefix_of(&key))
            .entry_secret(b"s3cret".to_vec())
    });
    reg.entity(CacheMeta::<event::Entity>::new().get_key([event::Column::Id]))
        .unwrap();
    let keyed = reg.build().await.unwrap();
    let with_secret = keyed.cache::<event::Entity>();

    // A client without the secret (the harness) fills the key.
    events.get(by(event::Column::Id, e.id)).await.unwrap();
    let before = rejected(&keyed);
    let (row, o) = with_secret
        .get_with_outcome(by(event::Column::Id, e.id))
        .await
        .unwrap();
    assert_eq!((row, o), (Some(e.clone()), Outcome::Miss));
    assert_eq!(rejected(&keyed), before + 1);
    let (_, o) = with_secret
        .get_with_outcome(by(event::Column::Id, e.id))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Hit, "its own fill is served");
    // And the keyed fill is a miss for the client without the secret.
    let (row, o) = events
        .get_with_outcome(by(event::Column::Id, e.id))
        .await
        .unwrap();
    assert_eq!((row, o), (Some(e), Outcome::Miss));
}
