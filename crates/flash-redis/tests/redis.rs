//! The backend conformance suite against a real Redis and a real Redis Cluster
//! (`scripts/servers.sh start`). URLs come from `FLASH_TEST_REDIS_URL` and
//! `FLASH_TEST_REDIS_CLUSTER_URL`. An unreachable server skips the test, unless
//! `FLASH_REQUIRE_SERVERS` is set, when it fails it.

use flash_core::{Backend, BackendError};
use flash_redis::{RedisBackend, RedisClusterBackend};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";
const DEFAULT_CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Unique per test run, so that runs sharing a server do not see each other's keys.
fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("flashtest:{test}:{}:{nanos}", std::process::id())
}

/// `Some(backend)`, or `None` (skip) when the server is down and not required.
fn available<B>(what: &str, connected: Result<B, BackendError>) -> Option<B> {
    match connected {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("FLASH_REQUIRE_SERVERS").is_none() => {
            eprintln!("skipping: {what} unreachable ({e}); run scripts/servers.sh start");
            None
        }
        Err(e) => panic!("{what} unreachable and FLASH_REQUIRE_SERVERS is set: {e}"),
    }
}

async fn standalone() -> Option<RedisBackend> {
    let url = url("FLASH_TEST_REDIS_URL", DEFAULT_URL);
    available(
        &format!("redis at {url}"),
        RedisBackend::connect(&url).await,
    )
}

async fn cluster() -> Option<RedisClusterBackend> {
    let url = url("FLASH_TEST_REDIS_CLUSTER_URL", DEFAULT_CLUSTER_URL);
    available(
        &format!("redis cluster at {url}"),
        RedisClusterBackend::connect(&url).await,
    )
}

#[tokio::test]
async fn conformance_standalone() {
    let Some(b) = standalone().await else { return };
    flash_core::conformance::run_all(&b, &namespace("std"), 4 * 1024 * 1024).await;
}

#[tokio::test]
async fn conformance_cluster() {
    let Some(b) = cluster().await else { return };
    flash_core::conformance::run_all(&b, &namespace("cluster"), 4 * 1024 * 1024).await;
}

async fn hundred_keys_in_order<B: Backend>(b: &B, ns: &str) -> Vec<String> {
    let keys: Vec<String> = (0..100).map(|i| format!("{ns}:k{i}")).collect();
    let items: Vec<(String, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 7)
        .map(|(i, k)| (k.clone(), format!("{i}").into_bytes()))
        .collect();
    b.set_many(&items, Duration::from_secs(60)).await.unwrap();
    let got = b.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 100);
    for (i, v) in got.iter().enumerate() {
        let want = (i % 10 != 7).then(|| format!("{i}").into_bytes());
        assert_eq!(v, &want, "position {i}");
    }
    keys
}

#[tokio::test]
async fn get_many_of_100_keys_standalone() {
    let Some(b) = standalone().await else { return };
    hundred_keys_in_order(&b, &namespace("many")).await;
}

/// `INFO commandstats` counters of each cluster master, by command name.
async fn command_calls(node: &str) -> HashMap<String, u64> {
    let client = redis::Client::open(node).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn get_many_of_100_keys_cluster_is_one_mget_per_slot_spread_over_nodes() {
    let Some(b) = cluster().await else { return };
    let url = url("FLASH_TEST_REDIS_CLUSTER_URL", DEFAULT_CLUSTER_URL);
    let nodes: Vec<String> = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(|h| format!("redis://{h}"))
        .collect();
    let ns = namespace("cmany");
    let keys = hundred_keys_in_order(&b, &ns).await;

    // Now count what one get_many costs on each node. Other tests may run
    // concurrently, so only assert what they cannot disturb by much: no GET
    // at all, and MGETs on every node (the keys are spread over all masters).
    let before: Vec<_> = futures::future::join_all(nodes.iter().map(|n| command_calls(n))).await;
    let got = b.get_many(&keys).await.unwrap();
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 90);
    let after: Vec<_> = futures::future::join_all(nodes.iter().map(|n| command_calls(n))).await;
    let delta = |i: usize, cmd: &str| {
        after[i].get(cmd).copied().unwrap_or(0) - before[i].get(cmd).copied().unwrap_or(0)
    };
    let mut total_mget = 0;
    for (i, node) in nodes.iter().enumerate() {
        assert!(delta(i, "mget") > 0, "node {node} served part of the MGET");
        assert_eq!(delta(i, "get"), 0, "no per-key GET on {node}");
        total_mget += delta(i, "mget");
    }
    // One sub-MGET per hash slot (Redis refuses cross-slot MGET), never more than keys.
    assert!(total_mget <= 100, "{total_mget} MGETs for 100 keys");
    eprintln!(
        "get_many of 100 keys: {total_mget} slot-MGETs over {} nodes",
        nodes.len()
    );
}

#[tokio::test]
async fn dead_server_fails_fast() {
    let started = Instant::now();
    let err = RedisBackend::connect("redis://127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Unreachable(_) | BackendError::Timeout(_)),
        "{err:?}"
    );

    // A lazy backend starts, and its operations fail (they do not hang or panic).
    let lazy = RedisBackend::connect_lazy("redis://127.0.0.1:1/0").unwrap();
    assert!(lazy.get_many(&["k".to_owned()]).await.is_err());
    assert!(lazy.set("k", b"v", Duration::ZERO).await.is_err());

    let err = RedisClusterBackend::connect("redis+cluster://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Unreachable(_) | BackendError::Timeout(_)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}
