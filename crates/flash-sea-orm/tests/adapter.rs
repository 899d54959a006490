//! flash-sea-orm on its own: cached lookups, every write form's invalidation,
//! transactions, the durable outbox and the per-database SQL, on SQLite in
//! memory, or on the PostgreSQL / MySQL server of `DATABASE_URL` (a fresh
//! schema or database per test). The cache is the in-process one.

mod common;

use common::{comment, comments_of, handle, post, post_by_slug, setup, TestDb};
use flash_core::{MemoryBackend, VersionStore};
use flash_sea_orm::{by, Changes, Error, FlashDb, Outcome, SqlVersionStore, OUTBOX_TABLE};
use sea_orm::sea_query::Condition;
use sea_orm::{ActiveValue::Set, ActiveValue::Unchanged, ColumnTrait, EntityTrait};
use std::sync::Arc;

async fn add_post(fdb: &FlashDb, slug: &str) -> post::Model {
    fdb.insert(post::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        ..Default::default()
    })
    .await
    .expect("insert post")
}

async fn add_comment(fdb: &FlashDb, post_id: i32, body: &str) -> comment::Model {
    fdb.insert(comment::ActiveModel {
        post_id: Set(post_id),
        body: Set(body.into()),
        ..Default::default()
    })
    .await
    .expect("insert comment")
}

/// An update of post `id`'s title (no key field).
fn set_title(id: i32, title: &str) -> post::ActiveModel {
    post::ActiveModel {
        id: Unchanged(id),
        title: Set(title.into()),
        ..Default::default()
    }
}

/// An update of post `id`'s slug (a key field).
fn set_slug(id: i32, slug: &str) -> post::ActiveModel {
    post::ActiveModel {
        id: Unchanged(id),
        slug: Set(slug.into()),
        ..Default::default()
    }
}

/// Looks `slug` up until the cache answers, and returns the row.
async fn cached_post(fdb: &FlashDb, slug: &str) -> Option<post::Model> {
    let (first, _) = post_by_slug(fdb, slug).await;
    let (again, outcome) = post_by_slug(fdb, slug).await;
    assert_eq!(outcome, Outcome::Hit, "second lookup of {slug:?} is a hit");
    assert_eq!(first, again);
    again
}

/// The post of `slug` as a lookup after a write gives it: never the cached
/// value the write replaced.
async fn fresh_post(fdb: &FlashDb, slug: &str) -> Option<post::Model> {
    let (row, outcome) = post_by_slug(fdb, slug).await;
    assert_ne!(outcome, Outcome::Hit, "{slug:?} was invalidated");
    row
}

fn post_id_is(id: i32) -> Condition {
    Condition::all().add(comment::Column::PostId.eq(id))
}

#[tokio::test]
async fn a_lookup_misses_then_hits_and_a_hit_reads_no_row() {
    let (db, fdb) = setup(false).await;
    let p = add_post(&fdb, "rust").await;
    assert_eq!(
        post_by_slug(&fdb, "rust").await,
        (Some(p.clone()), Outcome::Miss)
    );
    assert_eq!(
        post_by_slug(&fdb, "rust").await,
        (Some(p.clone()), Outcome::Hit)
    );
    let posts = fdb.cache::<post::Entity>();
    let by_id = || by(post::Column::Id, p.id);
    assert_eq!(
        posts.get_with_outcome(by_id()).await.unwrap(),
        (Some(p.clone()), Outcome::Miss)
    );
    assert_eq!(posts.get(by_id()).await.unwrap(), p);
    // An absence is cached too.
    assert_eq!(post_by_slug(&fdb, "none").await, (None, Outcome::Miss));
    assert_eq!(post_by_slug(&fdb, "none").await, (None, Outcome::Hit));
    assert!(matches!(
        posts.get(by(post::Column::Slug, "none")).await,
        Err(Error::NotFound { .. })
    ));
    // A hit is answered by the cache: a row deleted behind flash's back is
    // still served.
    post::Entity::delete_by_id(p.id)
        .exec(&db.conn)
        .await
        .unwrap();
    assert_eq!(post_by_slug(&fdb, "rust").await, (Some(p), Outcome::Hit));
    db.drop().await;
}

