//! Class names derived from a declaration (model, kind, key fields) when the
//! service gives none.
//!
//! A class name is a key segment: 1 to [`MAX_CLASS_NAME_LEN`] bytes of
//! `[A-Za-z0-9_]` without `__`. Derived names are injective, so two
//! different declarations never get one name:
//!
//! * one field: `{model}{infix}_by_{field}` (`event_by_slug`);
//! * `n` > 1 fields: `{model}{infix}_by{n}_{f1}_..._{fn}` (`event_by2_city_slug`);
//!
//! where `infix` is empty, `_list` (queryset) or `_exists`. That readable form
//! is decodable back into the tuple when the model has no `_by` and does not
//! end in `_list`/`_exists`, the fields of a multi-field tuple have no `_`,
//! no part starts or ends with `_`, and the name does not end like a hash
//! suffix. Otherwise, or when it is longer than the limit, the name is a
//! readable prefix of it plus `_h` and 12 hex digits of a SHA-256 of the
//! tuple, encoded unambiguously (every part length-prefixed).

use crate::class::CacheKind;
use crate::key::is_plain_name;
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The longest class name (the key segment's limit; keys are at most 250 bytes).
pub const MAX_CLASS_NAME_LEN: usize = 64;

/// Hex digits of the hash suffix of a shortened or disambiguated name.
const HASH_HEX: usize = 12;

fn infix(kind: CacheKind) -> &'static str {
    match kind {
        CacheKind::Instance => "",
        CacheKind::Queryset => "_list",
        CacheKind::Exists => "_exists",
    }
}

/// A part that joins with `_` without making `__` or an empty segment.
fn clean_part(s: &str) -> bool {
    is_plain_name(s) && !s.starts_with('_') && !s.ends_with('_')
}

/// Whether `name` ends like `_h` + [`HASH_HEX`] hex digits.
fn looks_hashed(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > HASH_HEX + 2
        && &b[b.len() - HASH_HEX - 2..b.len() - HASH_HEX] == b"_h"
        && b[b.len() - HASH_HEX..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The name of the class a declaration of `kind` on `model` keyed by `fields`
/// gets when it is not named (see the module docs).
pub fn derived_name(model: &str, kind: CacheKind, fields: &[&str]) -> String {
    let mut readable = String::with_capacity(64);
    readable.push_str(model);
    readable.push_str(infix(kind));
    if fields.len() == 1 {
        readable.push_str("_by_");
    } else {
        let _ = write!(readable, "_by{}_", fields.len());
    }
    readable.push_str(&fields.join("_"));
    let decodable = clean_part(model)
        && !model.contains("_by")
        && !model.ends_with("_list")
        && !model.ends_with("_exists")
        && !fields.is_empty()
        && fields.iter().all(|f| clean_part(f))
        && (fields.len() == 1 || fields.iter().all(|f| !f.contains('_')))
        && !looks_hashed(&readable);
    if decodable && readable.len() <= MAX_CLASS_NAME_LEN {
        return readable;
    }
    // The hash covers the tuple itself, length-prefixed, so that it is as
    // injective as SHA-256 whatever the parts contain.
    let mut h = Sha256::new();
    for part in std::iter::once(model)
        .chain(std::iter::once(kind.tag()))
        .chain(fields.iter().copied())
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut prefix: String = readable
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(MAX_CLASS_NAME_LEN - HASH_HEX - 2)
        .collect();
    while prefix.contains("__") {
        prefix = prefix.replace("__", "_");
    }
    let mut name = prefix.trim_end_matches('_').to_owned();
    name.push_str("_h");
    for b in &digest[..HASH_HEX / 2] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use CacheKind::*;

    #[test]
    fn plain_declarations_keep_readable_names() {
        assert_eq!(derived_name("event", Instance, &["slug"]), "event_by_slug");
        assert_eq!(
            derived_name("participation", Queryset, &["user_id"]),
            "participation_list_by_user_id"
        );
        assert_eq!(
            derived_name("event", Exists, &["city", "slug"]),
            "event_exists_by2_city_slug"
        );
    }

    #[test]
    fn tuples_that_join_alike_get_different_names() {
        let names = [
            derived_name("t", Instance, &["user_id"]),
            derived_name("t", Instance, &["user", "id"]),
            derived_name("t", Instance, &["user_id", "x"]),
            derived_name("t", Instance, &["user", "id_x"]),
            derived_name("t_list", Instance, &["a"]),
            derived_name("t", Queryset, &["a"]),
            derived_name("t_by", Instance, &["x"]),
            derived_name("t", Instance, &["by_x"]),
            derived_name("t", Instance, &["a_"]),
            derived_name("t", Instance, &["a"]),
            derived_name("t", Instance, &["a_h0123456789ab"]),
        ];
        for n in &names {
            assert!(is_plain_name(n), "{n}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn long_names_are_shortened_deterministically() {
        let table = "event_participation_history_entries"; // 35 characters
        let a = derived_name(table, Queryset, &["organisation", "created"]);
        let b = derived_name(table, Queryset, &["organisation", "updated"]);
        assert!(a.len() <= MAX_CLASS_NAME_LEN && is_plain_name(&a), "{a}");
        assert!(a.starts_with("event_participation_history_entries_list_by2_"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            derived_name(table, Queryset, &["organisation", "created"])
        );
    }
}
