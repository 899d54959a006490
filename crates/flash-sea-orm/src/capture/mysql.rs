//! MySQL / MariaDB: row-level AFTER triggers (no statement triggers there),
//! each inserting one `flash_changes` row of `JSON_ARRAY(JSON_ARRAY(...))`.
//! `DROP TRIGGER IF EXISTS` + `CREATE TRIGGER` (MySQL has no `CREATE OR
//! REPLACE TRIGGER`); several triggers per event and table are allowed since
//! MySQL 5.7.2 / MariaDB 10.2.3, which lets [`install`](super::install)
//! create the new version before dropping the old.

use super::{lit, CaptureSpec, CHANGES_TABLE};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement, Value};

pub(super) const CHANGES_EXISTS: &str = "SELECT 1 FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'flash_changes'";

pub(super) const LIST_TRIGGERS: &str =
    "SELECT CAST(EVENT_OBJECT_TABLE AS CHAR), CAST(TRIGGER_NAME AS CHAR) \
     FROM information_schema.TRIGGERS \
     WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE 'flash\\_capture\\_%'";

pub(super) fn changes_table() -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (\
         id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         table_name VARCHAR(64) NOT NULL, \
         old_keys LONGTEXT NULL, \
         new_keys LONGTEXT NULL, \
         created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
         claimed_by VARCHAR(255) NULL, \
         claimed_at TIMESTAMP(6) NULL DEFAULT NULL\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )]
}

fn bq(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

pub(super) fn drop_trigger(name: &str) -> String {
    format!("DROP TRIGGER IF EXISTS {}", bq(name))
}

fn row(spec: &CaptureSpec, rel: &str) -> String {
    let hex: Vec<&str> = spec.hex_columns().collect();
    let cols = spec
        .columns()
        .iter()
        .map(|c| {
            let v = format!("{rel}.{}", bq(c));
            if hex.contains(&c.as_str()) {
                format!("HEX({v})")
            } else {
                v
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("JSON_ARRAY(JSON_ARRAY({cols}))")
}

/// `NULL` when no captured column changed (the new row covers the old
/// keys), else the old row. Compared as binary strings: a case-insensitive
/// or PAD SPACE collation must not hide a change of key.
fn old_unless_same(spec: &CaptureSpec) -> String {
    let same = spec
        .columns()
        .iter()
        .map(|c| {
            let c = bq(c);
            format!("CAST(OLD.{c} AS BINARY) <=> CAST(NEW.{c} AS BINARY)")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    format!("IF({same}, NULL, {})", row(spec, "OLD"))
}

pub(super) fn install(spec: &CaptureSpec) -> Vec<String> {
    let table = bq(spec.table());
    let name = lit(spec.table());
    let names = spec.trigger_names(DatabaseBackend::MySql);
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
            "CREATE TRIGGER {} AFTER {event} ON {table} FOR EACH ROW \
             INSERT INTO {CHANGES_TABLE} (table_name, {cols}) VALUES ({name}, {values})",
            bq(trigger)
        ));
    }
    out
}

/// The captured columns of `spec` whose type is binary (JSON cannot hold them).
pub(super) async fn binary_columns<C: ConnectionTrait>(
    db: &C,
    spec: &CaptureSpec,
) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all(Statement::from_sql_and_values(
            DatabaseBackend::MySql,
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND DATA_TYPE IN \
             ('binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob', 'longblob', 'bit')",
            [Value::from(spec.table().to_owned())],
        ))
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let c: String = r.try_get_by_index(0)?;
        if spec.columns().contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}
