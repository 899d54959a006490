//! Sequential latency: one lookup, a batch of 100, a 50-row list (the miss
//! path is `miss.rs`).
//!
//! Every comparison is interleaved: each round times every contender for
//! `per_round` operations in turn, so that a slow spell of the machine (other
//! builds share these 2 cores) lands on all of them alike. Round 0 is warm-up.

use super::floor::{decode_row, decode_sealed_row};
use super::setup::{LIST_ROWS, LIST_USER};
use super::stats::{
    fmt_dur, fmt_med_p99, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict,
};
use super::wire::{Protocol, WireClient};
use super::{Env, Pair};
use flash_core::seal::Sealer;
use flash_core::Outcome;
use flash_sea_orm::by;
use flash_test_kit::entities::{event, participation};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Lookups answered from the database because a cache operation failed
/// (over `ResilientBackend`'s 50 ms deadline: a loaded machine can stall a
/// task that long). They stay in the samples, as an application would see
/// them, and each section says how many there were.
static DEGRADED: AtomicU64 = AtomicU64::new(0);

/// `Ok` for the outcome `want` with a good value, or a degraded answer
/// (counted); anything else means the bench measures the wrong thing.
pub(super) fn expect(o: Outcome, want: Outcome, value_ok: bool) -> BenchResult<()> {
    if o == Outcome::Degraded {
        DEGRADED.fetch_add(1, Relaxed);
        return Ok(());
    }
    if o != want || !value_ok {
        return Err(format!("expected {}, got {}", want.label(), o.label()).into());
    }
    Ok(())
}

/// Appends the degraded count of a section to its note.
pub(super) fn note_degraded(sec: &mut Section) {
    let n = DEGRADED.swap(0, Relaxed);
    sec.note.push_str(&format!(
        " Lookups answered degraded (cache error, served by the database) during this section: {n}."
    ));
}

/// The cache keys of the events `ids` (the very keys flash reads).
pub(super) fn event_keys(p: &Pair, ids: &[i32]) -> BenchResult<Vec<String>> {
    let cache = p.fdb.cache::<event::Entity>();
    Ok(ids
        .iter()
        .map(|id| cache.cache_key(&by(event::Column::Id, *id)))
        .collect::<Result<_, _>>()?)
}

/// Fills the cache with the events `ids`.
/// One round of the database baseline: `per` point queries by id on each
/// database, timed into `out` (one `Samples` per database; round 0 warms up
/// and is not kept).
pub(super) async fn point_queries(
    env: &Env,
    ids: &[i32],
    round: usize,
    per: usize,
    out: &mut [Samples],
) -> BenchResult<()> {
    let mut scratch = Samples::default();
    let start = round * per;
    for (d, s) in env.dbs.iter().zip(out) {
        let out = if round == 0 { &mut scratch } else { s };
        time_loop!(start, per, out, |i| {
            event::Entity::find_by_id(ids[i % ids.len()])
                .one(&d.db)
                .await?
                .ok_or("row missing")?
        });
    }
    Ok(())
}

pub(super) async fn warm_events(p: &Pair, ids: &[i32]) -> BenchResult<()> {
    let cache = p.fdb.cache::<event::Entity>();
    for id in ids {
        cache.get(by(event::Column::Id, *id)).await?;
    }
    Ok(())
}

