//! SeaORM compatibility: unchanged SeaORM code against `&fdb` (`FlashDb`
//! implements `ConnectionTrait`, `TransactionTrait`, `StreamTrait`) reads its
//! own writes. Each test fills the cache keys a write affects, makes the write
//! through a SeaORM call, and looks up right after the call returned, with no
//! sleep in between.
//!
//! The drain task is made quiet here (polling once an hour, not listening
//! for notifications), so that what a lookup sees comes from the settle the
//! call ran before returning, not from the drain's next round.
//!
//! `fdb.begin()` ... `commit()` is SeaORM's own transaction, whose commit
//! flash does not see: its writes are applied by the drain within the capture
//! lag (`begin_commit_is_applied_by_the_drain_within_the_lag`), or at once by
//! `fdb.apply_captured()`.
//!
//! Runs on `DATABASE_URL` × `FLASH_CACHE_URL` (unset: SQLite + in-process).

mod common;

use common::*;
use flash::config::{cache_backend, cache_url};
use flash_core::SourceError;
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{by, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation};
use flash_test_kit::{declare, schema};
use futures::TryStreamExt;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    ModelTrait, QueryFilter, Set, TransactionError, TransactionTrait,
};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The demo declarations on a fresh database and the cache of
/// `FLASH_CACHE_URL` under a prefix of its own, capture on (the default).
async fn setup(drain: DrainSettings) -> FlashDb {
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    let prefix = unique("c") + ":";
    let mut reg = Registrar::new(db)
        .drain_settings(drain)
        .configure(|b| b.backend_arc(backend).prefix(prefix));
    declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert!(fdb.has_capture(), "capture is on by default");
    fdb
}

fn event_am(slug: &str, city: &str) -> event::ActiveModel {
    event::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        city: Set(city.into()),
        ..Default::default()
    }
}

async fn by_slug(fdb: &FlashDb, slug: &str) -> Option<event::Model> {
    fdb.cache::<event::Entity>()
        .get_or_none(by(event::Column::Slug, slug))
        .await
        .expect("lookup by slug")
}

async fn by_id(fdb: &FlashDb, id: i32) -> Option<event::Model> {
    fdb.cache::<event::Entity>()
        .get_or_none(by(event::Column::Id, id))
        .await
        .expect("lookup by id")
}

async fn of_user(fdb: &FlashDb, user: i32) -> Vec<i32> {
    let mut ids: Vec<i32> = fdb
        .cache::<participation::Entity>()
        .filter(by(participation::Column::UserId, user))
        .await
        .expect("participations of a user")
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

/// Fills the caches of `e` (by id and by slug) and checks they hold it.
async fn fill(fdb: &FlashDb, e: &event::Model) {
    assert_eq!(by_id(fdb, e.id).await.as_ref(), Some(e));
    assert_eq!(by_slug(fdb, &e.slug).await.as_ref(), Some(e));
}

fn src(e: DbErr) -> flash::Error {
    flash::Error::Source(SourceError::new(e))
}

#[tokio::test]
async fn insert_through_seaorm_is_read_at_once() {
    let fdb = setup(quiet()).await;
    // Cached absences, and a cached empty list.
    assert_eq!(by_slug(&fdb, "new").await, None);
    let u = add_user(&fdb, "ann").await;
    assert_eq!(of_user(&fdb, u.id).await, Vec::<i32>::new());

    let e = event_am("new", "Oslo").insert(&fdb).await.expect("insert");
    assert_eq!(by_slug(&fdb, "new").await, Some(e.clone()));

    let p = participation::ActiveModel {
        user_id: Set(u.id),
        event_id: Set(e.id),
        role: Set("guest".into()),
        ..Default::default()
    }
    .insert(&fdb)
    .await
    .expect("insert participation");
    assert_eq!(of_user(&fdb, u.id).await, vec![p.id]);
}

#[tokio::test]
async fn update_of_a_non_key_field_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "conf", "Oslo").await;
    // Several rounds: on PostgreSQL one round alone could be won by the
    // drain's notification wake-up (see the module documentation).
    for round in 0..10 {
        let cached = by_id(&fdb, e.id).await.expect("row");
        assert_eq!(by_slug(&fdb, "conf").await.as_ref(), Some(&cached));
        let title = format!("Renamed {round}");
        let new = event::ActiveModel {
            id: Set(e.id),
            title: Set(title.clone()),
            ..Default::default()
        }
        .update(&fdb)
        .await
        .expect("update");
        assert_eq!(new.title, title);
        assert_eq!(
            by_id(&fdb, e.id).await.map(|e| e.title),
            Some(title.clone())
        );
        assert_eq!(by_slug(&fdb, "conf").await.map(|e| e.title), Some(title));
    }
}

