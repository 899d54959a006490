//! Lookups, fills, invalidations and cache errors reach the `metrics` facade.

use flash_core::{
    BackendError, ClassSpec, FetchFn, FieldValue, Flash, KeySet, MemoryBackend, SourceError,
};
use flash_test_kit::Hooked;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// A cache that is always down: every call fails before it reaches the store.
fn down() -> Hooked<MemoryBackend> {
    Hooked::new(MemoryBackend::default())
        .name("down")
        .coalesce_reads(true)
        .before(|_| Err(BackendError::Unreachable("test".into())))
}

/// The in-process store with a 10-byte item limit.
fn tiny() -> Hooked<MemoryBackend> {
    Hooked::new(MemoryBackend::default())
        .name("tiny")
        .max_value_size(10)
        .coalesce_reads(true)
}

fn title() -> FetchFn<
    impl Fn(Vec<FieldValue>) -> futures::future::BoxFuture<'static, Result<String, SourceError>>
        + Send
        + Sync,
> {
    FetchFn(|k: Vec<FieldValue>| {
        Box::pin(async move { Ok::<_, SourceError>(format!("title {}", k[0])) }) as _
    })
}

#[tokio::test]
async fn counters_reach_the_metrics_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");

    let mut b = Flash::builder();
    let class = b
        .register::<String>(
            ClassSpec::instance("MetricTitle", "event", &["slug"]),
            title(),
        )
        .unwrap();
    let flash = b.build().await.unwrap();
    flash.get(&class, &["a".into()]).await.unwrap(); // miss + fill
    flash.get(&class, &["a".into()]).await.unwrap(); // hit
                                                     // A batch of two: a hit and a miss, each timed as the batch.
    let mut batch = flash.batch();
    let hit = batch.add(flash.query(&class, vec!["a".into()]));
    let miss = batch.add(flash.query(&class, vec!["z".into()]));
    let mut results = batch.run().await;
    results.take(hit).unwrap();
    results.take(miss).unwrap();
    let mut keys = KeySet::default();
    keys.unset
        .insert(flash.key_of(&class, &["a".into()]).unwrap());
    flash.apply_invalidation("event", &keys).await.unwrap();

    let down = flash_core::resilient::ResilientBackend::builder(down())
        .failure_threshold(1)
        .build();
    let mut down = Flash::builder().backend(down);
    let c2 = down
        .register::<String>(
            ClassSpec::instance("MetricTitleDown", "event", &["slug"]),
            title(),
        )
        .unwrap();
    let down = down.build().await.unwrap();
    assert_eq!(
        down.get(&c2, &["b".into()]).await.unwrap(),
        "title \"b\"",
        "served from the source"
    );

    // A value over the backend's item limit is served, not cached, and counted.
    // (Untimed: `time_lookups(false)` records no latency.)
    let mut tiny = Flash::builder().backend(tiny()).time_lookups(false);
    let c3 = tiny
        .register::<String>(
            ClassSpec::instance("MetricTitleTiny", "event", &["slug"]),
            title(),
        )
        .unwrap();
    let tiny = tiny.build().await.unwrap();
    assert_eq!(
        tiny.lookup(&c3, &["c".into()]).await.unwrap().1,
        flash_core::Outcome::MissNoFill
    );

    let snapshot = snapshotter.snapshot().into_vec();
    let count = |name: &str, label: Option<(&str, &str)>| -> u64 {
        snapshot
            .iter()
            .filter(|(k, _, _, _)| {
                k.key().name() == name
                    && label.is_none_or(|(l, v)| {
                        k.key().labels().any(|x| x.key() == l && x.value() == v)
                    })
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum()
    };
    assert!(count("flash_lookups_total", Some(("outcome", "miss"))) >= 1);
    assert!(count("flash_lookups_total", Some(("outcome", "hit"))) >= 1);
    assert!(count("flash_lookups_total", Some(("outcome", "degraded"))) >= 1);
    assert!(count("flash_fills_total", None) >= 1);
    assert!(count("flash_invalidated_keys_total", Some(("model", "event"))) >= 1);
    assert!(count("flash_cache_errors_total", None) >= 1);
    assert!(count("flash_backend_errors_total", Some(("backend", "down"))) >= 1);
    assert!(count("flash_too_large_total", Some(("class", "MetricTitleTiny"))) >= 1);
    // Timed by flash: two single lookups and the batch's two.
    let timings: Vec<f64> = snapshot
        .iter()
        .filter(|(k, _, _, _)| {
            k.key().name() == "flash_lookup_seconds"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "class" && l.value() == "MetricTitle")
        })
        .flat_map(|(_, _, _, v)| match v {
            DebugValue::Histogram(h) => h.iter().map(|x| x.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(timings.len(), 4, "{timings:?}");
    assert!(timings.iter().all(|t| *t > 0.0 && *t < 10.0), "{timings:?}");
    // (Its histogram is registered with the class's counters, and stays empty.)
    assert!(
        !snapshot
            .iter()
            .any(|(k, _, _, v)| k.key().name() == "flash_lookup_seconds"
                && k.key().labels().any(|l| l.value() == "MetricTitleTiny")
                && matches!(v, DebugValue::Histogram(h) if !h.is_empty())),
        "an untimed handle records no latency"
    );
    let breaker_open = snapshot.iter().any(|(k, _, _, v)| {
        k.key().name() == "flash_breaker_open"
            && matches!(v, DebugValue::Gauge(g) if g.into_inner() == 1.0)
    });
    assert!(
        breaker_open,
        "the breaker of the dead cache is reported open"
    );
}
