//! Acceptance tests of the capture of every write (`flash_sea_orm::capture`):
//! writes that bypass `FlashDb` (plain SeaORM, raw SQL, another connection,
//! `ON DELETE CASCADE`) are invalidated by the drain within a bound; a writer
//! that dies before invalidating is repaired by another process's drain; a
//! cache outage leaves the changes in `flash_changes` until the cache takes
//! them; several processes drain one table; and without capture the same
//! foreign write is served stale (the detection).
//!
//! The demo tables are created here with `participation.event_id` referencing
//! `event.id ON DELETE CASCADE` (the demo schema has no foreign key), so that
//! deleting an event removes its participations from the cached lists.
//!
//! `FLASH_TEST_CAPTURE_OFF=1` builds every handle of the tests that need
//! capture with `Registrar::capture(false)`: each of them must then fail
//! (the check that they test the feature).

mod common;

use common::unique;
use flash_core::{Backend, BackendError, FieldValue, Outcome};
use flash_sea_orm::{by, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::{declare, DemoClasses, Hooked, Op};
use rand::{Rng, SeedableRng};
use sea_orm::sea_query::{Expr, ForeignKey, ForeignKeyAction};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    Schema, Set, TransactionTrait,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lag a write from elsewhere may take to be invalidated (the drain polls
/// every 20 ms on MySQL/SQLite and wakes on NOTIFY on PostgreSQL; 1 s leaves
/// room for a loaded CI machine).
const BOUND: Duration = Duration::from_secs(1);
/// How long a poll waits before declaring the value stale for good (longer
/// than the bound, so that a slow drain is measured, then fails the bound).
const GIVE_UP: Duration = Duration::from_secs(5);

fn capture_on() -> bool {
    std::env::var_os("FLASH_TEST_CAPTURE_OFF").is_none_or(|v| v.is_empty())
}

fn target() -> String {
    format!(
        "{} + {}",
        flash::config::database_url(),
        flash::config::cache_url()
    )
}

// ---------------------------------------------------------------------------
// Setup: a namespace of the test's own, tables with a cascading foreign key,
// handles sharing one cache.

/// A fresh namespace (schema, database or SQLite file) with the demo tables.
async fn fresh_ns() -> (String, DatabaseConnection) {
    let ns = unique("flash_cap");
    let db = connect(&ns, true, 8).await;
    create_tables(&db).await;
    (ns, db)
}

/// Another connection pool on the namespace `ns` (another process's, or a
/// service that does not use flash).
async fn connect(ns: &str, create: bool, pool: u32) -> DatabaseConnection {
    flash::config::connect_namespace(&flash::config::database_url(), ns, create, pool)
        .await
        .unwrap_or_else(|e| panic!("database of DATABASE_URL reachable: {e}"))
}

/// user, event, and participation whose `event_id` references `event.id`
/// `ON DELETE CASCADE`.
async fn create_tables(db: &DatabaseConnection) {
    let backend = db.get_database_backend();
    let schema = Schema::new(backend);
    let mut participations = schema.create_table_from_entity(participation::Entity);
    participations.foreign_key(
        ForeignKey::create()
            .name("fk_participation_event")
            .from(participation::Entity, participation::Column::EventId)
            .to(event::Entity, event::Column::Id)
            .on_delete(ForeignKeyAction::Cascade),
    );
    for stmt in [
        schema.create_table_from_entity(user::Entity),
        schema.create_table_from_entity(event::Entity),
        participations,
    ] {
        db.execute(backend.build(&stmt))
            .await
            .expect("create table");
    }
}

/// One cache for every handle of a test (the in-process store must be one
/// instance to be shared).
async fn shared_cache() -> Arc<dyn Backend> {
    let url = flash::config::cache_url();
    flash::config::cache_backend(&url)
        .await
        .unwrap_or_else(|e| panic!("cache backend {url} unreachable: {e}"))
}

/// A handle (standing for one process) on `db` and `backend` under `prefix`,
/// with the demo declarations; no outbox, so that only capture can repair
/// what a handle's own invalidation missed.
async fn handle(
    db: &DatabaseConnection,
    backend: Arc<dyn Backend>,
    prefix: &str,
    capture: bool,
) -> (FlashDb, DemoClasses) {
    let prefix = prefix.to_owned();
    let mut reg = Registrar::new(db.clone())
        .configure(move |b| b.backend_arc(backend).prefix(prefix))
        .capture(capture)
        .outbox(false);
    let classes = declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert_eq!(fdb.has_capture(), capture);
    (fdb, classes)
}

/// `backend` behind a switch: while it is on, the operations in `refused`
/// fail as an unreachable server would.
fn switchable(
    backend: Arc<dyn Backend>,
    refused: &'static [Op],
) -> (Arc<Hooked<Arc<dyn Backend>>>, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let hooked = Hooked::new(backend).name("switchable").before(move |call| {
        if d.load(Ordering::SeqCst) && refused.contains(&call.op) {
            return Err(BackendError::Unreachable(
                "test: cache refuses writes".into(),
            ));
        }
        Ok(())
    });
    (Arc::new(hooked), down)
}

const ALL_WRITES: &[Op] = &[
    Op::Set,
    Op::Add,
    Op::CompareAndSwap,
    Op::Delete,
    Op::SetMany,
];

/// The rows of `flash_changes` (0 when capture was never installed: with
/// `FLASH_TEST_CAPTURE_OFF`, so that the tests fail on what they check).
async fn changes_count(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM {}",
                flash_sea_orm::capture::CHANGES_TABLE
            ),
        ))
        .await;
    match row {
        Ok(row) => row.expect("a count").try_get::<i64>("", "n").expect("n"),
        Err(_) if !capture_on() => 0,
        Err(e) => panic!("count flash_changes: {e}"),
    }
}

