//! Cache client settings from the URL's query and from the builder reach the
//! client: the deadline, the breaker, the pool; bad values are typed errors.

use flash::config::{cache_backend, cache_backend_with, CacheOptions, ConfigError, OptionError};
use flash::BackendError;
use std::time::{Duration, Instant};

/// A server that accepts connections and never answers (a hung cache).
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_query_sets_the_deadline_on_every_server_kind() {
    let (addr, _server) = silent_server().await;
    for url in [
        format!("redis://{addr}?timeout_ms=120"),
        format!("memcache://{addr}?timeout_ms=120&pool_size=2"),
    ] {
        let b = cache_backend(&url).await.unwrap();
        let t = Instant::now();
        let err = b.get_many(&["k".into()]).await.unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(err, BackendError::Timeout(d) if d == Duration::from_millis(120)),
            "{url}: {err}"
        );
        assert!(
            took >= Duration::from_millis(110) && took < Duration::from_millis(1000),
            "{url}: {took:?}"
        );
    }
    // The builder's value, when the URL says nothing.
    let b = cache_backend_with(
        &format!("redis://{addr}"),
        CacheOptions::default().timeout(Duration::from_millis(70)),
    )
    .await
    .unwrap();
    let err = b.get_many(&["k".into()]).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Timeout(d) if d == Duration::from_millis(70)),
        "{err}"
    );
}

#[tokio::test]
async fn the_query_sets_the_breaker() {
    // Port 1: refused at once.
    for url in [
        "redis://127.0.0.1:1?breaker_failures=1&breaker_cool_down_ms=150",
        "memcache://127.0.0.1:1?breaker_failures=1&breaker_cool_down_ms=150",
    ] {
        let b = cache_backend(url).await.unwrap();
        let first = b.get_many(&["k".into()]).await.unwrap_err();
        assert!(
            !matches!(first, BackendError::CircuitOpen),
            "{url}: {first}"
        );
        assert!(
            matches!(
                b.get_many(&["k".into()]).await,
                Err(BackendError::CircuitOpen)
            ),
            "{url}: one failure opened the breaker"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let probe = b.get_many(&["k".into()]).await.unwrap_err();
        assert!(
            !matches!(probe, BackendError::CircuitOpen),
            "{url}: probe after the cool-down: {probe}"
        );
    }
}

#[tokio::test]
async fn bad_settings_are_typed_errors() {
    let err = |r: Result<_, ConfigError>| match r {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert!(matches!(
        err(cache_backend("redis://127.0.0.1:6379?timeout_ms=soon").await),
        ConfigError::CacheOption(OptionError::BadValue { .. })
    ));
    assert!(matches!(
        err(cache_backend("memcache://127.0.0.1:11211?breaker_failures=0").await),
        ConfigError::CacheOption(OptionError::BadValue { .. })
    ));
    assert!(matches!(
        err(cache_backend("redis://127.0.0.1:6379?pool_size=4").await),
        ConfigError::CacheOption(OptionError::NotApplicable { .. })
    ));
}
