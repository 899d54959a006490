//! `select_related`: a row and its relations in one cache round trip.

use super::common::{fresh_db, quiet_drain};
use super::setup::*;
use flash_core::Error;
use flash_sea_orm::{by, CacheMeta, Registrar};
use flash_test_kit::entities::{checkin, event, ticket, user};
use flash_test_kit::Op;
use sea_orm::Set;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

#[tokio::test]
async fn select_related_reads_the_row_and_two_relations_in_one_round_trip_and_follows_them() {
    let (fdb, cache) = handle_draining(quiet_drain()).await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let ann = user(&fdb, "ann").await;
    let t = ticket(&fdb, rock.id, ann.id).await;
    fdb.apply_captured().await.unwrap();
    let tickets = fdb.cache::<ticket::Entity>();
    let page = tickets
        .select_related::<event::Entity>()
        .and::<user::Entity>();
    let lk = || by(ticket::Column::Id, t.id);
    assert_eq!(
        page.get(lk()).await.unwrap(),
        (t.clone(), Some(rock.clone()), Some(ann.clone()))
    );
    let before = cache.calls(Op::GetMany);
    assert_eq!(
        page.get(lk()).await.unwrap(),
        (t.clone(), Some(rock.clone()), Some(ann.clone()))
    );
    // In process there is no round trip to save: three lookups, one by one.
    let in_process = !flash_core::Backend::coalesce_reads(&*cache);
    assert_eq!(
        cache.calls(Op::GetMany) - before,
        if in_process { 3 } else { 1 },
        "a hit of the row and its two relations is one cache round trip (with a server)"
    );

    // The embedded row changes: its own key is invalidated, the page follows.
    retitle(&fdb, &rock, "Rock!").await;
    let (_, ev, _) = page.get(lk()).await.unwrap();
    assert_eq!(ev.unwrap().title, "Rock!");

    // The foreign key moves: the row's key is invalidated and the remembered
    // related key is not used.
    fdb.update(ticket::ActiveModel {
        id: Set(t.id),
        event_id: Set(jazz.id),
        ..Default::default()
    })
    .await
    .unwrap();
    let (row, ev, holder) = page.get(lk()).await.unwrap();
    assert_eq!(
        (row.event_id, ev, holder),
        (jazz.id, Some(jazz.clone()), Some(ann.clone()))
    );

    // One relation, as SeaORM's find_also_related returns it.
    let (row, ev) = tickets
        .select_related::<event::Entity>()
        .get(lk())
        .await
        .unwrap();
    assert_eq!((row.id, ev.map(|e| e.id)), (t.id, Some(jazz.id)));

    // A dangling foreign key embeds nothing; a missing row is NotFound.
    fdb.delete::<event::Entity>(&jazz).await.unwrap();
    assert_eq!(page.get(lk()).await.unwrap().1, None);
    let err = page.get(by(ticket::Column::Id, -1)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn select_related_must_be_declared_and_its_target_needs_a_primary_key_cache() {
    let fdb = handle().await;
    let cache = fdb.cache::<checkin::Entity>();
    let err = cache
        .select_related::<ticket::Entity>()
        .get(by(checkin::Column::Id, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CacheNotRegistered { .. }), "{err}");

    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    let mut reg = Registrar::new(db);
    reg.entity(CacheMeta::<event::Entity>::new()).unwrap(); // no get_key on its id
    reg.entity(
        CacheMeta::<ticket::Entity>::new()
            .get_key([ticket::Column::Id])
            .select_related::<event::Entity>(),
    )
    .unwrap();
    let err = reg.build().await.unwrap_err();
    assert!(
        matches!(&err, Error::CacheNotRegistered { model, .. } if model == "event"),
        "{err}"
    );
}
