//! The backend conformance suite against real memcached servers (two of them,
//! `scripts/servers.sh start`). The URL comes from `FLASH_TEST_MEMCACHE_URL`.
//! An unreachable server skips the test, unless `FLASH_REQUIRE_SERVERS` is set,
//! when it fails it.

use flash_core::{Backend, BackendError};
use flash_memcache::{MemcacheBackend, MAX_VALUE_SIZE};
use std::time::{Duration, Instant};

const DEFAULT_URL: &str = "memcache://127.0.0.1:11211,127.0.0.1:11212";

/// Unique per test run, so that runs sharing a server do not see each other's keys.
fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("flashtest:{test}:{}:{nanos}", std::process::id())
}

async fn backend() -> Option<MemcacheBackend> {
    let url = std::env::var("FLASH_TEST_MEMCACHE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    match MemcacheBackend::connect(&url).await {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("FLASH_REQUIRE_SERVERS").is_none() => {
            eprintln!(
                "skipping: memcached at {url} unreachable ({e}); run scripts/servers.sh start"
            );
            None
        }
        Err(e) => panic!("memcached at {url} unreachable and FLASH_REQUIRE_SERVERS is set: {e}"),
    }
}

#[tokio::test]
async fn conformance() {
    let Some(b) = backend().await else { return };
    assert!(
        b.server_addrs().len() >= 2,
        "the suite is meant to run against several servers"
    );
    flash_test_kit::conformance::run_all(&b, &namespace("conf"), 900 * 1024).await;
}

#[tokio::test]
async fn the_advertised_item_limit_is_storable_under_a_long_key() {
    let Some(b) = backend().await else { return };
    let ns = namespace("limit");
    let key = format!("{ns}:{}", "x".repeat(249 - ns.len()));
    assert_eq!(key.len(), 250);
    let value: Vec<u8> = (0..MAX_VALUE_SIZE).map(|i| (i % 251) as u8).collect();
    b.set(&key, &value, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        flash_test_kit::owned(b.get_many(std::slice::from_ref(&key)).await.unwrap()),
        vec![Some(value.clone())]
    );
    let err = b
        .set(&key, &[value, vec![0]].concat(), Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn get_many_of_100_keys_uses_every_server_and_keeps_order() {
    let Some(b) = backend().await else { return };
    let ns = namespace("many");
    let keys: Vec<String> = (0..100).map(|i| format!("{ns}:k{i}")).collect();
    let mut per_server = vec![0usize; b.server_addrs().len()];
    for k in &keys {
        per_server[b.server_for(k)] += 1;
    }
    assert!(
        per_server.iter().all(|&n| n > 0),
        "keys on every server: {per_server:?}"
    );

    let items: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 7)
        .map(|(i, k)| (k.clone(), format!("{i}").into_bytes()))
        .collect();
    b.set_many(&items, Duration::from_secs(60)).await.unwrap();
    let got = flash_test_kit::owned(b.get_many(&keys).await.unwrap());
    assert_eq!(got.len(), 100);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(
            v,
            &(i % 10 != 7).then(|| format!("{i}").into_bytes()),
            "position {i}"
        );
    }

    // Each key really is on the server the ring names: a backend of that one
    // server alone finds it.
    for (i, addr) in b.server_addrs().iter().enumerate() {
        let single = MemcacheBackend::new(&format!("memcache://{addr}")).unwrap();
        let mine: Vec<String> = keys
            .iter()
            .filter(|k| b.server_for(k) == i)
            .cloned()
            .collect();
        let found = flash_test_kit::owned(single.get_many(&mine).await.unwrap());
        assert_eq!(
            found.iter().filter(|v| v.is_some()).count(),
            found.len() - mine.iter().filter(|k| k.ends_with('7')).count()
        );
    }

    // Repeated keys are answered at every position.
    let twice = vec![keys[1].clone(), keys[1].clone()];
    assert_eq!(
        flash_test_kit::owned(b.get_many(&twice).await.unwrap()),
        vec![Some(b"1".to_vec()), Some(b"1".to_vec())]
    );
}

#[tokio::test]
async fn concurrent_compare_and_swap_has_one_winner() {
    let Some(b) = backend().await else { return };
    let key = format!("{}:race", namespace("cas"));
    b.set(&key, b"lease", Duration::from_secs(60))
        .await
        .unwrap();
    let attempts = (0..16).map(|i| {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move {
            b.compare_and_swap(
                &key,
                b"lease",
                Some(format!("v{i}").as_bytes()),
                Duration::from_secs(60),
            )
            .await
        })
    });
    let mut winners = 0;
    for a in attempts {
        winners += usize::from(a.await.unwrap().unwrap());
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn dead_server_fails_fast() {
    let started = Instant::now();
    let err = MemcacheBackend::connect("memcache://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Unreachable(_) | BackendError::Timeout(_)),
        "{err:?}"
    );

    let lazy = MemcacheBackend::new("memcache://127.0.0.1:1").unwrap();
    assert!(matches!(
        lazy.get_many(&["k".to_owned()]).await,
        Err(BackendError::Unreachable(_))
    ));
    assert!(lazy.set("k", b"v", Duration::ZERO).await.is_err());
    assert!(lazy
        .compare_and_swap("k", b"a", None, Duration::ZERO)
        .await
        .is_err());
    assert!(
        flash_test_kit::owned(lazy.get_many(&[]).await.unwrap()).is_empty(),
        "nothing to ask, nothing to fail"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
