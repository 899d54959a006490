//! One set of backend tests, run against every backend (the in-process one in
//! this crate's tests; Redis, Redis Cluster and memcached from their crates'
//! integration tests).
//!
//! Each check panics with a message naming the backend and what broke. Keys are
//! made unique per run with `ns`, so servers shared between runs do not interfere.

use flash_core::{Backend, Lease};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(60);

/// Runs every check against `b`. `ns` namespaces the keys (use something unique).
/// `item_limit`: a value size the backend must store (e.g. 900 kB for memcached).
pub async fn run_all<B: Backend>(b: &B, ns: &str, item_limit: usize) {
    get_set_delete(b, ns).await;
    add_only_when_absent(b, ns).await;
    compare_and_swap(b, ns).await;
    get_or_lease(b, ns).await;
    get_many_in_order(b, ns).await;
    set_many(b, ns).await;
    binary_values_and_odd_keys(b, ns).await;
    large_values(b, ns, item_limit).await;
    expiry(b, ns).await;
}

pub async fn get_set_delete<B: Backend>(b: &B, ns: &str) {
    let k = format!("{ns}:gsd");
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![None],
        "{}: fresh key",
        b.name()
    );
    b.set(&k, b"one", TTL).await.unwrap();
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"one".to_vec())],
        "{}",
        b.name()
    );
    b.set(&k, b"two", TTL).await.unwrap();
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"two".to_vec())],
        "{}",
        b.name()
    );
    b.delete(&k).await.unwrap();
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![None],
        "{}: after delete",
        b.name()
    );
    b.delete(&k).await.unwrap();
}

pub async fn add_only_when_absent<B: Backend>(b: &B, ns: &str) {
    let k = format!("{ns}:add");
    assert!(
        b.add(&k, b"first", TTL).await.unwrap(),
        "{}: add on absent key",
        b.name()
    );
    assert!(
        !b.add(&k, b"second", TTL).await.unwrap(),
        "{}: add on present key",
        b.name()
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"first".to_vec())]
    );
}

pub async fn compare_and_swap<B: Backend>(b: &B, ns: &str) {
    let k = format!("{ns}:cas");
    assert!(
        !b.compare_and_swap(&k, b"x", Some(b"y"), TTL).await.unwrap(),
        "{}: cas on absent key",
        b.name()
    );
    b.set(&k, b"lease-1", TTL).await.unwrap();
    assert!(
        !b.compare_and_swap(&k, b"lease-2", Some(b"v"), TTL)
            .await
            .unwrap(),
        "{}: cas with wrong expected",
        b.name()
    );
    assert!(
        b.compare_and_swap(&k, b"lease-1", Some(b"v"), TTL)
            .await
            .unwrap(),
        "{}: cas with right expected",
        b.name()
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"v".to_vec())]
    );
    assert!(
        !b.compare_and_swap(&k, b"lease-1", Some(b"w"), TTL)
            .await
            .unwrap(),
        "{}: second cas",
        b.name()
    );
    assert!(
        b.compare_and_swap(&k, b"v", None, TTL).await.unwrap(),
        "{}: cas delete",
        b.name()
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![None],
        "{}: after cas delete",
        b.name()
    );
}

/// Requests a miss with its lease may take: one for the backends that read
/// and lease in one request, two for the trait's default.
fn lease_round_trips<B: Backend>(b: &B) -> u32 {
    match b.name() {
        "memory" | "redis" | "redis-cluster" | "memcache" => 1,
        _ => 2,
    }
}

