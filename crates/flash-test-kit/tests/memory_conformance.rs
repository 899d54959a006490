//! The backend conformance suite on the in-process backend.

#[tokio::test]
async fn memory_backend_conforms() {
    let b = flash_core::MemoryBackend::default();
    flash_test_kit::conformance::run_all(&b, "conf", 2 * 1024 * 1024).await;
}

/// A compare-and-swap racing a plain set must not undo the set: whichever
/// comes first, the set's value is what stays (this is what keeps a fill from
/// overwriting an invalidation).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_swap_never_overwrites_a_concurrent_set() {
    use flash_core::Backend;
    use std::sync::Arc;
    use std::time::Duration;
    let b = Arc::new(flash_core::MemoryBackend::default());
    let ttl = Duration::from_secs(60);
    for i in 0..3000 {
        let key = format!("race:{i}");
        b.set(&key, b"lease", ttl).await.unwrap();
        let (b1, b2, k1, k2) = (b.clone(), b.clone(), key.clone(), key.clone());
        let fill = tokio::spawn(async move {
            b1.compare_and_swap(&k1, b"lease", Some(b"value"), ttl)
                .await
                .unwrap()
        });
        let invalidate = tokio::spawn(async move { b2.set(&k2, b"stale", ttl).await.unwrap() });
        fill.await.unwrap();
        invalidate.await.unwrap();
        let now = b.get_many(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(
            now,
            vec![Some(b"stale".to_vec())],
            "iteration {i}: the fill overwrote the invalidation"
        );
    }
}