/// 1. One lookup: SeaORM point query, flash hit, raw client GET, wire floor.
pub async fn one_lookup(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let ids: Vec<i32> = (1..=plan.hot).collect();
    let pairs = env.primary_pairs();
    let mut keys = Vec::new();
    let mut wires = Vec::new();
    for p in &pairs {
        warm_events(p, &ids).await?;
        keys.push(event_keys(p, &ids)?);
        let c = &env.caches[p.cache];
        let proto = if c.name == "Redis" {
            Protocol::Redis
        } else {
            Protocol::Memcache
        };
        wires.push(match &c.wire_addr {
            Some(a) => Some(WireClient::connect(a, proto).await?),
            None => None,
        });
    }
    let per = plan.per_round;
    let mut db_s = vec![Samples::default(); env.dbs.len()];
    let mut flash_s = vec![Samples::default(); pairs.len()];
    let mut raw_s = vec![Samples::default(); pairs.len()];
    let mut wire_s = vec![Samples::default(); pairs.len()];
    for round in 0..=plan.rounds {
        let mut scratch = Samples::default();
        let start = round * per;
        point_queries(env, &ids, round, per, &mut db_s).await?;
        for (k, p) in pairs.iter().enumerate() {
            let cache = p.fdb.cache::<event::Entity>();
            let raw = &env.caches[p.cache].raw;
            // Flash first in even rounds, the raw client first in odd ones:
            // the first loop after the database's queries runs about twice
            // as slow in process (measured, with or without a pause between),
            // and neither side should always pay for it.
            for flash_turn in [round % 2 == 0, round % 2 == 1] {
                if flash_turn {
                    let out = if round == 0 {
                        &mut scratch
                    } else {
                        &mut flash_s[k]
                    };
                    time_loop!(start, per, out, |i| {
                        let (row, o) = cache
                            .get_with_outcome(by(event::Column::Id, ids[i % ids.len()]))
                            .await?;
                        expect(o, Outcome::Hit, row.is_some())?;
                    });
                } else {
                    let out = if round == 0 {
                        &mut scratch
                    } else {
                        &mut raw_s[k]
                    };
                    time_loop!(start, per, out, |i| {
                        let key = &keys[k][i % ids.len()];
                        let v = raw.get_many(std::slice::from_ref(key)).await?;
                        if v.first().is_none_or(Option::is_none) {
                            return Err("raw GET found nothing".into());
                        }
                    });
                }
            }
            if let Some(w) = wires[k].as_mut() {
                let out = if round == 0 {
                    &mut scratch
                } else {
                    &mut wire_s[k]
                };
                time_loop!(start, per, out, |i| {
                    w.get(&keys[k][i % ids.len()])
                        .await?
                        .ok_or("wire GET found nothing")?
                });
            }
        }
    }

    let pg = env.dbs.iter().position(|d| d.name == "PostgreSQL");
    let mut sec = Section::new(
        "1. One lookup (event by id, hot keys)",
        &format!(
            "Sequential, per-operation times over {} operations each; {} distinct hot keys. \
             *flash hit* is `fdb.cache::<Event>().get_with_outcome(by(Id, id))` through the backend of \
             `cache_backend(url)` (servers: `ResilientBackend`); *raw GET* reads the identical key and bytes \
             with the same client library, without flash or the wrapper; *wire floor* is a hand-written \
             one-connection GET on a raw socket.",
            plan.rounds * per,
            ids.len()
        ),
        &["operation", "target", "median", "p99", "flash ÷ raw", "× faster than PG query"],
    );
    for (d, s) in env.dbs.iter().zip(&db_s) {
        sec.row(vec![
            "SeaORM `find_by_id`".into(),
            d.name.into(),
            fmt_dur(s.median()),
            fmt_dur(s.p99()),
            String::new(),
            String::new(),
        ]);
    }
    for name in &env.skipped_dbs {
        sec.skipped(&["SeaORM `find_by_id`", name], "unreachable");
    }
    for (k, p) in pairs.iter().enumerate() {
        let c = &env.caches[p.cache];
        let vs_pg = pg
            .map(|i| fmt_ratio(ratio(&db_s[i], &flash_s[k])))
            .unwrap_or_default();
        sec.row(vec![
            "flash hit".into(),
            c.name.into(),
            fmt_dur(flash_s[k].median()),
            fmt_dur(flash_s[k].p99()),
            fmt_ratio(ratio(&flash_s[k], &raw_s[k])),
            vs_pg,
        ]);
        sec.row(vec![
            format!("raw GET: {}", c.raw_label),
            c.name.into(),
            fmt_dur(raw_s[k].median()),
            fmt_dur(raw_s[k].p99()),
            String::new(),
            String::new(),
        ]);
        if !wire_s[k].is_empty() {
            sec.row(vec![
                "wire floor: hand-written GET, one socket".into(),
                c.name.into(),
                fmt_dur(wire_s[k].median()),
                fmt_dur(wire_s[k].p99()),
                format!("flash ÷ wire {}", fmt_ratio(ratio(&flash_s[k], &wire_s[k]))),
                String::new(),
            ]);
        }
        let r = ratio(&flash_s[k], &raw_s[k]);
        let measured = format!(
            "{} vs {} = {}",
            fmt_dur(flash_s[k].median()),
            fmt_dur(raw_s[k].median()),
            fmt_ratio(r)
        );
        if c.name == "in-process" {
            let med = flash_s[k].median();
            report.check(
                "in-process hit < 2 µs",
                c.name,
                fmt_dur(med),
                Verdict::of(med.as_nanos() < 2_000),
            );
            report.check(
                "in-process hit ≤ 2 × the raw moka get it wraps",
                c.name,
                measured.clone(),
                Verdict::of(r <= 2.0),
            );
            match pg {
                Some(i) => {
                    let x = ratio(&db_s[i], &flash_s[k]);
                    report.check(
                        "in-process hit ≥ 20× faster than PG point query",
                        c.name,
                        format!(
                            "{} vs {} = {:.0}×",
                            fmt_dur(med),
                            fmt_dur(db_s[i].median()),
                            x
                        ),
                        Verdict::of(x >= 20.0),
                    );
                }
                None => report.check(
                    "in-process hit ≥ 20× faster than PG point query",
                    c.name,
                    String::new(),
                    Verdict::Skipped("PostgreSQL unreachable".into()),
                ),
            }
        } else {
            report.check(
                "flash hit ≤ 1.15 × raw GET",
                c.name,
                measured,
                Verdict::of(r <= 1.15),
            );
        }
    }
    for name in &env.skipped_caches {
        sec.skipped(&["flash hit", name], "unreachable");
        report.check(
            "flash hit ≤ 1.15 × raw GET",
            name,
            String::new(),
            Verdict::Skipped("unreachable".into()),
        );
    }
    note_degraded(&mut sec);
    report.sections.push(sec);
    Ok(())
}