/// `get_or_lease` and `swap_lease`: a miss takes the lease (and reads the
/// other keys) in one request; a second reader gets no lease and sees the
/// lease (or the server's empty placeholder) in the key; the fill lands only
/// over its own lease, never over a write that replaced it; a released
/// lease leaves the key empty.
pub async fn get_or_lease<B: Backend>(b: &B, ns: &str) {
    let name = b.name();
    let k = format!("{ns}:gol");
    let marker = format!("{ns}:gol__stale");
    b.set(&marker, b"marker", TTL).await.unwrap();
    let keys = [k.clone(), marker.clone()];
    let first = b.get_or_lease(&keys, b"lease-1", b"", TTL).await.unwrap();
    let lease = first
        .lease
        .clone()
        .unwrap_or_else(|| panic!("{name}: a miss takes the lease"));
    assert_eq!(
        crate::owned(first.values.clone()),
        vec![None, Some(b"marker".to_vec())],
        "{name}: the miss and the other key"
    );
    assert!(
        first.round_trips <= lease_round_trips(b),
        "{name}: {} requests for a miss with its lease",
        first.round_trips
    );
    let second = b.get_or_lease(&keys, b"lease-2", b"", TTL).await.unwrap();
    assert_eq!(second.lease, None, "{name}: one lease at a time");
    let held = second.values[0].clone();
    match &lease {
        Lease::Bytes(l) => {
            assert_eq!(l.as_slice(), b"lease-1", "{name}: the caller's lease");
            assert_eq!(
                held.as_deref(),
                Some(&b"lease-1"[..]),
                "{name}: the lease is seen"
            );
        }
        Lease::Token(_) => assert_eq!(
            held.as_deref(),
            Some(&[][..]),
            "{name}: the placeholder is seen"
        ),
    }
    assert_eq!(second.round_trips, 1, "{name}: a hit is one request");
    assert!(
        b.swap_lease(&k, &lease, Some(b"value"), TTL).await.unwrap(),
        "{name}: the fill over its own lease"
    );
    assert!(
        !b.swap_lease(&k, &lease, Some(b"again"), TTL).await.unwrap(),
        "{name}: a lease fills once"
    );
    let hit = b.get_or_lease(&keys, b"lease-3", b"", TTL).await.unwrap();
    assert_eq!(
        (hit.values[0].as_deref(), hit.lease),
        (Some(&b"value"[..]), None),
        "{name}: a hit takes no lease"
    );

    // A marker (a value that starts with `over`) is leased over too.
    b.set(&k, b"STALE-1", TTL).await.unwrap();
    let read = b
        .get_or_lease(&keys, b"lease-m", b"STALE", TTL)
        .await
        .unwrap();
    let lease = read.lease.expect("a lease over a marker");
    assert!(
        read.round_trips <= 2,
        "{name}: {} requests",
        read.round_trips
    );
    assert!(b.swap_lease(&k, &lease, Some(b"value"), TTL).await.unwrap());
    let read = b
        .get_or_lease(&keys, b"lease-n", b"STALE", TTL)
        .await
        .unwrap();
    assert_eq!(
        (read.values[0].as_deref(), read.lease),
        (Some(&b"value"[..]), None),
        "{name}: a value that is not a marker stays"
    );

    // A write over the lease (an invalidation) wins over the late fill.
    b.delete(&k).await.unwrap();
    let read = b
        .get_or_lease(&keys[..1], b"lease-4", b"", TTL)
        .await
        .unwrap();
    let lease = read.lease.expect("lease after delete");
    b.set(&k, b"invalidated", TTL).await.unwrap();
    assert!(
        !b.swap_lease(&k, &lease, Some(b"stale"), TTL).await.unwrap(),
        "{name}: a fill after an invalidation"
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"invalidated".to_vec())],
        "{name}: the invalidation stays"
    );

    // A released lease leaves nothing behind, and the next miss wins again.
    b.delete(&k).await.unwrap();
    let lease = b
        .get_or_lease(&keys[..1], b"lease-5", b"", TTL)
        .await
        .unwrap()
        .lease
        .expect("lease after delete");
    assert!(
        b.swap_lease(&k, &lease, None, TTL).await.unwrap(),
        "{name}: release"
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![None],
        "{name}: nothing left after a release"
    );
    assert!(
        b.get_or_lease(&keys[..1], b"lease-6", b"", TTL)
            .await
            .unwrap()
            .lease
            .is_some(),
        "{name}: a new lease after a release"
    );
}

