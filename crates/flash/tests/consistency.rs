//! The consistency guarantees, each shown by a test that fails without them:
//! leases keep a fill that read the database before a write from landing after
//! the write's invalidation; the outbox repairs invalidations the cache missed;
//! dynamic versions reach other processes within the refresh interval.

mod common;

use async_trait::async_trait;
use common::*;
use flash_core::{Backend, BackendError, ClassSpec, FieldValue, MemoryBackend, Outcome};
use flash_sea_orm::{by, CustomCache, Registrar};
use flash_test_kit::entities::event;
use flash_test_kit::{Hooked, Op};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Reads the title, then waits to be released before returning it: the
/// window in which a write can commit and invalidate.
struct SlowTitle {
    read_done: Arc<Notify>,
    release: Arc<Notify>,
    armed: Arc<AtomicBool>,
}

#[async_trait]
impl CustomCache for SlowTitle {
    type Output = Option<String>;
    fn spec(&self) -> ClassSpec {
        ClassSpec::instance("SlowTitle", "event", &["slug"])
    }
    async fn compute(
        &self,
        db: &DatabaseConnection,
        key: &[FieldValue],
    ) -> Result<Option<String>, DbErr> {
        let FieldValue::Str(slug) = &key[0] else {
            return Ok(None);
        };
        let title = event::Entity::find()
            .filter(event::Column::Slug.eq(slug.clone()))
            .one(db)
            .await?
            .map(|e| e.title);
        if self.armed.swap(false, Ordering::SeqCst) {
            self.read_done.notify_one();
            self.release.notified().await;
        }
        Ok(title)
    }
}

