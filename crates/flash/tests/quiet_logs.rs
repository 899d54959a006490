//! Logs during a cache outage: one line when the breaker opens and closes and
//! a periodic summary of the errors, never a line per lookup; key values stay
//! out of spans and logs unless `log_keys` asks for them.
//!
//! Every test runs on a current-thread runtime, so that the subscriber set
//! for the test's thread sees the events of every task it spawns.

mod common;

use common::*;
use flash::{BackendError, ResilientBackend};
use flash_core::MemoryBackend;
use flash_sea_orm::by;
use flash_test_kit::entities::event;
use flash_test_kit::Hooked;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::level_filters::LevelFilter;

/// Everything the subscriber writes, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

fn capture(level: LevelFilter) -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}

/// Lookups of `rows` from 8 tasks for `run`; the number of lookups made.
async fn traffic(fdb: &flash_sea_orm::FlashDb, rows: &[event::Model], run: Duration) -> usize {
    let until = Instant::now() + run;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let fdb = fdb.clone();
            let rows = rows.to_vec();
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    let e = &rows[(n + t) % rows.len()];
                    let got = fdb
                        .cache::<event::Entity>()
                        .get(by(event::Column::Slug, e.slug.as_str()))
                        .await
                        .expect("lookups degrade to the database");
                    assert_eq!(got.id, e.id);
                    n += 1;
                    tokio::task::yield_now().await;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "current_thread")]
async fn a_refusing_cache_logs_a_few_lines_not_one_per_lookup() {
    let (out, _guard) = capture(LevelFilter::INFO);
    let down = Arc::new(AtomicBool::new(false));
    let refusing = {
        let down = down.clone();
        Hooked::new(MemoryBackend::default()).before(move |_| match down.load(Ordering::SeqCst) {
            true => Err(BackendError::Unreachable("test: server down".into())),
            false => Ok(()),
        })
    };
    let backend = ResilientBackend::builder(refusing)
        .cool_down(Duration::from_millis(100))
        .build();
    let (h, _) = harness_on(Arc::new(backend), |b| b, |_| ()).await;
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push(add_event(&h.fdb, &format!("quiet-{i}"), "Oslo").await);
    }
    traffic(&h.fdb, &rows, Duration::from_millis(200)).await;
    let before = out.lines().len();

    down.store(true, Ordering::SeqCst);
    let lookups = traffic(&h.fdb, &rows, Duration::from_millis(1500)).await;
    let errors = h.fdb.flash().stats().snapshot().backend_errors;
    down.store(false, Ordering::SeqCst);
    // Recovery: the breaker's probe closes it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    traffic(&h.fdb, &rows, Duration::from_millis(200)).await;

    let lines: Vec<String> = out.lines().split_off(before);
    eprintln!(
        "refusing cache: {} log lines for {lookups} lookups, {errors} cache errors",
        lines.len()
    );
    assert!(
        lookups > 1000 && errors > 1000,
        "an outage worth a flood: {lookups} lookups, {errors} errors"
    );
    assert!(
        lines.len() <= 10,
        "{} lines for {errors} errors:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let count = |s: &str| lines.iter().filter(|l| l.contains(s)).count();
    assert_eq!(count("cache circuit breaker opened"), 1, "{lines:#?}");
    assert_eq!(count("cache circuit breaker closed"), 1, "{lines:#?}");
    let summary = lines
        .iter()
        .find(|l| l.contains("cache errors; lookups are served from the database"))
        .unwrap_or_else(|| panic!("a summary line: {lines:#?}"));
    assert!(
        summary.contains("get/"),
        "counts by operation and error: {summary}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_server_logs_a_few_dozen_lines_at_most() {
    let Some(mut server) = TestServer::start(ServerKind::Redis, "quiet_logs").await else {
        return;
    };
    let (out, _guard) = capture(LevelFilter::INFO);
    let backend =
        flash::config::cache_backend(&format!("{}?breaker_cool_down_ms=200", server.url()))
            .await
            .unwrap();
    let (h, _) = harness_on(
        backend,
        |b| b.error_summary_every(Duration::from_secs(1)),
        |_| (),
    )
    .await;
    let mut rows = Vec::new();
    for i in 0..20 {
        rows.push(add_event(&h.fdb, &format!("kill-{i}"), "Oslo").await);
    }
    traffic(&h.fdb, &rows, Duration::from_millis(300)).await;
    let before = out.lines().len();
    server.kill();
    let lookups = traffic(&h.fdb, &rows, Duration::from_secs(3)).await;
    let errors = h.fdb.flash().stats().snapshot().backend_errors;
    server.restart().await;
    traffic(&h.fdb, &rows, Duration::from_millis(800)).await;
    let lines: Vec<String> = out.lines().split_off(before);
    eprintln!(
        "killed server: {} log lines for {lookups} lookups, {errors} cache errors",
        lines.len()
    );
    assert!(errors > 500, "{lookups} lookups, {errors} errors");
    assert!(
        lines.len() <= 30,
        "{} lines for {errors} errors:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cache circuit breaker opened")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cache circuit breaker closed")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn key_values_stay_out_of_logs_unless_asked_for() {
    for log_keys in [false, true] {
        let (out, _guard) = capture(LevelFilter::DEBUG);
        let refusing = Hooked::new(MemoryBackend::default())
            .before(|_| Err(BackendError::Unreachable("test: server down".into())));
        let (h, _) = harness_on(Arc::new(refusing), |b| b.log_keys(log_keys), |_| ()).await;
        let e = add_event(&h.fdb, "private-slug-4711", "Oslo").await;
        for _ in 0..3 {
            let got = h
                .fdb
                .cache::<event::Entity>()
                .get(by(event::Column::Slug, "private-slug-4711"))
                .await
                .unwrap();
            assert_eq!(got.id, e.id);
        }
        let text = out.text();
        assert!(
            text.contains("flash.lookup"),
            "lookup spans are logged at debug:\n{text}"
        );
        assert_eq!(
            text.contains("private-slug-4711"),
            log_keys,
            "log_keys={log_keys}:\n{text}"
        );
    }
}