pub async fn get_many_in_order<B: Backend>(b: &B, ns: &str) {
    let keys: Vec<String> = (0..300).map(|i| format!("{ns}:many:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        if i % 3 != 0 {
            b.set(k, format!("v{i}").as_bytes(), TTL).await.unwrap();
        }
    }
    let got = crate::owned(b.get_many(&keys).await.unwrap());
    assert_eq!(got.len(), keys.len());
    for (i, v) in got.into_iter().enumerate() {
        let want = (i % 3 != 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(v, want, "{}: get_many position {i}", b.name());
    }
    assert!(crate::owned(b.get_many(&[]).await.unwrap()).is_empty());
    // A key asked for twice answers twice (a value moved out for the first
    // position must still be there for the second).
    let dup = vec![
        keys[1].clone(),
        keys[0].clone(),
        keys[1].clone(),
        keys[1].clone(),
    ];
    let v1 = Some(b"v1".to_vec());
    assert_eq!(
        crate::owned(b.get_many(&dup).await.unwrap()),
        vec![v1.clone(), None, v1.clone(), v1],
        "{}: duplicate keys",
        b.name()
    );
}

pub async fn set_many<B: Backend>(b: &B, ns: &str) {
    let items: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("{ns}:sm:{i}"), vec![i as u8; 3]))
        .collect();
    b.set_many(&items, TTL).await.unwrap();
    let keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    let got = crate::owned(b.get_many(&keys).await.unwrap());
    for ((_, want), got) in items.iter().zip(got) {
        assert_eq!(got.as_ref(), Some(want), "{}: set_many", b.name());
    }
}

pub async fn binary_values_and_odd_keys<B: Backend>(b: &B, ns: &str) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let long_key = format!("{ns}:{}", "k".repeat(240 - ns.len()));
    for k in [format!("{ns}:bin"), format!("{ns}:~7e~0a~c3"), long_key] {
        b.set(&k, &all_bytes, TTL).await.unwrap();
        assert_eq!(
            crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
            vec![Some(all_bytes.clone())],
            "{}: binary value under {k}",
            b.name()
        );
    }
    let empty = format!("{ns}:empty");
    b.set(&empty, b"", TTL).await.unwrap();
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&empty)).await.unwrap()),
        vec![Some(vec![])],
        "{}: empty value",
        b.name()
    );
}

pub async fn large_values<B: Backend>(b: &B, ns: &str, item_limit: usize) {
    let k = format!("{ns}:large");
    let v: Vec<u8> = (0..item_limit).map(|i| (i * 7 % 251) as u8).collect();
    b.set(&k, &v, TTL).await.unwrap();
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(v)],
        "{}: value of {item_limit} bytes",
        b.name()
    );
}

pub async fn expiry<B: Backend>(b: &B, ns: &str) {
    let k = format!("{ns}:ttl");
    let forever = format!("{ns}:forever");
    b.set(&k, b"short", Duration::from_secs(1)).await.unwrap();
    b.set(&forever, b"long", Duration::ZERO).await.unwrap();
    let lease = format!("{ns}:ttl-add");
    assert!(b.add(&lease, b"l", Duration::from_secs(1)).await.unwrap());
    let leased = [format!("{ns}:ttl-lease")];
    let short = Duration::from_secs(1);
    assert!(b
        .get_or_lease(&leased, b"l", b"", short)
        .await
        .unwrap()
        .lease
        .is_some());
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![Some(b"short".to_vec())]
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&k)).await.unwrap()),
        vec![None],
        "{}: expired value",
        b.name()
    );
    assert!(
        b.add(&lease, b"l2", TTL).await.unwrap(),
        "{}: add after expiry",
        b.name()
    );
    assert!(
        b.get_or_lease(&leased, b"l2", b"", TTL)
            .await
            .unwrap()
            .lease
            .is_some(),
        "{}: a lease expires with its TTL",
        b.name()
    );
    assert_eq!(
        crate::owned(b.get_many(std::slice::from_ref(&forever)).await.unwrap()),
        vec![Some(b"long".to_vec())],
        "{}: ttl zero never expires",
        b.name()
    );
}