/// Runs the race: a lookup reads the old title, a write commits and
/// invalidates, then the lookup tries to fill. Returns what a lookup sees
/// afterwards.
async fn race(leases: bool) -> (Option<String>, Outcome) {
    let read_done = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let armed = Arc::new(AtomicBool::new(true));
    let slow = SlowTitle {
        read_done: read_done.clone(),
        release: release.clone(),
        armed,
    };
    let (h, class) = quiet_harness_with(
        |b| if leases { b } else { b.unsafe_disable_leases() },
        |reg| reg.custom(slow).unwrap(),
    )
    .await;
    let e = add_event(&h.fdb, "race", "Oslo").await;
    let f = h.fdb.flash().clone();
    let c2 = class.clone();
    let reader = tokio::spawn(async move { f.get(&c2, &["race".into()]).await.unwrap() });
    read_done.notified().await;
    h.fdb
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("new".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    release.notify_one();
    assert_eq!(
        reader.await.unwrap().as_deref(),
        Some("Title of race"),
        "the racing reader saw the old state (it began before the write)"
    );
    h.fdb
        .flash()
        .lookup(&class, &["race".into()])
        .await
        .unwrap()
}

#[tokio::test]
async fn a_fill_that_read_before_a_write_never_lands_after_it() {
    let (v, o) = race(true).await;
    assert_eq!(
        v.as_deref(),
        Some("new"),
        "a lookup after the write returned sees the write"
    );
    assert_eq!(
        o,
        Outcome::Miss,
        "the racing fill was refused; this lookup filled"
    );
}

#[tokio::test]
async fn without_leases_the_race_leaves_a_stale_value() {
    // The detector works: the original's protocol (fill without a lease) puts
    // the old row back after the invalidation.
    let (v, o) = race(false).await;
    assert_eq!(
        (v.as_deref(), o),
        (Some("Title of race"), Outcome::Hit),
        "stale value served from the cache"
    );
}

/// An in-process cache with faults to switch on: invalidations (`set_many`)
/// refused while `fail` is set (a cache unreachable or refusing writes while
/// reads still work), and reads slowed by `read_delay` (to cancel a lookup
/// mid-read) and counted (`calls(Op::GetMany)`, to count shared reads).
fn faulty(read_delay: Duration) -> (Arc<Hooked<MemoryBackend>>, Arc<AtomicBool>) {
    let fail = Arc::new(AtomicBool::new(false));
    let failing = fail.clone();
    let backend = Hooked::new(MemoryBackend::default())
        .name("faulty")
        .coalesce_reads(true)
        .delay(Op::GetMany, read_delay)
        .before(move |call| {
            if call.op == Op::SetMany && failing.load(Ordering::SeqCst) {
                return Err(BackendError::Unreachable("test: invalidation fails".into()));
            }
            Ok(())
        });
    (Arc::new(backend), fail)
}

async fn outbox_count(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {}", flash_sea_orm::OUTBOX_TABLE),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

#[tokio::test]
async fn the_outbox_repairs_an_invalidation_lost_with_its_process() {
    let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let db = fresh_db(queries).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let (backend, fail) = faulty(Duration::ZERO);
    let handle = |outbox: bool| {
        let (db, b): (DatabaseConnection, Arc<dyn Backend>) = (db.clone(), backend.clone());
        async move {
            let mut reg = Registrar::new(db)
                .configure(|x| x.backend_arc(b))
                .outbox(outbox)
                // Capture would repair it too: this is the outbox's own test.
                .capture(false);
            flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
            reg.build().await.unwrap()
        }
    };
    // `writer` and `observer` stand for two processes sharing the cache.
    let writer = handle(true).await;
    let observer = handle(false).await;
    assert!(writer.has_outbox());
    let e = add_event(&writer, "ob", "Oslo").await;
    let seen = |f: &flash_sea_orm::FlashDb| {
        let f = f.clone();
        async move {
            f.cache::<event::Entity>()
                .get(by(event::Column::Slug, "ob"))
                .await
                .unwrap()
                .title
        }
    };
    assert_eq!(seen(&observer).await, "Title of ob");

    fail.store(true, Ordering::SeqCst);
    writer
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("after".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        seen(&writer).await,
        "after",
        "the writer reads its own write"
    );
    assert_eq!(
        seen(&observer).await,
        "Title of ob",
        "the missed invalidation left the old row in the cache"
    );
    assert!(outbox_count(&db).await >= 1, "the keys wait in the outbox");
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        // On PostgreSQL an update of no key field records the row's primary
        // key in the update's own statement; the drain resolves its keys.
        let row = db
            .query_one(sea_orm::Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT keyset FROM {} ORDER BY id DESC LIMIT 1",
                    flash_sea_orm::OUTBOX_TABLE
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        let recorded: String = row.try_get("", "keyset").unwrap();
        assert!(recorded.starts_with("{\"rows\""), "{recorded}");
    }

    // The writer dies with its in-memory retry queue; the cache comes back.
    drop(writer);
    fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        seen(&observer).await,
        "Title of ob",
        "nothing but the outbox knows"
    );

    let repairer = handle(true).await;
    assert!(repairer.drain_outbox().await.unwrap() >= 1);
    assert_eq!(seen(&observer).await, "after", "repaired from the outbox");
    assert_eq!(outbox_count(&db).await, 0, "applied rows are deleted");
}

#[tokio::test]
async fn the_outbox_drain_task_runs_by_itself_and_applied_rows_go() {
    let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let db = fresh_db(queries).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let (backend, fail) = faulty(Duration::ZERO);
    let b2: Arc<dyn Backend> = backend.clone();
    let settings = flash_sea_orm::OutboxSettings {
        interval: Duration::from_millis(100),
        grace: Duration::from_millis(200),
    };
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(b2))
        .outbox(true)
        .capture(false)
        .outbox_settings(settings);
    flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
    let fdb = reg.build().await.unwrap();
    let e = add_event(&fdb, "bg", "Oslo").await;
    let events = fdb.cache::<event::Entity>();
    events.get(by(event::Column::Slug, "bg")).await.unwrap();
    fail.store(true, Ordering::SeqCst);
    fdb.update(event::ActiveModel {
        id: Set(e.id),
        title: Set("later".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    fail.store(false, Ordering::SeqCst);
    let mut repaired = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if events
            .get(by(event::Column::Slug, "bg"))
            .await
            .unwrap()
            .title
            == "later"
        {
            repaired = true;
            break;
        }
    }
    assert!(repaired, "the background task re-applied the invalidation");
    for _ in 0..30 {
        if outbox_count(&db).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("outbox rows were not deleted");
}

/// The durable record of a write by default: capture (its changes table)
/// on every database; without capture, the outbox on server databases.
#[tokio::test]
async fn capture_is_on_by_default_and_the_outbox_only_without_it() {
    let h = harness().await;
    assert!(h.fdb.has_capture());
    assert!(!h.fdb.has_outbox(), "capture's changes table is the record");
    let mut reg = Registrar::new(h.db.clone()).capture(false);
    flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
    let without = reg.build().await.unwrap();
    let url = flash::config::database_url();
    assert!(!without.has_capture());
    assert_eq!(
        without.has_outbox(),
        url.starts_with("postgres") || url.starts_with("mysql")
    );
}

#[tokio::test]
async fn a_version_bump_reaches_another_process_within_the_refresh_interval() {
    // Two handles on one database, as two processes would have.
    let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let db = fresh_db(queries).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let refresh = Duration::from_millis(200);
    let mut handles = Vec::new();
    for _ in 0..2 {
        let mut reg = Registrar::new(db.clone()).configure(|b| b.version_refresh(refresh));
        flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
        handles.push(reg.build().await.unwrap());
    }
    let (a, b) = (&handles[0], &handles[1]);
    let before = b.flash().dynamic_version("event_by_slug");
    a.flash().bump_version_for_model("event").await.unwrap();
    let start = std::time::Instant::now();
    while b.flash().dynamic_version("event_by_slug") == before {
        assert!(start.elapsed() < refresh * 5, "not seen within the bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.flash().dynamic_version("event_by_slug"), before + 1);
}

#[tokio::test]
async fn a_refused_invalidation_is_never_served_and_is_retried_until_taken() {
    // A cache that answers reads but refuses writes (a hung or overloaded
    // server behind an open breaker), and no outbox (SQLite's default).
    let queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let db = fresh_db(queries).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let (backend, fail) = faulty(Duration::ZERO);
    let b2: Arc<dyn Backend> = backend.clone();
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(b2))
        .outbox(false);
    flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
    let fdb = reg.build().await.unwrap();
    let e = add_event(&fdb, "hang", "Oslo").await;
    let events = fdb.cache::<event::Entity>();
    events.get(by(event::Column::Slug, "hang")).await.unwrap();
    fail.store(true, Ordering::SeqCst);
    fdb.update(event::ActiveModel {
        id: Set(e.id),
        title: Set("fresh".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // The old row is still in the cache, but this process knows it is stale.
    let (row, o) = events
        .get_with_outcome(by(event::Column::Slug, "hang"))
        .await
        .unwrap();
    assert_eq!(
        (row.unwrap().title.as_str(), o),
        ("fresh", Outcome::Degraded)
    );
    fail.store(false, Ordering::SeqCst);
    let start = std::time::Instant::now();
    loop {
        let (row, o) = events
            .get_with_outcome(by(event::Column::Slug, "hang"))
            .await
            .unwrap();
        assert_eq!(row.unwrap().title, "fresh", "never the replaced row");
        if o == Outcome::Hit {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the retry task did not apply the invalidation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lookup_cancelled_mid_read_does_not_wedge_its_key() {
    let (slow, _) = faulty(Duration::from_millis(50));
    let backend: Arc<dyn Backend> = slow;
    let (h, _) = harness_draining(backend, |b| b, |_| (), quiet_drain()).await;
    let e = add_event(&h.fdb, "cancel", "Oslo").await;
    let fdb = h.fdb.clone();
    let doomed = tokio::spawn(async move {
        fdb.cache::<event::Entity>()
            .get(by(event::Column::Id, e.id))
            .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    doomed.abort();
    let _ = doomed.await;
    let events = h.fdb.cache::<event::Entity>();
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Miss
    );
    assert_eq!(
        events
            .get_with_outcome(by(event::Column::Id, e.id))
            .await
            .unwrap()
            .1,
        Outcome::Hit
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_lookups_shares_its_cache_reads() {
    let (slow, _) = faulty(Duration::from_millis(50));
    let backend: Arc<dyn Backend> = slow.clone();
    let (h, _) = harness_draining(backend, |b| b, |_| (), quiet_drain()).await;
    let e = add_event(&h.fdb, "burst", "Oslo").await;
    h.fdb
        .cache::<event::Entity>()
        .get(by(event::Column::Id, e.id))
        .await
        .unwrap();
    let before = slow.calls(Op::GetMany);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let fdb = h.fdb.clone();
            tokio::spawn(async move {
                fdb.cache::<event::Entity>()
                    .get_with_outcome(by(event::Column::Id, e.id))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        let (row, o) = t.await.unwrap();
        assert_eq!((row.map(|r| r.id), o), (Some(e.id), Outcome::Hit));
    }
    let reads = slow.calls(Op::GetMany) - before;
    assert!(reads <= 10, "500 concurrent hits cost {reads} cache reads");
}
