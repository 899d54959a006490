//! Scenario 10, a page: a participation with its event and its user
//! (`select_related`, two embedded relations), hit, against the same three
//! rows read by three flash lookups one after the other, a single-row hit,
//! and SeaORM's `find_also_related` twice (one query with two joins) on each
//! database. Interleaved rounds, as in `latency`. In process, also the
//! page's floors: the same three entries read straight from the store (one
//! read each, keys built beforehand) and decoded, with none of flash's read
//! path; and the same three reads without waiting, not decoded (the store's
//! share alone).

use super::floor::decode_row;
use super::stats::{fmt_dur, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_core::Backend;
use flash_sea_orm::{by, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::{declare_with_relations, Hooked, Op};
use sea_orm::EntityTrait;
use std::sync::Arc;
use std::time::Duration;

/// Participations read (ids 1..=PAGES; the seed has more than a thousand).
const PAGES: i32 = 500;

/// A handle with the relations chapter's declarations on a pair's database
/// and cache, under a prefix of its own (the pairs' handles do not declare
/// them: their reverse queries would change the write scenarios).
async fn page_handle(
    db: &sea_orm::DatabaseConnection,
    backend: Arc<dyn Backend>,
    prefix: String,
) -> BenchResult<FlashDb> {
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(backend).prefix(prefix))
        .capture(false)
        .install_capture(false)
        .outbox(false);
    declare_with_relations(&mut reg, Duration::from_secs(60))?;
    Ok(reg.build().await?)
}

/// The value in a store read's first entry (in process: no seal).
fn decode<T: serde::de::DeserializeOwned>(raw: Vec<Option<flash_core::Bytes>>) -> Option<T> {
    decode_row(&raw.into_iter().next()??, false)
}

/// The keys of page `id`'s three entries (participation, event, user).
fn page_keys(fdb: &FlashDb, p: &participation::Model) -> BenchResult<[String; 3]> {
    Ok([
        fdb.cache::<participation::Entity>()
            .cache_key(&by(participation::Column::Id, p.id))?,
        fdb.cache::<event::Entity>()
            .cache_key(&by(event::Column::Id, p.event_id))?,
        fdb.cache::<user::Entity>()
            .cache_key(&by(user::Column::Id, p.user_id))?,
    ])
}

/// One store read, the cheapest the store has (without waiting when it
/// can, as flash's lookups read it).
async fn read_one(
    backend: &dyn Backend,
    key: &String,
) -> BenchResult<Vec<Option<flash_core::Bytes>>> {
    match backend.get_now(key) {
        Some(v) => Ok(vec![v]),
        None => Ok(backend.get_many(std::slice::from_ref(key)).await?),
    }
}

/// Three store reads and three decodes, one after the other: the floor of an
/// in-process page.
async fn floor_page(backend: &dyn Backend, keys: &[String; 3]) -> BenchResult<()> {
    let [kp, ke, ku] = keys;
    let p: Option<participation::Model> = decode(read_one(backend, kp).await?).flatten();
    let e: Option<event::Model> = decode(read_one(backend, ke).await?).flatten();
    let u: Option<user::Model> = decode(read_one(backend, ku).await?).flatten();
    match (p, e, u) {
        (Some(_), Some(_), Some(_)) => Ok(()),
        _ => Err("floor: an entry is missing or not a value".into()),
    }
}

/// Three reads without waiting and no decode: the store's share of an
/// in-process page.
fn raw_page(backend: &dyn Backend, keys: &[String; 3]) -> BenchResult<()> {
    for k in keys {
        match backend.get_now(k) {
            Some(Some(_)) => {}
            _ => return Err("raw floor: an entry is missing or the store makes reads wait".into()),
        }
    }
    Ok(())
}

pub async fn page(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let per = plan.per_round;
    let pairs = env.primary_pairs();
    let mut handles = Vec::new();
    for p in &pairs {
        let counting = Arc::new(Hooked::new(env.caches[p.cache].flash_backend.clone()));
        // Round trips are counted through the wrapper with a server; the
        // in-process store is used as it is (the wrapper would hide that it
        // answers without waiting, and there is no round trip to count).
        let in_process = env.caches[p.cache].name == "in-process";
        let backend: Arc<dyn Backend> = match in_process {
            true => env.caches[p.cache].flash_backend.clone(),
            false => counting.clone(),
        };
        let fdb = page_handle(&env.dbs[p.db].db, backend, format!("{}page:", p.prefix)).await?;
        // Warm every key, twice (the second read finds the remembered
        // foreign keys).
        for _ in 0..2 {
            for id in 1..=PAGES {
                fdb.cache::<participation::Entity>()
                    .select_related::<event::Entity>()
                    .and::<user::Entity>()
                    .get(by(participation::Column::Id, id))
                    .await?;
            }
        }
        // The floor's keys, built before timing (in process only).
        let mut keys = Vec::new();
        if env.caches[p.cache].name == "in-process" {
            for id in 1..=PAGES {
                let row = fdb
                    .cache::<participation::Entity>()
                    .get(by(participation::Column::Id, id))
                    .await?;
                keys.push(page_keys(&fdb, &row)?);
            }
        }
        handles.push((fdb, counting, keys));
    }
    let mut db_s = vec![Samples::default(); env.dbs.len()];
    let mut page_s = vec![Samples::default(); pairs.len()];
    let mut three_s = vec![Samples::default(); pairs.len()];
    let mut one_s = vec![Samples::default(); pairs.len()];
    let mut floor_s = vec![Samples::default(); pairs.len()];
    let mut raw_s = vec![Samples::default(); pairs.len()];
    let mut trips = vec![(0u64, 0u64); pairs.len()];
    let id = |i: usize| 1 + (i as i32 % PAGES);
    for round in 0..=plan.rounds {
        let mut scratch = Samples::default();
        let start = round * per;
        for (d, s) in env.dbs.iter().zip(&mut db_s) {
            let out = if round == 0 { &mut scratch } else { s };
            time_loop!(start, per, out, |i| {
                participation::Entity::find_by_id(id(i))
                    .find_also_related(event::Entity)
                    .find_also_related(user::Entity)
                    .one(&d.db)
                    .await?
                    .ok_or("row missing")?
            });
        }
        for (k, (fdb, counting, keys)) in handles.iter().enumerate() {
            let parts = fdb.cache::<participation::Entity>();
            let page = parts
                .select_related::<event::Entity>()
                .and::<user::Entity>();
            let (events, users) = (fdb.cache::<event::Entity>(), fdb.cache::<user::Entity>());
            // The five variants in turn, starting one further each round:
            // the first loop after the database's queries runs slower in
            // process, and no variant should always be the one to pay.
            for step in 0..5 {
                let out = match (round, (step + round) % 5) {
                    (0, _) => &mut scratch,
                    (_, 0) => &mut page_s[k],
                    (_, 1) => &mut three_s[k],
                    (_, 2) => &mut one_s[k],
                    (_, 3) => &mut floor_s[k],
                    _ => &mut raw_s[k],
                };
                match (step + round) % 5 {
                    0 => {
                        let before = counting.calls(Op::GetMany);
                        time_loop!(start, per, out, |i| {
                            let (_, e, u) = page.get(by(participation::Column::Id, id(i))).await?;
                            if e.is_none() || u.is_none() {
                                return Err("page without its relations".into());
                            }
                        });
                        if round > 0 {
                            trips[k].0 += counting.calls(Op::GetMany) - before;
                            trips[k].1 += per as u64;
                        }
                    }
                    1 => time_loop!(start, per, out, |i| {
                        let p = parts.get(by(participation::Column::Id, id(i))).await?;
                        events.get(by(event::Column::Id, p.event_id)).await?;
                        users.get(by(user::Column::Id, p.user_id)).await?;
                    }),
                    2 => time_loop!(start, per, out, |i| {
                        parts.get(by(participation::Column::Id, id(i))).await?;
                    }),
                    3 if !keys.is_empty() => {
                        let backend = &*env.caches[pairs[k].cache].flash_backend;
                        time_loop!(start, per, out, |i| {
                            floor_page(backend, &keys[i % PAGES as usize]).await?;
                        });
                    }
                    4 if !keys.is_empty() => {
                        let backend = &*env.caches[pairs[k].cache].flash_backend;
                        time_loop!(start, per, out, |i| {
                            raw_page(backend, &keys[i % PAGES as usize])?;
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    let mut sec = Section::new(
        "10. A page: a row and two embedded relations (hit)",
        &format!(
            "Sequential, {} operations each over {PAGES} participations. *page* is \
             `fdb.cache::<Participation>().select_related::<Event>().and::<User>().get(by(Id, id))` \
             (each row under its own key; one `get_many` with a server, counted through a wrapper; \
             in process, on the store itself, the row then its \
             two related rows, each read without waiting); *three lookups* reads the participation, \
             then its event and its user by id, one after the other; *single row* is the \
             participation alone; the database reads the same page with SeaORM \
             `find_by_id(id).find_also_related(Event).find_also_related(User)` (one query, two joins). \
             *floor* (in process): the page's three entries read straight from the store, one \
             read each (without waiting, as flash reads it), and decoded (keys built beforehand): what any in-process page costs; \
             *raw floor*: the same three reads without waiting (`Backend::get_now`), not decoded: the store's share alone.",
            plan.rounds * per
        ),
        &["operation", "target", "median", "p99", "÷ single-row hit", "cache round trips per page"],
    );
    for (d, s) in env.dbs.iter().zip(&db_s) {
        sec.row(vec![
            "SeaORM `find_also_related` ×2 (join)".into(),
            d.name.into(),
            fmt_dur(s.median()),
            fmt_dur(s.p99()),
            String::new(),
            String::new(),
        ]);
    }
    for (k, p) in pairs.iter().enumerate() {
        let c = &env.caches[p.cache];
        let per_page = trips[k].0 as f64 / trips[k].1.max(1) as f64;
        let r = ratio(&page_s[k], &one_s[k]);
        sec.row(vec![
            "flash page (`select_related`)".into(),
            c.name.into(),
            fmt_dur(page_s[k].median()),
            fmt_dur(page_s[k].p99()),
            fmt_ratio(r),
            match c.name {
                "in-process" => "— (3 reads without waiting)".into(),
                _ => format!("{per_page:.2}"),
            },
        ]);
        sec.row(vec![
            "flash, three lookups".into(),
            c.name.into(),
            fmt_dur(three_s[k].median()),
            fmt_dur(three_s[k].p99()),
            fmt_ratio(ratio(&three_s[k], &one_s[k])),
            "3".into(),
        ]);
        sec.row(vec![
            "flash, single row".into(),
            c.name.into(),
            fmt_dur(one_s[k].median()),
            fmt_dur(one_s[k].p99()),
            String::new(),
            "1".into(),
        ]);
        if c.name == "in-process" {
            sec.row(vec![
                "floor: three store reads + three decodes".into(),
                c.name.into(),
                fmt_dur(floor_s[k].median()),
                fmt_dur(floor_s[k].p99()),
                fmt_ratio(ratio(&floor_s[k], &one_s[k])),
                "3".into(),
            ]);
            sec.row(vec![
                "raw floor: three reads without waiting, no decode".into(),
                c.name.into(),
                fmt_dur(raw_s[k].median()),
                fmt_dur(raw_s[k].p99()),
                fmt_ratio(ratio(&raw_s[k], &one_s[k])),
                "3".into(),
            ]);
            // No round trip to save: the page reads the row, then its two
            // related rows, and must cost no more than three lookups made
            // by hand.
            let three = ratio(&page_s[k], &three_s[k]);
            report.check(
                "page hit in process ≤ three lookups one by one",
                c.name,
                format!(
                    "{} vs {} = {} (÷ floor {} = {})",
                    fmt_dur(page_s[k].median()),
                    fmt_dur(three_s[k].median()),
                    fmt_ratio(three),
                    fmt_dur(floor_s[k].median()),
                    fmt_ratio(ratio(&page_s[k], &floor_s[k]))
                ),
                Verdict::of(three <= 1.0),
            );
        } else {
            report.check(
                "page hit: one cache round trip",
                c.name,
                format!("{per_page:.2} per page"),
                Verdict::of(per_page <= 1.0),
            );
        }
        // In process, with both floors: how much of the page any page costs.
        let floors = match c.name {
            "in-process" => format!(
                " (floors ÷ single row: decoded {} = {}, raw {} = {})",
                fmt_dur(floor_s[k].median()),
                fmt_ratio(ratio(&floor_s[k], &one_s[k])),
                fmt_dur(raw_s[k].median()),
                fmt_ratio(ratio(&raw_s[k], &one_s[k]))
            ),
            _ => String::new(),
        };
        report.check(
            "page hit ≤ 1.3 × single-row hit",
            c.name,
            format!(
                "{} vs {} = {}{floors}",
                fmt_dur(page_s[k].median()),
                fmt_dur(one_s[k].median()),
                fmt_ratio(r)
            ),
            Verdict::of(r <= 1.3),
        );
    }
    report.sections.push(sec);
    Ok(())
}
