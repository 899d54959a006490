//! `flash bench`: flash against the database and the raw cache client, in one run.
//!
//! Every reachable target is measured on the same rows in the same run:
//! PostgreSQL and SQLite as databases, the in-process store, Redis and
//! memcached as caches. The output is markdown (tables to paste into the
//! README) with a PASS/MISS verdict on each target of the issue.
//!
//! Module map: `setup` connects and seeds the targets, `latency` holds
//! the sequential scenarios (1–3), `miss` the miss path and its floor (4),
//! `load` the concurrent ones and memory
//! (5, 6, 8), `writes` the updates (7), `capture` the lag of a foreign
//! write and the triggers' cost (9), `page` a row with two embedded
//! relations (10), `seal` what entry seals cost a hit (11), `stats`
//! medians and the report,
//! `wire` a hand-written GET for the wire floor.

/// Times each of `n` operations (`|i|` from `start`) on its own; the body is
/// inlined (no boxing or closure in the measured path) and may use `?`.
macro_rules! time_loop {
    ($start:expr, $n:expr, $out:expr, |$i:ident| $body:expr) => {{
        for $i in $start..$start + $n {
            let t0 = std::time::Instant::now();
            $body;
            $out.push(t0.elapsed());
        }
    }};
}

mod capture;
mod floor;
mod latency;
mod load;
mod miss;
mod near;
mod page;
mod seal;
mod setup;
mod stats;
mod wire;
mod writes;

use flash_sea_orm::FlashDb;
use setup::{CacheTarget, DbTarget};
use stats::{BenchResult, Report};
use std::time::{Duration, Instant};

/// Options of `flash bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A small, CI-sized run (seconds, not minutes).
    #[arg(long)]
    pub quick: bool,
    /// Run only the scenarios whose numbers are given (1-12; repeatable,
    /// e.g. `--only 2 --only 7`). All by default.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=12))]
    pub only: Vec<u8>,
}

/// How much of everything a run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rows in the event table (ids 1..=events).
    events: i32,
    /// Keys of the latency scenarios (ids 1..=hot).
    hot: i32,
    /// Measured rounds of the interleaved scenarios (plus one of warm-up).
    rounds: usize,
    per_round: usize,
    batch_per_round: usize,
    filter_per_round: usize,
    miss_per_round: usize,
    write_rounds: usize,
    write_per_round: usize,
    tasks: usize,
    throughput: Duration,
    zipf_s: f64,
    stampede: usize,
    memory_entries: usize,
    /// Foreign writes timed per target (scenario 9).
    lag_samples: usize,
    capture_rounds: usize,
    capture_single: usize,
    capture_bulk: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                events: 2_000,
                hot: 500,
                rounds: 4,
                per_round: 250,
                batch_per_round: 25,
                filter_per_round: 100,
                miss_per_round: 50,
                write_rounds: 4,
                write_per_round: 10,
                tasks: 64,
                throughput: Duration::from_secs(1),
                zipf_s: 1.0,
                stampede: 1000,
                memory_entries: 20_000,
                lag_samples: 20,
                capture_rounds: 3,
                capture_single: 10,
                capture_bulk: 2,
            }
        } else {
            Plan {
                events: 10_000,
                hot: 1_000,
                rounds: 20,
                per_round: 1_000,
                batch_per_round: 100,
                filter_per_round: 250,
                miss_per_round: 100,
                write_rounds: 10,
                write_per_round: 30,
                tasks: 64,
                throughput: Duration::from_secs(5),
                zipf_s: 1.0,
                stampede: 1000,
                memory_entries: 200_000,
                lag_samples: 200,
                capture_rounds: 10,
                capture_single: 30,
                capture_bulk: 5,
            }
        }
    }
}

/// A database and a cache, with a flash handle (no outbox, no capture: the
/// scenarios that need capture build their own, one drain at a time) on both.
pub struct Pair {
    db: usize,
    cache: usize,
    prefix: String,
    fdb: FlashDb,
}

/// The reachable targets and their flash handles.
pub struct Env {
    plan: Plan,
    /// Key prefix of this run (per process, so runs and tests never collide).
    prefix: String,
    /// PostgreSQL first when reachable: the database of the cache-only scenarios.
    dbs: Vec<DbTarget>,
    skipped_dbs: Vec<&'static str>,
    caches: Vec<CacheTarget>,
    skipped_caches: Vec<&'static str>,
    /// Every database with every cache.
    pairs: Vec<Pair>,
}

impl Env {
    /// The pairs on the first database, one per cache.
    fn primary_pairs(&self) -> Vec<&Pair> {
        self.pairs.iter().filter(|p| p.db == 0).collect()
    }
}

/// A target that could not be reached: skipped, or an error when
/// `FLASH_REQUIRE_SERVERS` is set.
fn unreachable(name: &str, e: &dyn std::fmt::Display) -> BenchResult<()> {
    if std::env::var_os("FLASH_REQUIRE_SERVERS").is_some_and(|v| !v.is_empty()) {
        return Err(format!("{name} unreachable ({e}) and FLASH_REQUIRE_SERVERS is set").into());
    }
    eprintln!("bench: {name} unreachable ({e}): skipped");
    Ok(())
}

