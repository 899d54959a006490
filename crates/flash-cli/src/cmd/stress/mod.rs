//! `flash stress`: the consistency stress test of issue 4.
//!
//! Several OS processes share one database and one cache. In each, writer
//! tasks change rows they own (title updates, slug renames, update-many,
//! transactions, participations moving between users, deletes) and publish,
//! after each write call returned, the revision it wrote; reader tasks read
//! the published revision and then look the row up through flash, which must
//! never return an older state (check b). When the writers stop and pending
//! invalidations are drained, every cached entry must equal the database
//! (check a), and a burst of 1 000 concurrent misses on one key must cost one
//! database fetch (check c). Faults: the cache server killed and restarted
//! mid-run; a writer process aborted right after a commit, before its
//! invalidation (repaired by capture, or by the outbox without it). With
//! `--no-leases` the run must find stale entries: that is how we know the
//! checks can fail.
//!
//! Foreign writers (`--foreign-writers`, 1 per process by default) write
//! around flash: raw SQL on the events, plain SeaORM on the participations.
//! Only capture invalidates what they write, so readers may see the previous
//! state for a moment after such a write returned: that staleness is measured
//! (d) and must stay under [`FOREIGN_STALENESS_BOUND`]; check (a) covers
//! their rows too. With `--no-capture` the run must find stale entries.
//!
//! `--partition` cuts process 0 off from the cache at times (a paused TCP
//! proxy, see `proxy`): the other processes learn of its writes through
//! capture, and their staleness (e) is held to the same bound.

mod check;
mod proxy;
mod server;
mod worker;

use flash::config::{cache_backend, cache_url, connect_namespace, database_url, drop_namespace};
use flash_sea_orm::{FlashDb, Registrar};
use flash_test_kit::{declare_with_relations, schema};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::time::{Duration, Instant};

/// Options of `flash stress`.
#[derive(Debug, Clone, clap::Args)]
pub struct StressArgs {
    /// A small, CI-sized run (about 15 000 operations).
    #[arg(long)]
    pub quick: bool,
    /// Total operations over all processes (default 120 000).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Worker processes sharing the cache (1 with the in-process cache).
    #[arg(long, default_value_t = 2)]
    pub processes: u32,
    /// Reader tasks per process.
    #[arg(long, default_value_t = 24)]
    pub readers: u32,
    /// Writer tasks per process.
    #[arg(long, default_value_t = 4)]
    pub writers: u32,
    /// Fill without leases (the original's protocol): stale entries expected.
    #[arg(long)]
    pub no_leases: bool,
    /// Pause between each database read and its cache fill, in milliseconds:
    /// widens the window a stale fill needs (a GC pause, a slow network).
    #[arg(long, default_value_t = 2)]
    pub fill_delay_ms: u64,
    /// Succeed only if stale entries were found (for the --no-leases variant).
    #[arg(long)]
    pub expect_stale: bool,
    /// Run on a dedicated cache server, SIGKILL it mid-run and restart it.
    #[arg(long)]
    pub kill_cache: bool,
    /// Add a writer process that aborts right after a commit, before its invalidation.
    #[arg(long)]
    pub kill_writer: bool,
    /// Writer tasks per process that bypass flash (raw SQL on the events,
    /// plain SeaORM on the participations): only capture invalidates them.
    #[arg(long, default_value_t = 1)]
    pub foreign_writers: u32,
    /// A near tier in every process (Redis pub/sub on Redis, PostgreSQL
    /// LISTEN/NOTIFY on memcached; bound [`NEAR_BOUND`]): reads of rows other
    /// processes write may then be stale for up to the bound, measured as (d).
    #[arg(long)]
    pub near: bool,
    /// Turn the capture of every write off (`Registrar::capture(false)`):
    /// with foreign writers, stale entries expected (use with --expect-stale).
    #[arg(long)]
    pub no_capture: bool,
    /// Cut worker process 0 off from the cache at times (a paused TCP proxy:
    /// its requests hang until they time out) while the others reach it;
    /// writes of process 0 seen stale elsewhere are measured (e) against the
    /// same bound as foreign writes. Redis or memcached, several processes.
    #[arg(long)]
    pub partition: bool,
    /// With --partition: how long each cut lasts, in milliseconds (default
    /// 2 000 with --quick, else 3 000; cuts start every cut + 2 s with
    /// --quick, else every cut + 9 s).
    #[arg(long)]
    pub cut_ms: Option<u64>,
    #[arg(long, hide = true)]
    pub worker: Option<u32>,
    #[arg(long, hide = true)]
    pub ns: Option<String>,
    #[arg(long, hide = true)]
    pub prefix: Option<String>,
    #[arg(long, hide = true)]
    pub cache: Option<String>,
    #[arg(long, hide = true)]
    pub worker_ops: Option<u64>,
    #[arg(long, hide = true)]
    pub slots: Option<u32>,
}

