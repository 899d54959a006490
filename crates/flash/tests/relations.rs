//! Related classes (the original's related instance and related queryset
//! caches): the rows reached through a `Related` / `Linked` path, one hop,
//! two hops and many-to-many through a junction table, following every
//! change on the path, by writes through flash and by writes from elsewhere
//! (capture), on DATABASE_URL and FLASH_CACHE_URL.

mod common;

use common::{fresh_db, unique};
use flash::config::{cache_backend, cache_url};
use flash_core::{Backend, Error, Outcome, RegistryError};
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{by, by_object, CacheMeta, FlashDb, Registrar};
use flash_test_kit::entities::{checkin, comment, event, tag, ticket, user, user_tag};
use flash_test_kit::{schema, Hooked, Op};
use sea_orm::{ActiveModelTrait, ConnectionTrait, ModelTrait, Set};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The declarations of the relations chapter.
fn declare(reg: &mut Registrar) {
    reg.entity(CacheMeta::<event::Entity>::new().get_key([event::Column::Id]))
        .unwrap();
    reg.entity(
        CacheMeta::<user::Entity>::new()
            .get_key([user::Column::Id])
            .related_filter::<tag::Entity>([user::Column::Id]),
    )
    .unwrap();
    // The other side of the junction: the users by a tag (the junction as a key).
    reg.entity(CacheMeta::<tag::Entity>::new().related_filter::<user::Entity>([tag::Column::Id]))
        .unwrap();
    reg.entity(CacheMeta::<user_tag::Entity>::new()).unwrap();
    reg.entity(
        CacheMeta::<ticket::Entity>::new()
            .get_key([ticket::Column::Id])
            .related_get::<event::Entity>([ticket::Column::Id])
            .related_filter::<event::Entity>([ticket::Column::HolderId])
            .select_related::<event::Entity>()
            .select_related::<user::Entity>(),
    )
    .unwrap();
    reg.entity(
        CacheMeta::<comment::Entity>::new()
            .filter_key([comment::Column::TargetType, comment::Column::TargetId])
            .generic_get::<event::Entity>(
                comment::Column::TargetType,
                comment::Column::TargetId,
                [comment::Column::Id],
            ),
    )
    .unwrap();
    reg.entity(
        CacheMeta::<checkin::Entity>::new()
            .linked_get(checkin::TicketEvent, [checkin::Column::Id])
            .linked_filter(checkin::TicketEvent, [checkin::Column::Gate]),
    )
    .unwrap();
}

/// A handle on a fresh namespace with the demo and relation tables.
async fn handle() -> FlashDb {
    handle_draining(DrainSettings::default()).await.0
}

/// A handle whose drain runs only when the test applies the captured
/// changes: for tests that count hits and misses (a write's captured record
/// invalidates its keys a second time when drained).
async fn quiet_handle() -> FlashDb {
    handle_draining(common::quiet_drain()).await.0
}

/// A handle and its cache, counting calls.
async fn handle_draining(drain: DrainSettings) -> (FlashDb, Arc<Hooked<Arc<dyn Backend>>>) {
    handle_with(drain, true).await
}

async fn handle_with(
    drain: DrainSettings,
    capture: bool,
) -> (FlashDb, Arc<Hooked<Arc<dyn Backend>>>) {
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    schema::create_relation_tables(&db).await.expect("tables");
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let backend = Arc::new(Hooked::new(backend).name("counting"));
    let prefix = unique("rel") + ":";
    let b2 = backend.clone();
    let mut reg = Registrar::new(db)
        .configure(|b| b.backend_arc(b2).prefix(prefix))
        .capture(capture)
        .drain_settings(drain);
    declare(&mut reg);
    (reg.build().await.expect("build"), backend)
}

