//! `select_related`: a row and its relations in one cache round trip, also
//! through a request scope.

use super::common::quiet_drain;
use super::setup::*;
use flash_core::{Backend, Error, Outcome};
use flash_sea_orm::{by, CacheMeta, FlashDb, Request, SelectRelated};
use flash_test_kit::entities::{checkin, event, ticket, user};
use flash_test_kit::{Hooked, Op};
use std::sync::{Arc, Mutex};

/// A handle counting its cache's calls, two events and a user, and the
/// user's ticket to the first (the captured records applied, so that the
/// drain does not invalidate them again during the counts).
struct Scene {
    fdb: FlashDb,
    cache: Arc<Hooked<Arc<dyn Backend>>>,
    rock: event::Model,
    jazz: event::Model,
    ann: user::Model,
    t: ticket::Model,
}

async fn scene() -> Scene {
    let (fdb, cache) = handle_draining(quiet_drain()).await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let ann = user(&fdb, "ann").await;
    let t = ticket(&fdb, rock.id, ann.id).await;
    fdb.apply_captured().await.unwrap();
    Scene {
        fdb,
        cache,
        rock,
        jazz,
        ann,
        t,
    }
}

#[tokio::test]
async fn select_related_reads_the_row_and_two_relations_in_one_round_trip_and_follows_them() {
    let Scene {
        fdb,
        cache,
        rock,
        jazz,
        ann,
        t,
    } = scene().await;
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
    // In process there is no round trip to save: the row, then its two
    // relations in one read.
    let in_process = !flash_core::Backend::coalesce_reads(&*cache);
    assert_eq!(
        cache.calls(Op::GetMany) - before,
        if in_process { 2 } else { 1 },
        "a hit of the row and its two relations is one cache round trip (with a server)"
    );

    // The embedded row changes: its own key is invalidated, the page follows.
    retitle(&fdb, &rock, "Rock!").await;
    let (_, ev, _) = page.get(lk()).await.unwrap();
    assert_eq!(ev.unwrap().title, "Rock!");

    // The foreign key moves: the row's key is invalidated and the remembered
    // related key is not used.
    move_ticket(&fdb, t.id, jazz.id).await;
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

/// A page hit counts a hit of each row's own class, as the three lookups by
/// hand do (in process its hits are read without waiting and timed
/// together), and a changed related row is served fresh by the next page.
#[tokio::test]
async fn select_related_counts_a_hit_per_class_and_serves_a_changed_row_fresh() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fdb = handle_observed(seen.clone()).await;
    let rock = event(&fdb, "rock").await;
    let ann = user(&fdb, "ann").await;
    let t = ticket(&fdb, rock.id, ann.id).await;
    fdb.apply_captured().await.unwrap();
    let tickets = fdb.cache::<ticket::Entity>();
    let page = tickets
        .select_related::<event::Entity>()
        .and::<user::Entity>();
    let lk = || by(ticket::Column::Id, t.id);
    let expected = (t.clone(), Some(rock.clone()), Some(ann.clone()));
    // Filled, and the foreign keys remembered (fills land in the background).
    for _ in 0..2 {
        assert_eq!(page.get(lk()).await.unwrap(), expected);
        fdb.flash().settled().await;
    }
    let take = || std::mem::take(&mut *seen.lock().unwrap());
    take();
    tickets.get(lk()).await.unwrap();
    let events = fdb.cache::<event::Entity>();
    events.get(by(event::Column::Id, rock.id)).await.unwrap();
    let users = fdb.cache::<user::Entity>();
    users.get(by(user::Column::Id, ann.id)).await.unwrap();
    let by_hand = take();
    assert_eq!(by_hand.len(), 3, "{by_hand:?}");
    assert!(
        by_hand.iter().all(|(_, o)| *o == Outcome::Hit),
        "{by_hand:?}"
    );

    // In process, each hit is a lookup's event of its own class (with a
    // server the page is one batch, whose entries send no lookup event).
    let in_process = !fdb.flash().backend().coalesce_reads();
    let before = fdb.flash().stats().snapshot();
    assert_eq!(page.get(lk()).await.unwrap(), expected);
    let after = fdb.flash().stats().snapshot();
    if in_process {
        assert_eq!(take(), by_hand, "one hit of each row's class, as by hand");
    }
    assert_eq!(
        (after.hits - before.hits, after.misses - before.misses),
        (3, 0),
        "a page hit is three hits in the counters"
    );
    assert_eq!(after.db_fetches, before.db_fetches);

    // The embedded row changes: the next page reads it again, fresh.
    retitle(&fdb, &rock, "Rock!").await;
    let (row, ev, holder) = page.get(lk()).await.unwrap();
    assert_eq!((row, holder), (t.clone(), Some(ann.clone())));
    assert_eq!(ev.unwrap().title, "Rock!");
    let outcomes = take();
    let event_class = &by_hand[1].0;
    assert!(
        !in_process
            || outcomes
                .iter()
                .any(|(c, o)| c == event_class && *o != Outcome::Hit),
        "the changed row is not a hit: {outcomes:?}"
    );
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

    let err = build_error(|reg| {
        reg.entity(CacheMeta::<event::Entity>::new()).unwrap(); // no get_key on its id
        let meta = CacheMeta::<ticket::Entity>::new().get_key([ticket::Column::Id]);
        reg.entity(meta.select_related::<event::Entity>()).unwrap();
    })
    .await;
    assert!(
        matches!(&err, Error::CacheNotRegistered { model, .. } if model == "event"),
        "{err}"
    );
}

