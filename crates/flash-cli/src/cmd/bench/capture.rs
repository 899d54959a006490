//! Scenario 9, capture of every write: (i) the invalidation lag of a foreign
//! write (a raw `UPDATE` through the plain connection, not through flash),
//! from its return to the first lookup through flash that sees it, polled in
//! a tight loop; (ii) what the capture triggers cost a raw single-row update
//! and a raw 1 000-row update, against the same statements on the table
//! without triggers (they are removed and installed again around each
//! round) and, on PostgreSQL, against the floor of any statement-level
//! capture (a trigger with transition tables that does nothing); (iii) the
//! same with a drain applying the records on the same machine.

use super::setup::flash_db;
use super::stats::{fmt_dur, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_sea_orm::{by, capture, FlashDb, Registrar};
use flash_test_kit::declare;
use flash_test_kit::entities::event;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, TransactionTrait};
use std::time::{Duration, Instant};

/// The capture DDL of the demo declarations on `db` (the changes table and
/// every table's triggers), as `Registrar::build` installs it. The bench
/// installs it itself (`install_capture(false)` on its handles): removing
/// and installing the triggers around measurements, and one concurrent
/// `capture::install` on SQLite failed with "trigger ... already exists".
pub fn ddl(db: &DatabaseConnection) -> BenchResult<Vec<String>> {
    let mut reg = Registrar::new(db.clone());
    declare(&mut reg, Duration::from_secs(60))?;
    Ok(reg.capture_ddl()?)
}