#[tokio::test]
async fn update_of_a_key_field_retires_the_old_slug_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "old-slug", "Oslo").await;
    fill(&fdb, &e).await;
    assert_eq!(by_slug(&fdb, "new-slug").await, None); // a cached absence

    let mut am = e.clone().into_active_model();
    am.slug = Set("new-slug".into());
    am.update(&fdb).await.expect("update slug");

    assert_eq!(
        by_slug(&fdb, "old-slug").await,
        None,
        "the old slug stops serving"
    );
    assert_eq!(by_slug(&fdb, "new-slug").await.map(|e| e.id), Some(e.id));
    assert_eq!(
        by_id(&fdb, e.id).await.map(|e| e.slug),
        Some("new-slug".into())
    );
}

#[tokio::test]
async fn delete_through_seaorm_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "gone", "Oslo").await;
    let kept = add_event(&fdb, "kept", "Oslo").await;
    fill(&fdb, &e).await;
    fill(&fdb, &kept).await;

    let res = e
        .clone()
        .into_active_model()
        .delete(&fdb)
        .await
        .expect("delete");
    assert_eq!(res.rows_affected, 1);
    assert_eq!(by_id(&fdb, e.id).await, None);
    assert_eq!(by_slug(&fdb, "gone").await, None);
    assert_eq!(by_slug(&fdb, "kept").await, Some(kept.clone()));

    // ModelTrait::delete too.
    kept.clone().delete(&fdb).await.expect("delete model");
    assert_eq!(by_slug(&fdb, "kept").await, None);
}

#[tokio::test]
async fn update_many_through_seaorm_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let mut oslo = Vec::new();
    for i in 0..3 {
        oslo.push(add_event(&fdb, &format!("oslo-{i}"), "Oslo").await);
    }
    let bergen = add_event(&fdb, "bergen", "Bergen").await;
    for e in oslo.iter().chain([&bergen]) {
        fill(&fdb, e).await;
    }

    let res = event::Entity::update_many()
        .col_expr(event::Column::Title, Expr::value("Many"))
        .filter(event::Column::City.eq("Oslo"))
        .exec(&fdb)
        .await
        .expect("update many");
    assert_eq!(res.rows_affected, 3);
    for e in &oslo {
        assert_eq!(
            by_slug(&fdb, &e.slug).await.map(|e| e.title),
            Some("Many".into())
        );
        assert_eq!(
            by_id(&fdb, e.id).await.map(|e| e.title),
            Some("Many".into())
        );
    }
    assert_eq!(by_slug(&fdb, "bergen").await, Some(bergen));

    // A key field of a filter class: participations move between users.
    let (u1, u2) = (add_user(&fdb, "u1").await, add_user(&fdb, "u2").await);
    let p = add_participation(&fdb, u1.id, oslo[0].id).await;
    assert_eq!(of_user(&fdb, u1.id).await, vec![p.id]);
    assert_eq!(of_user(&fdb, u2.id).await, Vec::<i32>::new());
    participation::Entity::update_many()
        .col_expr(participation::Column::UserId, Expr::value(u2.id))
        .filter(participation::Column::UserId.eq(u1.id))
        .exec(&fdb)
        .await
        .expect("move participations");
    assert_eq!(of_user(&fdb, u1.id).await, Vec::<i32>::new());
    assert_eq!(of_user(&fdb, u2.id).await, vec![p.id]);
}

