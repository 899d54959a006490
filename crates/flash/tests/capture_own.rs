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

use common::unique;
use flash_core::{Backend, Outcome};
use flash_sea_orm::capture::{DrainSettings, CHANGES_TABLE};
use flash_sea_orm::{by, Changes, FlashDb, Registrar};
use flash_test_kit::entities::event;
use flash_test_kit::{declare, Hooked, Op};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, Set,
};
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
    let hooked = Arc::new(Hooked::new(cache));
    let b: Arc<dyn Backend> = hooked.clone();
    let prefix = unique("own");
    let mut reg = Registrar::new(db.clone())
        .configure(move |c| c.backend_arc(b).prefix(prefix))
        .outbox(false)
        .drain_settings(settings);
    declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert!(fdb.has_capture());
    (ns, db, fdb, hooked)
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
    // The drain runs only when asked, so that what each call applies is known.
    let quiet = DrainSettings {
        poll_interval: Duration::from_secs(3600),
        listen_poll_interval: Duration::from_secs(3600),
        listen: false,
        ..DrainSettings::default()
    };
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
