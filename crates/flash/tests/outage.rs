//! Cache server outages: a Redis or memcached of the test's own is SIGKILLed in
//! the middle of mixed traffic, then restarted on the same port. Every lookup
//! must keep returning exactly the database's current value, no error may reach
//! the caller, lookups stay fast while the server is down (the 50 ms operation
//! timeout plus the circuit breaker of `flash::config::cache_backend`), and
//! caching resumes by itself once the server is back.
//!
//! Needs the `redis-server` and `memcached` binaries (see scripts/servers.sh):
//! without them these tests skip, or fail when `FLASH_REQUIRE_SERVERS` is set.
#![cfg(all(feature = "redis", feature = "memcache"))]

mod common;

use common::*;
use flash::config::cache_backend;
use flash_core::{Backend, BackendError, Error, Outcome};
use flash_sea_orm::{by, FlashDb};
use flash_test_kit::entities::event;
use flash_test_kit::{Hooked, Op};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Set};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most a lookup may take while the cache is down: the 50 ms operation
/// timeout (at most two cache operations fail before the database is asked),
/// the database read, and slack for a loaded 2-core CI machine.
const MAX_DEGRADED_LOOKUP: Duration = Duration::from_millis(200);

/// How long caching may take to resume after the server is back: the breaker's
/// 1 s cool-down, a failed probe or two while the client reconnects, margin.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

const TASKS: usize = 4;
const ROWS_PER_TASK: usize = 3;

// Phases of the mixed-traffic run.
const UP: u8 = 0;
const DOWN: u8 = 1;
const RESTARTED: u8 = 2;

/// Sorts the errors the resilient backend hands to flash: `CircuitOpen` (the
/// breaker refused without calling the server) and the rest (the call reached
/// the client and failed or timed out). The wrapper sits between flash and the
/// `ResilientBackend` returned by `cache_backend`, which cannot be downcast.
/// Invalidations (`set_many`) are counted apart: the breaker lets every one
/// through, on purpose.
#[derive(Default)]
struct ErrorKinds {
    circuit_open: AtomicU64,
    failed: AtomicU64,
    invalidations_failed: AtomicU64,
}

impl ErrorKinds {
    /// `inner`, with its errors sorted into the returned counts.
    fn new(inner: Arc<dyn Backend>) -> (Arc<Hooked<Arc<dyn Backend>>>, Arc<Self>) {
        let kinds = Arc::new(ErrorKinds::default());
        let k = kinds.clone();
        let backend = Hooked::new(inner)
            .coalesce_reads(true)
            .after(move |op, r| k.note(op, r));
        (Arc::new(backend), kinds)
    }
    fn note(&self, op: Op, r: Result<(), &BackendError>) {
        if op == Op::SetMany {
            assert!(
                !matches!(r, Err(BackendError::CircuitOpen)),
                "the breaker refused an invalidation"
            );
            if r.is_err() {
                self.invalidations_failed.fetch_add(1, SeqCst);
            }
            return;
        }
        match r {
            Err(BackendError::CircuitOpen) => self.circuit_open.fetch_add(1, SeqCst),
            Err(_) => self.failed.fetch_add(1, SeqCst),
            Ok(()) => 0,
        };
    }
    fn counts(&self) -> (u64, u64) {
        (self.circuit_open.load(SeqCst), self.failed.load(SeqCst))
    }
}

/// WAL on SQLite, so that the lookups' reads do not queue behind the writers'
/// commits: the latency bound is about the cache, not about SQLite's locking.
async fn readers_do_not_wait_for_writers(db: &DatabaseConnection) {
    if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .expect("WAL");
    }
}

