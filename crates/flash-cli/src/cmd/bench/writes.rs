//! Scenario 7, writes: an update through flash (which invalidates) against
//! the plain SeaORM update on the table without capture triggers, of a
//! non-key field (title) and of a key field (slug): through a handle without
//! capture, and through one with capture (the default; the outbox is then
//! off, the changes table being the durable record), measured while the
//! triggers are installed.

use super::capture::{connections_to_warm, ddl, install, remove, retire};
use super::setup::flash_db;
use super::stats::{fmt_dur, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_sea_orm::capture;
use flash_test_kit::entities::event;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, Iterable,
    QueryTrait, Set,
};

fn title(id: i32, i: usize) -> event::ActiveModel {
    event::ActiveModel {
        id: Set(id),
        title: Set(format!("Retitled {i}")),
        ..Default::default()
    }
}

fn slug(id: i32, i: usize) -> event::ActiveModel {
    // Unique: the slug column is.
    event::ActiveModel {
        id: Set(id),
        slug: Set(format!("event-{id:06}-{i}")),
        ..Default::default()
    }
}

const VARIANTS: [&str; 9] = [
    "plain title update",
    "flash title update (no capture)",
    "flash title update (capture)",
    "plain slug update",
    "flash slug update (no capture)",
    "flash slug update (capture)",
    "flash title update (outbox, no capture)",
    "plain title update, triggers skipping it (PostgreSQL)",
    "plain title update, then the raw client's write of two markers",
];

/// The variants measured with the capture triggers installed.
fn captured(v: usize) -> bool {
    v == 2 || v == 5 || v == 7
}

/// The first variant a round measures without (`false`) or with the
/// triggers: the one right after the DDL.
fn order_first(with_triggers: bool) -> usize {
    (0..VARIANTS.len())
        .find(|v| captured(*v) == with_triggers)
        .unwrap_or(0)
}

/// The handles a variant writes through.
struct Writers<'a> {
    db: &'a sea_orm::DatabaseConnection,
    off: &'a flash_sea_orm::FlashDb,
    on: &'a flash_sea_orm::FlashDb,
    outbox: &'a flash_sea_orm::FlashDb,
    /// The raw cache client, for the floor of a write through flash without
    /// capture: the plain update, then one write of the row's two markers
    /// (an event has two keys: by id, by slug).
    raw: &'a dyn flash_core::Backend,
}

/// One write of variant `v` (of [`VARIANTS`]).
async fn one(v: usize, id: i32, serial: usize, w: &Writers<'_>) -> BenchResult<()> {
    let (db, off, on, outbox) = (w.db, w.off, w.on, w.outbox);
    match v {
        0 => title(id, serial).update(db).await.map(drop)?,
        1 => off.update(title(id, serial)).await.map(drop)?,
        2 => on.update(title(id, serial)).await.map(drop)?,
        3 => slug(id, serial).update(db).await.map(drop)?,
        4 => off.update(slug(id, serial)).await.map(drop)?,
        5 => on.update(slug(id, serial)).await.map(drop)?,
        6 => outbox.update(title(id, serial)).await.map(drop)?,
        8 => {
            title(id, serial).update(db).await?;
            let marker = vec![0u8; 24];
            let items = [
                (format!("bench:floor:event:id:{id}"), marker.clone()),
                (format!("bench:floor:event:slug:event-{id:06}"), marker),
            ];
            w.raw
                .set_many(&items, std::time::Duration::from_secs(60))
                .await?;
        }
        // The floor of a write through flash with capture: the plain update
        // (as SeaORM runs it, returning the row) carrying the mark that
        // makes the triggers skip it, as flash's own update does. What it
        // costs over the plain update on the table without triggers is what
        // the triggers cost a statement they do nothing for.
        _ => {
            let backend = db.get_database_backend();
            if backend != sea_orm::DatabaseBackend::Postgres {
                return Ok(());
            }
            let mut q = event::Entity::update(title(id, serial)).into_query();
            q.and_where(Expr::cust(capture::own_marker("event")));
            q.returning(
                Query::returning().exprs(
                    event::Column::iter().map(|c| c.select_as(c.into_returning_expr(backend))),
                ),
            );
            let row = db
                .query_one(backend.build(&q))
                .await?
                .ok_or("the event was not updated")?;
            event::Model::from_query_result(&row, "")?;
        }
    }
    Ok(())
}