/// Runs each write test with the outbox off and on (a write then runs in a
/// transaction of its own that also records its keys).
async fn with_and_without_outbox<F, Fut>(test: F)
where
    F: Fn(FlashDb, TestDb) -> Fut,
    Fut: std::future::Future<Output = TestDb>,
{
    for outbox in [false, true] {
        let (db, fdb) = setup(outbox).await;
        assert_eq!(fdb.has_outbox(), outbox);
        test(fdb, db).await.drop().await;
    }
}

#[tokio::test]
async fn insert_invalidates_cached_absences() {
    with_and_without_outbox(|fdb, db| async move {
        assert_eq!(cached_post(&fdb, "new").await, None);
        let p = add_post(&fdb, "new").await;
        assert_eq!(fresh_post(&fdb, "new").await, Some(p.clone()));

        let comments = fdb.cache::<comment::Entity>();
        assert!(cached_comments(&fdb, p.id).await.is_empty());
        assert!(!comments
            .exists(by(comment::Column::PostId, p.id))
            .await
            .unwrap());
        let c = add_comment(&fdb, p.id, "first").await;
        assert_eq!(comments_of(&fdb, p.id).await.0, vec![c]);
        assert!(comments
            .exists(by(comment::Column::PostId, p.id))
            .await
            .unwrap());
        db
    })
    .await;
}

async fn cached_comments(fdb: &FlashDb, id: i32) -> Vec<comment::Model> {
    let (first, _) = comments_of(fdb, id).await;
    let (again, outcome) = comments_of(fdb, id).await;
    assert_eq!((&again, outcome), (&first, Outcome::Hit));
    again
}

#[tokio::test]
async fn update_of_a_non_key_field_invalidates_the_row_keys() {
    with_and_without_outbox(|fdb, db| async move {
        let p = add_post(&fdb, "a").await;
        cached_post(&fdb, "a").await;
        let posts = fdb.cache::<post::Entity>();
        posts.get(by(post::Column::Id, p.id)).await.unwrap();
        let new = fdb.update(set_title(p.id, "Retitled")).await.unwrap();
        assert_eq!(new.title, "Retitled");
        assert_eq!(fresh_post(&fdb, "a").await, Some(new.clone()));
        assert_eq!(posts.get(by(post::Column::Id, p.id)).await.unwrap(), new);
        db
    })
    .await;
}

#[tokio::test]
async fn update_of_a_key_field_invalidates_the_old_key_and_the_new() {
    with_and_without_outbox(|fdb, db| async move {
        let p = add_post(&fdb, "old").await;
        cached_post(&fdb, "old").await;
        assert_eq!(cached_post(&fdb, "renamed").await, None);
        let new = fdb.update(set_slug(p.id, "renamed")).await.unwrap();
        assert_eq!(new.slug, "renamed");
        // The old key no longer serves the row.
        assert_eq!(fresh_post(&fdb, "old").await, None);
        assert_eq!(fresh_post(&fdb, "renamed").await, Some(new.clone()));
        let posts = fdb.cache::<post::Entity>();
        assert_eq!(posts.get(by(post::Column::Id, p.id)).await.unwrap(), new);
        db
    })
    .await;
}

#[tokio::test]
async fn delete_invalidates_the_row_keys() {
    with_and_without_outbox(|fdb, db| async move {
        let p = add_post(&fdb, "gone").await;
        cached_post(&fdb, "gone").await;
        assert_eq!(fdb.delete::<post::Entity>(&p).await.unwrap(), 1);
        assert_eq!(fresh_post(&fdb, "gone").await, None);
        let posts = fdb.cache::<post::Entity>();
        assert_eq!(
            posts.get_or_none(by(post::Column::Id, p.id)).await.unwrap(),
            None
        );
        db
    })
    .await;
}