/// Runs one lookup; an error reaching the caller fails the test.
async fn timed<T>(
    what: &str,
    f: impl Future<Output = Result<(T, Outcome), Error>>,
) -> (T, Outcome, Duration) {
    let started = Instant::now();
    match f.await {
        Ok((v, o)) => (v, o, started.elapsed()),
        Err(e) => panic!("{what}: an error reached the caller: {e}"),
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    phase: u8,
    took: Duration,
    outcome: Outcome,
}

/// One task of the mixed traffic. It is the only writer of `rows`, so it always
/// knows their current values: every lookup it makes must return exactly that
/// (a row by id, by current slug, and "no row" for a slug it renamed away from).
/// `writer` serialises the writes of all workers (see `outage_mid_traffic`).
async fn worker(
    fdb: FlashDb,
    task: usize,
    mut rows: Vec<event::Model>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    writer: Arc<tokio::sync::Mutex<()>>,
) -> (Vec<Sample>, Vec<event::Model>) {
    let mut rng = StdRng::seed_from_u64(task as u64);
    let mut former_slugs: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let mut generation = 0u32;
    let events = fdb.cache::<event::Entity>();
    let mut i = 0usize;
    while !stop.load(SeqCst) {
        let k = i % rows.len();
        i += 1;
        let p = phase.load(SeqCst);
        let expected = rows[k].clone();
        match rng.random_range(0..100) {
            0..40 => {
                let (got, outcome, took) = timed(
                    "lookup by id",
                    events.get_with_outcome(by(event::Column::Id, expected.id)),
                )
                .await;
                assert_eq!(
                    got.as_ref(),
                    Some(&expected),
                    "task {task}, phase {p}, by id, outcome {outcome:?}"
                );
                samples.push(Sample {
                    phase: p,
                    took,
                    outcome,
                });
            }
            40..70 => {
                let (got, outcome, took) = timed(
                    "lookup by slug",
                    events.get_with_outcome(by(event::Column::Slug, expected.slug.clone())),
                )
                .await;
                assert_eq!(
                    got.as_ref(),
                    Some(&expected),
                    "task {task}, phase {p}, by slug, outcome {outcome:?}"
                );
                samples.push(Sample {
                    phase: p,
                    took,
                    outcome,
                });
            }
            70..80 if !former_slugs.is_empty() => {
                let old = former_slugs[rng.random_range(0..former_slugs.len())].clone();
                let (got, outcome, took) = timed(
                    "lookup by former slug",
                    events.get_with_outcome(by(event::Column::Slug, old.clone())),
                )
                .await;
                assert_eq!(
                    got, None,
                    "task {task}, phase {p}, former slug {old}, outcome {outcome:?}"
                );
                samples.push(Sample {
                    phase: p,
                    took,
                    outcome,
                });
            }
            70..92 => {
                generation += 1;
                let title = format!("title t{task} r{k} g{generation}");
                let am = event::ActiveModel {
                    id: Set(expected.id),
                    title: Set(title.clone()),
                    ..Default::default()
                };
                let m = {
                    let _one_writer = writer.lock().await;
                    fdb.update(am).await
                }
                .unwrap_or_else(|e| panic!("task {task}, phase {p}: update failed: {e}"));
                assert_eq!(m.title, title);
                rows[k] = m;
            }
            _ => {
                generation += 1;
                let slug = format!("t{task}-r{k}-g{generation}");
                let am = event::ActiveModel {
                    id: Set(expected.id),
                    slug: Set(slug.clone()),
                    ..Default::default()
                };
                let m = {
                    let _one_writer = writer.lock().await;
                    fdb.update(am).await
                }
                .unwrap_or_else(|e| panic!("task {task}, phase {p}: rename failed: {e}"));
                assert_eq!(m.slug, slug);
                former_slugs.push(expected.slug);
                rows[k] = m;
            }
        }
        // Leave CPU for the other tasks and the database: latencies are measured.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (samples, rows)
}

fn summary(samples: &[Sample], phase: u8) -> (usize, usize, usize, Duration) {
    let in_phase: Vec<&Sample> = samples.iter().filter(|s| s.phase == phase).collect();
    let hits = in_phase
        .iter()
        .filter(|s| s.outcome == Outcome::Hit)
        .count();
    let degraded = in_phase
        .iter()
        .filter(|s| s.outcome == Outcome::Degraded)
        .count();
    let max = in_phase.iter().map(|s| s.took).max().unwrap_or_default();
    (in_phase.len(), hits, degraded, max)
}

/// The whole scenario against one kind of server.
async fn outage_mid_traffic(kind: ServerKind, test: &str) {
    let Some(mut server) = TestServer::start(kind, test).await else {
        return;
    };
    let backend = cache_backend(&server.url())
        .await
        .unwrap_or_else(|e| panic!("cache_backend({}): {e}", server.url()));
    let (hooked, errors) = ErrorKinds::new(backend);
    let (h, _) = harness_on(hooked, |b| b, |_| ()).await;
    readers_do_not_wait_for_writers(&h.db).await;
    let fdb = h.fdb.clone();
    let stats = || fdb.flash().stats().snapshot();

    let mut owned: Vec<Vec<event::Model>> = Vec::new();
    for t in 0..TASKS {
        let mut rows = Vec::new();
        for r in 0..ROWS_PER_TASK {
            rows.push(add_event(&fdb, &format!("t{t}-r{r}"), "Oslo").await);
        }
        owned.push(rows);
    }
    // A row of the main task, to watch recovery.
    let probe = add_event(&fdb, "probe", "Oslo").await;

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    // Writes take turns: SQLite answers concurrent writers (a deferred
    // transaction upgrading to a write) with SQLITE_BUSY instead of waiting,
    // which has nothing to do with the cache. Lookups stay concurrent.
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(t, rows)| {
            tokio::spawn(worker(
                fdb.clone(),
                t,
                rows,
                phase.clone(),
                stop.clone(),
                writer.clone(),
            ))
        })
        .collect();

    // Healthy traffic fills the cache: at least 500 ms of it, longer (up
    // to 10 s) until it served hits, on a machine busy with other work.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().hits == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_outage = stats();
    assert!(
        before_outage.hits > 0,
        "the cache served hits before the outage: {before_outage:?}"
    );

    phase.store(DOWN, SeqCst);
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = stats();
    let (open_refusals, failed_calls) = errors.counts();
    assert!(
        during.backend_errors > before_outage.backend_errors,
        "cache errors were counted: {during:?}"
    );
    // The breaker opened: most failing operations were refused without waiting
    // on the server. Without it every operation would reach the client (and
    // `failed_calls` would track the number of lookups).
    assert!(
        open_refusals >= 10,
        "the breaker refused operations: {open_refusals} refused, {failed_calls} failed"
    );
    assert!(failed_calls < 40, "few operations reached the dead server ({failed_calls}; {open_refusals} refused by the breaker)");

    phase.store(RESTARTED, SeqCst);
    server.restart().await;
    let restarted = Instant::now();
    // Caching resumes by itself: the probe row (read only here) becomes a hit.
    let recovered_after = loop {
        let (got, outcome, _) = timed(
            "probe lookup",
            fdb.cache::<event::Entity>()
                .get_with_outcome(by(event::Column::Id, probe.id)),
        )
        .await;
        assert_eq!(got.as_ref(), Some(&probe));
        if outcome == Outcome::Hit {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < RECOVERY_DEADLINE,
            "caching did not resume within {RECOVERY_DEADLINE:?} of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Traffic goes on for a while on the recovered server.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, SeqCst);
    let mut samples = Vec::new();
    let mut final_rows = Vec::new();
    for w in workers {
        let (s, rows) = w.await.expect("a worker panicked (see above)");
        samples.extend(s);
        final_rows.extend(rows);
    }

    // The workers' bookkeeping is the database's truth.
    for row in &final_rows {
        let in_db = event::Entity::find_by_id(row.id).one(&h.db).await.unwrap();
        assert_eq!(
            in_db.as_ref(),
            Some(row),
            "the workers' expected values are the database's"
        );
    }

    let (n_up, hits_up, _, max_up) = summary(&samples, UP);
    let (n_down, hits_down, degraded_down, max_down) = summary(&samples, DOWN);
    let (n_back, hits_back, degraded_back, max_back) = summary(&samples, RESTARTED);
    eprintln!(
        "{test}: up {n_up} lookups ({hits_up} hits, max {max_up:?}); down {n_down} ({degraded_down} degraded, {hits_down} hits, max {max_down:?}); \
         restarted {n_back} ({hits_back} hits, {degraded_back} degraded, max {max_back:?}); caching resumed {recovered_after:?} after the restart; \
         breaker refusals {open_refusals}, failed calls {failed_calls}"
    );
    assert!(
        n_down >= 50,
        "enough lookups during the outage to mean something ({n_down})"
    );
    assert!(
        degraded_down > n_down / 2,
        "lookups during the outage were answered from the database ({degraded_down} of {n_down})"
    );
    let slow: Vec<Duration> = samples
        .iter()
        .filter(|s| s.phase == DOWN && s.took > MAX_DEGRADED_LOOKUP)
        .map(|s| s.took)
        .collect();
    assert!(
        slow.is_empty(),
        "lookups during the outage over {MAX_DEGRADED_LOOKUP:?}: {slow:?}"
    );
    assert!(
        hits_back > 0,
        "the workers got hits again after the restart"
    );

    // Steady state after recovery: once the changes captured during the
    // outage are applied (the drain does so in the background), a pass fills
    // what the traffic left invalidated, a second pass is all hits without
    // touching the database.
    fdb.apply_captured().await.unwrap();
    let events = fdb.cache::<event::Entity>();
    for row in &final_rows {
        events.get(by(event::Column::Id, row.id)).await.unwrap();
        events
            .get(by(event::Column::Slug, row.slug.clone()))
            .await
            .unwrap();
    }
    let fetches = stats().db_fetches;
    for row in &final_rows {
        for lookup in [
            by(event::Column::Id, row.id),
            by(event::Column::Slug, row.slug.clone()),
        ] {
            let (got, outcome) = events.get_with_outcome(lookup).await.unwrap();
            assert_eq!((got.as_ref(), outcome), (Some(row), Outcome::Hit));
        }
    }
    assert_eq!(
        stats().db_fetches,
        fetches,
        "no database fetch once the cache is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_degrades_to_the_database_and_recovers() {
    outage_mid_traffic(ServerKind::Redis, "redis_killed_mid_traffic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_killed_mid_traffic_degrades_to_the_database_and_recovers() {
    outage_mid_traffic(ServerKind::Memcached, "memcached_killed_mid_traffic").await;
}

/// A cache that was never there: everything is answered from the database,
/// correctly and quickly, writes succeed, and the breaker keeps the dead
/// server from being asked over and over.
async fn down_from_the_start(backend: Arc<dyn Backend>, test: &str) {
    let (hooked, errors) = ErrorKinds::new(backend);
    let (h, _) = harness_on(hooked, |b| b, |_| ()).await;
    let events = h.fdb.cache::<event::Entity>();
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push(add_event(&h.fdb, &format!("d{i}"), "Oslo").await);
    }
    let started = Instant::now();
    let mut max = Duration::ZERO;
    let mut lookups = 0u64;
    let fetches = h.fdb.flash().stats().snapshot().db_fetches;
    for round in 0..20 {
        for row in rows.iter_mut() {
            for lookup in [
                by(event::Column::Id, row.id),
                by(event::Column::Slug, row.slug.clone()),
            ] {
                let (got, outcome, took) = timed("lookup", events.get_with_outcome(lookup)).await;
                assert_eq!(got.as_ref(), Some(&*row), "round {round}");
                assert_eq!(outcome, Outcome::Degraded, "round {round}");
                assert!(
                    took < MAX_DEGRADED_LOOKUP,
                    "round {round}: lookup took {took:?}"
                );
                max = max.max(took);
                lookups += 1;
            }
            if round % 5 == 4 {
                let title = format!("{} r{round}", row.slug);
                *row = h
                    .fdb
                    .update(event::ActiveModel {
                        id: Set(row.id),
                        title: Set(title),
                        ..Default::default()
                    })
                    .await
                    .expect("writes work without a cache");
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(
        h.fdb.flash().stats().snapshot().db_fetches - fetches,
        lookups,
        "every lookup read the database once"
    );
    let (open_refusals, failed_calls) = errors.counts();
    eprintln!("{test}: {lookups} lookups in {elapsed:?} (max {max:?}); breaker refusals {open_refusals}, failed calls {failed_calls}");
    assert!(open_refusals > 0, "the breaker opened");
    assert!(
        failed_calls < 20,
        "few operations reached the dead address ({failed_calls})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_from_the_start_serves_from_the_database_quickly() {
    // `cache_backend` connects to Redis lazily: the application starts anyway.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let backend = cache_backend(&url)
        .await
        .expect("a Redis URL is accepted while the server is down");
    down_from_the_start(backend, "redis_down_from_the_start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_down_from_the_start_serves_from_the_database_quickly() {
    let url = format!("memcache://127.0.0.1:{}", free_port());
    // Like Redis, memcached is connected lazily: the application starts anyway.
    let backend = cache_backend(&url)
        .await
        .expect("a memcached URL is accepted while the server is down");
    down_from_the_start(backend, "memcached_down_from_the_start").await;
}

/// Two processes share a cache server that is killed and restarted; the
/// writer's circuit breaker is still open from the outage (a 60 s cool-down
/// here) while the reader's is closed and has refilled the old row. The
/// write's invalidation must reach the server anyway: a breaker that refused
/// it would leave the reader serving the replaced title.
async fn restart_with_breakers_out_of_step(kind: ServerKind, test: &str) {
    let Some(mut server) = TestServer::start(kind, test).await else {
        return;
    };
    let url = server.url();
    let raw: Arc<dyn Backend> = match kind {
        ServerKind::Redis => Arc::new(
            flash_core::resilient::ResilientBackend::builder(
                flash_redis::RedisBackend::connect_lazy(&url).unwrap(),
            )
            .cool_down(Duration::from_secs(60))
            .build(),
        ),
        ServerKind::Memcached => Arc::new(
            flash_core::resilient::ResilientBackend::builder(
                flash_memcache::MemcacheBackend::new(&url).unwrap(),
            )
            .cool_down(Duration::from_secs(60))
            .build(),
        ),
    };
    let (writer_backend, writer_errors) = ErrorKinds::new(raw);
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let prefix = unique("t") + ":";
    let handle = |backend: Arc<dyn Backend>| {
        let (db, prefix) = (db.clone(), prefix.clone());
        async move {
            // No outbox and no capture: their drains would repair the reader
            // within seconds and hide what this test looks at.
            let mut reg = flash_sea_orm::Registrar::new(db)
                .configure(|b| b.backend_arc(backend).prefix(prefix))
                .outbox(false)
                .capture(false);
            flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
            reg.build().await.unwrap()
        }
    };
    let writer = handle(writer_backend).await;
    let reader = handle(cache_backend(&url).await.unwrap()).await;
    let e = add_event(&writer, "restart", "Oslo").await;
    let slug = || by(event::Column::Slug, "restart");

    server.kill();
    // The writer's lookups fail until its breaker opens.
    for _ in 0..10 {
        writer.cache::<event::Entity>().get(slug()).await.unwrap();
    }
    assert!(
        writer_errors.counts().0 > 0,
        "the writer's breaker opened: {:?}",
        writer_errors.counts()
    );
    server.restart().await;

    // The reader reconnects and caches the current (soon old) row.
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let (m, outcome) = reader
            .cache::<event::Entity>()
            .get_with_outcome(slug())
            .await
            .unwrap();
        assert_eq!(m.map(|m| m.title), Some("Title of restart".to_string()));
        if outcome == Outcome::Hit {
            break;
        }
        assert!(Instant::now() < deadline, "the reader never cached the row");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    writer
        .update(event::ActiveModel {
            id: Set(e.id),
            title: Set("after the restart".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let seen = reader.cache::<event::Entity>().get(slug()).await.unwrap();
    assert_eq!(
        seen.title, "after the restart",
        "a lookup that starts after the write returned sees it, in another process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_breakers_out_of_step_serves_nothing_stale() {
    restart_with_breakers_out_of_step(ServerKind::Redis, "redis_restart_out_of_step").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_restart_with_breakers_out_of_step_serves_nothing_stale() {
    restart_with_breakers_out_of_step(ServerKind::Memcached, "memcached_restart_out_of_step").await;
}
