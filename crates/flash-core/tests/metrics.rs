//! Lookups, fills, invalidations and cache errors reach the `metrics` facade.

use async_trait::async_trait;
use flash_core::{
    Backend, BackendError, ClassSpec, FetchFn, FieldValue, Flash, KeySet, SourceError,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;

/// A cache that is always down.
struct Down;

#[async_trait]
impl Backend for Down {
    fn name(&self) -> &'static str {
        "down"
    }
    async fn get_many(&self, _: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        Err(BackendError::Unreachable("test".into()))
    }
    async fn set(&self, _: &str, _: &[u8], _: Duration) -> Result<(), BackendError> {
        Err(BackendError::Unreachable("test".into()))
    }
    async fn add(&self, _: &str, _: &[u8], _: Duration) -> Result<bool, BackendError> {
        Err(BackendError::Unreachable("test".into()))
    }
    async fn compare_and_swap(
        &self,
        _: &str,
        _: &[u8],
        _: Option<&[u8]>,
        _: Duration,
    ) -> Result<bool, BackendError> {
        Err(BackendError::Unreachable("test".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), BackendError> {
        Err(BackendError::Unreachable("test".into()))
    }
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
    let mut keys = KeySet::default();
    keys.unset
        .insert(flash.key_of(&class, &["a".into()]).unwrap());
    flash.apply_invalidation("event", &keys).await.unwrap();

    let down = flash_core::resilient::ResilientBackend::builder(Down)
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
    let mut tiny = Flash::builder().backend(Tiny(flash_core::MemoryBackend::default()));
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
    let breaker_open = snapshot.iter().any(|(k, _, _, v)| {
        k.key().name() == "flash_breaker_open"
            && matches!(v, DebugValue::Gauge(g) if g.into_inner() == 1.0)
    });
    assert!(
        breaker_open,
        "the breaker of the dead cache is reported open"
    );
}

/// The in-process store with a 10-byte item limit.
struct Tiny(flash_core::MemoryBackend);

#[async_trait]
impl Backend for Tiny {
    fn name(&self) -> &'static str {
        "tiny"
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.0.get_many(keys).await
    }
    async fn set(&self, k: &str, v: &[u8], t: Duration) -> Result<(), BackendError> {
        self.0.set(k, v, t).await
    }
    async fn add(&self, k: &str, v: &[u8], t: Duration) -> Result<bool, BackendError> {
        self.0.add(k, v, t).await
    }
    async fn compare_and_swap(
        &self,
        k: &str,
        e: &[u8],
        n: Option<&[u8]>,
        t: Duration,
    ) -> Result<bool, BackendError> {
        self.0.compare_and_swap(k, e, n, t).await
    }
    async fn delete(&self, k: &str) -> Result<(), BackendError> {
        self.0.delete(k).await
    }
    fn max_value_size(&self) -> usize {
        10
    }
}
