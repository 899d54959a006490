//! Scenario 10, the near tier: 64 tasks over Zipf keys with the near tier
//! off and on (and the raw client with 64 tasks as the reference), per
//! server cache; and a near hit against an in-process hit, interleaved.

use super::load::{SplitMix, Zipf};
use super::setup::{flash_db, flash_db_near};
use super::stats::{fmt_dur, fmt_med_p99, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_core::{Backend, NearBus, NearConfig};
use flash_sea_orm::{by, FlashDb};
use flash_test_kit::entities::event;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one load run did: operations per second, and the counters.
struct Load {
    per_sec: f64,
    hit_ratio: f64,
    near_hits: u64,
}

/// `tasks` tasks looking up Zipf-drawn events through `fdb` for `time`.
async fn flash_load(
    fdb: &FlashDb,
    zipf: &Arc<Zipf>,
    tasks: usize,
    time: Duration,
) -> BenchResult<Load> {
    let before = fdb.flash().stats().snapshot();
    let near_before = fdb
        .flash()
        .near_stats()
        .map_or(0, |n| n.hits.load(std::sync::atomic::Ordering::Relaxed));
    let deadline = Instant::now() + time;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let fdb = fdb.clone();
            let zipf = zipf.clone();
            tokio::spawn(async move {
                let mut rng = SplitMix(0xBEEF ^ (t as u64).wrapping_mul(0x9E37_79B9));
                let cache = fdb.cache::<event::Entity>();
                let mut ops = 0u64;
                while Instant::now() < deadline {
                    let id = zipf.sample(rng.next_f64()) as i32 + 1;
                    cache
                        .get(by(event::Column::Id, id))
                        .await
                        .map_err(|e| e.to_string())?;
                    ops += 1;
                }
                Ok::<_, String>(ops)
            })
        })
        .collect();
    let mut ops = 0;
    for h in handles {
        ops += h.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let s = fdb.flash().stats().snapshot();
    let hits = s.hits - before.hits;
    let lookups = hits + (s.stale_hits - before.stale_hits) + (s.misses - before.misses);
    let near_after = fdb
        .flash()
        .near_stats()
        .map_or(0, |n| n.hits.load(std::sync::atomic::Ordering::Relaxed));
    Ok(Load {
        per_sec: ops as f64 / secs,
        hit_ratio: hits as f64 / lookups.max(1) as f64,
        near_hits: near_after - near_before,
    })
}