/// How long after a foreign write (raw SQL, plain SeaORM) returned a reader
/// may still see the previous state, at most: the verdict's bound on (d).
/// The drain's own figures are far below it (PostgreSQL: a notification,
/// else a 250 ms poll; MySQL and SQLite: a 20 ms poll); the margin covers a
/// loaded 2-core machine and the cache server's restart under --kill-cache.
pub(crate) const FOREIGN_STALENESS_BOUND: Duration = Duration::from_secs(1);

/// The writer of event `id`: (process, writer task in it). Slot
/// `p * writers + w` is writer `w` of process `p`, and owns the events
/// `id` with `id % slots == slot`.
pub(crate) fn owner(id: i32, slots: u32, writers: u32) -> (u32, u32) {
    let slot = id as u32 % slots.max(1);
    (slot / writers.max(1), slot % writers.max(1))
}

/// `--partition`: how long each cut lasts and the time between cuts (a
/// full run cuts 3 s five times a minute).
fn cut_schedule(args: &StressArgs) -> (Duration, Duration) {
    let (cut, gap) = if args.quick {
        (2000, 2000)
    } else {
        (3000, 9000)
    };
    (
        Duration::from_millis(args.cut_ms.unwrap_or(cut)),
        Duration::from_millis(gap),
    )
}

/// The near tier's bound in the stress test (`--near`).
pub(crate) const NEAR_BOUND: Duration = Duration::from_millis(500);