/// Runs `ddl` in one transaction, so on one connection of the pool (on
/// SQLite, statements spread over pooled connections once found a trigger
/// that the previous statement had just dropped).
pub async fn install(db: &DatabaseConnection, ddl: &[String]) -> BenchResult<()> {
    let txn = db.begin().await?;
    take_write_lock(&txn).await?;
    for s in ddl {
        txn.execute_unprepared(s).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// How many writes reach every connection of `db`'s pool: the pool hands
/// out its idle connections in turn, so one more than it holds. Trigger DDL
/// invalidates every session's cached plans, and each session compiles a
/// trigger function on its first call: a bench warms every connection after
/// installing (as a service's sessions are warm long after its install), or
/// its first writes on each connection would be counted.
pub fn connections_to_warm(db: &DatabaseConnection) -> usize {
    let open = match db.get_database_backend() {
        DatabaseBackend::Postgres => db.get_postgres_connection_pool().size(),
        DatabaseBackend::MySql => db.get_mysql_connection_pool().size(),
        DatabaseBackend::Sqlite => db.get_sqlite_connection_pool().size(),
    };
    open as usize + 1
}

/// SQLite: writes first, so that the transaction waits for the write lock
/// (a transaction that read the schema first, as `CREATE TABLE IF NOT
/// EXISTS` does, fails at once with "database is locked" when the drain
/// committed meanwhile). Elsewhere nothing.
async fn take_write_lock(txn: &sea_orm::DatabaseTransaction) -> BenchResult<()> {
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        txn.execute_unprepared("UPDATE event SET id = id WHERE 0")
            .await?;
    }
    Ok(())
}

/// Removes every capture trigger of the database (the changes table and,
/// on PostgreSQL, the trigger functions stay).
pub async fn remove(db: &DatabaseConnection) -> BenchResult<()> {
    let pg = db.get_database_backend() == DatabaseBackend::Postgres;
    // Listed first, outside the transaction: a SQLite transaction that reads
    // before it writes cannot wait for the write lock (it fails at once).
    let installed = capture::installed(db).await?;
    let txn = db.begin().await?;
    take_write_lock(&txn).await?;
    for t in installed {
        let on = if pg {
            format!(" ON \"{}\"", t.table)
        } else {
            String::new()
        };
        txn.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {}{on}", t.name))
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Drops a handle with capture and waits until its drain task has ended: it
/// holds the drain for up to one poll interval after the last handle went,
/// and a drain still running would take the next handle's captured rows
/// (each row of the changes table reaches one drain, so one cache).
pub async fn retire(fdb: FlashDb, db: &DatabaseConnection) {
    drop(fdb);
    let s = capture::DrainSettings::default();
    let every = match db.get_database_backend() {
        DatabaseBackend::Postgres => s.listen_poll_interval,
        _ => s.poll_interval,
    };
    tokio::time::sleep(every + Duration::from_millis(30)).await;
}

/// One foreign write of `id`'s title and the time until flash serves it.
async fn one_lag(
    fdb: &FlashDb,
    db: &DatabaseConnection,
    id: i32,
    n: usize,
) -> BenchResult<Duration> {
    let events = fdb.cache::<event::Entity>();
    // Cached before the write: the second lookup is a hit.
    events.get_or_none(by(event::Column::Id, id)).await?;
    events.get_or_none(by(event::Column::Id, id)).await?;
    let title = format!("Foreign {n}");
    db.execute_unprepared(&format!(
        "UPDATE event SET title = '{title}' WHERE id = {id}"
    ))
    .await?;
    let t0 = Instant::now();
    loop {
        let seen = events.get_or_none(by(event::Column::Id, id)).await?;
        if seen.is_some_and(|e| e.title == title) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(format!("foreign write of event {id} not seen within 5 s").into());
        }
        tokio::task::yield_now().await;
    }
}

/// The floors capture is measured against, installed on `event` in place of
/// the capture triggers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Floor {
    /// The least any capture of the statement can cost. PostgreSQL: a
    /// statement-level `AFTER UPDATE` trigger with both transition tables
    /// whose function does nothing. SQLite (row triggers only): a row-level
    /// trigger inserting a constant row into a scratch table, one row per
    /// updated row as capture records, with nothing computed.
    Mechanism,
    /// The least that records the keys durably: the captured columns of
    /// the new rows (id, slug, city) as they come, without JSON, into typed
    /// columns of a scratch table. PostgreSQL: the same statement trigger
    /// inserting one `array_agg` per column into array columns. SQLite: a
    /// row trigger inserting the row's three values and the time
    /// (`julianday('now')`, as capture's records carry).
    Recording,
}

impl Floor {
    /// The floors measured on `backend`, in column order.
    fn of(backend: sea_orm::DatabaseBackend) -> &'static [Floor] {
        match backend {
            sea_orm::DatabaseBackend::Postgres => &[Floor::Mechanism, Floor::Recording],
            sea_orm::DatabaseBackend::Sqlite => &[Floor::Mechanism, Floor::Recording],
            _ => &[],
        }
    }

    async fn install(self, db: &DatabaseConnection) -> BenchResult<()> {
        let sql = match (db.get_database_backend(), self) {
            (sea_orm::DatabaseBackend::Postgres, Floor::Mechanism) => {
                "CREATE OR REPLACE FUNCTION flash_bench_floor() RETURNS trigger LANGUAGE plpgsql AS \
                 $f$ BEGIN RETURN NULL; END $f$; \
                 CREATE TRIGGER flash_bench_floor AFTER UPDATE ON event \
                 REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT \
                 EXECUTE FUNCTION flash_bench_floor()"
            }
            (sea_orm::DatabaseBackend::Postgres, Floor::Recording) => {
                "CREATE TABLE IF NOT EXISTS flash_bench_floor_sink \
                 (id BIGSERIAL PRIMARY KEY, ids INT[], slugs TEXT[], cities TEXT[]); \
                 CREATE OR REPLACE FUNCTION flash_bench_floor() RETURNS trigger LANGUAGE plpgsql AS \
                 $f$ BEGIN INSERT INTO flash_bench_floor_sink (ids, slugs, cities) \
                 SELECT array_agg(n.id), array_agg(n.slug), array_agg(n.city) FROM n; \
                 RETURN NULL; END $f$; \
                 CREATE TRIGGER flash_bench_floor AFTER UPDATE ON event \
                 REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT \
                 EXECUTE FUNCTION flash_bench_floor()"
            }
            (sea_orm::DatabaseBackend::Sqlite, Floor::Recording) => {
                "CREATE TABLE IF NOT EXISTS flash_bench_floor_sink (id INTEGER PRIMARY KEY, \
                 t TEXT, row_id INTEGER, slug TEXT, city TEXT, at REAL); \
                 CREATE TRIGGER flash_bench_floor AFTER UPDATE ON event FOR EACH ROW BEGIN \
                 INSERT INTO flash_bench_floor_sink (t, row_id, slug, city, at) \
                 VALUES ('event', NEW.id, NEW.slug, NEW.city, julianday('now')); END"
            }
            (sea_orm::DatabaseBackend::Sqlite, Floor::Mechanism) => {
                "CREATE TABLE IF NOT EXISTS flash_bench_floor_sink (id INTEGER PRIMARY KEY, t TEXT); \
                 CREATE TRIGGER flash_bench_floor AFTER UPDATE ON event FOR EACH ROW BEGIN \
                 INSERT INTO flash_bench_floor_sink (t) VALUES ('event'); END"
            }
            _ => return Ok(()),
        };
        db.execute_unprepared(sql).await?;
        Ok(())
    }

    /// Removes whichever floor is installed.
    async fn remove(db: &DatabaseConnection) -> BenchResult<()> {
        let sql = match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "DROP TRIGGER IF EXISTS flash_bench_floor ON event; \
                 DROP TABLE IF EXISTS flash_bench_floor_sink"
            }
            sea_orm::DatabaseBackend::Sqlite => {
                "DROP TRIGGER IF EXISTS flash_bench_floor; DROP TABLE IF EXISTS flash_bench_floor_sink"
            }
            _ => return Ok(()),
        };
        db.execute_unprepared(sql).await?;
        Ok(())
    }
}