/// The raw client: `tasks` tasks reading the Zipf-drawn keys `keys`.
async fn raw_load(
    raw: &Arc<dyn Backend>,
    keys: &Arc<Vec<String>>,
    zipf: &Arc<Zipf>,
    tasks: usize,
    time: Duration,
) -> BenchResult<f64> {
    let deadline = Instant::now() + time;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (raw, keys, zipf) = (raw.clone(), keys.clone(), zipf.clone());
            tokio::spawn(async move {
                let mut rng = SplitMix(0xBEEF ^ (t as u64).wrapping_mul(0x9E37_79B9));
                let mut ops = 0u64;
                while Instant::now() < deadline {
                    let key = &keys[zipf.sample(rng.next_f64())];
                    raw.get_many(std::slice::from_ref(key))
                        .await
                        .map_err(|e| e.to_string())?;
                    ops += 1;
                }
                Ok::<_, String>(ops)
            })
        })
        .collect();
    let mut ops = 0;
    for h in handles {
        ops += h.await??;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

pub async fn near(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let db = &env.dbs[0];
    let zipf = Arc::new(Zipf::new(plan.events as usize, plan.zipf_s));
    let near_config = NearConfig::default();
    let mut tp = Section::new(
        "12. Near tier: throughput (Zipf keys, 64 tasks)",
        &format!(
            "{} tasks for {:.1} s per run, events by id from Zipf(s = {}) over {} rows, database {}; \
             *cold*: from an empty cache (fresh key prefix); *warm*: the same run again right \
             after. *raw client*: the same tasks reading the same keys with the backend's raw \
             client (no flash, no decode), after the flash runs filled them. Near tier: {} MiB, bound {:?}, heartbeat {:?}; channel \
             Redis pub/sub for Redis, PostgreSQL LISTEN/NOTIFY for memcached.",
            plan.tasks,
            plan.throughput.as_secs_f64(),
            plan.zipf_s,
            plan.events,
            db.name,
            near_config.capacity_bytes / (1024 * 1024),
            near_config.bound,
            near_config.heartbeat,
        ),
        &["cache", "raw client lookups/s", "flash lookups/s, near off", "flash lookups/s, near on", "on ÷ off", "hit ratio off / on", "near hits"],
    );
    let mut lat = Section::new(
        "12. Near tier: one hit",
        &format!(
            "Sequential hits on {} hot events, interleaved rounds ({} operations each): the \
             in-process cache against a near-tier hit over a server cache (the near tier is a moka \
             store too, so a near hit should cost about an in-process hit).",
            plan.hot,
            plan.rounds * plan.per_round
        ),
        &["target", "median / p99", "÷ in-process"],
    );
    let memory = env
        .pairs
        .iter()
        .find(|p| p.db == 0 && env.caches[p.cache].name == "in-process");
    let mut near_handles: Vec<(&str, FlashDb)> = Vec::new();
    for (ci, c) in env.caches.iter().enumerate() {
        let bus: Arc<dyn NearBus> = match c.name {
            "Redis" => Arc::new(flash_redis::RedisBus::new(
                &c.url,
                &format!("{}near{ci}", env.prefix.replace(':', "_")),
            )?),
            "memcached" if db.name == "PostgreSQL" => Arc::new(flash_sea_orm::PgBus::new(
                &db.db,
                &format!("{}near{ci}", env.prefix.replace(':', "_")),
            )?),
            "memcached" => {
                tp.skipped(&[c.name], "no channel: PostgreSQL unreachable");
                continue;
            }
            _ => continue,
        };
        let off_prefix = format!("{}nf{ci}:", env.prefix);
        let off = flash_db(&db.db, c.flash_backend.clone(), off_prefix, false, false).await?;
        let on = flash_db_near(
            &db.db,
            c.flash_backend.clone(),
            format!("{}nn{ci}:", env.prefix),
            near_config.clone(),
            bus,
        )
        .await?;
        let started = Instant::now();
        while !on.flash().near_healthy() {
            if started.elapsed() > Duration::from_secs(5) {
                return Err(format!("{}: near channel never heard", c.name).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Cold (from an empty cache), then warm (the same run again): the
        // near tier's gain is the steady state's; the cold run is bounded
        // by misses, which it does not change.
        let off_cold = flash_load(&off, &zipf, plan.tasks, plan.throughput).await?;
        let on_cold = flash_load(&on, &zipf, plan.tasks, plan.throughput).await?;
        off.flash().settled().await;
        on.flash().settled().await;
        let off_load = flash_load(&off, &zipf, plan.tasks, plan.throughput).await?;
        let on_load = flash_load(&on, &zipf, plan.tasks, plan.throughput).await?;
        let cache = off.cache::<event::Entity>();
        let keys: Vec<String> = (1..=plan.events)
            .map(|id| cache.cache_key(&by(event::Column::Id, id)))
            .collect::<Result<_, _>>()?;
        let raw = raw_load(&c.raw, &Arc::new(keys), &zipf, plan.tasks, plan.throughput).await?;
        let speedup = on_load.per_sec / off_load.per_sec;
        for (phase, off_l, on_l) in [("cold", &off_cold, &on_cold), ("warm", &off_load, &on_load)] {
            tp.row(vec![
                format!("{} ({phase})", c.name),
                format!("{raw:.0}"),
                format!("{:.0}", off_l.per_sec),
                format!("{:.0}", on_l.per_sec),
                format!("{:.2}×", on_l.per_sec / off_l.per_sec),
                format!(
                    "{:.2} % / {:.2} %",
                    100.0 * off_l.hit_ratio,
                    100.0 * on_l.hit_ratio
                ),
                on_l.near_hits.to_string(),
            ]);
        }
        report.check(
            "near tier on ≥ 5 × off (64 tasks, Zipf, warm)",
            c.name,
            format!(
                "{:.0} vs {:.0} lookups/s = {speedup:.2}×",
                on_load.per_sec, off_load.per_sec
            ),
            Verdict::of(speedup >= 5.0),
        );
        near_handles.push((c.name, on));
    }
    // One hit: in-process against near, interleaved.
    if let Some(mem) = memory {
        let ids: Vec<i32> = (1..=plan.hot).collect();
        let mut all: Vec<(String, FlashDb)> = vec![("in-process".into(), mem.fdb.clone())];
        all.extend(
            near_handles
                .iter()
                .map(|(n, f)| (format!("{n} + near tier"), f.clone())),
        );
        for (_, f) in &all {
            let cache = f.cache::<event::Entity>();
            for _ in 0..3 {
                for id in &ids {
                    cache.get(by(event::Column::Id, *id)).await?;
                }
                f.flash().settled().await;
            }
        }
        let mut samples = vec![Samples::default(); all.len()];
        for round in 0..=plan.rounds {
            for (k, (_, f)) in all.iter().enumerate() {
                let cache = f.cache::<event::Entity>();
                let mut scratch = Samples::default();
                let out = if round == 0 {
                    &mut scratch
                } else {
                    &mut samples[k]
                };
                for i in 0..plan.per_round {
                    let t = Instant::now();
                    cache.get(by(event::Column::Id, ids[i % ids.len()])).await?;
                    out.push(t.elapsed());
                }
            }
        }
        let base = samples[0].median();
        for (k, (name, _)) in all.iter().enumerate() {
            let r = samples[k].median().as_secs_f64() / base.as_secs_f64();
            lat.row(vec![
                name.clone(),
                fmt_med_p99(&samples[k]),
                format!("{r:.2}×"),
            ]);
            if k > 0 {
                report.check(
                    "near hit ≤ 2 × in-process hit",
                    name,
                    format!(
                        "{} vs {} = {r:.2}×",
                        fmt_dur(samples[k].median()),
                        fmt_dur(base)
                    ),
                    Verdict::of(r <= 2.0),
                );
            }
        }
    }
    report.sections.push(tp);
    report.sections.push(lat);
    Ok(())
}
