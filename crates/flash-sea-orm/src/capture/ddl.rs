//! The pure SQL text of capture: the changes table, and the statements that
//! install or remove the triggers of one [`CaptureSpec`], dispatched to the
//! per-database generators. Nothing here touches a database, so the output can
//! be pasted into a migration.

use super::{mysql, postgres, sqlite, CaptureSpec};
use sea_orm::DatabaseBackend;

/// `CREATE TABLE IF NOT EXISTS flash_changes ...` for `backend`.
pub fn changes_table_ddl(backend: DatabaseBackend) -> Vec<String> {
    match backend {
        DatabaseBackend::Postgres => postgres::changes_table(),
        DatabaseBackend::MySql => mysql::changes_table(),
        DatabaseBackend::Sqlite => sqlite::changes_table(),
    }
}

/// The statements installing capture of `spec.table()` (its trigger function
/// on PostgreSQL, and one trigger per INSERT/UPDATE/DELETE). They assume
/// [`changes_table_ddl`] ran. Re-running them is harmless (each trigger is
/// dropped if it exists, then created); they do not remove triggers of other
/// versions: see [`drop_ddl`] or [`install`](super::install).
pub fn ddl(backend: DatabaseBackend, spec: &CaptureSpec) -> Vec<String> {
    match backend {
        DatabaseBackend::Postgres => postgres::install(spec),
        DatabaseBackend::MySql => mysql::install(spec),
        DatabaseBackend::Sqlite => sqlite::install(spec),
    }
}

/// The statements removing what [`ddl`] installs for this exact spec.
pub fn drop_ddl(backend: DatabaseBackend, spec: &CaptureSpec) -> Vec<String> {
    let names = spec.trigger_names(backend);
    let schema = spec.schema();
    let mut out = drop_triggers_ddl(backend, schema, spec.table(), &names);
    if backend == DatabaseBackend::Postgres && spec.captures_rows() {
        out.push(postgres::drop_function(schema, &spec.object_name("f")));
    }
    out
}

pub(super) fn drop_triggers_ddl(
    backend: DatabaseBackend,
    schema: Option<&str>,
    table: &str,
    names: &[String],
) -> Vec<String> {
    names
        .iter()
        .map(|n| match backend {
            DatabaseBackend::Postgres => postgres::drop_trigger(schema, table, n),
            DatabaseBackend::MySql => mysql::drop_trigger(n),
            DatabaseBackend::Sqlite => sqlite::drop_trigger(n),
        })
        .collect()
}

/// `"name"` (PostgreSQL, SQLite).
pub(super) fn dq(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`.
pub(super) fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