/// Runs the benchmarks and prints the table.
pub async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_inner(args)
        .await
        .map_err(|e| e as Box<dyn std::error::Error>)
}

async fn run_inner(args: BenchArgs) -> BenchResult<()> {
    let started = Instant::now();
    let plan = Plan::new(args.quick);
    let prefix = format!("fbench{}:", std::process::id());

    let mut dbs = Vec::new();
    let mut skipped_dbs = Vec::new();
    match setup::postgres().await {
        Ok(d) => dbs.push(d),
        Err(e) => {
            unreachable("PostgreSQL", &e)?;
            skipped_dbs.push("PostgreSQL");
        }
    }
    dbs.push(setup::sqlite().await?);

    let mut caches = Vec::new();
    let mut skipped_caches = Vec::new();
    caches.push(CacheTarget::memory().0);
    match CacheTarget::redis().await {
        Ok(c) => caches.push(c),
        Err(e) => {
            cleanup_on_err(&mut dbs, unreachable("Redis", &e)).await?;
            skipped_caches.push("Redis");
        }
    }
    match CacheTarget::memcache().await {
        Ok(c) => caches.push(c),
        Err(e) => {
            cleanup_on_err(&mut dbs, unreachable("memcached", &e)).await?;
            skipped_caches.push("memcached");
        }
    }

    let mut env = Env {
        plan,
        prefix,
        dbs,
        skipped_dbs,
        caches,
        skipped_caches,
        pairs: Vec::new(),
    };
    let result = measure(&mut env, &args.only).await;
    // Flash handles first (their refresh tasks hold connections), then the
    // schema and the file go, whatever happened.
    let Env { dbs, pairs, .. } = env;
    drop(pairs);
    for d in dbs {
        d.cleanup().await;
    }
    let report = result?;
    println!("{}", report.markdown());
    eprintln!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Drops the databases before an early error, so that no schema is left behind.
async fn cleanup_on_err(dbs: &mut Vec<DbTarget>, r: BenchResult<()>) -> BenchResult<()> {
    if r.is_err() {
        for d in dbs.drain(..) {
            d.cleanup().await;
        }
    }
    r
}

/// Seeds every database, builds the flash handles, runs the scenarios.
async fn measure(env: &mut Env, only: &[u8]) -> BenchResult<Report> {
    for (di, d) in env.dbs.iter().enumerate() {
        eprintln!("bench: seeding {} ({} events)", d.name, env.plan.events);
        setup::seed(&d.db, env.plan.events).await?;
        for (ci, c) in env.caches.iter().enumerate() {
            let prefix = format!("{}{di}{ci}:", env.prefix);
            let fdb = setup::flash_db(&d.db, c.flash_backend.clone(), prefix.clone(), false, false)
                .await?;
            env.pairs.push(Pair {
                db: di,
                cache: ci,
                prefix,
                fdb,
            });
        }
    }
    let env = &*env;
    let mut report = Report {
        preamble: preamble(env),
        ..Default::default()
    };
    type Step =
        for<'a> fn(&'a Env, &'a mut Report) -> futures::future::BoxFuture<'a, BenchResult<()>>;
    let steps: [(&str, Step); 12] = [
        ("1. one lookup", |e, r| Box::pin(latency::one_lookup(e, r))),
        ("2. batch of 100", |e, r| Box::pin(latency::batch(e, r))),
        ("3. filter list", |e, r| {
            Box::pin(latency::filter_list(e, r))
        }),
        ("4. miss path", |e, r| Box::pin(miss::miss_path(e, r))),
        ("5. throughput", |e, r| Box::pin(load::throughput(e, r))),
        ("6. stampede", |e, r| Box::pin(load::stampede(e, r))),
        ("7. writes", |e, r| Box::pin(writes::writes(e, r))),
        ("8. memory", |e, r| Box::pin(load::memory(e, r))),
        ("9. capture", |e, r| Box::pin(capture::capture(e, r))),
        ("10. page", |e, r| Box::pin(page::page(e, r))),
        ("11. entry seals", |e, r| Box::pin(seal::seal_cost(e, r))),
        ("12. near tier", |e, r| Box::pin(near::near(e, r))),
    ];
    for (n, (name, step)) in (1u8..).zip(steps) {
        if !only.is_empty() && !only.contains(&n) {
            continue;
        }
        let t = Instant::now();
        step(env, &mut report).await?;
        eprintln!("bench: {name}: {:.1} s", t.elapsed().as_secs_f64());
    }
    Ok(report)
}

/// What ran where, printed above the tables.
fn preamble(env: &Env) -> String {
    let mut out = String::from("Targets:\n\n");
    for d in &env.dbs {
        out.push_str(&format!("- {}: {}\n", d.name, d.location));
    }
    for c in &env.caches {
        out.push_str(&format!("- {}: {}\n", c.name, setup::redact(&c.url)));
    }
    for name in env.skipped_dbs.iter().chain(&env.skipped_caches) {
        out.push_str(&format!("- {name}: skipped (unreachable)\n"));
    }
    out.push('\n');
    out
}
