//! MySQL / MariaDB: row-level AFTER triggers (no statement triggers there),
//! each inserting one `flash_changes` row of `JSON_ARRAY(JSON_ARRAY(...))`.
//! `DROP TRIGGER IF EXISTS` + `CREATE TRIGGER` (MySQL has no `CREATE OR
//! REPLACE TRIGGER`); several triggers per event and table are allowed since
//! MySQL 5.7.2 / MariaDB 10.2.3, which lets [`install`](super::install)
//! create the new version before dropping the old.

use super::{lit, CaptureSpec, CascadeCapture, ForeignKey, CHANGES_TABLE};
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement, Value};
use std::collections::BTreeMap;

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
    let (own, cascades) = names.split_at(if spec.captures_rows() { 3 } else { 0 });
    for (trigger, cascade) in cascades.iter().zip(spec.cascades()) {
        out.push(drop_trigger(trigger));
        out.push(format!(
            "CREATE TRIGGER {} BEFORE DELETE ON {table} FOR EACH ROW {}",
            bq(trigger),
            cascade_insert(cascade)
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
    let cols = c
        .columns
        .iter()
        .map(|col| {
            let v = format!("{last}.{}", bq(col));
            if c.hex.contains(col) {
                format!("HEX({v})")
            } else {
                v
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {CHANGES_TABLE} (table_name, old_keys) SELECT {}, JSON_ARRAYAGG(JSON_ARRAY({cols})) \
         FROM {from} WHERE {} HAVING COUNT(*) > 0",
        lit(c.table()),
        cond.join(" AND ")
    )
}

/// Hexes the binary captured columns of `specs`, and adds to them (or to
/// cascade-only specs of uncached tables) the captures of rows deleted by
/// `ON DELETE CASCADE` chains (up to 4 foreign keys deep, cycles excluded)
/// ending in a captured table.
pub(super) async fn add_cascades<C: ConnectionTrait>(
    db: &C,
    specs: &mut Vec<CaptureSpec>,
) -> Result<(), DbErr> {
    for spec in specs.iter_mut() {
        let hex = binary_columns(db, spec).await?;
        *spec = spec.clone().with_hex(hex);
    }
    let rows = db
        .query_all(Statement::from_string(
            DatabaseBackend::MySql,
            "SELECT CAST(k.TABLE_NAME AS CHAR), CAST(k.CONSTRAINT_NAME AS CHAR), \
             CAST(k.COLUMN_NAME AS CHAR), CAST(k.REFERENCED_TABLE_NAME AS CHAR), \
             CAST(k.REFERENCED_COLUMN_NAME AS CHAR) \
             FROM information_schema.KEY_COLUMN_USAGE k \
             JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
             ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
             AND r.TABLE_NAME = k.TABLE_NAME \
             WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_SCHEMA = DATABASE() \
             AND r.DELETE_RULE = 'CASCADE' \
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION"
                .to_owned(),
        ))
        .await?;
    let mut fks: BTreeMap<(String, String), ForeignKey> = BTreeMap::new();
    for r in rows {
        let child: String = r.try_get_by_index(0)?;
        let name: String = r.try_get_by_index(1)?;
        let col: String = r.try_get_by_index(2)?;
        let parent: String = r.try_get_by_index(3)?;
        let rcol: String = r.try_get_by_index(4)?;
        let fk = fks.entry((child.clone(), name)).or_insert(ForeignKey {
            child,
            columns: Vec::new(),
            parent,
            references: Vec::new(),
        });
        fk.columns.push(col);
        fk.references.push(rcol);
    }
    let fks: Vec<ForeignKey> = fks.into_values().collect();
    let mut found: BTreeMap<String, Vec<CascadeCapture>> = BTreeMap::new();
    for spec in specs.iter().filter(|s| s.captures_rows()) {
        // Paths upwards from the captured table, as lists of hops bottom-up.
        let mut stack: Vec<Vec<&ForeignKey>> = fks
            .iter()
            .filter(|f| f.child == spec.table() && f.parent != f.child)
            .map(|f| vec![f])
            .collect();
        while let Some(up) = stack.pop() {
            let top = up.last().map(|f| f.parent.clone()).unwrap_or_default();
            let path: Vec<ForeignKey> = up.iter().rev().map(|f| (*f).clone()).collect();
            found.entry(top.clone()).or_default().push(CascadeCapture {
                path,
                columns: spec.columns().to_vec(),
                hex: spec.hex_columns().map(str::to_owned).collect(),
            });
            if up.len() < 4 {
                for f in fks.iter().filter(|f| f.child == top) {
                    let seen = f.parent == spec.table() || up.iter().any(|u| u.child == f.parent);
                    if !seen {
                        let mut next = up.clone();
                        next.push(f);
                        stack.push(next);
                    }
                }
            }
        }
    }
    for (table, cascades) in found {
        match specs.iter_mut().find(|s| s.table() == table) {
            Some(s) => *s = s.clone().with_cascades(cascades),
            None => specs.push(CaptureSpec::cascade_only(&table)?.with_cascades(cascades)),
        }
    }
    Ok(())
}
