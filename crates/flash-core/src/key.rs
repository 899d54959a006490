//! Cache keys: `{prefix}{type}__{db_alias}__{class}__{value}...__v{version}`.
//!
//! Every key is a valid memcached key (printable ASCII without spaces, at most
//! [`MAX_KEY_LEN`] bytes) and the mapping from lookup to key is injective:
//! values are escaped so that they never contain the `__` separator, and a key that
//! would be too long is replaced by a SHA-256 of the full key.

use crate::value::FieldValue;
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// memcached's limit on key length.
pub const MAX_KEY_LEN: usize = 250;
/// Room kept for suffixes such as `__stale` and `__lock`.
const SUFFIX_ROOM: usize = 16;

/// Appends `s` to `out`, escaping every byte outside `[A-Za-z0-9.-]` as `~xx`
/// (lower-case hex). `_` and `~` are escaped too, so a value can never produce the
/// `__` separator or a fake escape.
fn push_escaped(out: &mut String, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in s {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('~');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

fn push_value(out: &mut String, v: &FieldValue) {
    match v {
        // `~` is never followed by `_` or end in an escape, so these are unambiguous.
        FieldValue::Null => out.push('~'),
        FieldValue::Bool(b) => out.push_str(if *b { "~t" } else { "~f" }),
        // itoa, not `write!`: the formatting machinery would be most of a key's cost.
        FieldValue::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        FieldValue::UInt(i) => out.push_str(itoa::Buffer::new().format(*i)),
        FieldValue::Str(s) => push_escaped(out, s.as_bytes()),
        FieldValue::Bytes(b) => {
            out.push_str("~b");
            push_escaped(out, b);
        }
    }
}

/// Is `name` usable as a key segment as is (class names, aliases, type tags)?
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("__")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Is `prefix` a usable namespace prefix?
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b))
}

/// Builds the key of one lookup.
pub fn build_key(
    prefix: &str,
    cache_type: &str,
    db_alias: &str,
    class: &str,
    values: &[FieldValue],
    version: u32,
) -> String {
    let mut key = String::with_capacity(prefix.len() + class.len() + 32);
    build_key_in(
        &mut key, prefix, cache_type, db_alias, class, values, version,
    );
    key
}

/// [`build_key`] into `key` (emptied first): a buffer kept for it.
pub(crate) fn build_key_in(
    key: &mut String,
    prefix: &str,
    cache_type: &str,
    db_alias: &str,
    class: &str,
    values: &[FieldValue],
    version: u32,
) {
    key.clear();
    key.push_str(prefix);
    key.push_str(cache_type);
    key.push_str("__");
    key.push_str(db_alias);
    key.push_str("__");
    key.push_str(class);
    for v in values {
        key.push_str("__");
        push_value(key, v);
    }
    key.push_str("__v");
    key.push_str(itoa::Buffer::new().format(version));
    if key.len() > MAX_KEY_LEN - SUFFIX_ROOM {
        let digest = Sha256::digest(key.as_bytes());
        key.clear();
        key.push_str(prefix);
        key.push_str("h__");
        key.push_str(class);
        key.push_str("__");
        for b in digest {
            let _ = write!(key, "{b:02x}");
        }
    }
}

thread_local! {
    /// The buffer of [`with_key_buf`], one per thread.
    static KEY_BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` with this thread's key buffer: a lookup whose hit needs its key
/// only while it reads and decides allocates none. `f` must not wait (the
/// buffer is the thread's); one that runs inside another (an observer
/// looking up from its callback) gets a buffer of its own.
pub(crate) fn with_key_buf<R>(f: impl FnOnce(&mut String) -> R) -> R {
    KEY_BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            let r = f(&mut buf);
            // A huge key (long values are hashed only at the end) is not kept.
            if buf.capacity() > 4 * MAX_KEY_LEN {
                *buf = String::new();
            }
            r
        }
        Err(_) => f(&mut String::new()),
    })
}

/// The key of a DYNAMIC class's stale marker.
pub fn stale_key(key: &str) -> String {
    format!("{key}__stale")
}

/// The key of a write lock (allowtime / DYNAMIC refresh).
pub fn lock_key(key: &str) -> String {
    format!("{key}__lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(values: &[FieldValue]) -> String {
        build_key("flash:", "i", "default", "EventOnSlug", values, 0)
    }

    fn valid(key: &str) -> bool {
        key.len() <= MAX_KEY_LEN - SUFFIX_ROOM && key.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn plain_values_stay_readable() {
        assert_eq!(
            k(&["rock-2024".into()]),
            "flash:i__default__EventOnSlug__rock-2024__v0"
        );
        assert_eq!(k(&[7i32.into()]), "flash:i__default__EventOnSlug__7__v0");
    }

    #[test]
    fn hostile_values_give_valid_distinct_keys() {
        let long = "x".repeat(10_000);
        let hostile: Vec<Vec<FieldValue>> = vec![
            vec!["".into()],
            vec![" ".into()],
            vec!["a b".into()],
            vec!["line\nbreak".into()],
            vec!["tab\there".into()],
            vec!["ünïcödé ✓ 日本".into()],
            vec!["a__b".into()],
            vec!["a_".into()],
            vec!["~".into()],
            vec!["~7e".into()],
            vec![long.clone().into()],
            vec![format!("{long}y").into()],
            vec![FieldValue::Null],
            vec![FieldValue::Bytes(vec![0, 255, 10])],
            vec![FieldValue::Bool(true)],
            vec!["a".into(), "b__c".into()],
            vec!["a__b".into(), "c".into()],
            vec!["".into(), "".into()],
        ];
        let keys: Vec<String> = hostile.iter().map(|v| k(v)).collect();
        for key in &keys {
            assert!(valid(key), "invalid key {key:?}");
        }
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(
            unique.len(),
            keys.len(),
            "two lookups share a key: {keys:?}"
        );
    }

    #[test]
    fn the_key_buffer_builds_the_same_keys() {
        let cases: Vec<Vec<FieldValue>> = vec![
            vec![7i32.into()],
            vec!["a b~_".into(), FieldValue::Null],
            vec!["y".repeat(5000).into()],
            vec![FieldValue::Bytes(vec![0, 255, 10]), FieldValue::Bool(false)],
        ];
        for v in cases {
            // The buffer holds the previous key: it is emptied first.
            let built = with_key_buf(|buf| {
                build_key_in(buf, "flash:", "i", "default", "EventOnSlug", &v, 0);
                buf.clone()
            });
            assert_eq!(built, k(&v));
        }
    }

    #[test]
    fn long_keys_are_hashed_and_suffixes_fit() {
        let key = k(&["z".repeat(5000).into()]);
        assert!(key.starts_with("flash:h__EventOnSlug__"));
        assert!(stale_key(&key).len() <= MAX_KEY_LEN);
        assert!(lock_key(&key).len() <= MAX_KEY_LEN);
    }

    #[test]
    fn version_and_alias_and_prefix_are_part_of_the_key() {
        let a = build_key("p:", "i", "default", "C", &[1i32.into()], 0);
        assert_ne!(a, build_key("p:", "i", "default", "C", &[1i32.into()], 1));
        assert_ne!(a, build_key("p:", "i", "replica", "C", &[1i32.into()], 0));
        assert_ne!(a, build_key("q:", "i", "default", "C", &[1i32.into()], 0));
        assert_ne!(a, build_key("p:", "q", "default", "C", &[1i32.into()], 0));
    }
}
