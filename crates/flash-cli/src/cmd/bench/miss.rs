//! Scenario 4, the miss path: a lookup right after an invalidation (the key
//! holds the stale marker a write leaves) against the database query alone,
//! and against a floor: the same cache request(s) sent by the raw client
//! (no flash around them), then the same query, one after the other.

use super::latency::{event_keys, expect, note_degraded, point_queries, warm_events};
use super::stats::{
    fmt_dur, fmt_med_p99, fmt_ratio, ratio, BenchResult, Report, Samples, Section, Verdict,
};
use super::Env;
use flash_core::codec::{encode_entry, stale_prefix, Entry};
use flash_core::{KeySet, Outcome};
use flash_sea_orm::by;
use flash_test_kit::entities::event;
use sea_orm::EntityTrait;
use std::collections::BTreeSet;
use std::time::Instant;

/// A lease entry as flash builds one (a random token, the time).
fn lease_entry() -> Vec<u8> {
    encode_entry(&Entry::Lease {
        token: rand::random(),
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
}

/// What a write leaves on `key` (untimed): flash's own invalidation.
async fn invalidate(p: &super::Pair, key: &str) -> BenchResult<()> {
    let ks = KeySet {
        unset: BTreeSet::from([key.to_owned()]),
        dynamic: BTreeSet::new(),
    };
    p.fdb.flash().apply_invalidation("event", &ks).await?;
    Ok(())
}

/// Per pair: the flash misses, the floor, and (leased misses, cache requests
/// they waited for) over the measured rounds.
struct PairRun {
    miss: Samples,
    floor: Samples,
    trips: (u64, u64),
    /// Requests of the floor's `get_or_lease`, summed.
    floor_trips: u64,
}

pub async fn miss_path(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let ids: Vec<i32> = (1..=plan.hot).collect();
    let mut keys = Vec::new();
    for p in &env.pairs {
        warm_events(p, &ids).await?;
        keys.push(event_keys(p, &ids)?);
    }
    let per = plan.miss_per_round;
    let mut db_s = vec![Samples::default(); env.dbs.len()];
    let mut runs: Vec<PairRun> = env
        .pairs
        .iter()
        .map(|_| PairRun {
            miss: Samples::default(),
            floor: Samples::default(),
            trips: (0, 0),
            floor_trips: 0,
        })
        .collect();
    for round in 0..=plan.rounds {
        let start = round * per;
        point_queries(env, &ids, round, per, &mut db_s).await?;
        for (k, p) in env.pairs.iter().enumerate() {
            let cache = p.fdb.cache::<event::Entity>();
            let run = &mut runs[k];
            let ttl = p.fdb.flash().settings().lease_ttl;
            let raw = &env.caches[p.cache].raw;
            for i in start..start + per {
                let id = ids[i % ids.len()];
                let key = &keys[k][i % ids.len()];
                // Flash: the miss over the marker, its fill waited for untimed.
                invalidate(p, key).await?;
                let stats = p.fdb.flash().stats().snapshot();
                let t = Instant::now();
                let (_, o) = cache.get_with_outcome(by(event::Column::Id, id)).await?;
                let took = t.elapsed();
                expect(o, Outcome::Miss, true)?;
                p.fdb.flash().settled().await;
                // The floor: the raw client's read-and-lease over the same
                // marker (the request(s) the miss sends), then the same query.
                // The lease it leaves goes with the next invalidation.
                invalidate(p, key).await?;
                let lease = lease_entry();
                let t = Instant::now();
                let read = raw
                    .get_or_lease(std::slice::from_ref(key), &lease, stale_prefix(), ttl)
                    .await?;
                event::Entity::find_by_id(id)
                    .one(&env.dbs[p.db].db)
                    .await?
                    .ok_or("row missing")?;
                let floor = t.elapsed();
                if read.lease.is_none() {
                    return Err(format!("floor: no lease over the marker of {key}").into());
                }
                if round > 0 {
                    run.miss.push(took);
                    run.floor.push(floor);
                    run.floor_trips += u64::from(read.round_trips);
                    let now = p.fdb.flash().stats().snapshot();
                    run.trips.0 += now.leased_misses - stats.leased_misses;
                    run.trips.1 += now.leased_round_trips - stats.leased_round_trips;
                }
            }
        }
    }
    let mut sec = Section::new(
        "4. Miss path (lookup right after an invalidation)",
        &format!(
            "{} operations each. The key holds the stale marker a write leaves; the lookup's first \
             read also takes the fill lease over it (one script call on Redis; on memcached `mg` \
             then `ms` over the marker with its CAS value, since vivify acts on absent keys only), \
             then queries the database; the fill runs in the background after the caller has its row \
             (waited for, untimed, before the next operation). \"cache requests\" is the number of \
             cache requests the caller waited for before its query, counted by flash \
             (`leased_round_trips / leased_misses`); in-process, the read and the lease are two \
             calls into the store. Floor: the raw client's `get_or_lease` over the same marker (the \
             same request(s), without flash: no ResilientBackend, no lookup), then the same SeaORM \
             query, sequentially, interleaved with the misses (its requests in brackets).",
            plan.rounds * per
        ),
        &[
            "database",
            "cache",
            "DB query alone (median / p99)",
            "floor: raw read-and-lease + query (median / p99)",
            "flash miss (median / p99)",
            "miss ÷ DB",
            "miss ÷ floor",
            "cache requests before the row",
        ],
    );
    for (k, p) in env.pairs.iter().enumerate() {
        let run = &runs[k];
        let (db, cache) = (env.dbs[p.db].name, env.caches[p.cache].name);
        let vs_db = ratio(&run.miss, &db_s[p.db]);
        let measured = (plan.rounds * per).max(1);
        sec.row(vec![
            db.into(),
            cache.into(),
            fmt_med_p99(&db_s[p.db]),
            format!(
                "{} ({:.2})",
                fmt_med_p99(&run.floor),
                run.floor_trips as f64 / measured as f64
            ),
            fmt_med_p99(&run.miss),
            fmt_ratio(vs_db),
            fmt_ratio(ratio(&run.miss, &run.floor)),
            match run.trips {
                (0, _) => "in-process: read + add".into(),
                (n, t) => format!("{:.2}", t as f64 / n as f64),
            },
        ]);
        if db == "PostgreSQL" && cache != "in-process" {
            report.check(
                "miss ≤ 1.5 × the SeaORM query alone",
                &format!("PostgreSQL + {cache}"),
                format!(
                    "{} vs {} = {} (floor {} = {})",
                    fmt_dur(run.miss.median()),
                    fmt_dur(db_s[p.db].median()),
                    fmt_ratio(vs_db),
                    fmt_dur(run.floor.median()),
                    fmt_ratio(ratio(&run.floor, &db_s[p.db])),
                ),
                Verdict::of(vs_db <= 1.5),
            );
            let per_miss = match run.trips {
                (0, _) => f64::NAN,
                (n, t) => t as f64 / n as f64,
            };
            report.check(
                "miss: cache requests before the row = 1",
                &format!("{cache} (after a write's marker)"),
                format!("{per_miss:.2}"),
                Verdict::of(per_miss <= 1.0),
            );
        }
    }
    for name in env.skipped_dbs.iter().chain(&env.skipped_caches) {
        sec.skipped(&[name], "unreachable");
    }
    note_degraded(&mut sec);
    report.sections.push(sec);
    Ok(())
}