#[tokio::test]
async fn delete_many_through_seaorm_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let mut oslo = Vec::new();
    for i in 0..3 {
        oslo.push(add_event(&fdb, &format!("oslo-{i}"), "Oslo").await);
    }
    let bergen = add_event(&fdb, "bergen", "Bergen").await;
    for e in oslo.iter().chain([&bergen]) {
        fill(&fdb, e).await;
    }

    let res = event::Entity::delete_many()
        .filter(event::Column::City.eq("Oslo"))
        .exec(&fdb)
        .await
        .expect("delete many");
    assert_eq!(res.rows_affected, 3);
    for e in &oslo {
        assert_eq!(by_slug(&fdb, &e.slug).await, None);
        assert_eq!(by_id(&fdb, e.id).await, None);
    }
    assert_eq!(by_slug(&fdb, "bergen").await, Some(bergen));
}

#[tokio::test]
async fn raw_sql_through_execute_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "raw", "Oslo").await;
    fill(&fdb, &e).await;
    assert_eq!(by_slug(&fdb, "raw-2").await, None);

    // execute_unprepared: a raw UPDATE of a non-key and a key field.
    let res = fdb
        .execute_unprepared(&format!(
            "UPDATE event SET title = 'Raw', slug = 'raw-2' WHERE id = {}",
            e.id
        ))
        .await
        .expect("execute_unprepared");
    assert_eq!(res.rows_affected(), 1);
    assert_eq!(
        by_slug(&fdb, "raw").await,
        None,
        "the old slug stops serving"
    );
    assert_eq!(
        by_slug(&fdb, "raw-2").await.map(|e| e.title),
        Some("Raw".into())
    );
    assert_eq!(
        by_id(&fdb, e.id).await.map(|e| e.slug),
        Some("raw-2".into())
    );

    // execute: a prepared statement.
    let mut q = Query::update();
    q.table(event::Entity)
        .value(event::Column::Title, "Prepared")
        .and_where(event::Column::Id.eq(e.id));
    let stmt = fdb.get_database_backend().build(&q);
    let res = fdb.execute(stmt).await.expect("execute");
    assert_eq!(res.rows_affected(), 1);
    assert_eq!(
        by_id(&fdb, e.id).await.map(|e| e.title),
        Some("Prepared".into())
    );
    assert_eq!(
        by_slug(&fdb, "raw-2").await.map(|e| e.title),
        Some("Prepared".into())
    );
}

#[tokio::test]
async fn reads_pass_through() {
    let fdb = setup(quiet()).await;
    let a = add_event(&fdb, "a", "Oslo").await;
    let b = add_event(&fdb, "b", "Bergen").await;
    let all = event::Entity::find().all(&fdb).await.expect("find all");
    assert_eq!(all.len(), 2);
    let one = event::Entity::find_by_id(b.id)
        .one(&fdb)
        .await
        .expect("find one");
    assert_eq!(one, Some(b.clone()));
    let mut q = Query::select();
    q.column(event::Column::Slug)
        .from(event::Entity)
        .and_where(event::Column::Id.eq(a.id));
    let rows = fdb
        .query_all(fdb.get_database_backend().build(&q))
        .await
        .expect("query_all");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].try_get::<String>("", "slug").unwrap(), "a");
    let streamed: Vec<event::Model> = event::Entity::find()
        .stream(&fdb)
        .await
        .expect("stream")
        .try_collect()
        .await
        .expect("stream rows");
    assert_eq!(streamed.len(), 2);
}

/// Unchanged SeaORM code, generic over its connection.
async fn rename_in_transaction<C: TransactionTrait>(
    db: &C,
    id: i32,
    slug: &str,
    fail: bool,
) -> Result<(), TransactionError<DbErr>> {
    let slug = slug.to_string();
    db.transaction::<_, _, DbErr>(move |txn| {
        Box::pin(async move {
            event::ActiveModel {
                id: Set(id),
                slug: Set(slug.clone()),
                title: Set(format!("In a transaction: {slug}")),
                ..Default::default()
            }
            .update(txn)
            .await?;
            event_am(&format!("{slug}-sibling"), "Oslo")
                .insert(txn)
                .await?;
            if fail {
                return Err(DbErr::Custom("rolled back on purpose".into()));
            }
            Ok(())
        })
    })
    .await
}