#[tokio::test]
async fn update_many_and_delete_many_invalidate_old_and_new_keys() {
    with_and_without_outbox(|fdb, db| async move {
        let (p1, p2) = (add_post(&fdb, "one").await, add_post(&fdb, "two").await);
        let c1 = add_comment(&fdb, p1.id, "a").await;
        let c2 = add_comment(&fdb, p1.id, "b").await;
        let c3 = add_comment(&fdb, p2.id, "c").await;
        assert_eq!(cached_comments(&fdb, p1.id).await.len(), 2);
        assert_eq!(cached_comments(&fdb, p2.id).await, vec![c3.clone()]);

        // Moves post 1's comments to post 2: both lists change.
        let changes = Changes::new().set(comment::Column::PostId, p2.id);
        let n = fdb
            .update_many::<comment::Entity>(post_id_is(p1.id), changes)
            .await
            .unwrap();
        assert_eq!(n, 2);
        let (left, outcome) = comments_of(&fdb, p1.id).await;
        assert_eq!((left.len(), outcome == Outcome::Hit), (0, false));
        let (mut moved, outcome) = comments_of(&fdb, p2.id).await;
        assert_ne!(outcome, Outcome::Hit);
        moved.sort_by_key(|c| c.id);
        let ids: Vec<i32> = moved.iter().map(|c| c.id).collect();
        let mut want = vec![c1.id, c2.id, c3.id];
        want.sort();
        assert_eq!(ids, want);

        cached_comments(&fdb, p2.id).await;
        let comments = fdb.cache::<comment::Entity>();
        assert!(comments
            .exists(by(comment::Column::PostId, p2.id))
            .await
            .unwrap());
        let n = fdb
            .delete_many::<comment::Entity>(post_id_is(p2.id))
            .await
            .unwrap();
        assert_eq!(n, 3);
        assert!(comments_of(&fdb, p2.id).await.0.is_empty());
        assert!(!comments
            .exists(by(comment::Column::PostId, p2.id))
            .await
            .unwrap());
        db
    })
    .await;
}

fn rolled_back() -> Error {
    Error::NotFound {
        model: "test".into(),
        key: "rolled back".into(),
    }
}

