//! Unit tests: URL parsing, TTL conversion, and values over the item limit.

use super::*;

#[test]
fn urls() {
    assert_eq!(parse_url("memcache://a:1,b:2").unwrap(), vec!["a:1", "b:2"]);
    assert_eq!(parse_url("memcache://cache/").unwrap(), vec!["cache:11211"]);
    for bad in [
        "redis://a:1",
        "memcache://",
        "memcache://a:x",
        "memcache://a:1,,b:2",
        "memcache://:1",
    ] {
        assert!(parse_url(bad).is_err(), "{bad}");
        assert!(
            matches!(MemcacheBackend::new(bad), Err(BackendError::BadUrl { .. })),
            "{bad}"
        );
    }
}

#[test]
fn exptimes() {
    assert_eq!(exptime(Duration::ZERO), 0);
    assert_eq!(exptime(Duration::from_millis(1)), 1);
    assert_eq!(exptime(Duration::from_millis(1500)), 2);
    assert_eq!(
        exptime(Duration::from_secs(MAX_RELATIVE_TTL)),
        MAX_RELATIVE_TTL
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let abs = exptime(Duration::from_secs(MAX_RELATIVE_TTL + 1));
    assert!(
        abs >= now + MAX_RELATIVE_TTL && abs <= now + MAX_RELATIVE_TTL + 5,
        "{abs}"
    );
}

#[tokio::test]
async fn too_large_values_are_refused_before_sending() {
    let b = MemcacheBackend::new("memcache://127.0.0.1:1").unwrap();
    let big = vec![0u8; MAX_VALUE_SIZE + 1];
    assert!(matches!(
        b.set("k", &big, Duration::ZERO).await,
        Err(BackendError::TooLarge { .. })
    ));
}