/// `select_related` through a request scope, with the semantics of the
/// scope's other lookups: each row is kept in the request's memo under its
/// own key (a repeat, or a lookup of an embedded row, asks the cache
/// nothing), the row and its remembered relations are one batch, and the
/// request is a snapshot: a write is seen by the next request.
#[tokio::test]
async fn select_related_in_a_request_is_one_batch_memoised_and_a_snapshot() {
    let Scene {
        fdb,
        cache,
        rock,
        jazz,
        ann,
        t,
    } = scene().await;
    let lk = || by(ticket::Column::Id, t.id);
    let want = (t.clone(), Some(rock.clone()), Some(ann.clone()));
    let reads = || cache.calls(Op::GetMany);

    // A first request: the row, then its two relations (none remembered yet).
    let req = fdb.request();
    let page = req
        .cache::<ticket::Entity>()
        .select_related::<event::Entity>()
        .and::<user::Entity>();
    assert_eq!(page.get(lk()).await.unwrap(), want);
    assert_eq!(req.scope().memoised(), 3, "each row under its own key");
    fdb.flash().settled().await;

    // Repeats and the embedded rows' own lookups: from the request.
    let before = reads();
    assert_eq!(page.get(lk()).await.unwrap(), want);
    let (ev, holder) = tokio::join!(
        req.cache::<event::Entity>()
            .get(by(event::Column::Id, rock.id)),
        req.cache::<user::Entity>()
            .get(by(user::Column::Id, ann.id)),
    );
    assert_eq!((ev.unwrap(), holder.unwrap()), (rock.clone(), ann.clone()));
    assert_eq!(reads(), before, "answered from the request");

    // A new request: the row and the relations it pointed at, one batch.
    let fresh = || fdb.request();
    let req2 = fresh();
    let before = reads();
    let got = req2
        .cache::<ticket::Entity>()
        .select_related::<event::Entity>()
        .and::<user::Entity>()
        .get(lk())
        .await
        .unwrap();
    assert_eq!((got, reads() - before), (want.clone(), 1), "one cache read");

    // Writes: this request keeps its snapshot, a new one sees them.
    retitle(&fdb, &rock, "Rock!").await;
    assert_eq!(
        page.get(lk()).await.unwrap(),
        want,
        "the request's snapshot"
    );
    fn one(r: &Request) -> SelectRelated<'_, ticket::Entity, (event::Entity,)> {
        r.cache::<ticket::Entity>()
            .select_related::<event::Entity>()
    }
    let req3 = fresh();
    let (_, ev) = one(&req3).get(lk()).await.unwrap();
    assert_eq!(ev.unwrap().title, "Rock!");

    // A moved foreign key: the remembered event is not used (a second batch).
    move_ticket(&fdb, t.id, jazz.id).await;
    fdb.flash().settled().await;
    let req4 = fresh();
    let (row, ev) = one(&req4).get(lk()).await.unwrap();
    assert_eq!((row.event_id, ev), (jazz.id, Some(jazz.clone())));
    assert_eq!(
        one(&req3).get(lk()).await.unwrap().1.unwrap().id,
        rock.id,
        "an older request keeps its snapshot"
    );

    // A missing row is NotFound; an undeclared relation is an error.
    let err = page.get(by(ticket::Column::Id, -1)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = req4
        .cache::<checkin::Entity>()
        .select_related::<ticket::Entity>()
        .get(by(checkin::Column::Id, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CacheNotRegistered { .. }), "{err}");
}