async fn event(fdb: &FlashDb, slug: &str) -> event::Model {
    fdb.insert(event::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        city: Set("Oslo".into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn ticket(fdb: &FlashDb, event_id: i32, holder_id: i32) -> ticket::Model {
    fdb.insert(ticket::ActiveModel {
        event_id: Set(event_id),
        holder_id: Set(holder_id),
        code: Set(unique("c")),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn user(fdb: &FlashDb, name: &str) -> user::Model {
    fdb.insert(user::ActiveModel {
        username: Set(name.into()),
        name: Set(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn tag(fdb: &FlashDb, name: &str) -> tag::Model {
    fdb.insert(tag::ActiveModel {
        name: Set(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn link(fdb: &FlashDb, u: i32, t: i32) -> user_tag::Model {
    fdb.insert(user_tag::ActiveModel {
        user_id: Set(u),
        tag_id: Set(t),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn retitle(fdb: &FlashDb, e: &event::Model, title: &str) {
    fdb.update(event::ActiveModel {
        id: Set(e.id),
        title: Set(title.into()),
        ..Default::default()
    })
    .await
    .unwrap();
}

fn titles(rows: &[event::Model]) -> Vec<&str> {
    rows.iter().map(|e| e.title.as_str()).collect()
}

fn names(rows: &[tag::Model]) -> Vec<&str> {
    rows.iter().map(|t| t.name.as_str()).collect()
}

#[tokio::test]
async fn related_instance_follows_the_related_row_a_moved_key_and_a_delete() {
    let fdb = quiet_handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let t = ticket(&fdb, rock.id, 1).await;
    fdb.apply_captured().await.unwrap();
    let rel = fdb.cache::<ticket::Entity>();
    let rel = rel.related::<event::Entity>();
    let (e, o) = rel
        .get_with_outcome(by(ticket::Column::Id, t.id))
        .await
        .unwrap();
    assert_eq!((e.as_ref(), o), (Some(&rock), Outcome::Miss));
    let (_, o) = rel
        .get_with_outcome(by(ticket::Column::Id, t.id))
        .await
        .unwrap();
    assert_eq!(o, Outcome::Hit, "the second read is served by the cache");

    // The related row changes: a write to the end of the path.
    retitle(&fdb, &rock, "Rock!").await;
    let e = rel.get(by(ticket::Column::Id, t.id)).await.unwrap();
    assert_eq!(e.title, "Rock!");

    // The foreign key moves: a write to the start of the path.
    fdb.update(ticket::ActiveModel {
        id: Set(t.id),
        event_id: Set(jazz.id),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rel.get(by(ticket::Column::Id, t.id)).await.unwrap().id,
        jazz.id
    );

    // The related row is deleted.
    fdb.delete::<event::Entity>(&jazz).await.unwrap();
    let err = rel.get(by(ticket::Column::Id, t.id)).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn two_hop_instance_follows_every_row_on_the_path() {
    let fdb = handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let t = ticket(&fdb, rock.id, 1).await;
    let c = fdb
        .insert(checkin::ActiveModel {
            ticket_id: Set(t.id),
            gate: Set("north".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let cache = fdb.cache::<checkin::Entity>();
    let rel = cache.linked(checkin::TicketEvent);
    assert_eq!(rel.get(by(checkin::Column::Id, c.id)).await.unwrap(), rock);
    assert_eq!(
        titles(
            &rel.filter(by(checkin::Column::Gate, "north"))
                .await
                .unwrap()
        ),
        ["Title of rock"]
    );

    retitle(&fdb, &rock, "Rock 2").await; // the end of the path
    assert_eq!(
        rel.get(by(checkin::Column::Id, c.id)).await.unwrap().title,
        "Rock 2"
    );
    assert_eq!(
        titles(
            &rel.filter(by(checkin::Column::Gate, "north"))
                .await
                .unwrap()
        ),
        ["Rock 2"]
    );

    // The middle of the path: the ticket moves to another event.
    fdb.update(ticket::ActiveModel {
        id: Set(t.id),
        event_id: Set(jazz.id),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rel.get(by(checkin::Column::Id, c.id)).await.unwrap().id,
        jazz.id
    );
    assert_eq!(
        titles(
            &rel.filter(by(checkin::Column::Gate, "north"))
                .await
                .unwrap()
        ),
        ["Title of jazz"]
    );

    // The middle row is deleted: nothing is reached any more.
    fdb.delete::<ticket::Entity>(&t).await.unwrap();
    assert_eq!(
        rel.get_or_none(by(checkin::Column::Id, c.id))
            .await
            .unwrap(),
        None
    );
    assert!(rel
        .filter(by(checkin::Column::Gate, "north"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn related_queryset_lists_each_row_once_and_follows_inserts() {
    let fdb = handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    ticket(&fdb, rock.id, 5).await;
    ticket(&fdb, rock.id, 5).await; // a second ticket to the same event
    let cache = fdb.cache::<ticket::Entity>();
    let rel = cache.related::<event::Entity>();
    let lk = || by(ticket::Column::HolderId, 5);
    assert_eq!(titles(&rel.filter(lk()).await.unwrap()), ["Title of rock"]);
    ticket(&fdb, jazz.id, 5).await;
    assert_eq!(
        titles(&rel.filter(lk()).await.unwrap()),
        ["Title of rock", "Title of jazz"]
    );
    retitle(&fdb, &jazz, "Jazz!").await;
    assert_eq!(
        titles(&rel.filter(lk()).await.unwrap()),
        ["Title of rock", "Jazz!"]
    );
}

#[tokio::test]
async fn many_to_many_list_follows_a_link_added_a_link_removed_and_a_member_changed() {
    let fdb = quiet_handle().await;
    let (ann, bob) = (user(&fdb, "ann").await, user(&fdb, "bob").await);
    let (red, blue) = (tag(&fdb, "red").await, tag(&fdb, "blue").await);
    let red_link = link(&fdb, ann.id, red.id).await;
    link(&fdb, bob.id, red.id).await;
    let cache = fdb.cache::<user::Entity>();
    let tags = cache.related::<tag::Entity>();
    let of = |u: &user::Model| by(user::Column::Id, u.id);
    // The captured records of the writes so far invalidate their keys a
    // second time: applied before the reads whose hits are counted.
    fdb.apply_captured().await.unwrap();
    assert_eq!(names(&tags.filter(of(&ann)).await.unwrap()), ["red"]);
    assert_eq!(names(&tags.filter(of(&bob)).await.unwrap()), ["red"]);

    // A link added to bob changes bob's list only.
    link(&fdb, bob.id, blue.id).await;
    fdb.apply_captured().await.unwrap();
    let (list, o) = tags.filter_with_outcome(of(&ann)).await.unwrap();
    assert_eq!(
        (names(&list), o),
        (vec!["red"], Outcome::Hit),
        "ann's list kept"
    );
    assert_eq!(
        names(&tags.filter(of(&bob)).await.unwrap()),
        ["red", "blue"]
    );

    // The users by a tag follow the same links.
    let by_tag = fdb.cache::<tag::Entity>();
    let users = by_tag.related::<user::Entity>();
    let usernames =
        |rows: Vec<user::Model>| rows.into_iter().map(|u| u.username).collect::<Vec<_>>();
    let red_users = users.filter(by(tag::Column::Id, red.id)).await.unwrap();
    assert_eq!(usernames(red_users), ["ann", "bob"]);

    // A link removed.
    fdb.delete::<user_tag::Entity>(&red_link).await.unwrap();
    assert!(tags.filter(of(&ann)).await.unwrap().is_empty());
    let red_users = users.filter(by(tag::Column::Id, red.id)).await.unwrap();
    assert_eq!(usernames(red_users), ["bob"]);
    assert_eq!(
        names(&tags.filter(of(&bob)).await.unwrap()),
        ["red", "blue"]
    );

    // A member changed: every list holding it follows.
    fdb.update(tag::ActiveModel {
        id: Set(blue.id),
        name: Set("navy".into()),
    })
    .await
    .unwrap();
    assert_eq!(
        names(&tags.filter(of(&bob)).await.unwrap()),
        ["red", "navy"]
    );
}

/// Polls `f` until it returns true; false after 5 s.
async fn eventually<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not seen within 5 s");
}

#[tokio::test]
async fn writes_from_elsewhere_reach_related_classes_through_capture() {
    let fdb = handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let t = ticket(&fdb, rock.id, 9).await;
    let ann = user(&fdb, "ann").await;
    let red = tag(&fdb, "red").await;
    let cache = fdb.cache::<ticket::Entity>();
    let ev = cache.related::<event::Entity>();
    let users = fdb.cache::<user::Entity>();
    let tags = users.related::<tag::Entity>();
    assert_eq!(ev.get(by(ticket::Column::Id, t.id)).await.unwrap(), rock);
    assert!(tags
        .filter(by(user::Column::Id, ann.id))
        .await
        .unwrap()
        .is_empty());
    fdb.apply_captured().await.unwrap();

    // Plain SeaORM on the bare connection: flash does not see these writes.
    let db = fdb.db();
    let mut am: event::ActiveModel = rock.clone().into();
    am.title = Set("Renamed elsewhere".into());
    am.update(db).await.unwrap();
    eventually(|| async {
        ev.get(by(ticket::Column::Id, t.id)).await.unwrap().title == "Renamed elsewhere"
    })
    .await;

    let raw = format!(
        "UPDATE ticket SET event_id = {} WHERE id = {}",
        jazz.id, t.id
    );
    db.execute_unprepared(&raw).await.unwrap();
    eventually(|| async { ev.get(by(ticket::Column::Id, t.id)).await.unwrap().id == jazz.id })
        .await;

    let l = user_tag::ActiveModel {
        user_id: Set(ann.id),
        tag_id: Set(red.id),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    eventually(|| async {
        tags.filter(by(user::Column::Id, ann.id))
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    l.delete(db).await.unwrap();
    eventually(|| async {
        tags.filter(by(user::Column::Id, ann.id))
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn related_lookups_batch_in_a_request_and_transactions_invalidate_after_commit() {
    let fdb = handle().await;
    let rock = event(&fdb, "rock").await;
    let t = ticket(&fdb, rock.id, 3).await;
    let cache = fdb.cache::<ticket::Entity>();
    let ev = cache.related::<event::Entity>();
    let req = fdb.request();
    let q1 = ev.get_query(&by(ticket::Column::Id, t.id)).unwrap();
    let q2 = ev.filter_query(&by(ticket::Column::HolderId, 3)).unwrap();
    let (a, b) = tokio::join!(req.scope().load(q1), req.scope().load(q2));
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Some(rock.clone()), vec![rock.clone()])
    );
    let rc = req.cache::<ticket::Entity>();
    let (a, b) = tokio::join!(
        rc.related_get::<event::Entity>(by(ticket::Column::Id, t.id)),
        rc.related_filter::<event::Entity>(by(ticket::Column::HolderId, 3)),
    );
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (Some(rock.clone()), vec![rock.clone()])
    );

    fdb.transaction(|tx| {
        Box::pin(async move {
            tx.update(event::ActiveModel {
                id: Set(rock.id),
                title: Set("In a transaction".into()),
                ..Default::default()
            })
            .await?;
            Ok::<_, Error>(())
        })
    })
    .await
    .unwrap();
    assert_eq!(
        ev.get(by(ticket::Column::Id, t.id)).await.unwrap().title,
        "In a transaction"
    );
    assert_eq!(
        titles(&ev.filter(by(ticket::Column::HolderId, 3)).await.unwrap()),
        ["In a transaction"]
    );
}

#[tokio::test]
async fn undeclared_lookups_and_paths_through_undeclared_tables_are_errors() {
    let fdb = handle().await;
    // Declared as a list by holder, not as an instance by holder.
    let cache = fdb.cache::<ticket::Entity>();
    let err = cache
        .related::<event::Entity>()
        .get(by(ticket::Column::HolderId, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CacheNotRegistered { .. }), "{err}");

    // A path through `ticket` without `ticket` declared: a start-up error.
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    let mut reg = Registrar::new(db);
    reg.entity(CacheMeta::<event::Entity>::new()).unwrap();
    reg.entity(
        CacheMeta::<checkin::Entity>::new().linked_get(checkin::TicketEvent, [checkin::Column::Id]),
    )
    .unwrap();
    let err = reg.build().await.unwrap_err();
    assert!(
        matches!(&err, Error::Registry(RegistryError::InvalidClass { reason, .. }) if reason.contains("ticket")),
        "{err}"
    );
}

#[tokio::test]
async fn select_related_reads_the_row_and_two_relations_in_one_round_trip_and_follows_them() {
    let (fdb, cache) = handle_draining(common::quiet_drain()).await;
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
    assert_eq!(
        cache.calls(Op::GetMany) - before,
        1,
        "a hit of the row and its two relations is one cache round trip"
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

async fn comment(fdb: &FlashDb, target_type: &str, target_id: i32, body: &str) -> comment::Model {
    fdb.insert(comment::ActiveModel {
        target_type: Set(target_type.into()),
        target_id: Set(target_id),
        body: Set(body.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn generic_foreign_keys_as_key_fields_and_a_generic_class_following_its_target() {
    let fdb = handle().await;
    let rock = event(&fdb, "rock").await;
    let t = ticket(&fdb, rock.id, 1).await;
    let on_event = comment(&fdb, "event", rock.id, "great").await;
    // A ticket with the event's id: the type column tells them apart.
    let on_ticket = comment(&fdb, "ticket", rock.id, "lost it").await;
    assert_eq!(on_ticket.target_id, on_event.target_id);
    let comments = fdb.cache::<comment::Entity>();

    // Key fields: the comments of a row, looked up by the row itself.
    let of =
        |m: &event::Model| by_object(comment::Column::TargetType, comment::Column::TargetId, m);
    assert_eq!(
        comments.filter(of(&rock)).await.unwrap(),
        std::slice::from_ref(&on_event)
    );
    let more = comment(&fdb, "event", rock.id, "again").await;
    assert_eq!(
        comments.filter(of(&rock)).await.unwrap(),
        [on_event.clone(), more]
    );
    let of_ticket = by_object(comment::Column::TargetType, comment::Column::TargetId, &t);
    assert_eq!(
        comments.filter(of_ticket).await.unwrap(),
        std::slice::from_ref(&on_ticket)
    );

    // The generic related instance: the event a comment is on.
    let target =
        comments.generic::<event::Entity>(comment::Column::TargetType, comment::Column::TargetId);
    assert_eq!(
        target
            .get(by(comment::Column::Id, on_event.id))
            .await
            .unwrap(),
        rock
    );
    assert_eq!(
        target
            .get_or_none(by(comment::Column::Id, on_ticket.id))
            .await
            .unwrap(),
        None,
        "a comment on a ticket is on no event"
    );
    retitle(&fdb, &rock, "Rock!").await;
    assert_eq!(
        target
            .get(by(comment::Column::Id, on_event.id))
            .await
            .unwrap()
            .title,
        "Rock!"
    );
    // The comment moves to another type: it now points at no event.
    fdb.update(comment::ActiveModel {
        id: Set(on_event.id),
        target_type: Set("ticket".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        target
            .get_or_none(by(comment::Column::Id, on_event.id))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn with_capture_off_writes_through_flash_still_reach_related_classes() {
    let (fdb, _) = handle_with(DrainSettings::default(), false).await;
    assert!(!fdb.has_capture());
    let rock = event(&fdb, "rock").await;
    let t = ticket(&fdb, rock.id, 1).await;
    let (ann, red) = (user(&fdb, "ann").await, tag(&fdb, "red").await);
    let cache = fdb.cache::<ticket::Entity>();
    let ev = cache.related::<event::Entity>();
    let users = fdb.cache::<user::Entity>();
    let tags = users.related::<tag::Entity>();
    assert_eq!(ev.get(by(ticket::Column::Id, t.id)).await.unwrap(), rock);
    assert!(tags
        .filter(by(user::Column::Id, ann.id))
        .await
        .unwrap()
        .is_empty());
    retitle(&fdb, &rock, "Rock!").await;
    let l = link(&fdb, ann.id, red.id).await;
    assert_eq!(
        ev.get(by(ticket::Column::Id, t.id)).await.unwrap().title,
        "Rock!"
    );
    assert_eq!(
        names(&tags.filter(by(user::Column::Id, ann.id)).await.unwrap()),
        ["red"]
    );
    fdb.delete::<user_tag::Entity>(&l).await.unwrap();
    assert!(tags
        .filter(by(user::Column::Id, ann.id))
        .await
        .unwrap()
        .is_empty());
}
