//! Concurrency and memory: Zipf throughput, the stampede, bytes per entry.

use super::setup::flash_db;
use super::stats::{fmt_dur, BenchResult, Report, Samples, Section, Verdict};
use super::Env;
use flash_core::{Backend, MemoryBackend, Outcome};
use flash_sea_orm::by;
use flash_test_kit::entities::event;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Zipf(s) over ranks `0..n`: the inverse of a precomputed CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    /// The rank for a uniform `u` in `[0, 1)`.
    pub fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// splitmix64: a tiny, `Send`, per-task generator (the thread-local one
/// cannot be held across an await).
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every this many operations one is timed (the others only counted), so
/// that the latency log stays small and does not inflate the peak RSS.
const LATENCY_STRIDE: u64 = 32;

/// Peak and current resident set size, from `/proc/self/status`.
pub fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 5. Throughput: 64 tasks, Zipf keys, from a cold cache, per cache.
pub async fn throughput(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let zipf = Arc::new(Zipf::new(plan.events as usize, plan.zipf_s));
    let db = &env.dbs[0];
    let mut sec = Section::new(
        "5. Concurrent throughput (Zipf keys, cold start)",
        &format!(
            "{} tasks for {:.1} s per cache, each looking up events by id drawn from Zipf(s = {}) over \
             {} rows, starting from an empty cache (fresh key prefix), database {}. Hit ratio and DB \
             queries from `flash().stats()`; latency from every {LATENCY_STRIDE}th operation.",
            plan.tasks,
            plan.throughput.as_secs_f64(),
            plan.zipf_s,
            plan.events,
            db.name
        ),
        &["cache", "lookups/s", "hit ratio", "DB queries/s", "DB queries total", "cache errors (served by DB)", "latency median / p99"],
    );
    for (ci, c) in env.caches.iter().enumerate() {
        let prefix = format!("{}tp{ci}:", env.prefix);
        let fdb = flash_db(&db.db, c.flash_backend.clone(), prefix, false, false).await?;
        let before = fdb.flash().stats().snapshot();
        let start = Instant::now();
        let deadline = start + plan.throughput;
        let tasks: Vec<_> = (0..plan.tasks)
            .map(|t| {
                let fdb = fdb.clone();
                let zipf = zipf.clone();
                tokio::spawn(async move {
                    let mut rng = SplitMix(0x5EED ^ (t as u64).wrapping_mul(0x1234_5678_9ABC));
                    let cache = fdb.cache::<event::Entity>();
                    let mut lat = Samples::default();
                    let mut ops = 0u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= deadline {
                            break;
                        }
                        let id = zipf.sample(rng.next_f64()) as i32 + 1;
                        cache
                            .get(by(event::Column::Id, id))
                            .await
                            .map_err(|e| e.to_string())?;
                        if ops % LATENCY_STRIDE == 0 {
                            lat.push(t0.elapsed());
                        }
                        ops += 1;
                    }
                    Ok::<_, String>((ops, lat))
                })
            })
            .collect();
        let mut ops = 0;
        let mut lat = Samples::default();
        for t in tasks {
            let (n, l) = t.await??;
            ops += n;
            lat.extend(l);
        }
        let secs = start.elapsed().as_secs_f64();
        let s = fdb.flash().stats().snapshot();
        let hits = s.hits - before.hits;
        let lookups = hits + (s.stale_hits - before.stale_hits) + (s.misses - before.misses);
        let fetches = s.db_fetches - before.db_fetches;
        sec.row(vec![
            c.name.into(),
            format!("{:.0}", ops as f64 / secs),
            format!("{:.2} %", 100.0 * hits as f64 / lookups.max(1) as f64),
            format!("{:.0}", fetches as f64 / secs),
            fetches.to_string(),
            (s.backend_errors - before.backend_errors).to_string(),
            format!("{} / {}", fmt_dur(lat.median()), fmt_dur(lat.p99())),
        ]);
    }
    for name in &env.skipped_caches {
        sec.skipped(&[name], "unreachable");
    }
    if let Some(hwm) = rss_kib("VmHWM:") {
        sec.note.push_str(&format!(
            "\n\nPeak RSS of the process after the throughput runs (VmHWM): {:.1} MiB.",
            hwm as f64 / 1024.0
        ));
    }
    report.sections.push(sec);
    Ok(())
}