/// The data set.
pub(crate) const EVENTS: i32 = 120;
/// The hot events: most reads and writes go to these, so that races happen.
pub(crate) const HOT: i32 = 12;
pub(crate) const USERS: i32 = 40;
pub(crate) const PARTICIPATIONS: i32 = 400;
pub(crate) const PROGRESS_TABLE: &str = "stress_progress";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One handle as every process builds it: same declarations, same prefix.
pub(crate) async fn build(
    db: DatabaseConnection,
    cache: &str,
    prefix: &str,
    no_leases: bool,
    capture: bool,
    fill_delay: Duration,
    near: bool,
) -> Result<(FlashDb, flash_test_kit::DemoClasses), BoxError> {
    let backend = cache_backend(cache).await?;
    let bus = if near {
        Some(near_bus(&db, cache, prefix)?)
    } else {
        None
    };
    let prefix = prefix.to_owned();
    let mut reg = Registrar::new(db).capture(capture).configure(|b| {
        let b = match bus {
            Some(bus) => b.near_cache(flash_core::NearConfig::default().bound(NEAR_BOUND), bus),
            None => b,
        };
        let b = b
            .backend_arc(backend)
            .prefix(prefix)
            .version_refresh(Duration::from_secs(1))
            .unsafe_fill_delay(fill_delay);
        if no_leases {
            b.unsafe_disable_leases()
        } else {
            b
        }
    });
    let classes =
        declare_with_relations(&mut reg, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    Ok((reg.build().await.map_err(|e| e.to_string())?, classes))
}

/// The staleness figures of writes seen stale (µs from the write's return
/// to the stale lookup), and how many were over the bound.
fn staleness(lags: impl Iterator<Item = i64>) -> (String, u64) {
    let bound_us = FOREIGN_STALENESS_BOUND.as_micros() as i64;
    let mut lags: Vec<i64> = lags.collect();
    lags.sort_unstable();
    let p99 = lags
        .get(((lags.len().max(1) - 1) as f64 * 0.99).round() as usize)
        .copied()
        .unwrap_or(0);
    let over = lags.iter().filter(|l| **l > bound_us).count() as u64;
    let text = format!(
        "{}; staleness after the write returned: max {:.1} ms, p99 {:.1} ms (bound {} ms): {over} over the bound",
        lags.len(),
        lags.last().copied().unwrap_or(0) as f64 / 1e3,
        p99 as f64 / 1e3,
        FOREIGN_STALENESS_BOUND.as_millis(),
    );
    (text, over)
}

/// The near tier's channel for `cache`: its own pub/sub on Redis (a
/// cluster's first node), PostgreSQL's notifications on memcached.
fn near_bus(
    db: &DatabaseConnection,
    cache: &str,
    prefix: &str,
) -> Result<std::sync::Arc<dyn flash_core::NearBus>, BoxError> {
    let channel = format!("{}near", prefix.replace(':', "_"));
    if let Some(rest) = cache.strip_prefix("redis+cluster://") {
        let first = rest.split([',', '/']).next().unwrap_or_default();
        return Ok(std::sync::Arc::new(flash_redis::RedisBus::new(
            &format!("redis://{first}"),
            &channel,
        )?));
    }
    if cache.starts_with("redis://") || cache.starts_with("rediss://") {
        return Ok(std::sync::Arc::new(flash_redis::RedisBus::new(
            cache, &channel,
        )?));
    }
    if cache.starts_with("memcache://")
        && db.get_database_backend() == sea_orm::DatabaseBackend::Postgres
    {
        return Ok(std::sync::Arc::new(flash_sea_orm::PgBus::new(
            db, &channel,
        )?));
    }
    Err(format!("--near: no invalidation channel for {cache} on this database (Redis, or memcached with PostgreSQL)").into())
}

/// Runs the stress test (or, with the hidden `--worker`, one worker process).
pub async fn run(args: StressArgs) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(id) = args.worker {
        let report = worker::run_process(&args, id)
            .await
            .map_err(|e| e.to_string())?;
        println!("{}", report.to_lines());
        return Ok(());
    }
    orchestrate(args).await.map_err(|e| e.to_string().into())
}