/// One round's statements: `plan.capture_single` single-row updates into
/// `out[0]`, `plan.capture_bulk` 1 000-row ones into `out[1]`.
async fn writes(
    db: &DatabaseConnection,
    plan: &super::Plan,
    single_ids: &[i32],
    bulk_lo: i32,
    round: usize,
    serial: &mut usize,
    out: &mut [Samples; 2],
) -> BenchResult<()> {
    time_loop!(0, plan.capture_single, out[0], |i| {
        *serial += 1;
        let id = single_ids[(round * plan.capture_single + i) % single_ids.len()];
        db.execute_unprepared(&format!(
            "UPDATE event SET title = 'Captured {serial}' WHERE id = {id}"
        ))
        .await?
    });
    time_loop!(0, plan.capture_bulk, out[1], |_i| {
        *serial += 1;
        db.execute_unprepared(&format!(
            "UPDATE event SET title = 'Bulk {serial}' WHERE id BETWEEN {bulk_lo} AND {}",
            bulk_lo + 999
        ))
        .await?
    });
    Ok(())
}

/// Untimed: the statements of [`writes`] once on every connection of the
/// pool (see [`connections_to_warm`]).
async fn warm(db: &DatabaseConnection, single_id: i32, bulk_lo: i32) -> BenchResult<()> {
    for _ in 0..connections_to_warm(db) {
        db.execute_unprepared(&format!(
            "UPDATE event SET title = 'Warm' WHERE id = {single_id}"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "UPDATE event SET title = 'Warm' WHERE id BETWEEN {bulk_lo} AND {}",
            bulk_lo + 999
        ))
        .await?;
    }
    Ok(())
}