#[tokio::test]
async fn seaorm_transaction_on_the_handle_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "t0", "Oslo").await;
    fill(&fdb, &e).await;
    assert_eq!(by_slug(&fdb, "t1").await, None);
    assert_eq!(by_slug(&fdb, "t1-sibling").await, None);

    // Through generic code (`fdb.transaction(..)` as a method call is flash's
    // own `FlashDb::transaction`, see the next test).
    rename_in_transaction(&fdb, e.id, "t1", false)
        .await
        .expect("transaction");
    assert_eq!(
        by_slug(&fdb, "t0").await,
        None,
        "the old slug stops serving"
    );
    assert_eq!(by_slug(&fdb, "t1").await.map(|e| e.id), Some(e.id));
    assert!(
        by_slug(&fdb, "t1-sibling").await.is_some(),
        "the insert is seen"
    );
    assert_eq!(by_id(&fdb, e.id).await.map(|e| e.slug), Some("t1".into()));

    // A rollback changes nothing, in the database or the cache.
    let err = rename_in_transaction(&fdb, e.id, "t2", true).await;
    assert!(matches!(err, Err(TransactionError::Transaction(_))));
    assert_eq!(by_slug(&fdb, "t1").await.map(|e| e.id), Some(e.id));
    assert_eq!(by_slug(&fdb, "t2").await, None);

    // The trait method called by name on the handle.
    let id = e.id;
    TransactionTrait::transaction::<_, _, DbErr>(&fdb, move |txn| {
        Box::pin(async move {
            event::ActiveModel {
                id: Set(id),
                title: Set("By name".into()),
                ..Default::default()
            }
            .update(txn)
            .await
        })
    })
    .await
    .expect("transaction by name");
    assert_eq!(
        by_slug(&fdb, "t1").await.map(|e| e.title),
        Some("By name".into())
    );
}

#[tokio::test]
async fn seaorm_calls_inside_flash_transaction_are_read_at_commit() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "f0", "Oslo").await;
    let u = add_user(&fdb, "fu").await;
    fill(&fdb, &e).await;
    assert_eq!(by_slug(&fdb, "f1").await, None);
    assert_eq!(of_user(&fdb, u.id).await, Vec::<i32>::new());

    let (id, uid) = (e.id, u.id);
    let p = fdb
        .transaction(move |tx| {
            Box::pin(async move {
                // SeaORM calls on the FlashTxn itself.
                event::ActiveModel {
                    id: Set(id),
                    slug: Set("f1".into()),
                    ..Default::default()
                }
                .update(&*tx)
                .await
                .map_err(src)?;
                participation::ActiveModel {
                    user_id: Set(uid),
                    event_id: Set(id),
                    role: Set("host".into()),
                    ..Default::default()
                }
                .insert(&*tx)
                .await
                .map_err(src)
            })
        })
        .await
        .expect("flash transaction");
    assert_eq!(
        by_slug(&fdb, "f0").await,
        None,
        "the old slug stops serving"
    );
    assert_eq!(by_slug(&fdb, "f1").await.map(|e| e.id), Some(e.id));
    assert_eq!(of_user(&fdb, u.id).await, vec![p.id]);
}

#[tokio::test]
async fn begin_commit_then_apply_captured_is_read_at_once() {
    let fdb = setup(quiet()).await;
    let e = add_event(&fdb, "b0", "Oslo").await;
    fill(&fdb, &e).await;

    let txn = fdb.begin().await.expect("begin");
    event::ActiveModel {
        id: Set(e.id),
        title: Set("Begun".into()),
        ..Default::default()
    }
    .update(&txn)
    .await
    .expect("update in txn");
    txn.commit().await.expect("commit");
    assert!(fdb.apply_captured().await.expect("apply_captured") >= 1);
    assert_eq!(
        by_slug(&fdb, "b0").await.map(|e| e.title),
        Some("Begun".into())
    );
}

