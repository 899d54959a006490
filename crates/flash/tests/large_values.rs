//! Large values: `ClassSpec::compress_above` stores compressed payloads, and a
//! value over the backend's item limit is served but not cached (and leaves no
//! lease behind). The limits are exercised exactly at the boundary.
//!
//! On the in-process backend (with a wrapper that has a small item limit) and on
//! memcached (`FLASH_TEST_MEMCACHE_URL`, default the two servers of
//! scripts/servers.sh; skipped when unreachable unless `FLASH_REQUIRE_SERVERS`).

mod common;

use async_trait::async_trait;
use common::*;
use flash_core::codec::{encode_entry, encode_payload, Entry};
use flash_core::{Backend, BackendError, Class, ClassSpec, FieldValue, MemoryBackend, Outcome};
use flash_sea_orm::CustomCache;
use flash_test_kit::Hooked;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use sea_orm::{DatabaseConnection, DbErr};
use std::sync::Arc;
use std::time::Duration;

/// A value whose size and kind are given by its key: `c<n>` is `n` bytes of
/// repetitive (compressible) text, `r<n>` `n` random bytes; anything after a
/// `-` only pads the key. The compute stands in for an expensive database
/// read; flash counts its calls as `db_fetches`.
struct SizedBlob(ClassSpec);

fn blob(key: &str) -> Vec<u8> {
    let spec = key.split('-').next().unwrap_or_default();
    let n: usize = spec[1..].parse().expect("size in the key");
    match &spec[..1] {
        "c" => b"flash caches this compressible value. "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect(),
        "r" => {
            let mut v = vec![0u8; n];
            StdRng::seed_from_u64(n as u64).fill_bytes(&mut v);
            v
        }
        other => panic!("unknown blob kind {other}"),
    }
}

#[async_trait]
impl CustomCache for SizedBlob {
    type Output = Vec<u8>;
    fn spec(&self) -> ClassSpec {
        self.0.clone()
    }
    async fn compute(
        &self,
        _db: &DatabaseConnection,
        key: &[FieldValue],
    ) -> Result<Vec<u8>, DbErr> {
        match key.first() {
            Some(FieldValue::Str(s)) => Ok(blob(s)),
            other => Err(DbErr::Custom(format!("bad key {other:?}"))),
        }
    }
}

fn plain(name: &str) -> SizedBlob {
    SizedBlob(ClassSpec::instance(name, "event", &["slug"]))
}

fn packed(name: &str) -> SizedBlob {
    SizedBlob(ClassSpec::instance(name, "event", &["slug"]).compress_above(1024))
}

/// The in-process backend with a small item limit, refusing larger values the
/// way memcached's backend does (so that a value slipping past flash's own
/// size check would show up as an error and a stuck lease).
fn small_limit(limit: usize) -> Hooked<MemoryBackend> {
    Hooked::new(MemoryBackend::default())
        .name("small-limit")
        .max_value_size(limit)
        .coalesce_reads(true)
        .before(
            move |call| match call.values.iter().find(|v| v.len() > limit) {
                Some(v) => Err(BackendError::TooLarge {
                    size: v.len(),
                    limit,
                }),
                None => Ok(()),
            },
        )
}

/// Long enough that waiting on a stuck lease cannot pass for the time a
/// lookup of a big value takes in a debug build.
const LONG_LEASE_WAIT: Duration = Duration::from_secs(5);

/// The raw bytes the backend holds under `key`.
async fn raw(h: &Harness, key: &str) -> Option<Vec<u8>> {
    h.backend
        .inner()
        .get_many(&[key.to_owned()])
        .await
        .expect("raw read")[0]
        .as_deref()
        .map(<[u8]>::to_vec)
}