// ---------------------------------------------------------------------------
// What the lookups show, against what the database holds.

/// The lookup keys a check looks at.
#[derive(Clone, Debug, Default)]
struct Keys {
    events: Vec<i32>,
    slugs: Vec<String>,
    users: Vec<i32>,
    usernames: Vec<String>,
}

/// Every declared lookup of `Keys`, lists sorted by id.
#[derive(Clone, Debug, PartialEq)]
struct View {
    event_by_id: Vec<Option<event::Model>>,
    event_by_slug: Vec<Option<event::Model>>,
    participations_of_event: Vec<Vec<participation::Model>>,
    event_has_participations: Vec<bool>,
    user_by_id: Vec<Option<user::Model>>,
    user_by_username: Vec<Option<user::Model>>,
    participations_of_user: Vec<Vec<participation::Model>>,
    participation_count_of_user: Vec<u64>,
    event_ids_of_user: Vec<Vec<i32>>,
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn sorted_parts(mut v: Vec<participation::Model>) -> Vec<participation::Model> {
    v.sort_by_key(|p| p.id);
    v
}

/// The view through flash's lookups, and how many of them were hits (of how many).
async fn cached(fdb: &FlashDb, classes: &DemoClasses, k: &Keys) -> (View, usize, usize) {
    let mut hits = 0;
    let mut n = 0;
    let mut count = |o: Outcome| {
        n += 1;
        if o == Outcome::Hit {
            hits += 1;
        }
    };
    let events = fdb.cache::<event::Entity>();
    let users = fdb.cache::<user::Entity>();
    let parts = fdb.cache::<participation::Entity>();
    let mut v = View {
        event_by_id: Vec::new(),
        event_by_slug: Vec::new(),
        participations_of_event: Vec::new(),
        event_has_participations: Vec::new(),
        user_by_id: Vec::new(),
        user_by_username: Vec::new(),
        participations_of_user: Vec::new(),
        participation_count_of_user: Vec::new(),
        event_ids_of_user: Vec::new(),
    };
    for &id in &k.events {
        let (r, o) = events
            .get_with_outcome(by(event::Column::Id, id))
            .await
            .unwrap();
        count(o);
        v.event_by_id.push(r);
        let (r, o) = parts
            .filter_with_outcome(by(participation::Column::EventId, id))
            .await
            .unwrap();
        count(o);
        v.participations_of_event.push(sorted_parts(r));
        let (r, o) = parts
            .exists_with_outcome(by(participation::Column::EventId, id))
            .await
            .unwrap();
        count(o);
        v.event_has_participations.push(r);
    }
    for slug in &k.slugs {
        let (r, o) = events
            .get_with_outcome(by(event::Column::Slug, slug.clone()))
            .await
            .unwrap();
        count(o);
        v.event_by_slug.push(r);
    }
    for &id in &k.users {
        let (r, o) = users
            .get_with_outcome(by(user::Column::Id, id))
            .await
            .unwrap();
        count(o);
        v.user_by_id.push(r);
        let (r, o) = parts
            .filter_with_outcome(by(participation::Column::UserId, id))
            .await
            .unwrap();
        count(o);
        v.participations_of_user.push(sorted_parts(r));
        let key = [FieldValue::Int(id.into())];
        let (r, o) = fdb
            .flash()
            .lookup(&classes.participation_count, &key)
            .await
            .unwrap();
        count(o);
        v.participation_count_of_user.push(r);
        let (r, o) = fdb.flash().lookup(&classes.event_ids, &key).await.unwrap();
        count(o);
        v.event_ids_of_user.push(sorted(r));
    }
    for name in &k.usernames {
        let (r, o) = users
            .get_with_outcome(by(user::Column::Username, name.clone()))
            .await
            .unwrap();
        count(o);
        v.user_by_username.push(r);
    }
    (v, hits, n)
}

/// The same view, queried from the database directly.
async fn database(db: &DatabaseConnection, k: &Keys) -> View {
    let mut v = View {
        event_by_id: Vec::new(),
        event_by_slug: Vec::new(),
        participations_of_event: Vec::new(),
        event_has_participations: Vec::new(),
        user_by_id: Vec::new(),
        user_by_username: Vec::new(),
        participations_of_user: Vec::new(),
        participation_count_of_user: Vec::new(),
        event_ids_of_user: Vec::new(),
    };
    for &id in &k.events {
        v.event_by_id
            .push(event::Entity::find_by_id(id).one(db).await.unwrap());
        let p = participation::Entity::find()
            .filter(participation::Column::EventId.eq(id))
            .all(db)
            .await
            .unwrap();
        v.event_has_participations.push(!p.is_empty());
        v.participations_of_event.push(sorted_parts(p));
    }
    for slug in &k.slugs {
        v.event_by_slug.push(
            event::Entity::find()
                .filter(event::Column::Slug.eq(slug.clone()))
                .one(db)
                .await
                .unwrap(),
        );
    }
    for &id in &k.users {
        v.user_by_id
            .push(user::Entity::find_by_id(id).one(db).await.unwrap());
        let p = participation::Entity::find()
            .filter(participation::Column::UserId.eq(id))
            .all(db)
            .await
            .unwrap();
        v.participation_count_of_user.push(p.len() as u64);
        v.event_ids_of_user
            .push(sorted(p.iter().map(|p| p.event_id).collect()));
        v.participations_of_user.push(sorted_parts(p));
    }
    for name in &k.usernames {
        v.user_by_username.push(
            user::Entity::find()
                .filter(user::Column::Username.eq(name.clone()))
                .one(db)
                .await
                .unwrap(),
        );
    }
    v
}

/// Fills the cache for `keys` (until one full read is all hits) and checks
/// that it agrees with the database.
async fn fill(fdb: &FlashDb, classes: &DemoClasses, db: &DatabaseConnection, keys: &Keys) {
    for _ in 0..50 {
        let (seen, hits, n) = cached(fdb, classes, keys).await;
        if hits == n {
            assert_eq!(
                seen,
                database(db, keys).await,
                "cache agrees before the write"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the cache of {keys:?} could not be filled");
}

/// Polls the lookups of `keys` until they show what the database holds now;
/// the time from `since` (the write's return) to that first fresh read.
async fn lag_until_fresh(
    fdb: &FlashDb,
    classes: &DemoClasses,
    db: &DatabaseConnection,
    keys: &Keys,
    since: Instant,
    what: &str,
) -> Duration {
    let want = database(db, keys).await;
    loop {
        let (seen, _, _) = cached(fdb, classes, keys).await;
        if seen == want {
            return since.elapsed();
        }
        if since.elapsed() > GIVE_UP {
            panic!(
                "{what}: still stale {GIVE_UP:?} after the write\n  cached:   {seen:?}\n  database: {want:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

struct Case<'a> {
    fdb: &'a FlashDb,
    classes: &'a DemoClasses,
    db: &'a DatabaseConnection,
    lags: Vec<(&'static str, Duration)>,
}

impl Case<'_> {
    /// Fills the cache of `keys`, runs `write` (a write that bypasses flash),
    /// and measures the lag until the lookups of `keys` show it.
    async fn run(&mut self, what: &'static str, keys: Keys, write: impl Future<Output = ()>) {
        fill(self.fdb, self.classes, self.db, &keys).await;
        let before = database(self.db, &keys).await;
        write.await;
        let since = Instant::now();
        assert_ne!(
            database(self.db, &keys).await,
            before,
            "{what}: the write changes what the lookups of {keys:?} return"
        );
        let lag = lag_until_fresh(self.fdb, self.classes, self.db, &keys, since, what).await;
        eprintln!("capture lag [{}] {what}: {lag:?}", target());
        self.lags.push((what, lag));
    }
}

fn events(ids: &[i32]) -> Keys {
    Keys {
        events: ids.to_vec(),
        ..Keys::default()
    }
}

fn plain_event(slug: &str, city: &str) -> event::ActiveModel {
    event::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        city: Set(city.into()),
        ..Default::default()
    }
}

fn plain_user(name: &str) -> user::ActiveModel {
    user::ActiveModel {
        username: Set(name.into()),
        name: Set(name.to_uppercase()),
        ..Default::default()
    }
}

fn plain_participation(u: i32, e: i32) -> participation::ActiveModel {
    participation::ActiveModel {
        user_id: Set(u),
        event_id: Set(e),
        role: Set("guest".into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// 1. Writes from elsewhere are invalidated within the bound.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_from_elsewhere_are_invalidated_within_the_bound() {
    let (ns, db) = fresh_ns().await;
    // A second connection pool: another service writing the same tables.
    let other = connect(&ns, false, 2).await;
    let prefix = unique("cap") + ":";
    let (fdb, classes) = handle(&db, shared_cache().await, &prefix, capture_on()).await;

    // Rows written with plain SeaORM: already captured, but not cached yet.
    let u1 = plain_user("ann").insert(&db).await.unwrap();
    let u2 = plain_user("bob").insert(&db).await.unwrap();
    let u3 = plain_user("cid").insert(&db).await.unwrap();
    let e1 = plain_event("alpha", "Oslo").insert(&db).await.unwrap();
    let e2 = plain_event("beta", "Oslo").insert(&db).await.unwrap();
    let e3 = plain_event("gamma", "Bergen").insert(&db).await.unwrap();
    let e4 = plain_event("delta", "Bergen").insert(&db).await.unwrap();
    let p1 = plain_participation(u1.id, e1.id).insert(&db).await.unwrap();
    plain_participation(u1.id, e2.id).insert(&db).await.unwrap();
    plain_participation(u2.id, e1.id).insert(&db).await.unwrap();
    plain_participation(u2.id, e3.id).insert(&db).await.unwrap();
    plain_participation(u3.id, e2.id).insert(&db).await.unwrap();
    fdb.apply_captured().await.unwrap();

    let mut case = Case {
        fdb: &fdb,
        classes: &classes,
        db: &db,
        lags: Vec::new(),
    };
    let user_keys = |ids: &[i32], events: &[i32]| Keys {
        users: ids.to_vec(),
        events: events.to_vec(),
        ..Keys::default()
    };

    case.run(
        "SeaORM ActiveModel::update (title)",
        Keys {
            slugs: vec!["alpha".into()],
            ..events(&[e1.id])
        },
        async {
            event::ActiveModel {
                id: Set(e1.id),
                title: Set("updated by SeaORM".into()),
                ..Default::default()
            }
            .update(&db)
            .await
            .unwrap();
        },
    )
    .await;

    case.run(
        "SeaORM ActiveModel::insert, other connection (first participation of an event)",
        user_keys(&[u3.id], &[e4.id]),
        async {
            plain_participation(u3.id, e4.id)
                .insert(&other)
                .await
                .unwrap();
        },
    )
    .await;

    case.run(
        "SeaORM ActiveModel::delete",
        user_keys(&[u1.id], &[e1.id]),
        async {
            let am: participation::ActiveModel = p1.clone().into();
            am.delete(&db).await.unwrap();
        },
    )
    .await;

    case.run(
        "SeaORM Entity::update_many, other connection",
        Keys {
            slugs: vec!["alpha".into(), "beta".into()],
            ..events(&[e1.id, e2.id, e3.id])
        },
        async {
            event::Entity::update_many()
                .col_expr(event::Column::Title, Expr::value("many"))
                .filter(event::Column::City.eq("Oslo"))
                .exec(&other)
                .await
                .unwrap();
        },
    )
    .await;

    case.run(
        "SeaORM Entity::delete_many",
        user_keys(&[u2.id], &[e1.id, e3.id]),
        async {
            participation::Entity::delete_many()
                .filter(participation::Column::UserId.eq(u2.id))
                .exec(&db)
                .await
                .unwrap();
        },
    )
    .await;

    case.run(
        "raw UPDATE (title), other connection",
        Keys {
            slugs: vec!["gamma".into()],
            ..events(&[e3.id])
        },
        async {
            other
                .execute_unprepared(&format!(
                    "UPDATE event SET title = 'raw', revision = revision + 1 WHERE id = {}",
                    e3.id
                ))
                .await
                .unwrap();
        },
    )
    .await;

    // The new slug's absence is cached by the fill: it must go too.
    case.run(
        "raw UPDATE of a key field (slug)",
        Keys {
            slugs: vec!["alpha".into(), "alpha-new".into()],
            ..events(&[e1.id])
        },
        async {
            db.execute_unprepared(&format!(
                "UPDATE event SET slug = 'alpha-new' WHERE id = {}",
                e1.id
            ))
            .await
            .unwrap();
        },
    )
    .await;

    case.run(
        "raw INSERT, other connection",
        user_keys(&[u3.id], &[e1.id]),
        async {
            other
                .execute_unprepared(&format!(
                    "INSERT INTO participation (user_id, event_id, role) VALUES ({}, {}, 'raw')",
                    u3.id, e1.id
                ))
                .await
                .unwrap();
        },
    )
    .await;

    case.run("raw DELETE", user_keys(&[u3.id], &[e1.id]), async {
        db.execute_unprepared(&format!(
            "DELETE FROM participation WHERE user_id = {} AND event_id = {}",
            u3.id, e1.id
        ))
        .await
        .unwrap();
    })
    .await;

    case.run(
        "plain transaction of two statements (commit)",
        Keys {
            slugs: vec!["gamma".into()],
            ..user_keys(&[u1.id], &[e3.id])
        },
        async {
            let txn = other.begin().await.unwrap();
            txn.execute_unprepared(&format!(
                "UPDATE event SET title = 'in a transaction' WHERE id = {}",
                e3.id
            ))
            .await
            .unwrap();
            plain_participation(u1.id, e3.id)
                .insert(&txn)
                .await
                .unwrap();
            txn.commit().await.unwrap();
        },
    )
    .await;

    case.run(
        "SeaORM update of a unique key (username)",
        Keys {
            usernames: vec!["ann".into(), "anna".into()],
            ..user_keys(&[u1.id], &[])
        },
        async {
            user::ActiveModel {
                id: Set(u1.id),
                username: Set("anna".into()),
                ..Default::default()
            }
            .update(&db)
            .await
            .unwrap();
        },
    )
    .await;

    // beta's participations (u1's and u3's) go with it.
    case.run(
        "ON DELETE CASCADE (raw DELETE of the parent, other connection)",
        Keys {
            slugs: vec!["beta".into()],
            ..user_keys(&[u1.id, u3.id], &[e2.id])
        },
        async {
            other
                .execute_unprepared(&format!("DELETE FROM event WHERE id = {}", e2.id))
                .await
                .unwrap();
        },
    )
    .await;

    case.run(
        "ON DELETE CASCADE (SeaORM Entity::delete_by_id of the parent)",
        Keys {
            slugs: vec!["delta".into()],
            ..user_keys(&[u3.id], &[e4.id])
        },
        async {
            event::Entity::delete_by_id(e4.id).exec(&db).await.unwrap();
        },
    )
    .await;

    let lags = std::mem::take(&mut case.lags);
    let worst = lags.iter().map(|(_, l)| *l).max().unwrap_or_default();
    eprintln!(
        "capture lags [{}]: worst {worst:?} of {} writes",
        target(),
        lags.len()
    );
    for (what, lag) in &lags {
        assert!(
            *lag <= BOUND,
            "{what}: invalidated after {lag:?}, more than {BOUND:?}"
        );
    }
    fdb.apply_captured().await.unwrap();
    assert_eq!(changes_count(&db).await, 0, "applied changes are deleted");
}

// ---------------------------------------------------------------------------
// 2. A writer that dies before its invalidation reaches the cache.

/// The title of the event of slug `slug`, as a handle's lookup sees it.
async fn title(fdb: &FlashDb, slug: &str) -> (String, Outcome) {
    let (row, o) = fdb
        .cache::<event::Entity>()
        .get_with_outcome(by(event::Column::Slug, slug))
        .await
        .unwrap();
    (row.expect("the event").title, o)
}

/// Polls `fdb`'s lookup of `slug` until it gives `want`; the time from `since`.
async fn title_lag(fdb: &FlashDb, slug: &str, want: &str, since: Instant) -> Duration {
    loop {
        let (t, _) = title(fdb, slug).await;
        if t == want {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < GIVE_UP,
            "{slug}: still {t:?} {GIVE_UP:?} later, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_process_repairs_the_invalidation_a_crashed_writer_lost() {
    let (ns, db) = fresh_ns().await;
    let cache = shared_cache().await;
    let prefix = unique("cap") + ":";
    // The writer's cache refuses its invalidations (set_many) once `lost` is
    // set: the writer is cut off (or dies) between its commit and its
    // invalidation. The observer, another process, reaches the cache.
    let (writer_cache, lost) = switchable(cache.clone(), &[Op::SetMany]);
    let writer_db = connect(&ns, false, 4).await;
    let (writer, _) = handle(&writer_db, writer_cache.clone(), &prefix, capture_on()).await;
    let (observer, _) = handle(&db, cache, &prefix, capture_on()).await;

    let e = writer
        .insert(plain_event("crash", "Oslo"))
        .await
        .expect("insert");
    observer.apply_captured().await.unwrap();
    assert_eq!(title(&observer, "crash").await.0, "Title of crash");
    assert_eq!(
        title(&observer, "crash").await,
        ("Title of crash".into(), Outcome::Hit),
        "cached"
    );

    lost.store(true, Ordering::SeqCst);
    let refused_before = writer_cache.calls(Op::SetMany);
    writer
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("after the crash".into()),
            ..Default::default()
        })
        .await
        .expect("the write commits");
    let since = Instant::now();
    assert!(
        writer_cache.calls(Op::SetMany) > refused_before,
        "the writer's own invalidation was tried, and refused"
    );
    // The writer dies: its in-memory retry and its drain go with it.
    drop(writer);

    let lag = title_lag(&observer, "crash", "after the crash", since).await;
    eprintln!(
        "capture lag [{}] write of a crashed writer, repaired by a live process: {lag:?}",
        target()
    );
    assert!(lag <= BOUND, "repaired after {lag:?}, more than {BOUND:?}");
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        // The writer's drain, woken by the same notification, may have taken
        // the record first; when its cache refuses, it rolls back and wakes
        // the others, who then need not wait for their 250 ms poll.
        assert!(
            lag < Duration::from_millis(200),
            "repaired after {lag:?}: the refusing drain did not hand the record over"
        );
    }
    assert_eq!(
        title(&observer, "crash").await,
        ("after the crash".into(), Outcome::Hit),
        "the fresh row is cached again"
    );
    observer.apply_captured().await.unwrap();
    assert_eq!(changes_count(&db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_started_after_the_crash_repairs_the_lost_invalidation() {
    // As `the_outbox_repairs_an_invalidation_lost_with_its_process`
    // (consistency.rs), with the changes table as the durable record: while
    // no live process can drain, the stale row is served; the first process
    // that starts repairs it.
    let (ns, db) = fresh_ns().await;
    let cache = shared_cache().await;
    let prefix = unique("cap") + ":";
    let (writer_cache, lost) = switchable(cache.clone(), &[Op::SetMany]);
    let writer_db = connect(&ns, false, 4).await;
    let (writer, _) = handle(&writer_db, writer_cache.clone(), &prefix, capture_on()).await;
    // A reader without a drain of its own (capture off: it installs nothing
    // and drains nothing), on the working cache.
    let (peek, _) = handle(&db, cache.clone(), &prefix, false).await;

    let e = writer.insert(plain_event("ob", "Oslo")).await.unwrap();
    // The insert is captured too: applied now, not after the fill below.
    writer.apply_captured().await.unwrap();
    assert_eq!(title(&peek, "ob").await.0, "Title of ob");
    lost.store(true, Ordering::SeqCst);
    writer
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("after".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        title(&writer, "ob").await.0,
        "after",
        "the writer reads its own write"
    );
    drop(writer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        title(&peek, "ob").await,
        ("Title of ob".into(), Outcome::Hit),
        "the lost invalidation left the old row in the cache"
    );
    assert!(
        changes_count(&db).await >= 1,
        "the change waits in flash_changes"
    );

    let started = Instant::now();
    let (repairer, _) = handle(&db, cache, &prefix, capture_on()).await;
    let built = started.elapsed();
    // The bound is the drain's lag once the process runs (its start-up,
    // which installs capture under a lock, is the database's DDL time).
    let since = Instant::now();
    let lag = title_lag(&peek, "ob", "after", since).await;
    eprintln!(
        "capture lag [{}] lost invalidation, from a new process's start ({built:?} to build): {lag:?}",
        target()
    );
    assert!(lag <= BOUND, "repaired after {lag:?}, more than {BOUND:?}");
    repairer.apply_captured().await.unwrap();
    assert_eq!(changes_count(&db).await, 0, "applied changes are deleted");
}

// ---------------------------------------------------------------------------
// 3. A cache outage: the changes wait in the table.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_outage_keeps_the_changes_until_the_cache_takes_them() {
    let (_ns, db) = fresh_ns().await;
    let prefix = unique("cap") + ":";
    let (cache, down) = switchable(shared_cache().await, ALL_WRITES);
    let (fdb, _) = handle(&db, cache.clone(), &prefix, capture_on()).await;
    let e = plain_event("outage", "Oslo").insert(&db).await.unwrap();
    fdb.apply_captured().await.unwrap();
    title(&fdb, "outage").await;
    assert_eq!(
        title(&fdb, "outage").await,
        ("Title of outage".into(), Outcome::Hit)
    );

    down.store(true, Ordering::SeqCst);
    let tried = cache.calls(Op::SetMany);
    db.execute_unprepared(&format!(
        "UPDATE event SET title = 'during the outage' WHERE id = {}",
        e.id
    ))
    .await
    .unwrap();
    // Several drain rounds (20 ms polls; NOTIFY on PostgreSQL) fail meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cache.calls(Op::SetMany) > tried,
        "the drain tried to invalidate"
    );
    assert_eq!(
        changes_count(&db).await,
        1,
        "the change stays in flash_changes while the cache refuses it"
    );
    assert_eq!(
        fdb.apply_captured().await.unwrap(),
        0,
        "apply_captured applied nothing (a refusal is not an error: the keys wait in this process)"
    );
    assert_eq!(changes_count(&db).await, 1, "and keeps the row");
    assert_eq!(
        title(&fdb, "outage").await.0,
        "during the outage",
        "this process reads the refused keys from the database"
    );

    down.store(false, Ordering::SeqCst);
    let since = Instant::now();
    while changes_count(&db).await > 0 {
        assert!(
            since.elapsed() < GIVE_UP,
            "the drain did not apply the change after the outage"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let lag = since.elapsed();
    eprintln!(
        "capture lag [{}] after a cache outage, from the cache's return to the row's deletion: {lag:?}",
        target()
    );
    assert!(lag <= BOUND, "applied after {lag:?}, more than {BOUND:?}");
    // Never the old row; cached again once this process's own retry of the
    // refused invalidation (every 200 ms) has landed too (until then its
    // lookups of the key go to the database: `Degraded`).
    loop {
        let (t, o) = title(&fdb, "outage").await;
        assert_eq!(t, "during the outage");
        if o == Outcome::Hit {
            break;
        }
        assert!(since.elapsed() < GIVE_UP, "the fresh row is never cached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// 4. Three processes drain one table while foreign writes run.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_drain_one_table_while_foreign_writes_run() {
    const WRITES: usize = 200;
    let (ns, db) = fresh_ns().await;
    let cache = shared_cache().await;
    let prefix = unique("cap") + ":";
    let mut handles = Vec::new();
    for _ in 0..3 {
        let conn = connect(&ns, false, 4).await;
        handles.push(handle(&conn, cache.clone(), &prefix, capture_on()).await);
    }
    let handles = Arc::new(handles);
    // The foreign writer: a connection of its own, no flash.
    let w = connect(&ns, false, 2).await;

    let mut users = Vec::new();
    let mut usernames = Vec::new();
    for i in 0..4 {
        let name = format!("user{i}");
        users.push(plain_user(&name).insert(&w).await.unwrap().id);
        usernames.push(name);
    }
    let mut live_events: Vec<i32> = Vec::new();
    let mut all_events: Vec<i32> = Vec::new();
    let mut slugs: Vec<String> = Vec::new();
    for i in 0..8 {
        let slug = format!("ev{i}");
        let city = if i % 2 == 0 { "Oslo" } else { "Bergen" };
        let id = plain_event(&slug, city).insert(&w).await.unwrap().id;
        live_events.push(id);
        all_events.push(id);
        slugs.push(slug);
    }
    // (id, event_id) of the live participations.
    let mut parts: Vec<(i32, i32)> = Vec::new();
    for i in 0..12 {
        let (u, e) = (users[i % users.len()], live_events[i % live_events.len()]);
        parts.push((plain_participation(u, e).insert(&w).await.unwrap().id, e));
    }

    // Readers: two tasks per handle, filling and hitting while the writes run.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for h in 0..handles.len() {
        for r in 0..2u64 {
            let (handles, stop) = (handles.clone(), stop.clone());
            let keys = Keys {
                events: all_events.clone(),
                slugs: slugs.clone(),
                users: users.clone(),
                usernames: usernames.clone(),
            };
            readers.push(tokio::spawn(async move {
                let (fdb, classes) = &handles[h];
                let mut rng = rand::rngs::StdRng::seed_from_u64(h as u64 * 10 + r);
                let mut reads = 0;
                while !stop.load(Ordering::SeqCst) {
                    let one = Keys {
                        events: vec![keys.events[rng.random_range(0..keys.events.len())]],
                        slugs: vec![keys.slugs[rng.random_range(0..keys.slugs.len())].clone()],
                        users: vec![keys.users[rng.random_range(0..keys.users.len())]],
                        usernames: Vec::new(),
                    };
                    cached(fdb, classes, &one).await;
                    reads += 1;
                    // In-process hits never wait on anything: without a
                    // pause, six readers would keep the runtime's workers
                    // from the writer and the drains.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                reads
            }));
        }
    }

    let seed: u64 = rand::random();
    eprintln!("foreign writes seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for n in 0..WRITES {
        let ev = live_events[rng.random_range(0..live_events.len())];
        let u = users[rng.random_range(0..users.len())];
        match rng.random_range(0..10) {
            0 | 1 => {
                w.execute_unprepared(&format!(
                    "UPDATE event SET title = 'w{n}', revision = revision + 1 WHERE id = {ev}"
                ))
                .await
                .unwrap();
            }
            2 => {
                let slug = format!("ev{ev}-r{n}");
                w.execute_unprepared(&format!("UPDATE event SET slug = '{slug}' WHERE id = {ev}"))
                    .await
                    .unwrap();
                slugs.push(slug);
            }
            3 if !parts.is_empty() => {
                let (p, _) = parts[rng.random_range(0..parts.len())];
                w.execute_unprepared(&format!(
                    "UPDATE participation SET user_id = {u} WHERE id = {p}"
                ))
                .await
                .unwrap();
            }
            4 => {
                let p = plain_participation(u, ev).insert(&w).await.unwrap();
                parts.push((p.id, ev));
            }
            5 if !parts.is_empty() => {
                let (p, _) = parts.swap_remove(rng.random_range(0..parts.len()));
                participation::Entity::delete_by_id(p)
                    .exec(&w)
                    .await
                    .unwrap();
            }
            6 => {
                event::Entity::update_many()
                    .col_expr(event::Column::Title, Expr::value(format!("many{n}")))
                    .filter(event::Column::City.eq("Oslo"))
                    .exec(&w)
                    .await
                    .unwrap();
            }
            7 if n % 3 == 0 && live_events.len() > 3 => {
                // A parent deleted (its participations cascade), a new one.
                event::Entity::delete_by_id(ev).exec(&w).await.unwrap();
                live_events.retain(|&e| e != ev);
                parts.retain(|&(_, e)| e != ev);
                let slug = format!("new{n}");
                let id = plain_event(&slug, "Oslo").insert(&w).await.unwrap().id;
                live_events.push(id);
                all_events.push(id);
                slugs.push(slug);
            }
            8 => {
                let txn = w.begin().await.unwrap();
                txn.execute_unprepared(&format!(
                    "UPDATE event SET title = 'tx{n}' WHERE id = {ev}"
                ))
                .await
                .unwrap();
                let p = plain_participation(u, ev).insert(&txn).await.unwrap();
                txn.commit().await.unwrap();
                parts.push((p.id, ev));
            }
            _ => {
                let i = rng.random_range(0..users.len());
                let name = format!("user{i}-r{n}");
                user::ActiveModel {
                    id: Set(users[i]),
                    username: Set(name.clone()),
                    ..Default::default()
                }
                .update(&w)
                .await
                .unwrap();
                usernames.push(name);
            }
        }
        if rng.random_range(0..4) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3))).await;
        }
    }
    let writing = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("a reader panicked");
    }

    let applied = handles[0].0.apply_captured().await.unwrap();
    assert_eq!(
        changes_count(&db).await,
        0,
        "flash_changes is empty after apply_captured"
    );
    let keys = Keys {
        events: all_events,
        slugs,
        users,
        usernames,
    };
    let want = database(&db, &keys).await;
    for (i, (fdb, classes)) in handles.iter().enumerate() {
        let (seen, hits, n) = cached(fdb, classes, &keys).await;
        eprintln!(
            "[{}] handle {i}: {hits} of {n} lookups were hits after {WRITES} foreign writes in {writing:?} ({reads} reader rounds, {applied} changes left to apply_captured)",
            target()
        );
        for (field, a, b) in [
            (
                "event_by_id",
                format!("{:?}", seen.event_by_id),
                format!("{:?}", want.event_by_id),
            ),
            (
                "event_by_slug",
                format!("{:?}", seen.event_by_slug),
                format!("{:?}", want.event_by_slug),
            ),
            (
                "participations_of_event",
                format!("{:?}", seen.participations_of_event),
                format!("{:?}", want.participations_of_event),
            ),
            (
                "event_has_participations",
                format!("{:?}", seen.event_has_participations),
                format!("{:?}", want.event_has_participations),
            ),
            (
                "user_by_id",
                format!("{:?}", seen.user_by_id),
                format!("{:?}", want.user_by_id),
            ),
            (
                "user_by_username",
                format!("{:?}", seen.user_by_username),
                format!("{:?}", want.user_by_username),
            ),
            (
                "participations_of_user",
                format!("{:?}", seen.participations_of_user),
                format!("{:?}", want.participations_of_user),
            ),
            (
                "participation_count_of_user",
                format!("{:?}", seen.participation_count_of_user),
                format!("{:?}", want.participation_count_of_user),
            ),
            (
                "event_ids_of_user",
                format!("{:?}", seen.event_ids_of_user),
                format!("{:?}", want.event_ids_of_user),
            ),
        ] {
            assert_eq!(a, b, "handle {i}: cached {field} equals the database");
        }
        assert!(hits > 0, "the comparison read cached entries");
    }
}

// ---------------------------------------------------------------------------
// 5. Without capture, the same foreign write is served stale: the detection.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_capture_a_foreign_write_is_served_stale() {
    let (_ns, db) = fresh_ns().await;
    let prefix = unique("cap") + ":";
    let (fdb, classes) = handle(&db, shared_cache().await, &prefix, false).await;
    let e = plain_event("nocap", "Oslo").insert(&db).await.unwrap();
    let u = plain_user("nocap").insert(&db).await.unwrap();
    plain_participation(u.id, e.id).insert(&db).await.unwrap();
    let keys = Keys {
        events: vec![e.id],
        slugs: vec!["nocap".into()],
        users: vec![u.id],
        usernames: vec!["nocap".into()],
    };
    fill(&fdb, &classes, &db, &keys).await;
    let (before, _, _) = cached(&fdb, &classes, &keys).await;

    db.execute_unprepared(&format!(
        "UPDATE event SET title = 'foreign' WHERE id = {}",
        e.id
    ))
    .await
    .unwrap();
    db.execute_unprepared(&format!(
        "DELETE FROM participation WHERE user_id = {}",
        u.id
    ))
    .await
    .unwrap();
    let since = Instant::now();
    let want = database(&db, &keys).await;
    assert_ne!(before, want);
    // The check of the other tests, run for longer than their bound.
    while since.elapsed() < BOUND + Duration::from_millis(200) {
        let (seen, hits, n) = cached(&fdb, &classes, &keys).await;
        assert_ne!(
            seen, want,
            "without capture nothing invalidates a foreign write"
        );
        assert_eq!(
            (seen, hits),
            (before.clone(), n),
            "the stale entries are served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fdb.apply_captured().await.unwrap(), 0);
}