/// `fdb.begin()` returns SeaORM's own transaction: flash does not see its
/// commit, and the drain applies its writes within the capture lag. Polled
/// for up to 2 s; it must become visible.
#[tokio::test]
async fn begin_commit_is_applied_by_the_drain_within_the_lag() {
    let fdb = setup(DrainSettings::default()).await;
    let e = add_event(&fdb, "lag", "Oslo").await;
    fill(&fdb, &e).await;

    let txn = fdb.begin().await.expect("begin");
    let mut am = e.clone().into_active_model();
    am.slug = Set("lag-2".into());
    am.update(&txn).await.expect("update in txn");
    txn.commit().await.expect("commit");
    let committed = Instant::now();

    let deadline = committed + Duration::from_secs(2);
    loop {
        let old = by_slug(&fdb, "lag").await;
        let new = by_id(&fdb, e.id).await.map(|e| e.slug);
        if old.is_none() && new.as_deref() == Some("lag-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not apply a begin()/commit() write within 2 s: by slug {old:?}, by id {new:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "begin()/commit() applied by the drain after {:?}",
        committed.elapsed()
    );
}

/// Without capture a write through the connection traits cannot invalidate:
/// it still runs and returns as SeaORM's would (a warning is logged once);
/// the database has it.
#[tokio::test]
async fn without_capture_writes_pass_through_uninvalidated() {
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    let prefix = unique("c") + ":";
    let mut reg = Registrar::new(db)
        .capture(false)
        .configure(|b| b.backend_arc(backend).prefix(prefix));
    declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert!(!fdb.has_capture());

    let e = event_am("plain", "Oslo")
        .insert(&fdb)
        .await
        .expect("insert");
    event::ActiveModel {
        id: Set(e.id),
        title: Set("Plain".into()),
        ..Default::default()
    }
    .update(&fdb)
    .await
    .expect("update");
    let row = event::Entity::find_by_id(e.id)
        .one(&fdb)
        .await
        .expect("find");
    assert_eq!(row.map(|e| e.title), Some("Plain".into()));
}

/// A cache that refuses the invalidation does not fail a committed write
/// through the SeaORM traits: the call returns `Ok`, this process reads the
/// refused keys from the database (its own write included), and the captured
/// record stays for the drain until the cache takes it.
#[tokio::test]
async fn a_refusing_cache_does_not_fail_a_committed_write() {
    use flash_test_kit::{Hooked, Op};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let inner = cache_backend(&cache_url()).await.expect("cache");
    let refuse = Arc::new(AtomicBool::new(false));
    let backend = Arc::new(Hooked::new(inner).before({
        let refuse = refuse.clone();
        move |call| match call.op == Op::SetMany && refuse.load(SeqCst) {
            true => Err(flash_core::BackendError::Unreachable("refused".into())),
            false => Ok(()),
        }
    }));
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    let b2: Arc<dyn flash_core::Backend> = backend.clone();
    let mut reg = Registrar::new(db.clone())
        .drain_settings(quiet())
        .configure(|b| b.backend_arc(b2).prefix(unique("c") + ":"));
    declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    let e = event_am("refused", "Oslo").insert(&fdb).await.unwrap();
    assert_eq!(
        by_slug(&fdb, "refused").await.unwrap().title,
        "Title of refused"
    );

    refuse.store(true, SeqCst);
    let mut am = e.clone().into_active_model();
    am.title = Set("while refused".into());
    am.update(&fdb)
        .await
        .expect("a committed write is not an error");
    assert_eq!(
        by_slug(&fdb, "refused").await.unwrap().title,
        "while refused",
        "the writer's process reads its own write"
    );
    let left = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM flash_changes".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert!(left >= 1, "the captured record waits for the cache");
    refuse.store(false, SeqCst);
    fdb.apply_captured().await.unwrap();
    assert_eq!(
        by_slug(&fdb, "refused").await.unwrap().title,
        "while refused"
    );
}