/// 6. Stampede: many concurrent lookups of one cold key: one database read.
pub async fn stampede(env: &Env, report: &mut Report) -> BenchResult<()> {
    let n = env.plan.stampede;
    let mut sec = Section::new(
        "6. Stampede (concurrent lookups of one cold key)",
        &format!(
            "{n} tasks released together by a barrier look up one event whose key was just deleted. \
             DB fetches = `stats().db_fetches` delta; waiters poll for the lease holder's value."
        ),
        &["database", "cache", "DB fetches", "filled (miss)", "served the filled value (hit)", "gave up waiting (miss-no-fill)", "cache error → DB (degraded)", "wall time"],
    );
    for (k, p) in env.pairs.iter().enumerate() {
        // A row outside the hot set and the rows the write scenario changes.
        let id = env.plan.events - 200 - k as i32;
        let key = p
            .fdb
            .cache::<event::Entity>()
            .cache_key(&by(event::Column::Id, id))?;
        p.fdb.flash().backend().delete(&key).await?;
        let before = p.fdb.flash().stats().snapshot();
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let fdb = p.fdb.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    fdb.cache::<event::Entity>()
                        .get_with_outcome(by(event::Column::Id, id))
                        .await
                        .map(|(_, o)| o)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let (mut miss, mut hit, mut nofill, mut degraded) = (0, 0, 0, 0);
        for t in tasks {
            match t.await?? {
                Outcome::Miss => miss += 1,
                Outcome::Hit => hit += 1,
                Outcome::Degraded => degraded += 1,
                _ => nofill += 1,
            }
        }
        let wall = start.elapsed();
        let fetches = p.fdb.flash().stats().snapshot().db_fetches - before.db_fetches;
        let (dbn, cn) = (env.dbs[p.db].name, env.caches[p.cache].name);
        sec.row(vec![
            dbn.into(),
            cn.into(),
            fetches.to_string(),
            miss.to_string(),
            hit.to_string(),
            nofill.to_string(),
            degraded.to_string(),
            fmt_dur(wall),
        ]);
        report.check(
            "stampede of 1000 on a cold key = 1 DB query",
            &format!("{cn} + {dbn}"),
            format!("{fetches} queries"),
            Verdict::of(fetches == 1),
        );
    }
    for name in &env.skipped_caches {
        sec.skipped(&["-", name], "unreachable");
        report.check(
            "stampede of 1000 on a cold key = 1 DB query",
            name,
            String::new(),
            Verdict::Skipped("unreachable".into()),
        );
    }
    report.sections.push(sec);
    Ok(())
}

/// 8. Memory: bytes per cached entry in-process.
pub async fn memory(env: &Env, report: &mut Report) -> BenchResult<()> {
    let plan = &env.plan;
    let db = &env.dbs[0];
    // A store of its own, so that only event entries are counted.
    let mem = MemoryBackend::default();
    let prefix = format!("{}mem:", env.prefix);
    let fdb = flash_db(&db.db, Arc::new(mem.clone()), prefix, false, false).await?;
    let cache = fdb.cache::<event::Entity>();
    let (mut key_bytes, mut value_bytes) = (0usize, 0usize);
    let mut sample = None;
    for id in 1..=plan.events {
        cache.get(by(event::Column::Id, id)).await?;
        let key = cache.cache_key(&by(event::Column::Id, id))?;
        let v = mem
            .get_many(std::slice::from_ref(&key))
            .await?
            .pop()
            .flatten()
            .ok_or("entry not filled")?;
        key_bytes += key.len();
        value_bytes += v.len();
        sample.get_or_insert((key, v));
    }
    mem.sync().await;
    let entries = mem.entry_count();
    let weighted = mem.weighted_size();
    let n = plan.events as f64;

    // Real heap cost: RSS growth while the same entries are stored again and
    // again under new keys in a fresh store (no flash, no database in between).
    let (key, value) = sample.ok_or("no events")?;
    let bulk = MemoryBackend::default();
    let before = rss_kib("VmRSS:").unwrap_or(0);
    for i in 0..plan.memory_entries {
        let k = format!("{key}{i:08}");
        bulk.set(&k, &value, Duration::ZERO).await?;
    }
    bulk.sync().await;
    let after = rss_kib("VmRSS:").unwrap_or(0);
    let per_entry = after.saturating_sub(before) as f64 * 1024.0 / plan.memory_entries as f64;

    let mut sec = Section::new(
        "8. Memory (in-process cache)",
        "Weighted size is moka's weigher (key + value + 48 bytes of assumed overhead) after `sync()`. \
         RSS per entry: growth of the resident set while storing N copies of one entry under fresh keys \
         in an empty `MemoryBackend` (allocator and moka bookkeeping included).",
        &["measure", "value"],
    );
    sec.row(vec![
        "event entries (after filling every row)".into(),
        entries.to_string(),
    ]);
    sec.row(vec![
        "encoded entry (header + postcard row), average".into(),
        format!("{:.0} B", value_bytes as f64 / n),
    ]);
    sec.row(vec![
        "key, average".into(),
        format!("{:.0} B", key_bytes as f64 / n),
    ]);
    sec.row(vec![
        "weighted size / entry_count".into(),
        format!("{:.0} B", weighted as f64 / entries.max(1) as f64),
    ]);
    sec.row(vec![
        format!("RSS growth per entry ({} entries)", plan.memory_entries),
        format!("{per_entry:.0} B"),
    ]);
    if let Some(hwm) = rss_kib("VmHWM:") {
        sec.row(vec![
            "peak RSS of the whole run so far (VmHWM)".into(),
            format!("{:.1} MiB", hwm as f64 / 1024.0),
        ]);
    }
    report.sections.push(sec);
    Ok(())
}