/// 2. A batch of 100 lookups: flash `batch()` against one raw multi-get.
pub async fn batch(env: &Env, report: &mut Report) -> BenchResult<()> {
    const N: usize = 100;
    let plan = &env.plan;
    let ids: Vec<i32> = (1..=plan.hot).collect();
    let windows: Vec<&[i32]> = ids.chunks_exact(N).collect();
    let pairs = env.primary_pairs();
    let mut keys = Vec::new();
    for p in &pairs {
        warm_events(p, &ids).await?;
        keys.push(event_keys(p, &ids)?);
    }
    let per = plan.batch_per_round;
    let mut flash_s = vec![Samples::default(); pairs.len()];
    let mut raw_s = vec![Samples::default(); pairs.len()];
    let mut floor_s = vec![Samples::default(); pairs.len()];
    let mut sealed_s = vec![Samples::default(); pairs.len()];
    for round in 0..=plan.rounds {
        let mut scratch = Samples::default();
        let start = round * per;
        for (k, p) in pairs.iter().enumerate() {
            let cache = p.fdb.cache::<event::Entity>();
            let out = if round == 0 {
                &mut scratch
            } else {
                &mut flash_s[k]
            };
            time_loop!(start, per, out, |i| {
                let mut b = p.fdb.flash().batch();
                let mut handles = Vec::with_capacity(N);
                for id in windows[i % windows.len()] {
                    handles.push(b.add(cache.get_query(&by(event::Column::Id, *id))?));
                }
                let mut res = b.run().await;
                for h in handles {
                    let (row, o) = res.take_with_outcome(h)?;
                    expect(o, Outcome::Hit, row.is_some())?;
                }
            });
            let raw = &env.caches[p.cache].raw;
            let out = if round == 0 {
                &mut scratch
            } else {
                &mut raw_s[k]
            };
            time_loop!(start, per, out, |i| {
                let w = i % windows.len();
                let v = raw.get_many(&keys[k][w * N..(w + 1) * N]).await?;
                if v.iter().any(Option::is_none) {
                    return Err("raw multi-get missed".into());
                }
            });
            // The floor: the same multi-get, every row decoded as flash does.
            let sealed = env.caches[p.cache].flash_backend.shared();
            let out = if round == 0 {
                &mut scratch
            } else {
                &mut floor_s[k]
            };
            time_loop!(start, per, out, |i| {
                let w = i % windows.len();
                for b in raw.get_many(&keys[k][w * N..(w + 1) * N]).await? {
                    let row: Option<Option<event::Model>> = b.and_then(|b| decode_row(&b, sealed));
                    row.flatten()
                        .ok_or("floor: an entry is missing or not a row")?;
                }
            });
            // The floor with the seal: each value's tag checked before its
            // decode, as flash checks it (servers only; the in-process
            // store's values carry none).
            if sealed {
                let sealer = Sealer::unkeyed();
                let out = if round == 0 {
                    &mut scratch
                } else {
                    &mut sealed_s[k]
                };
                time_loop!(start, per, out, |i| {
                    let w = i % windows.len();
                    let ks = &keys[k][w * N..(w + 1) * N];
                    for (key, b) in ks.iter().zip(raw.get_many(ks).await?) {
                        let row: Option<Option<event::Model>> =
                            b.and_then(|b| decode_sealed_row(key, &b, &sealer));
                        row.flatten()
                            .ok_or("floor: an entry is missing, not a row or not sealed")?;
                    }
                });
            }
        }
    }
    let mut sec = Section::new(
        "2. Batch of 100 lookups (events by id, all hits)",
        &format!(
            "{} batches each. flash: `flash().batch()` of 100 `get_query`, run and every result taken \
             (decoded); raw: one `get_many` of the same 100 keys (Redis `MGET`, memcached pipelined `mg`), \
             bytes not decoded; floor: the same `get_many` and every row decoded with flash's codec \
             (a server's seal tag cut off unchecked); sealed floor (servers): the same, each value's \
             seal checked before its decode, as flash checks it.",
            plan.rounds * per
        ),
        &["target", "flash batch (median / p99)", "raw multi-get (median / p99)", "flash ÷ raw",
          "floor: multi-get + decode (median / p99)", "flash ÷ floor",
          "sealed floor: multi-get + seal check + decode (median)", "sealed floor ÷ raw",
          "flash ÷ sealed floor", "flash per lookup"],
    );
    for (k, p) in pairs.iter().enumerate() {
        let c = &env.caches[p.cache];
        let r = ratio(&flash_s[k], &raw_s[k]);
        let rf = ratio(&flash_s[k], &floor_s[k]);
        sec.row(vec![
            c.name.into(),
            fmt_med_p99(&flash_s[k]),
            fmt_med_p99(&raw_s[k]),
            fmt_ratio(r),
            fmt_med_p99(&floor_s[k]),
            fmt_ratio(rf),
            match c.name {
                "in-process" => "no seal".into(),
                _ => fmt_dur(sealed_s[k].median()),
            },
            match c.name {
                "in-process" => "".into(),
                _ => fmt_ratio(ratio(&sealed_s[k], &raw_s[k])),
            },
            match c.name {
                "in-process" => "".into(),
                _ => fmt_ratio(ratio(&flash_s[k], &sealed_s[k])),
            },
            fmt_dur(flash_s[k].median() / N as u32),
        ]);
        if c.name != "in-process" {
            report.check(
                "batch of 100 ≤ 1.2 × raw multi-get",
                c.name,
                format!(
                    "{} vs {} = {} (÷ floor {} = {}; sealed floor {} = {} raw)",
                    fmt_dur(flash_s[k].median()),
                    fmt_dur(raw_s[k].median()),
                    fmt_ratio(r),
                    fmt_dur(floor_s[k].median()),
                    fmt_ratio(rf),
                    fmt_dur(sealed_s[k].median()),
                    fmt_ratio(ratio(&sealed_s[k], &raw_s[k]))
                ),
                Verdict::of(r <= 1.2),
            );
        }
    }
    for name in &env.skipped_caches {
        sec.skipped(&[name], "unreachable");
        report.check(
            "batch of 100 ≤ 1.2 × raw multi-get",
            name,
            String::new(),
            Verdict::Skipped("unreachable".into()),
        );
    }
    note_degraded(&mut sec);
    report.sections.push(sec);
    Ok(())
}