#[tokio::test]
async fn a_transaction_invalidates_on_commit_and_not_on_rollback() {
    with_and_without_outbox(|fdb, db| async move {
        let p = add_post(&fdb, "t").await;
        let c = add_comment(&fdb, p.id, "kept").await;
        cached_post(&fdb, "t").await;
        cached_comments(&fdb, p.id).await;

        let id = p.id;
        let out = fdb
            .transaction(|tx| {
                Box::pin(async move {
                    tx.update(set_slug(id, "t2")).await?;
                    Err::<(), _>(rolled_back())
                })
            })
            .await;
        assert!(matches!(out, Err(Error::NotFound { .. })));
        // Nothing changed, nothing was invalidated, nothing was recorded.
        let row = post::Entity::find_by_id(id).one(&db.conn).await.unwrap();
        assert_eq!(row.as_ref(), Some(&p));
        assert_eq!(
            post_by_slug(&fdb, "t").await,
            (Some(p.clone()), Outcome::Hit)
        );
        if fdb.has_outbox() {
            fdb.flush_outbox().await.unwrap();
            assert_eq!(db.count(OUTBOX_TABLE).await, 0);
        }

        assert_eq!(cached_post(&fdb, "t2").await, None);
        assert_eq!(cached_post(&fdb, "u").await, None);
        let n = fdb
            .transaction(|tx| {
                Box::pin(async move {
                    // A key change inside the caller's transaction (a savepoint).
                    tx.update(set_slug(id, "t2")).await?;
                    tx.insert(post::ActiveModel {
                        slug: Set("u".into()),
                        title: Set("U".into()),
                        ..Default::default()
                    })
                    .await?;
                    tx.delete_many::<comment::Entity>(post_id_is(id)).await
                })
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(fresh_post(&fdb, "t").await, None);
        assert_eq!(fresh_post(&fdb, "t2").await.map(|p| p.id), Some(id));
        assert_eq!(
            fresh_post(&fdb, "u").await.map(|p| p.title),
            Some("U".into())
        );
        let (comments, outcome) = comments_of(&fdb, id).await;
        assert_ne!(outcome, Outcome::Hit);
        assert!(!comments.contains(&c));
        db
    })
    .await;
}

/// A writer that crashes right after each commit: its invalidations never
/// reach the shared cache (they go to a cache of its own) and it never
/// deletes its outbox rows. Those rows, recorded in each write's
/// transaction, are what is left; another process's drain applies them.
#[tokio::test]
async fn the_outbox_keeps_what_a_crashed_writer_did_not_invalidate() {
    let db = TestDb::new().await;
    let reader = handle(&db, Arc::new(MemoryBackend::default()), true).await;
    let writer = handle(&db, Arc::new(MemoryBackend::default()), true).await;

    let p = add_post(&reader, "o").await;
    // Recorded with the insert, deleted once its writer applied it.
    assert_eq!(db.count(OUTBOX_TABLE).await, 1);
    reader.flush_outbox().await.unwrap();
    assert_eq!(db.count(OUTBOX_TABLE).await, 0);
    cached_post(&reader, "o").await;

    // An update of a non-key field (on PostgreSQL, recorded by primary key
    // in the update's own statement; the drain finds the row's keys).
    let retitled = writer
        .update(set_title(p.id, "After the crash"))
        .await
        .unwrap();
    // A rolled back transaction records nothing.
    let out = writer
        .transaction(|tx| {
            Box::pin(async move {
                tx.insert(post::ActiveModel {
                    slug: Set("never".into()),
                    title: Set("Never".into()),
                    ..Default::default()
                })
                .await?;
                Err::<(), _>(rolled_back())
            })
        })
        .await;
    assert!(out.is_err());
    assert_eq!(
        db.count(OUTBOX_TABLE).await,
        1,
        "one row per committed write"
    );
    // The cache still serves what the write replaced.
    assert_eq!(
        post_by_slug(&reader, "o").await,
        (Some(p.clone()), Outcome::Hit)
    );
    assert_eq!(reader.drain_outbox().await.unwrap(), 1);
    assert_eq!(db.count(OUTBOX_TABLE).await, 0);
    assert_eq!(fresh_post(&reader, "o").await, Some(retitled.clone()));

    // A key change (recorded as the keys it replaces).
    cached_post(&reader, "o").await;
    let renamed = writer.update(set_slug(p.id, "o2")).await.unwrap();
    assert_eq!(db.count(OUTBOX_TABLE).await, 1);
    assert_eq!(
        post_by_slug(&reader, "o").await,
        (Some(retitled), Outcome::Hit)
    );
    assert_eq!(reader.drain_outbox().await.unwrap(), 1);
    assert_eq!(db.count(OUTBOX_TABLE).await, 0);
    assert_eq!(fresh_post(&reader, "o").await, None);
    assert_eq!(fresh_post(&reader, "o2").await, Some(renamed));
    assert_eq!(reader.drain_outbox().await.unwrap(), 0);
    db.drop().await;
}

/// The statements that differ per database run on this one: the version
/// bump's upsert (the outbox's insert, scan and delete run in the test above;
/// the locked reads and the key-changing update in the write tests).
#[tokio::test]
async fn the_version_upsert_runs_on_this_database() {
    let (db, _fdb) = setup(false).await;
    let store = SqlVersionStore::new(db.conn.clone());
    store.create_table().await.unwrap();
    let class = ("instance".to_owned(), "post_by_slug".to_owned());
    store.bump(std::slice::from_ref(&class)).await.unwrap();
    assert_eq!(store.load().await.unwrap().get("post_by_slug"), Some(&1));
    store
        .bump(&[class, ("instance".into(), "post_by_id".into())])
        .await
        .unwrap();
    let versions = store.load().await.unwrap();
    assert_eq!(versions.get("post_by_slug"), Some(&2));
    assert_eq!(versions.get("post_by_id"), Some(&1));
    db.drop().await;
}
