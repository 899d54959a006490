//! MySQL's SQL: the forms MySQL spells its own way.

/// `insert` (of one row, `counter` = 1) made an upsert: on a duplicate
/// primary or unique key, `counter + 1` instead.
pub(super) fn increment_on_duplicate(insert: String, counter: &str) -> String {
    format!("{insert} ON DUPLICATE KEY UPDATE {counter} = {counter} + 1")
}