/// 3. A 50-row filter list: flash hit against the database query.
pub async fn filter_list(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let pairs = env.primary_pairs();
    let lk = || by(participation::Column::UserId, LIST_USER);
    let mut keys = Vec::new();
    for p in &pairs {
        let rows = p.fdb.cache::<participation::Entity>().filter(lk()).await?;
        if rows.len() != LIST_ROWS as usize {
            return Err(format!("list has {} rows, expected {LIST_ROWS}", rows.len()).into());
        }
        keys.push(p.fdb.cache::<participation::Entity>().filter_key(&lk())?);
    }
    let per = plan.filter_per_round;
    let mut db_s = vec![Samples::default(); env.dbs.len()];
    let mut flash_s = vec![Samples::default(); pairs.len()];
    let mut raw_s = vec![Samples::default(); pairs.len()];
    for round in 0..=plan.rounds {
        let mut scratch = Samples::default();
        let start = round * per;
        for (d, s) in env.dbs.iter().zip(&mut db_s) {
            let out = if round == 0 { &mut scratch } else { s };
            time_loop!(start, per, out, |_i| {
                let rows = participation::Entity::find()
                    .filter(participation::Column::UserId.eq(LIST_USER))
                    .all(&d.db)
                    .await?;
                if rows.len() != LIST_ROWS as usize {
                    return Err("short list".into());
                }
            });
        }
        for (k, p) in pairs.iter().enumerate() {
            let cache = p.fdb.cache::<participation::Entity>();
            let out = if round == 0 {
                &mut scratch
            } else {
                &mut flash_s[k]
            };
            time_loop!(start, per, out, |_i| {
                let (rows, o) = cache.filter_with_outcome(lk()).await?;
                expect(o, Outcome::Hit, rows.len() == LIST_ROWS as usize)?;
            });
            let raw = &env.caches[p.cache].raw;
            let out = if round == 0 {
                &mut scratch
            } else {
                &mut raw_s[k]
            };
            time_loop!(start, per, out, |_i| {
                let v = raw.get_many(std::slice::from_ref(&keys[k])).await?;
                if v.first().is_none_or(Option::is_none) {
                    return Err("raw GET found nothing".into());
                }
            });
        }
    }
    let mut sec = Section::new(
        "3. Filter list of 50 rows (participations of one user)",
        &format!(
            "{} operations each. DB: `Participation::find().filter(user_id = 1).all()`; flash: \
             `cache::<Participation>().filter(by(UserId, 1))` hit (50 rows decoded); raw: GET of the list's bytes.",
            plan.rounds * per
        ),
        &["operation", "target", "median", "p99", "× faster than PG query"],
    );
    let pg = env.dbs.iter().position(|d| d.name == "PostgreSQL");
    for (d, s) in env.dbs.iter().zip(&db_s) {
        sec.row(vec![
            "DB query".into(),
            d.name.into(),
            fmt_dur(s.median()),
            fmt_dur(s.p99()),
            String::new(),
        ]);
    }
    for name in &env.skipped_dbs {
        sec.skipped(&["DB query", name], "unreachable");
    }
    for (k, p) in pairs.iter().enumerate() {
        let c = &env.caches[p.cache];
        let vs_pg = pg
            .map(|i| fmt_ratio(ratio(&db_s[i], &flash_s[k])))
            .unwrap_or_default();
        sec.row(vec![
            "flash hit".into(),
            c.name.into(),
            fmt_dur(flash_s[k].median()),
            fmt_dur(flash_s[k].p99()),
            vs_pg,
        ]);
        sec.row(vec![
            "raw GET of the same bytes".into(),
            c.name.into(),
            fmt_dur(raw_s[k].median()),
            fmt_dur(raw_s[k].p99()),
            String::new(),
        ]);
    }
    for name in &env.skipped_caches {
        sec.skipped(&["flash hit", name], "unreachable");
    }
    note_degraded(&mut sec);
    report.sections.push(sec);
    Ok(())
}
