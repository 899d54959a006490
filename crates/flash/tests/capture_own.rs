//! A write through flash knows its own captured record (PostgreSQL): its
//! statement returns the transaction's id, which the triggers record with the
//! change, so once the write applied its invalidation the drain of its
//! process deletes the record without writing the markers again, and the
//! record's notification wakes no drain round. A record the write does not
//! cover (another transaction's write to the same row) is applied as before.
//!
//! On MySQL and SQLite (no transaction id is recorded) every record is
//! applied again, harmlessly; these tests check that and nothing more there.

mod common;

use common::{quiet, unique};
use flash_core::{Backend, BackendError, Outcome};
use flash_sea_orm::capture::{DrainSettings, CHANGES_TABLE};
use flash_sea_orm::{by, Changes, FlashDb, Registrar};
use flash_test_kit::entities::event;
use flash_test_kit::{declare, Hooked, Op};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, Set,
};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

async fn changes(db: &DatabaseConnection) -> i64 {
    db.query_one(sea_orm::Statement::from_string(
        db.get_database_backend(),
        format!("SELECT COUNT(*) AS n FROM {CHANGES_TABLE}"),
    ))
    .await
    .expect("count flash_changes")
    .expect("a count")
    .try_get::<i64>("", "n")
    .expect("n")
}

/// A namespace of the test's own with the demo tables, a handle on it whose
/// cache counts its calls, and the drain as `settings` say.
async fn setup(
    settings: DrainSettings,
) -> (
    String,
    DatabaseConnection,
    FlashDb,
    Arc<Hooked<Arc<dyn Backend>>>,
) {
    let (ns, db, fdb, hooked, _) = setup_refusing(settings).await;
    (ns, db, fdb, hooked)
}

/// [`setup`], with a switch that makes the cache refuse every write.
async fn setup_refusing(
    settings: DrainSettings,
) -> (
    String,
    DatabaseConnection,
    FlashDb,
    Arc<Hooked<Arc<dyn Backend>>>,
    Arc<AtomicBool>,
) {
    let ns = unique("flash_own");
    let url = flash::config::database_url();
    let db = flash::config::connect_namespace(&url, &ns, true, 4)
        .await
        .expect("database of DATABASE_URL reachable");
    flash_test_kit::schema::create_tables(&db)
        .await
        .expect("demo tables");
    // PostgreSQL: a search path with a space in it, like the database's
    // default (`"$user", public`), which the drain's own pool must keep.
    let db = if db.get_database_backend() == DatabaseBackend::Postgres {
        let mut o = sea_orm::ConnectOptions::new(url.clone());
        o.set_schema_search_path(format!("\"{ns}\", public"))
            .max_connections(4)
            .sqlx_logging(false);
        sea_orm::Database::connect(o).await.expect("reconnect")
    } else {
        db
    };
    let cache = flash::config::cache_backend(&flash::config::cache_url())
        .await
        .expect("cache reachable");
    let refuse = Arc::new(AtomicBool::new(false));
    let r = refuse.clone();
    let hooked = Arc::new(Hooked::new(cache).before(move |call| {
        match r.load(SeqCst) && call.op.is_write() {
            true => Err(BackendError::Unreachable("test: refused".into())),
            false => Ok(()),
        }
    }));
    let b: Arc<dyn Backend> = hooked.clone();
    let prefix = unique("own");
    let mut reg = Registrar::new(db.clone())
        .configure(move |c| c.backend_arc(b).prefix(prefix))
        .outbox(false)
        .drain_settings(settings);
    declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert!(fdb.has_capture());
    (ns, db, fdb, hooked, refuse)
}

fn event_row(id: i32, slug: &str, title: &str) -> event::ActiveModel {
    event::ActiveModel {
        id: Set(id),
        slug: Set(slug.to_owned()),
        title: Set(title.to_owned()),
        city: Set("Paris".to_owned()),
        ..Default::default()
    }
}

