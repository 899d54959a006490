//! The capture drain's metrics reach the `metrics` facade: captured rows and
//! applied keys are counted, the invalidation lag is a histogram, the backlog
//! a gauge. (A test binary of its own: the recorder is process-wide.)

mod common;

use common::{post, TestDb};
use flash_core::MemoryBackend;
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{CacheMeta, Registrar};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn the_drain_reports_rows_keys_lag_and_backlog() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");

    let db = TestDb::new().await;
    // The drain runs only when asked (`apply_captured`), so that each change
    // is applied, and counted, exactly once.
    let quiet = DrainSettings {
        poll_interval: Duration::from_secs(3600),
        listen_poll_interval: Duration::from_secs(3600),
        listen: false,
        ..DrainSettings::default()
    };
    let mut reg = Registrar::new(db.conn.clone())
        .configure(|b| b.backend_arc(Arc::new(MemoryBackend::default())))
        .drain_settings(quiet);
    reg.entity(
        CacheMeta::<post::Entity>::new()
            .get_key([post::Column::Id])
            .get_key([post::Column::Slug]),
    )
    .expect("declarations");
    let fdb = reg.build().await.expect("build");
    assert!(fdb.has_capture());
    // Two rows written around flash: two captured changes (one statement
    // each), each invalidating the row's two keys.
    for (id, slug) in [(1, "a"), (2, "b")] {
        db.conn
            .execute_unprepared(&format!(
                "INSERT INTO post (id, slug, title) VALUES ({id}, '{slug}', 't')"
            ))
            .await
            .expect("insert");
    }
    // The lag runs from the record's time (the database's clock: SQLite's
    // `julianday`, PostgreSQL's transaction start, MySQL's
    // `CURRENT_TIMESTAMP(6)`) to the drain's: at least this pause.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fdb.apply_captured().await.unwrap(), 2);

    let mut rows = 0;
    let mut keys = 0;
    let mut lags = 0;
    let mut backlog = None;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        match (key.key().name(), value) {
            ("flash_captured_rows_total", DebugValue::Counter(n)) => rows += n,
            ("flash_applied_keys_total", DebugValue::Counter(n)) => keys += n,
            ("flash_invalidation_lag_seconds", DebugValue::Histogram(v)) => {
                assert!(
                    v.iter().all(|s| (0.09..60.0).contains(&s.into_inner())),
                    "lag samples {v:?}: not the time since the records"
                );
                lags += v.len();
            }
            ("flash_outbox_backlog", DebugValue::Gauge(g)) => backlog = Some(g.into_inner()),
            _ => {}
        }
    }
    assert_eq!(rows, 2, "captured rows counted");
    assert_eq!(keys, 4, "two keys per row applied");
    assert_eq!(lags, 2, "one lag sample per applied change");
    assert_eq!(backlog, Some(2.0), "the round took two rows");

    // A round that finds nothing: the gauge goes back to 0.
    assert_eq!(fdb.apply_captured().await.unwrap(), 0);
    let backlog = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(k, _, _, v)| match (k.key().name(), v) {
            ("flash_outbox_backlog", DebugValue::Gauge(g)) => Some(g.into_inner()),
            _ => None,
        });
    assert_eq!(backlog, Some(0.0), "nothing left to drain");
    db.drop().await;
}