pub async fn writes(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    // The last 100 rows: outside the hot set the lookups use.
    let ids: Vec<i32> = (plan.events - 99..=plan.events).collect();
    let per = plan.write_per_round;
    let mut sec = Section::new(
        "7. Writes (update one row by primary key)",
        &format!(
            "{} updates per variant, interleaved. plain: SeaORM `ActiveModel::update` on the table \
             without triggers; flash: `fdb.update(am)`, which also writes the stale markers of the \
             row's keys (2 keys for an event: by id, by slug). A slug change is a key change: flash \
             reads the old row under a lock in a transaction to invalidate the old slug too. \
             no capture: `Registrar::capture(false)`, no outbox, no triggers. capture (the default): \
             the triggers record the row's keys in the changes table in the same transaction, and \
             the update applies them before it returns; the outbox is off. outbox: no capture, the \
             durable outbox on (the default on PostgreSQL and MySQL before capture existed: the \
             write inserts its outbox row in its transaction). floor (PostgreSQL): the plain \
             update carrying the mark of flash's own update, on the table with the triggers, \
             which skip it as they skip flash's own update (that update records its change \
             itself): its ratio to the plain update is what the triggers cost a statement they \
             do nothing for. floor of a write through flash without capture: the plain update, \
             then the raw cache client's write of two markers (an event's two keys) in one \
             request, as flash writes them before the update returns.",
            plan.write_rounds * per
        ),
        &[
            "database", "cache", "plain title", "floor: plain title, then the markers' write (raw client)", "ratio", "flash title, no capture", "ratio", "flash title, outbox",
            "ratio", "flash title, capture", "ratio", "plain slug", "flash slug, no capture", "ratio",
            "flash slug, capture", "ratio", "floor: plain title, triggers skipping", "ratio",
        ],
    );
    let mut serial = 0usize;
    for p in &env.pairs {
        let db = &env.dbs[p.db].db;
        let ddl = ddl(db)?;
        let on = flash_db(
            db,
            env.caches[p.cache].flash_backend.clone(),
            p.prefix.clone(),
            false,
            true,
        )
        .await?;
        let off = &p.fdb;
        let outbox = flash_db(
            db,
            env.caches[p.cache].flash_backend.clone(),
            p.prefix.clone(),
            true,
            false,
        )
        .await?;
        let writers = Writers {
            db,
            off,
            on: &on,
            outbox: &outbox,
            raw: env.caches[p.cache].raw.as_ref(),
        };
        // The variants of VARIANTS, in its order.
        let mut s = vec![Samples::default(); VARIANTS.len()];
        for round in 0..=plan.write_rounds {
            let mut scratch = Samples::default();
            // Without triggers first, then with them.
            let n = VARIANTS.len();
            let mut order: Vec<usize> = (0..n).filter(|v| !captured(*v)).collect();
            order.extend((0..n).filter(|v| captured(*v)));
            remove(db).await?;
            for v in order {
                if v == 2 {
                    install(db, &ddl).await?;
                }
                // Untimed, after each DDL (see `connections_to_warm`): this
                // variant's first write on every pooled session.
                if v == order_first(captured(v)) {
                    for i in 0..connections_to_warm(db) {
                        for w in (0..n).filter(|w| captured(*w) == captured(v)) {
                            serial += 1;
                            let id = ids[i % ids.len()];
                            one(w, id, serial, &writers).await?;
                        }
                    }
                }
                let out = if round == 0 { &mut scratch } else { &mut s[v] };
                time_loop!(0, per, out, |i| {
                    serial += 1;
                    let id = ids[(round * per + i) % ids.len()];
                    one(v, id, serial, &writers)
                        .await
                        .map_err(|e| format!("{} on {}: {e}", VARIANTS[v], env.dbs[p.db].name))?
                });
            }
        }
        let (dbn, cn) = (env.dbs[p.db].name, env.caches[p.cache].name);
        let pg = env.dbs[p.db].db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        let cell = |x: &Samples| fmt_dur(x.median());
        sec.row(vec![
            dbn.into(),
            cn.into(),
            cell(&s[0]),
            cell(&s[8]),
            fmt_ratio(ratio(&s[8], &s[0])),
            cell(&s[1]),
            fmt_ratio(ratio(&s[1], &s[0])),
            cell(&s[6]),
            fmt_ratio(ratio(&s[6], &s[0])),
            cell(&s[2]),
            fmt_ratio(ratio(&s[2], &s[0])),
            cell(&s[3]),
            cell(&s[4]),
            fmt_ratio(ratio(&s[4], &s[3])),
            cell(&s[5]),
            fmt_ratio(ratio(&s[5], &s[3])),
            // PostgreSQL only: flash's own update records itself there.
            match pg {
                true => cell(&s[7]),
                false => "—".into(),
            },
            match pg {
                true => fmt_ratio(ratio(&s[7], &s[0])),
                false => "—".into(),
            },
        ]);
        let target = format!("{cn} + {dbn}");
        let r = ratio(&s[1], &s[0]);
        report.check(
            "update (title) through flash, no capture ≤ 1.3 × plain update",
            &target,
            format!(
                "{} vs {} = {} (floor: the plain update, then the raw client's write of its \
                 two markers: {})",
                cell(&s[1]),
                cell(&s[0]),
                fmt_ratio(r),
                fmt_ratio(ratio(&s[8], &s[0]))
            ),
            Verdict::of(r <= 1.3),
        );
        let r = ratio(&s[2], &s[0]);
        report.check(
            "update (title) through flash with capture ≤ 1.6 × plain update",
            &target,
            format!("{} vs {} = {}", cell(&s[2]), cell(&s[0]), fmt_ratio(r)),
            Verdict::of(r <= 1.6),
        );
        // Capture replaced the outbox as the durable record of a write (the
        // default on PostgreSQL and MySQL before capture): a durable write
        // through flash must not have become slower. (SQLite had no outbox
        // by default; its "no capture" row is the one that must not slow.)
        let r = ratio(&s[2], &s[6]);
        if pg {
            // Floor: what the triggers cost a statement they skip, as they
            // skip flash's own update (which records its change itself).
            let floor = ratio(&s[7], &s[0]);
            report.check(
                "update (title) through flash with capture ≤ with the outbox (no capture)",
                &target,
                format!(
                    "{} vs {} = {} (floor: the triggers skipping a plain update cost it {})",
                    cell(&s[2]),
                    cell(&s[6]),
                    fmt_ratio(r),
                    fmt_ratio(floor)
                ),
                Verdict::of(r <= 1.0),
            );
        }
        // The drain's background task ends with its last handle.
        retire(on, db).await;
        drop(outbox);
        remove(db).await?;
    }
    for name in env.skipped_dbs.iter().chain(&env.skipped_caches) {
        sec.skipped(&[name], "unreachable");
        report.check(
            "update (title) through flash, no capture ≤ 1.3 × plain update",
            name,
            String::new(),
            Verdict::Skipped("unreachable".into()),
        );
    }
    report.sections.push(sec);
    Ok(())
}
