//! SQLite: row-level AFTER triggers inserting one row's values, `json_array(...)`.
//! BLOB values (sqlx stores UUIDs as 16-byte blobs) are recorded as uppercase
//! hex text: `json_array` refuses blobs, which would fail the write.

use super::{dq, lit, CaptureSpec, CHANGES_TABLE};
use sea_orm::DatabaseBackend;

pub(super) const CHANGES_EXISTS: &str =
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flash_changes'";

/// What the drain selects besides the id and the table: the recorded keys,
/// and the record's age in µs (`created_at` is a Julian day number, or UTC
/// text in a table created by flash before format 4: `julianday` reads both).
pub(super) const DRAIN_COLUMNS: &str = "old_keys, new_keys, \
     CAST((julianday('now') - julianday(created_at)) * 86400000000 AS INTEGER) AS age_us";

pub(super) const LIST_TRIGGERS: &str = "SELECT tbl_name, name FROM sqlite_master \
     WHERE type = 'trigger' AND name LIKE 'flash\\_capture\\_%' ESCAPE '\\'";

pub(super) fn changes_table() -> Vec<String> {
    vec![create_changes_table(true)]
}

/// `CREATE TABLE [IF NOT EXISTS] flash_changes ...`.
pub(super) fn create_changes_table(if_not_exists: bool) -> String {
    let if_not_exists = if if_not_exists { "IF NOT EXISTS " } else { "" };
    format!(
        "CREATE TABLE {if_not_exists}{CHANGES_TABLE} (\
         id INTEGER PRIMARY KEY AUTOINCREMENT, \
         table_name TEXT NOT NULL, \
         old_keys TEXT, \
         new_keys TEXT, \
         created_at REAL NOT NULL DEFAULT (julianday('now')))"
    )
}

/// A write that writes nothing: as the first statement of a transaction it
/// takes the database's write lock (waiting on the busy timeout) before the
/// transaction reads anything, as `BEGIN IMMEDIATE` would (sea-orm begins
/// deferred transactions). A transaction that read first could not wait for
/// the lock: SQLite fails its first write at once with SQLITE_BUSY.
pub(super) const TAKE_WRITE_LOCK: &str = "DELETE FROM flash_changes WHERE 0";

pub(super) fn drop_trigger(name: &str) -> String {
    format!("DROP TRIGGER IF EXISTS {}", dq(name))
}

fn row(spec: &CaptureSpec, rel: &str) -> String {
    let cols = spec
        .columns()
        .iter()
        .map(|c| {
            let v = format!("{rel}.{}", dq(c));
            format!("CASE typeof({v}) WHEN 'blob' THEN hex({v}) ELSE {v} END")
        })
        .collect::<Vec<_>>()
        .join(", ");
    // One row, not an array of rows: a row trigger records one, and the
    // nested `json_array` cost a 1 000-row update a tenth more.
    format!("json_array({cols})")
}

/// `NULL` when no captured column changed (the new row covers the old
/// keys), else the old row. `IS` with BINARY collation: a NOCASE column must
/// not hide a change of key.
fn old_unless_same(spec: &CaptureSpec) -> String {
    let same = spec
        .columns()
        .iter()
        .map(|c| {
            let c = dq(c);
            format!("OLD.{c} IS NEW.{c} COLLATE BINARY")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    format!("CASE WHEN {same} THEN NULL ELSE {} END", row(spec, "OLD"))
}

pub(super) fn install(spec: &CaptureSpec) -> Vec<String> {
    let table = dq(spec.table());
    let name = lit(spec.table());
    let names = spec.trigger_names(DatabaseBackend::Sqlite);
    let mut out = Vec::new();
    for (trigger, (event, cols, values)) in names.iter().zip([
        ("INSERT", "new_keys", row(spec, "NEW")),
        (
            "UPDATE",
            "old_keys, new_keys",
            format!("{}, {}", old_unless_same(spec), row(spec, "NEW")),
        ),
        ("DELETE", "old_keys", row(spec, "OLD")),
    ]) {
        out.push(drop_trigger(trigger));
        out.push(format!(
            "CREATE TRIGGER {} AFTER {event} ON {table} FOR EACH ROW BEGIN \
             INSERT INTO {CHANGES_TABLE} (table_name, {cols}) VALUES ({name}, {values}); END",
            dq(trigger)
        ));
    }
    out
}
