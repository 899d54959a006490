//! The backend conformance suite on the in-process backend (its
//! compare-and-swap race test is a unit test of `flash_core::backend::memory`).

#[tokio::test]
async fn memory_backend_conforms() {
    let b = flash_core::MemoryBackend::default();
    flash_test_kit::conformance::run_all(&b, "conf", 2 * 1024 * 1024).await;
}
