//! The backend conformance suite on the in-process backend.

#[tokio::test]
async fn memory_backend_conforms() {
    let b = flash_core::MemoryBackend::default();
    flash_core::conformance::run_all(&b, "conf", 2 * 1024 * 1024).await;
}