async fn title_of(fdb: &FlashDb, slug: &str) -> String {
    let (row, _) = fdb
        .cache::<event::Entity>()
        .get_with_outcome(by(event::Column::Slug, slug))
        .await
        .expect("lookup");
    row.expect("the event").title
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_flash_is_not_invalidated_twice() {
    let quiet = quiet();
    let (ns, db, fdb, hooked) = setup(quiet).await;
    let pg = db.get_database_backend() == DatabaseBackend::Postgres;
    let marks = hooked.calls(Op::SetMany);
    fdb.insert(event_row(1, "own", "first"))
        .await
        .expect("insert");
    applied_once(&fdb, &hooked, marks, pg, "insert").await;
    assert_eq!(title_of(&fdb, "own").await, "first");

    // A title update: its markers once, by the write; its record is deleted.
    let marks = hooked.calls(Op::SetMany);
    let am = event::ActiveModel {
        id: Set(1),
        title: Set("second".into()),
        ..Default::default()
    };
    fdb.update(am).await.expect("update");
    // One pipelined write per kind of marker.
    let written = hooked.calls(Op::SetMany);
    assert!(written > marks, "the write wrote no markers");
    assert_eq!(fdb.apply_captured().await.expect("drain"), 1);
    assert_eq!(changes(&db).await, 0, "the record is deleted");
    let again = hooked.calls(Op::SetMany) - written;
    if pg {
        assert_eq!(again, 0, "the drain applied the write's own record again");
    } else {
        assert!(again > 0, "no transaction id here: applied again");
    }

    // A key change (one statement on PostgreSQL): the same.
    let marks = hooked.calls(Op::SetMany);
    let am = event::ActiveModel {
        id: Set(1),
        slug: Set("own-2".into()),
        ..Default::default()
    };
    fdb.update(am).await.expect("slug update");
    let written = hooked.calls(Op::SetMany);
    assert!(written > marks, "the write wrote no markers");
    let applied = fdb.apply_captured().await.expect("drain");
    assert!(applied == 1 || (!pg && applied > 1), "{applied} records");
    let again = hooked.calls(Op::SetMany) - written;
    assert_eq!(again == 0, pg, "slug change applied again: {again} writes");

    // Another transaction writes the same row right after a write through
    // flash: its record has the same keys but another transaction id, and
    // is applied; the lookup serves the foreign title.
    let am = event::ActiveModel {
        id: Set(1),
        title: Set("third".into()),
        ..Default::default()
    };
    fdb.update(am).await.expect("update");
    assert_eq!(title_of(&fdb, "own-2").await, "third");
    let written = hooked.calls(Op::SetMany);
    let other = flash::config::connect_namespace(&flash::config::database_url(), &ns, false, 1)
        .await
        .expect("another connection");
    other
        .execute_unprepared("UPDATE event SET title = 'foreign' WHERE id = 1")
        .await
        .expect("foreign update");
    let applied = fdb.apply_captured().await.expect("drain");
    // SQLite's drain may have taken the write's record already.
    assert!(applied == 2 || (!pg && applied >= 1), "{applied} records");
    assert!(
        hooked.calls(Op::SetMany) > written,
        "the foreign record was not applied"
    );
    assert_eq!(title_of(&fdb, "own-2").await, "foreign");

    // update_many and delete (in the transaction flash opens to lock the
    // rows they change) return their transaction's id too.
    let marks = hooked.calls(Op::SetMany);
    let n = fdb
        .update_many::<event::Entity>(
            sea_orm::Condition::all().add(event::Column::Id.eq(1)),
            Changes::new().set(event::Column::Title, "many"),
        )
        .await
        .expect("update_many");
    assert_eq!(n, 1);
    applied_once(&fdb, &hooked, marks, pg, "update_many").await;
    let row = event::Entity::find_by_id(1)
        .one(&db)
        .await
        .expect("read")
        .expect("the event");
    let marks = hooked.calls(Op::SetMany);
    assert_eq!(fdb.delete::<event::Entity>(&row).await.expect("delete"), 1);
    applied_once(&fdb, &hooked, marks, pg, "delete").await;
    let _ = other.close().await;
    let _ = flash::config::drop_namespace(&flash::config::database_url(), &ns).await;
}

/// The write after `marks` wrote its markers, and its record is deleted by
/// the drain without writing them again on PostgreSQL (again elsewhere).
async fn applied_once(
    fdb: &FlashDb,
    hooked: &Hooked<Arc<dyn Backend>>,
    marks: u64,
    pg: bool,
    what: &str,
) {
    let written = hooked.calls(Op::SetMany);
    assert!(written > marks, "{what}: no markers written");
    let applied = fdb.apply_captured().await.expect("drain");
    assert!(applied >= 1, "{what}: {applied} records");
    let again = hooked.calls(Op::SetMany) - written;
    assert_eq!(again == 0, pg, "{what}: applied again: {again} writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_flash_wakes_no_drain_round() {
    if flash::config::database_url().starts_with("postgres") {
        // PostgreSQL only: elsewhere the drain polls.
    } else {
        eprintln!("skipped: notifications are PostgreSQL's");
        return;
    }
    // Notifications on, a long gather (so that the write has registered its
    // transaction long before the round would start) and a poll far away.
    // (The other test of this file writes in its own schema at the same
    // time: its notifications must not wake this drain.)
    let settings = DrainSettings {
        listen_poll_interval: Duration::from_secs(3600),
        gather: Duration::from_millis(200),
        // A write applies its own invalidation here: it must not announce
        // its record however slow the test machine (see the next test).
        announce_after: Duration::from_secs(1),
        ..DrainSettings::default()
    };
    let (ns, db, fdb, _hooked) = setup(settings).await;
    fdb.insert(event_row(1, "wake", "first"))
        .await
        .expect("insert");
    fdb.apply_captured().await.expect("drain");
    // Give the listener time to be connected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let am = event::ActiveModel {
        id: Set(1),
        title: Set("second".into()),
        ..Default::default()
    };
    fdb.update(am).await.expect("update");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        changes(&db).await,
        1,
        "a round ran for the write's own record"
    );

    // A foreign write wakes a round, which takes both records.
    let other = flash::config::connect_namespace(&flash::config::database_url(), &ns, false, 1)
        .await
        .expect("another connection");
    other
        .execute_unprepared("UPDATE event SET title = 'foreign' WHERE id = 1")
        .await
        .expect("foreign update");
    let since = std::time::Instant::now();
    while changes(&db).await > 0 {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the foreign write's notification woke no round"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (row, o) = fdb
        .cache::<event::Entity>()
        .get_with_outcome(by(event::Column::Slug, "wake"))
        .await
        .expect("lookup");
    assert_eq!(row.expect("the event").title, "foreign", "{o:?}");
    assert_ne!(o, Outcome::Hit, "served the replaced entry");
    let _ = other.close().await;
    let _ = flash::config::drop_namespace(&flash::config::database_url(), &ns).await;
}

/// PostgreSQL's notifications on the capture channel, from a connection to
/// the namespace `ns` (the payload names the schema).
async fn listen(ns: &str) -> sea_orm::sqlx::postgres::PgListener {
    let db = flash::config::connect_namespace(&flash::config::database_url(), ns, false, 1)
        .await
        .expect("a connection");
    let mut l =
        sea_orm::sqlx::postgres::PgListener::connect_with(db.get_postgres_connection_pool())
            .await
            .expect("listener");
    l.listen(flash_sea_orm::capture::NOTIFY_CHANNEL)
        .await
        .expect("LISTEN");
    l
}

/// The next notification for a table of the namespace `ns` within
/// `within`, if any (other tests write in their own at the same time).
async fn notified(
    l: &mut sea_orm::sqlx::postgres::PgListener,
    ns: &str,
    within: Duration,
) -> Option<String> {
    let until = tokio::time::Instant::now() + within;
    loop {
        let n = tokio::time::timeout_at(until, l.recv()).await.ok()?;
        let payload = n.expect("notification").payload().to_owned();
        if payload.contains(&format!(" {ns}.")) {
            return Some(payload);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_through_flash_records_itself_and_announces_only_when_its_invalidation_fails() {
    if !flash::config::database_url().starts_with("postgres") {
        eprintln!("skipped: the write's own record is PostgreSQL's");
        return;
    }
    let quiet = DrainSettings {
        // However slow the test machine: the refused write below announces
        // because it failed, not because it lagged.
        announce_after: Duration::from_secs(1),
        ..quiet()
    };
    let (ns, db, fdb, _hooked, refuse) = setup_refusing(quiet).await;
    fdb.insert(event_row(1, "own", "first"))
        .await
        .expect("insert");
    fdb.apply_captured().await.expect("drain");
    let mut l = listen(&ns).await;
    assert_eq!(title_of(&fdb, "own").await, "first");

    // A title update: one record (its own, not also the trigger's), no
    // notification, and the write's invalidation applied before it returned.
    let title = |t: &str| event::ActiveModel {
        id: Set(1),
        title: Set(t.to_owned()),
        ..Default::default()
    };
    fdb.update(title("second")).await.expect("update");
    assert_eq!(changes(&db).await, 1, "one record of the update");
    assert_eq!(title_of(&fdb, "own").await, "second");
    assert_eq!(
        notified(&mut l, &ns, Duration::from_millis(300)).await,
        None,
        "an update applied by its writer announced its record"
    );
    assert_eq!(fdb.apply_captured().await.expect("drain"), 1);

    // A key change: the same, and its record holds the old key too.
    fdb.update(event::ActiveModel {
        id: Set(1),
        slug: Set("own-2".into()),
        ..Default::default()
    })
    .await
    .expect("slug update");
    assert_eq!(changes(&db).await, 1, "one record of the key change");
    let old_keys: Option<String> = db
        .query_one(sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            format!("SELECT old_keys::text AS o FROM {CHANGES_TABLE}"),
        ))
        .await
        .expect("read the record")
        .expect("a record")
        .try_get("", "o")
        .expect("old_keys");
    assert!(
        old_keys.is_some_and(|o| o.contains("\"own\"")),
        "the record lacks the old slug"
    );
    assert_eq!(
        notified(&mut l, &ns, Duration::from_millis(300)).await,
        None,
        "a key change applied by its writer announced its record"
    );
    assert_eq!(fdb.apply_captured().await.expect("drain"), 1);
    let gone = fdb
        .cache::<event::Entity>()
        .get_or_none(by(event::Column::Slug, "own"))
        .await
        .expect("lookup");
    assert!(gone.is_none(), "the old slug still serves the row");
    assert_eq!(title_of(&fdb, "own-2").await, "second");

    // The cache refuses the write's markers: the other processes' drains
    // are woken, so that one that reaches the cache applies the record.
    refuse.store(true, SeqCst);
    fdb.update(title("third")).await.expect("update");
    let got = notified(&mut l, &ns, Duration::from_secs(2)).await;
    refuse.store(false, SeqCst);
    assert!(
        got.is_some(),
        "a record its writer could not apply was not announced"
    );
    assert_eq!(changes(&db).await, 1, "one record of the update");
    fdb.apply_captured().await.expect("drain");
    assert_eq!(title_of(&fdb, "own-2").await, "third");
    let _ = flash::config::drop_namespace(&flash::config::database_url(), &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_nested_in_an_update_through_flash_is_captured() {
    if !flash::config::database_url().starts_with("postgres") {
        eprintln!("skipped: the write's own record is PostgreSQL's");
        return;
    }
    let quiet = quiet();
    let (ns, db, fdb, _hooked) = setup(quiet).await;
    fdb.insert(event_row(1, "outer", "first"))
        .await
        .expect("insert");
    fdb.insert(event_row(2, "inner", "first"))
        .await
        .expect("insert");
    fdb.apply_captured().await.expect("drain");
    // An application's trigger: retitling event 1 to "cascade" retitles
    // event 2 in the same statement (at trigger depth 1), where the own
    // record's mark is still set.
    db.execute_unprepared(
        "CREATE FUNCTION touch_other() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN UPDATE event SET title = 'touched' WHERE id = 2; RETURN NULL; END $$; \
         CREATE TRIGGER touch_other AFTER UPDATE ON event FOR EACH ROW \
         WHEN (NEW.title = 'cascade') EXECUTE FUNCTION touch_other()",
    )
    .await
    .expect("the application's trigger");
    assert_eq!(title_of(&fdb, "inner").await, "first");
    assert_eq!(title_of(&fdb, "inner").await, "first");
    fdb.update(event::ActiveModel {
        id: Set(1),
        title: Set("cascade".into()),
        ..Default::default()
    })
    .await
    .expect("update");
    assert_eq!(changes(&db).await, 2, "the nested update was not captured");
    fdb.apply_captured().await.expect("drain");
    assert_eq!(title_of(&fdb, "inner").await, "touched");
    assert_eq!(title_of(&fdb, "outer").await, "cascade");
    let _ = flash::config::drop_namespace(&flash::config::database_url(), &ns).await;
}