/// The size `n` of an `r<n>` blob whose cache entry (header, version, fill
/// time, uncompressed payload) is exactly `entry_len` bytes.
fn random_blob_len_for_entry(h: &Harness, class: &str, entry_len: usize) -> usize {
    let version = h.fdb.flash().dynamic_version(class);
    let layout = h
        .fdb
        .flash()
        .classes()
        .find(|c| c.name == class)
        .map_or(0, |c| c.layout);
    // A shared backend's values end with their tag.
    let seal = if h.fdb.flash().backend().shared() {
        flash_core::seal::TAG_LEN
    } else {
        0
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let len = |n: usize| {
        encode_entry(&Entry::Value {
            version,
            filled_ms: now_ms,
            layout,
            compressed: false,
            payload: encode_payload(&vec![0u8; n]).unwrap(),
        })
        .len()
            + seal
    };
    let mut n = entry_len;
    while len(n) > entry_len {
        n -= 1;
    }
    assert_eq!(len(n), entry_len, "an entry of exactly {entry_len} bytes");
    n
}

/// The longest key-field padding that keeps `class`'s key un-hashed (the
/// longest key the backend will see for this class).
fn longest_key_value(h: &Harness, class: &Class<Vec<u8>>, head: &str) -> (String, usize) {
    let f = h.fdb.flash();
    (0..300)
        .map(|pad| format!("{head}-{}", "x".repeat(pad)))
        .map(|v| {
            let len = f.key_of(class, &[v.clone().into()]).unwrap().len();
            (v, len)
        })
        .max_by_key(|(_, len)| *len)
        .unwrap()
}

/// A value over the limit: served (right value), `MissNoFill`, nothing left in
/// the cache (no lease: the next lookup goes straight to the database without
/// waiting), no backend error (the breaker must not count it), every time.
async fn assert_served_not_cached(h: &Harness, class: &Class<Vec<u8>>, key: &str) {
    let f = h.fdb.flash();
    let cache_key = f.key_of(class, &[key.into()]).unwrap();
    let before = f.stats().snapshot();
    for round in 0..3 {
        let started = std::time::Instant::now();
        let (v, outcome) = f.lookup(class, &[key.into()]).await.unwrap();
        let took = started.elapsed();
        assert!(v == blob(key), "round {round}: the right value for {key}");
        assert_eq!(
            outcome,
            Outcome::MissNoFill,
            "round {round}: {key} is served, not cached"
        );
        assert_eq!(
            raw(h, &cache_key).await,
            None,
            "round {round}: no value and no lease left under the key"
        );
        // A leftover lease would make the next lookup wait `lease_wait`
        // (set long by the tests) before reading the database.
        assert!(
            took < f.settings().lease_wait,
            "round {round}: no wait for a leftover lease ({took:?})"
        );
    }
    let after = f.stats().snapshot();
    assert_eq!(
        after.db_fetches - before.db_fetches,
        3,
        "each lookup read the database"
    );
    assert_eq!(
        after.backend_errors, before.backend_errors,
        "a too-large value is not a backend error"
    );
    assert_eq!(
        after.lease_waits, before.lease_waits,
        "nobody waited on a lease"
    );
    assert_eq!(after.fills, before.fills);
}

/// A value that fits: `Miss` then `Hit` with the right value and no second fetch.
async fn assert_cached(h: &Harness, class: &Class<Vec<u8>>, key: &str) -> Vec<u8> {
    let f = h.fdb.flash();
    let (v, outcome) = f.lookup(class, &[key.into()]).await.unwrap();
    assert!(v == blob(key), "the right value for {key}");
    assert_eq!(outcome, Outcome::Miss, "{key} filled");
    let fetches = f.stats().snapshot().db_fetches;
    let (v, outcome) = f.lookup(class, &[key.into()]).await.unwrap();
    assert!(v == blob(key), "the right cached value for {key}");
    assert_eq!(outcome, Outcome::Hit, "{key} cached");
    assert_eq!(f.stats().snapshot().db_fetches, fetches);
    raw(h, &f.key_of(class, &[key.into()]).unwrap())
        .await
        .expect("stored")
}

#[tokio::test]
async fn compress_above_stores_a_compressed_payload() {
    // On FLASH_CACHE_URL (in-process by default); 512 KiB fits every backend.
    let (h, (packed, plain)) = harness_with(
        |b| b,
        |reg| {
            (
                reg.custom(packed("Packed")).unwrap(),
                reg.custom(plain("Plain")).unwrap(),
            )
        },
    )
    .await;
    let n = 512 * 1024;
    let key = format!("c{n}");
    let stored_packed = assert_cached(&h, &packed, &key).await;
    let stored_plain = assert_cached(&h, &plain, &key).await;
    eprintln!(
        "{n} bytes of text: {} bytes compressed, {} bytes plain",
        stored_packed.len(),
        stored_plain.len()
    );
    assert!(
        stored_packed.len() * 20 < n,
        "compressed: {} bytes for a {n}-byte payload",
        stored_packed.len()
    );
    assert!(
        stored_plain.len() > n,
        "the class without compress_above stores the payload as is"
    );

    // Below the threshold the payload is stored as is (the text is in the entry).
    let small = assert_cached(&h, &packed, "c1000").await;
    assert!(
        small.windows(1000).any(|w| w == blob("c1000")),
        "not compressed below the threshold"
    );
    // Incompressible data above the threshold still round-trips.
    let random = assert_cached(&h, &packed, "r65536").await;
    assert!(random.len() > 65536);
}

#[tokio::test]
async fn over_the_item_limit_is_served_not_cached_in_process() {
    let limit = 64 * 1024;
    let backend = Arc::new(small_limit(limit));
    let (h, (big, packed)) = harness_on(
        backend,
        |b| b.lease_wait(LONG_LEASE_WAIT),
        |reg| {
            (
                reg.custom(plain("Big")).unwrap(),
                reg.custom(packed("PackedBig")).unwrap(),
            )
        },
    )
    .await;
    assert_served_not_cached(&h, &big, "r100000").await;
    // The boundary: an entry of exactly the limit is cached, one byte more is not.
    let n = random_blob_len_for_entry(&h, "Big", limit);
    let at_limit = assert_cached(&h, &big, &format!("r{n}")).await;
    assert_eq!(at_limit.len(), limit);
    assert_served_not_cached(&h, &big, &format!("r{}", n + 1)).await;
    // Compression is what makes a large compressible value cacheable.
    assert_served_not_cached(&h, &big, "c1048576").await;
    let stored = assert_cached(&h, &packed, "c1048576").await;
    assert!(stored.len() < limit);
}

#[tokio::test]
async fn over_the_item_limit_is_served_not_cached_on_memcached() {
    let url = std::env::var("FLASH_TEST_MEMCACHE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "memcache://127.0.0.1:11211,127.0.0.1:11212".into());
    let backend = match flash::config::cache_backend(&url).await {
        Ok(b) => b,
        Err(e) => {
            skip_or_fail::<()>(
                "over_the_item_limit_is_served_not_cached_on_memcached",
                &format!("{url}: {e}"),
            );
            return;
        }
    };
    let limit = backend.max_value_size();
    assert_eq!(limit, flash_memcache::MAX_VALUE_SIZE);
    let (h, (big, packed)) = harness_on(
        backend,
        |b| b.lease_wait(LONG_LEASE_WAIT),
        |reg| {
            (
                reg.custom(plain("Big")).unwrap(),
                reg.custom(packed("PackedBig")).unwrap(),
            )
        },
    )
    .await;

    assert_served_not_cached(&h, &big, "r2097152").await;
    // Exactly at the advertised limit, under the longest key the class can
    // have: memcached really stores it (the limit leaves room for memcached's
    // item header, key and CAS). One byte more is served, not cached.
    let n = random_blob_len_for_entry(&h, "Big", limit);
    let (key, key_len) = longest_key_value(&h, &big, &format!("r{n}"));
    assert!(key_len > 200, "a long key ({key_len} bytes)");
    let errors = h.fdb.flash().stats().snapshot().backend_errors;
    let at_limit = assert_cached(&h, &big, &key).await;
    assert_eq!(at_limit.len(), limit);
    assert_eq!(
        h.fdb.flash().stats().snapshot().backend_errors,
        errors,
        "memcached accepted it"
    );
    assert_served_not_cached(&h, &big, &format!("r{}", n + 1)).await;
    // 4 MiB of text fits once compressed.
    assert_served_not_cached(&h, &big, "c4194304").await;
    let stored = assert_cached(&h, &packed, "c4194304").await;
    assert!(stored.len() < limit / 10, "{} bytes", stored.len());
}
