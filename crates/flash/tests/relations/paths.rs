//! Related instances and querysets: one hop, two hops, many-to-many through
//! a junction table, writes from elsewhere, requests and transactions,
//! start-up errors, capture off.

use super::setup::*;
use flash_core::{Error, Outcome, RegistryError};
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{by, CacheMeta};
use flash_test_kit::entities::{checkin, event, tag, ticket, user, user_tag};
use sea_orm::{ActiveModelTrait, ConnectionTrait, ModelTrait, Set};

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
    move_ticket(&fdb, t.id, jazz.id).await;
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
    let c = checkin(&fdb, t.id, "north").await;
    let cache = fdb.cache::<checkin::Entity>();
    let rel = cache.linked(checkin::TicketEvent);
    let north = || async {
        let rows = rel.filter(by(checkin::Column::Gate, "north")).await;
        rows.unwrap()
            .into_iter()
            .map(|e| e.title)
            .collect::<Vec<_>>()
    };
    assert_eq!(rel.get(by(checkin::Column::Id, c.id)).await.unwrap(), rock);
    assert_eq!(north().await, ["Title of rock"]);

    retitle(&fdb, &rock, "Rock 2").await; // the end of the path
    assert_eq!(
        rel.get(by(checkin::Column::Id, c.id)).await.unwrap().title,
        "Rock 2"
    );
    assert_eq!(north().await, ["Rock 2"]);

    // The middle of the path: the ticket moves to another event.
    move_ticket(&fdb, t.id, jazz.id).await;
    assert_eq!(
        rel.get(by(checkin::Column::Id, c.id)).await.unwrap().id,
        jazz.id
    );
    assert_eq!(north().await, ["Title of jazz"]);

    // The middle row is deleted: nothing is reached any more.
    fdb.delete::<ticket::Entity>(&t).await.unwrap();
    assert_eq!(
        rel.get_or_none(by(checkin::Column::Id, c.id))
            .await
            .unwrap(),
        None
    );
    assert!(north().await.is_empty());
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

#[tokio::test]
async fn writes_from_elsewhere_reach_related_classes_through_capture() {
    let fdb = handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let t = ticket(&fdb, rock.id, 9).await;
    let (ann, red) = (user(&fdb, "ann").await, tag(&fdb, "red").await);
    assert_eq!(event_of(&fdb, t.id).await, rock);
    assert!(tags_of(&fdb, ann.id).await.is_empty());
    fdb.apply_captured().await.unwrap();

    // Plain SeaORM on the bare connection: flash does not see these writes.
    let db = fdb.db();
    let mut am: event::ActiveModel = rock.clone().into();
    am.title = Set("Renamed elsewhere".into());
    am.update(db).await.unwrap();
    eventually(|| async { event_of(&fdb, t.id).await.title == "Renamed elsewhere" }).await;

    let raw = format!(
        "UPDATE ticket SET event_id = {} WHERE id = {}",
        jazz.id, t.id
    );
    db.execute_unprepared(&raw).await.unwrap();
    eventually(|| async { event_of(&fdb, t.id).await.id == jazz.id }).await;

    let l = user_tag::ActiveModel {
        user_id: Set(ann.id),
        tag_id: Set(red.id),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap();
    eventually(|| async { tags_of(&fdb, ann.id).await == ["red"] }).await;
    l.delete(db).await.unwrap();
    eventually(|| async { tags_of(&fdb, ann.id).await.is_empty() }).await;
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
    let err = build_error(|reg| {
        reg.entity(CacheMeta::<event::Entity>::new()).unwrap();
        let meta = CacheMeta::<checkin::Entity>::new();
        reg.entity(meta.linked_get(checkin::TicketEvent, [checkin::Column::Id]))
            .unwrap();
    })
    .await;
    assert!(
        matches!(&err, Error::Registry(RegistryError::InvalidClass { reason, .. }) if reason.contains("ticket")),
        "{err}"
    );
}

#[tokio::test]
async fn with_capture_off_writes_through_flash_still_reach_related_classes() {
    let (fdb, _) = handle_with(DrainSettings::default(), false).await;
    assert!(!fdb.has_capture());
    let rock = event(&fdb, "rock").await;
    let t = ticket(&fdb, rock.id, 1).await;
    let (ann, red) = (user(&fdb, "ann").await, tag(&fdb, "red").await);
    assert_eq!(event_of(&fdb, t.id).await, rock);
    assert!(tags_of(&fdb, ann.id).await.is_empty());
    retitle(&fdb, &rock, "Rock!").await;
    let l = link(&fdb, ann.id, red.id).await;
    assert_eq!(event_of(&fdb, t.id).await.title, "Rock!");
    assert_eq!(tags_of(&fdb, ann.id).await, ["red"]);
    fdb.delete::<user_tag::Entity>(&l).await.unwrap();
    assert!(tags_of(&fdb, ann.id).await.is_empty());
}

#[tokio::test]
async fn one_to_many_list_follows_a_child_moved_to_another_parent_by_flash_and_from_elsewhere() {
    // The drain runs when the test says: each step shows one path alone.
    let fdb = quiet_handle().await;
    let (rock, jazz) = (event(&fdb, "rock").await, event(&fdb, "jazz").await);
    let (a, b) = (
        ticket(&fdb, rock.id, 1).await,
        ticket(&fdb, rock.id, 2).await,
    );
    let events = fdb.cache::<event::Entity>();
    let tickets = events.related::<ticket::Entity>();
    let ids = |rows: Vec<ticket::Model>| rows.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let of = |slug: &str| by(event::Column::Slug, slug.to_owned());
    assert_eq!(ids(tickets.filter(of("rock")).await.unwrap()), [a.id, b.id]);
    assert!(tickets.filter(of("jazz")).await.unwrap().is_empty());

    // Through flash: the old parent's list and the new one's both follow.
    move_ticket(&fdb, a.id, jazz.id).await;
    assert_eq!(ids(tickets.filter(of("rock")).await.unwrap()), [b.id]);
    assert_eq!(ids(tickets.filter(of("jazz")).await.unwrap()), [a.id]);

    // From elsewhere: capture records the old parent too.
    let raw = format!(
        "UPDATE ticket SET event_id = {} WHERE id = {}",
        jazz.id, b.id
    );
    fdb.apply_captured().await.unwrap(); // the earlier writes' records
    fdb.db().execute_unprepared(&raw).await.unwrap();
    assert_eq!(fdb.apply_captured().await.unwrap(), 1);
    assert!(tickets.filter(of("rock")).await.unwrap().is_empty());
    assert_eq!(ids(tickets.filter(of("jazz")).await.unwrap()), [a.id, b.id]);

    // The parent's own key field changes: the list moves with it.
    fdb.update(event::ActiveModel {
        id: Set(jazz.id),
        slug: Set("jazz-2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(tickets.filter(of("jazz")).await.unwrap().is_empty());
    assert_eq!(
        ids(tickets.filter(of("jazz-2")).await.unwrap()),
        [a.id, b.id]
    );
}