pub async fn capture(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let mut lag_sec = Section::new(
        "9a. Invalidation lag of a foreign write",
        &format!(
            "{} raw `UPDATE event SET title = ... WHERE id = ...` through the plain connection per \
             target (capture on, one handle per database); the lag runs from the statement's return \
             to the first lookup through flash (polled in a tight loop) that returns the new title. \
             PostgreSQL: the drain wakes on the triggers' notification; SQLite: it polls every 20 ms.",
            plan.lag_samples
        ),
        &["database", "cache", "p50", "p99", "max"],
    );
    let mut cost_sec = Section::new(
        "9b. Write cost of capture (raw SQL, through the plain connection)",
        &format!(
            "Median per statement, {} rounds alternating without triggers / the floor of any \
             capture (PostgreSQL: a statement trigger with transition tables that does nothing; \
             SQLite, which has row triggers only: a row trigger that inserts a constant row per \
             updated row) / the floor of recording the keys durably, the new rows' id, slug and \
             city without JSON (PostgreSQL: the same statement trigger inserting one `array_agg` \
             per column into typed array columns; SQLite: the row trigger inserting the row's \
             three values and `julianday('now')` into typed columns) / the capture triggers, with no drain running; then the same \
             rounds without triggers / with the capture triggers while one drain (in-process cache) \
             applies the records on the same machine. Single row: `UPDATE event SET title = ... \
             WHERE id = ...` ({} per round); 1 000 rows: `UPDATE event SET title = ... WHERE id \
             BETWEEN a AND a + 999` ({} per round).",
            plan.capture_rounds, plan.capture_single, plan.capture_bulk
        ),
        &[
            "database",
            "statement",
            "without capture",
            "floor (PostgreSQL: transition tables only; SQLite: a row trigger inserting a constant)",
            "ratio",
            "floor with the keys recorded (no JSON, typed columns)",
            "ratio",
            "with capture",
            "ratio",
            "without capture, drain running",
            "with capture, drain running",
            "ratio",
        ],
    );
    let lag_ids: Vec<i32> = (plan.events - 299..plan.events - 99).collect();
    let bulk_lo = plan.hot + 1;
    let single_ids: Vec<i32> = (plan.events - 99..=plan.events).collect();
    let mut serial = 0usize;
    for (di, d) in env.dbs.iter().enumerate() {
        let db = &d.db;
        let ddl = ddl(db)?;
        // (i) one pair at a time: a single drain on the database.
        install(db, &ddl).await?;
        for p in env.pairs.iter().filter(|p| p.db == di) {
            let c = &env.caches[p.cache];
            let fdb = flash_db(
                db,
                c.flash_backend.clone(),
                format!("{}cap:", p.prefix),
                false,
                true,
            )
            .await?;
            // Warm-up, unmeasured: the drain's LISTEN connection comes up
            // in the background after the build.
            for &id in &lag_ids[..3] {
                serial += 1;
                one_lag(&fdb, db, id, serial).await?;
            }
            let mut s = Samples::default();
            for k in 0..plan.lag_samples {
                serial += 1;
                let id = lag_ids[k % lag_ids.len()];
                s.push(
                    one_lag(&fdb, db, id, serial)
                        .await
                        .map_err(|e| format!("lag on {} + {}: {e}", d.name, c.name))?,
                );
            }
            retire(fdb, db).await;
            lag_sec.row(vec![
                d.name.into(),
                c.name.into(),
                fmt_dur(s.median()),
                fmt_dur(s.p99()),
                fmt_dur(s.quantile_pub(1.0)),
            ]);
            if d.name == "PostgreSQL" {
                report.check(
                    "foreign write seen through flash, p99 ≤ 10 ms",
                    &format!("{} + {}", c.name, d.name),
                    format!("p50 {}, p99 {}", fmt_dur(s.median()), fmt_dur(s.p99())),
                    Verdict::of(s.p99() <= Duration::from_millis(10)),
                );
            }
        }
        // (ii) The statements alone, rounds alternating: no triggers; the
        // floors (see `Floor`); the capture triggers with no drain running.
        let floors = Floor::of(db.get_database_backend());
        let variants = floors.len() + 2;
        let mut alone = vec![[Samples::default(), Samples::default()]; variants];
        for round in 0..=plan.capture_rounds {
            for (v, out) in alone.iter_mut().enumerate() {
                remove(db).await?;
                Floor::remove(db).await?;
                if v == variants - 1 {
                    install(db, &ddl).await?;
                } else if v > 0 {
                    floors[v - 1].install(db).await?;
                }
                warm(db, single_ids[0], bulk_lo).await?;
                let mut scratch = [Samples::default(), Samples::default()];
                let out = if round == 0 { &mut scratch } else { out };
                writes(db, plan, &single_ids, bulk_lo, round, &mut serial, out).await?;
            }
        }
        Floor::remove(db).await?;
        db.execute_unprepared(&format!("DELETE FROM {}", capture::CHANGES_TABLE))
            .await?;
        // (iii) The same with one drain (in-process cache) applying the
        // records, on the same 2 cores: its rounds slow the next statements.
        let fdb = flash_db(
            db,
            env.caches[0].flash_backend.clone(),
            format!("{}cap{di}:", env.prefix),
            false,
            true,
        )
        .await?;
        let mut drained = vec![[Samples::default(), Samples::default()]; 2];
        for round in 0..=plan.capture_rounds {
            for (v, out) in drained.iter_mut().enumerate() {
                if v == 1 {
                    install(db, &ddl).await?;
                } else {
                    remove(db).await?;
                }
                warm(db, single_ids[0], bulk_lo).await?;
                let mut scratch = [Samples::default(), Samples::default()];
                let out = if round == 0 { &mut scratch } else { out };
                writes(db, plan, &single_ids, bulk_lo, round, &mut serial, out).await?;
            }
        }
        retire(fdb, db).await;
        remove(db).await?;
        for (k, (what, goal, bound)) in [
            (
                "title update, 1 row",
                "captured raw update of 1 row ≤ 1.5 × without capture",
                1.5,
            ),
            (
                "title update, 1 000 rows",
                "captured raw update of 1 000 rows ≤ 1.2 × without capture",
                1.2,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let (off, on) = (&alone[0][k], &alone[variants - 1][k]);
            let r = ratio(on, off);
            let mut floor_cells = Vec::new();
            let mut floor_note = Vec::new();
            for f in 0..2 {
                match alone.get(f + 1).filter(|_| f < floors.len()) {
                    Some(x) => {
                        let x = &x[k];
                        floor_cells.extend([fmt_dur(x.median()), fmt_ratio(ratio(x, off))]);
                        floor_note.push(fmt_ratio(ratio(x, off)));
                    }
                    None => floor_cells.extend(["—".into(), "—".into()]),
                }
            }
            let (doff, don) = (&drained[0][k], &drained[1][k]);
            let mut row = vec![d.name.into(), what.into(), fmt_dur(off.median())];
            row.extend(floor_cells);
            row.extend([
                fmt_dur(on.median()),
                fmt_ratio(r),
                fmt_dur(doff.median()),
                fmt_dur(don.median()),
                fmt_ratio(ratio(don, doff)),
            ]);
            cost_sec.row(row);
            report.check(
                goal,
                d.name,
                format!(
                    "{} vs {} = {} (floors, the trigger mechanism / recording the keys: {})",
                    fmt_dur(on.median()),
                    fmt_dur(off.median()),
                    fmt_ratio(r),
                    floor_note.join(" / ")
                ),
                Verdict::of(r <= bound),
            );
        }
    }
    for name in env.skipped_dbs.iter().chain(&env.skipped_caches) {
        lag_sec.skipped(&[name], "unreachable");
    }
    report.sections.push(lag_sec);
    report.sections.push(cost_sec);
    Ok(())
}