async fn orchestrate(args: StressArgs) -> Result<(), BoxError> {
    let url = database_url();
    let mut cache = cache_url();
    let in_process = cache.starts_with("memory");
    let processes = if in_process { 1 } else { args.processes.max(1) };
    let total_ops = args
        .ops
        .unwrap_or(if args.quick { 15_000 } else { 120_000 });
    let ns = format!("flash_stress_{}", std::process::id());
    let prefix = format!("stress{}:", std::process::id());
    let started = Instant::now();

    let mut dedicated = None;
    if args.kill_cache {
        let s = server::Dedicated::start(&cache).await?;
        cache = s.url();
        dedicated = Some(s);
    }
    let partition = match args.partition {
        true if processes < 2 => {
            return Err("--partition needs a server cache and at least 2 processes".into())
        }
        true => Some(std::sync::Arc::new(proxy::Partition::start(&cache).await?)),
        false => None,
    };
    if let Some(p) = &partition {
        cache = p.direct_url().to_owned();
    }
    println!(
        "flash stress: database {url}, cache {cache}, {processes} process(es) x ({} readers + {} writers, {} of them foreign), {total_ops} operations, fill delay {} ms{}{}{}{}{}",
        args.readers,
        args.writers,
        args.foreign_writers.min(args.writers),
        args.fill_delay_ms,
        if args.no_leases { ", LEASES DISABLED" } else { "" },
        if args.no_capture { ", CAPTURE DISABLED" } else { "" },
        if args.kill_cache { ", cache server killed mid-run" } else { "" },
        if args.kill_writer { ", a writer aborted after commit" } else { "" },
        if args.partition { ", process 0 cut off from the cache at times" } else { "" },
    );
    if args.near {
        println!("  near tier on in every process (bound {NEAR_BOUND:?})");
    }

    let db = connect_namespace(&url, &ns, true, 8).await?;
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        // The namespace is a file shared by every task and process: in WAL
        // mode (kept by the file) readers do not hold back the writers, the
        // drain's deletes among them (with the rollback journal, the related
        // classes' reads starved them: capture lag p99 0.77 s).
        db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
    }
    schema::create_tables(&db).await?;
    worker::seed(&db).await?;
    let (fdb, classes) = build(
        db.clone(),
        &cache,
        &prefix,
        args.no_leases,
        !args.no_capture,
        Duration::from_millis(args.fill_delay_ms),
        args.near,
    )
    .await?;

    let extra = u32::from(args.kill_writer);
    let slots = (processes + extra) * args.writers.max(1);
    let per_process = total_ops / u64::from(processes);
    let mut reports = Vec::new();
    let mut faults = Vec::new();
    if in_process {
        let w = worker::Worker::new(
            fdb.clone(),
            classes.clone(),
            0,
            (args.readers, args.writers, args.foreign_writers),
            slots,
            db.clone(),
        )
        .near(args.near);
        reports.push(w.run(per_process).await?);
    } else {
        let exe = std::env::current_exe()?;
        let spawn = |id: u32,
                     ops: u64,
                     failpoint: Option<String>|
         -> std::io::Result<tokio::process::Child> {
            let mut c = tokio::process::Command::new(&exe);
            let cache = match &partition {
                Some(p) if id == 0 => p.url(),
                _ => &cache,
            };
            c.args([
                "stress",
                "--worker",
                &id.to_string(),
                "--ns",
                &ns,
                "--prefix",
                &prefix,
                "--cache",
                cache,
            ])
            .args([
                "--worker-ops",
                &ops.to_string(),
                "--slots",
                &slots.to_string(),
            ])
            .args([
                "--readers",
                &args.readers.to_string(),
                "--writers",
                &args.writers.to_string(),
            ])
            .args(["--fill-delay-ms", &args.fill_delay_ms.to_string()])
            .args(["--foreign-writers", &args.foreign_writers.to_string()])
            .env("DATABASE_URL", &url)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
            if args.no_leases {
                c.arg("--no-leases");
            }
            if args.no_capture {
                c.arg("--no-capture");
            }
            if args.partition {
                c.arg("--partition");
            }
            if args.near {
                c.arg("--near");
            }
            if let Some(fp) = failpoint {
                c.env("FLASH_FAILPOINT", fp)
                    .stderr(std::process::Stdio::null());
            }
            c.spawn()
        };
        let mut children = Vec::new();
        for id in 0..processes {
            children.push((id, spawn(id, per_process, None)?));
        }
        if args.kill_writer {
            // Dies at its 150th write, between commit and invalidation.
            children.push((
                processes,
                spawn(processes, per_process, Some("after_commit@150".into()))?,
            ));
            faults
                .push("writer process aborted after a commit, before its invalidation".to_string());
        }
        // The cuts run until every worker has ended.
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let cutter = partition.clone().map(|p| {
            let (cut, gap) = cut_schedule(&args);
            let cuts = cuts.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(gap).await;
                    p.set_cut(true);
                    cuts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(cut).await;
                    p.set_cut(false);
                }
            })
        });
        if let Some(s) = dedicated.as_mut() {
            tokio::time::sleep(Duration::from_secs(if args.quick { 2 } else { 6 })).await;
            s.kill().await?;
            faults.push(format!("cache server {} killed (SIGKILL)", s.url()));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            s.restart().await?;
            faults.push("cache server restarted".to_string());
        }
        for (id, child) in children {
            let out = child.wait_with_output().await?;
            let text = String::from_utf8_lossy(&out.stdout);
            match worker::Report::from_output(&text) {
                Some(r) => reports.push(r),
                None if args.kill_writer && id == processes => {
                    println!("  worker {id}: aborted by its failpoint ({})", out.status)
                }
                None => return Err(format!("worker {id} failed: {} {text}", out.status).into()),
            }
        }
        if let (Some(t), Some(p)) = (cutter, &partition) {
            t.abort();
            p.set_cut(false);
            let (cut, _) = cut_schedule(&args);
            faults.push(format!(
                "process 0 cut off from the cache {} time(s) for {:.1} s (a paused proxy)",
                cuts.load(std::sync::atomic::Ordering::Relaxed),
                cut.as_secs_f64()
            ));
        }
    }

    // Pending invalidations drain: the outbox (off with capture), then every
    // captured change not applied yet (the drain tasks of dead processes').
    let drained = fdb.drain_outbox().await?;
    let captured = fdb.apply_captured().await?;
    let stale = check::final_state(&fdb, &classes, &db).await?;
    // (c) a burst of concurrent misses on one cold key (last: without leases
    // it is a storm that would disturb the run).
    let burst_fetches = worker::stampede(&fdb, 1000).await?;
    let total = reports
        .iter()
        .fold(worker::Report::default(), |a, r| a.merge(r));
    println!(
        "  operations: {} ({} reads, {} writes: {} renames, {} moves, {} update-many, {} transactions, {} deletes) in {:.1}s",
        total.reads + total.writes,
        total.reads,
        total.writes,
        total.renames,
        total.moves,
        total.bulk,
        total.txns,
        total.deletes,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  faults injected: {}",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join("; ")
        }
    );
    println!("  outbox rows re-applied at the end: {drained}; captured changes applied at the end: {captured}");
    if args.near {
        println!("  lookups served by the near tier: {}", total.near_hits);
    }
    println!(
        "  (b) lookups that saw a state older than a returned write through flash{}: {} (related classes checked along: {} many-to-many lists and as many related instances)",
        if args.near {
            " of their own process (near tier on)"
        } else {
            ""
        },
        total.violations,
        total.related_reads
    );
    let writers = args.writers.max(1);
    let foreign = args.foreign_writers.min(writers);
    let (foreign_lags, cut_lags): (Vec<_>, Vec<_>) = total
        .stale_after
        .iter()
        .partition(|((id, _), _)| !args.partition || owner(*id, slots, writers).1 < foreign);
    let (lags, mut over) = staleness(foreign_lags.into_iter().map(|(_, us)| *us));
    println!(
        "  (d) foreign writes (raw SQL, plain SeaORM): {}{}; seen stale by a reader: {lags}",
        total.foreign,
        if args.near {
            ", and other processes' writes through flash (near tier on)"
        } else {
            ""
        },
    );
    if args.partition {
        let (lags, o) = staleness(cut_lags.into_iter().map(|(_, us)| *us));
        over += o;
        println!(
            "  (e) writes through flash by the cut-off process, seen stale by the other processes: {lags}"
        );
    }
    println!(
        "  (a) cached entries that differ from the database: {} of {} checked",
        stale.stale, stale.checked
    );
    for d in stale.examples.iter().take(5) {
        println!("      {d}");
    }
    println!("  (c) database fetches for a burst of 1000 misses on one key: {burst_fetches}");
    let found = stale.stale + total.violations + over;
    println!("  stale entries found: {found}");
    drop(fdb);
    db.execute_unprepared("SELECT 1").await?;
    drop_namespace(&url, &ns).await?;
    if args.expect_stale {
        return if found > 0 {
            Ok(())
        } else {
            Err(
                "expected the run (without leases or capture) to find stale entries; it found none"
                    .into(),
            )
        };
    }
    if found > 0 {
        return Err(format!("{found} stale entries").into());
    }
    if burst_fetches != 1 {
        return Err(format!("stampede cost {burst_fetches} database fetches, expected 1").into());
    }
    Ok(())
}
