//! MySQL / MariaDB: row-level AFTER triggers (no statement triggers there),
//! each inserting one `flash_changes` row of `JSON_ARRAY(JSON_ARRAY(...))`.
//! `DROP TRIGGER IF EXISTS` + `CREATE TRIGGER` (MySQL has no `CREATE OR
//! REPLACE TRIGGER`); several triggers per event and table are allowed since
//! MySQL 5.7.2 / MariaDB 10.2.3, which lets [`install`](super::install)
//! create the new version before dropping the old.

use super::{lit, CaptureSpec, CascadeCapture, CHANGES_TABLE, INSTALL_LOCK};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement};

pub(super) const CHANGES_EXISTS: &str = "SELECT 1 FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'flash_changes'";

/// What the drain selects besides the id and the table: the recorded keys,
/// and the record's age in µs (`created_at` and `NOW(6)` in the session's
/// time zone alike).
pub(super) const DRAIN_COLUMNS: &str =
    "old_keys, new_keys, CAST(TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) AS SIGNED) AS age_us";

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
         created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)\
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
    let (own, cascades) = names.split_at(if spec.captures_rows() { 3 } else { 0 });
    for (trigger, cascade) in cascades.iter().zip(spec.cascades()) {
        out.push(drop_trigger(trigger));
        let (event, insert) = match cascade.on_update {
            true => ("UPDATE", update_action_insert(cascade)),
            false => ("DELETE", cascade_insert(cascade)),
        };
        out.push(format!(
            "CREATE TRIGGER {} BEFORE {event} ON {table} FOR EACH ROW {insert}",
            bq(trigger),
        ));
    }
    for (trigger, (event, cols, values)) in own.iter().zip([
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

/// `INSERT ... SELECT` of the rows a delete of `OLD` cascades to.
fn cascade_insert(c: &CascadeCapture) -> String {
    let mut from = String::new();
    let mut cond = Vec::new();
    for (i, fk) in c.path.iter().enumerate() {
        let alias = format!("t{}", i + 1);
        let above = if i == 0 {
            "OLD".to_owned()
        } else {
            format!("t{i}")
        };
        let on = fk
            .columns
            .iter()
            .zip(&fk.references)
            .map(|(col, r)| format!("{alias}.{} = {above}.{}", bq(col), bq(r)))
            .collect::<Vec<_>>();
        if i == 0 {
            from = format!("{} {alias}", bq(&fk.child));
            cond = on;
        } else {
            from.push_str(&format!(
                " JOIN {} {alias} ON {}",
                bq(&fk.child),
                on.join(" AND ")
            ));
        }
    }
    let last = format!("t{}", c.path.len());
    // ON DELETE SET NULL: the rows stay with the last hop's columns NULL.
    let nulled: &[String] = match (c.set_null, c.path.last()) {
        (true, Some(fk)) => &fk.columns,
        _ => &[],
    };
    let image = |after: bool| {
        c.columns
            .iter()
            .map(|col| {
                let v = format!("{last}.{}", bq(col));
                if after && nulled.contains(col) {
                    "NULL".to_owned()
                } else if c.hex.contains(col) {
                    format!("HEX({v})")
                } else {
                    v
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (cols, values) = match c.set_null {
        true => (
            "old_keys, new_keys",
            format!(
                "JSON_ARRAYAGG(JSON_ARRAY({})), JSON_ARRAYAGG(JSON_ARRAY({}))",
                image(false),
                image(true)
            ),
        ),
        false => (
            "old_keys",
            format!("JSON_ARRAYAGG(JSON_ARRAY({}))", image(false)),
        ),
    };
    format!(
        "INSERT INTO {CHANGES_TABLE} (table_name, {cols}) SELECT {}, {values} \
         FROM {from} WHERE {} HAVING COUNT(*) > 0",
        lit(c.table()),
        cond.join(" AND ")
    )
}

/// `INSERT ... SELECT` of the rows of the child of `c`'s one hop whose
/// foreign key references the parent's `OLD` values, when the update changes
/// them: their captured columns before, and after the `ON UPDATE` action
/// (the foreign-key columns become the `NEW` values, or NULL).
fn update_action_insert(c: &CascadeCapture) -> String {
    let Some(fk) = c.path.first() else {
        return String::new();
    };
    let cell = |col: &String, v: String| {
        if c.hex.contains(col) {
            format!("HEX({v})")
        } else {
            v
        }
    };
    let before = c
        .columns
        .iter()
        .map(|col| cell(col, format!("t1.{}", bq(col))))
        .collect::<Vec<_>>()
        .join(", ");
    let after = c
        .columns
        .iter()
        .map(|col| match fk.columns.iter().position(|f| f == col) {
            Some(_) if c.set_null => "NULL".to_owned(),
            Some(i) => cell(col, format!("NEW.{}", bq(&fk.references[i]))),
            None => cell(col, format!("t1.{}", bq(col))),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let matches = fk
        .columns
        .iter()
        .zip(&fk.references)
        .map(|(col, r)| format!("t1.{} = OLD.{}", bq(col), bq(r)))
        .collect::<Vec<_>>()
        .join(" AND ");
    // Compared as binary strings, as `old_unless_same` does.
    let same = fk
        .references
        .iter()
        .map(|r| {
            format!(
                "CAST(OLD.{r} AS BINARY) <=> CAST(NEW.{r} AS BINARY)",
                r = bq(r)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "INSERT INTO {CHANGES_TABLE} (table_name, old_keys, new_keys) SELECT {}, \
         JSON_ARRAYAGG(JSON_ARRAY({before})), JSON_ARRAYAGG(JSON_ARRAY({after})) \
         FROM {} t1 WHERE {matches} AND NOT ({same}) HAVING COUNT(*) > 0",
        lit(c.table()),
        bq(&fk.child),
    )
}

/// The name of the install lock: `flash_capture.<database>`, the database
/// name cut to 50 characters (lock names are server-wide, and at most 64
/// characters long).
fn lock_name() -> String {
    format!("CONCAT('{INSTALL_LOCK}.', LEFT(COALESCE(DATABASE(), ''), 50))")
}

/// Takes the install lock on `db`'s connection, waiting up to 60 s.
pub(super) async fn lock_install<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let sql = format!("SELECT GET_LOCK({}, 60)", lock_name());
    let row = db
        .query_one(Statement::from_string(DatabaseBackend::MySql, sql))
        .await?;
    match row
        .map(|r| r.try_get_by_index::<Option<i64>>(0))
        .transpose()?
    {
        Some(Some(1)) => Ok(()),
        Some(Some(0)) => Err(DbErr::Custom(
            "capture: another install held the install lock for 60 s".into(),
        )),
        other => Err(DbErr::Custom(format!(
            "capture: GET_LOCK of the install lock returned {other:?}"
        ))),
    }
}

/// Releases the install lock taken by [`lock_install`] on the same connection.
pub(super) async fn unlock_install<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let sql = format!("SELECT RELEASE_LOCK({})", lock_name());
    db.query_one(Statement::from_string(DatabaseBackend::MySql, sql))
        .await?;
    Ok(())
}
