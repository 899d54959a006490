//! PostgreSQL: statement-level AFTER triggers with transition tables, one
//! PL/pgSQL function per table inserting one `flash_changes` row per statement
//! that touched rows, and a `pg_notify` delivered at commit.

use super::{dq, lit, CaptureSpec, CHANGES_TABLE, NOTIFY_CHANNEL, PG_INSTALL_LOCK_KEY};

pub(super) const CHANGES_EXISTS: &str = "SELECT 1 WHERE to_regclass('flash_changes') IS NOT NULL";

/// What the drain selects besides the id and the table: the recorded keys as
/// text, and the record's age in µs by the database's clock (`created_at` is
/// the writing transaction's start).
pub(super) const DRAIN_COLUMNS: &str =
    "old_keys::text AS old_keys, new_keys::text AS new_keys, txid, \
     CAST(EXTRACT(EPOCH FROM (clock_timestamp() - created_at)) * 1000000 AS BIGINT) AS age_us";

/// Wakes every listening drain (a drain hands back rows it could not apply).
pub(super) fn wake_drains() -> String {
    format!("SELECT pg_notify({}, '')", lit(NOTIFY_CHANNEL))
}

/// The notification the triggers send for a statement of transaction
/// `txid` on `table` of the current schema (see `install`), sent by a
/// write that recorded its change itself (see [`own_record_sql`]).
pub(super) fn announce(txid: Option<i64>, table: &str) -> String {
    let txid = txid.map(|t| t.to_string()).unwrap_or_default();
    format!(
        "SELECT pg_notify({}, {} || current_schema() || '.' || {})",
        lit(NOTIFY_CHANNEL),
        lit(&format!("{txid} ")),
        lit(table)
    )
}

/// Table, trigger, function of the `flash_capture_*` triggers of the current schema.
pub(super) const LIST_TRIGGERS: &str = "SELECT c.relname::text, t.tgname::text, p.proname::text \
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid \
     WHERE NOT t.tgisinternal AND n.nspname = current_schema() \
     AND t.tgname LIKE 'flash\\_capture\\_%'";

pub(super) fn changes_table() -> Vec<String> {
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (\
         id BIGSERIAL PRIMARY KEY, \
         table_name TEXT NOT NULL, \
         old_keys JSON, \
         new_keys JSON, \
         created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
         txid BIGINT)"
    )];
    // The writing transaction's id: a write through flash that applied its
    // own invalidation knows it, and its process's drain then only deletes
    // the record. Added to tables created by an older flash.
    out.push(format!(
        "ALTER TABLE {CHANGES_TABLE} ADD COLUMN IF NOT EXISTS txid BIGINT"
    ));
    // A 1 000-row statement records ~30 KB of JSON per column, which TOAST
    // compresses: lz4 (PostgreSQL 14+, when built with it) costs a write a
    // fraction of the default pglz. Elsewhere this is a no-op.
    out.push(format!(
        "DO $flash$ BEGIN EXECUTE 'ALTER TABLE {CHANGES_TABLE} \
         ALTER COLUMN old_keys SET COMPRESSION lz4, ALTER COLUMN new_keys SET COMPRESSION lz4'; \
         EXCEPTION WHEN OTHERS THEN NULL; END $flash$"
    ));
    out
}

/// The first statement of an install's transaction: the install lock, held
/// until the transaction ends.
pub(super) fn lock_install() -> String {
    format!("SELECT pg_advisory_xact_lock({PG_INSTALL_LOCK_KEY})")
}

fn qualified(schema: Option<&str>, name: &str) -> String {
    match schema {
        Some(s) => format!("{}.{}", dq(s), dq(name)),
        None => dq(name),
    }
}

pub(super) fn drop_trigger(schema: Option<&str>, table: &str, name: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS {} ON {}",
        dq(name),
        qualified(schema, table)
    )
}

pub(super) fn drop_function(schema: Option<&str>, name: &str) -> String {
    format!("DROP FUNCTION IF EXISTS {}()", qualified(schema, name))
}

/// The captured columns of the rows of `rel`, column by column:
/// `{"c": [[a1, a2, ...], [b1, b2, ...]]}` (see the module's *Recorded
/// values*), `NULL` when `rel` is empty. One `array_agg` per column, turned
/// into JSON once, costs a 1 000-row statement about half of what one JSON
/// array per row (`json_agg(json_build_array(...))`) did.
fn agg(spec: &CaptureSpec, rel: &str) -> String {
    let cols = spec
        .columns()
        .iter()
        .map(|c| format!("array_agg({rel}.{})", dq(c)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("json_build_object('c', json_build_array({cols}))")
}

pub(super) fn install(spec: &CaptureSpec) -> Vec<String> {
    let schema = spec.schema();
    let table = qualified(schema, spec.table());
    let changes = qualified(schema, CHANGES_TABLE);
    let function = qualified(schema, &spec.object_name("f"));
    let name = lit(spec.table());
    let old = agg(spec, "o");
    let new = agg(spec, "n");
    // An UPDATE that changes no captured column of any row (the common case)
    // records old_keys NULL, without reading the old rows: a row-level
    // trigger on the captured columns (`UPDATE OF`, so a statement that sets
    // none of them skips it entirely) whose `WHEN` compares each row's old and
    // new values with `*=` (binary image equality: exact, no collation,
    // defined for every type) flags the change in a transaction-local
    // setting, which the statement trigger (fired after the row triggers)
    // reads and clears. Comparing the transition tables instead cost a
    // 1 000-row update about as much as building its JSON.
    let flag = lit(&format!("flash.kc_{}", spec.version()));
    let body = format!(
        "BEGIN\n\
         IF TG_OP = 'UPDATE' THEN\n\
         \x20 SELECT {new} INTO flash_new FROM n HAVING count(*) > 0;\n\
         \x20 IF flash_new IS NULL THEN RETURN NULL; END IF;\n\
         \x20 IF current_setting({flag}, true) = '1' THEN\n\
         \x20   PERFORM set_config({flag}, '', true);\n\
         \x20   SELECT {old} INTO flash_old FROM o HAVING count(*) > 0;\n\
         \x20 END IF;\n\
         ELSIF TG_OP = 'INSERT' THEN\n\
         \x20 SELECT {new} INTO flash_new FROM n HAVING count(*) > 0;\n\
         \x20 IF flash_new IS NULL THEN RETURN NULL; END IF;\n\
         ELSE\n\
         \x20 SELECT {old} INTO flash_old FROM o HAVING count(*) > 0;\n\
         \x20 IF flash_old IS NULL THEN RETURN NULL; END IF;\n\
         END IF;\n\
         INSERT INTO {changes} (table_name, old_keys, new_keys, txid) VALUES ({name}, flash_old, flash_new, txid_current());\n\
         PERFORM pg_notify({channel}, txid_current() || ' ' || TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);\n\
         RETURN NULL;\n\
         END",
        channel = lit(NOTIFY_CHANNEL),
    );
    let mut out = vec![format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $flash$\nDECLARE flash_old json; flash_new json;\n{body}\n$flash$"
    )];
    let names = spec.trigger_names(sea_orm::DatabaseBackend::Postgres);
    let columns: Vec<String> = spec.columns().iter().map(|c| dq(c)).collect();
    let row = |rel: &str| {
        let cols: Vec<String> = columns.iter().map(|c| format!("{rel}.{c}")).collect();
        format!("ROW({})::record", cols.join(", "))
    };
    let flag_function = qualified(schema, &spec.object_name("kf"));
    out.push(format!(
        "CREATE OR REPLACE FUNCTION {flag_function}() RETURNS trigger LANGUAGE plpgsql AS \
         $flash$\nBEGIN\n  PERFORM set_config({flag}, '1', true);\n  RETURN NULL;\nEND\n$flash$"
    ));
    if let Some(name) = names.get(3) {
        out.push(drop_trigger(schema, spec.table(), name));
        out.push(format!(
            "CREATE TRIGGER {} AFTER UPDATE OF {} ON {table} FOR EACH ROW \
             WHEN (NOT ({} *= {})) EXECUTE FUNCTION {flag_function}()",
            dq(name),
            columns.join(", "),
            row("OLD"),
            row("NEW"),
        ));
    }
    // A statement of flash's own that recorded its change itself (see
    // `own_record_sql`) names its table in OWN_SETTING: its trigger skips the
    // function. Only at depth 0: a statement that a trigger or a foreign
    // key action runs inside it (depth 1 and more) is captured as any other.
    let skip_own = format!(
        "pg_trigger_depth() > 0 OR current_setting({}, true) IS DISTINCT FROM {name}",
        lit(OWN_SETTING)
    );
    for (name, (event, referencing)) in names.iter().zip([
        ("INSERT", "NEW TABLE AS n"),
        ("UPDATE", "OLD TABLE AS o NEW TABLE AS n"),
        ("DELETE", "OLD TABLE AS o"),
    ]) {
        out.push(drop_trigger(schema, spec.table(), name));
        out.push(format!(
            "CREATE TRIGGER {} AFTER {event} ON {table} REFERENCING {referencing} \
             FOR EACH STATEMENT WHEN ({skip_own}) EXECUTE FUNCTION {function}()",
            dq(name)
        ));
    }
    out
}

/// The transaction-local setting in which a statement of flash's own names
/// the table whose change it records itself (see [`own_record_sql`]).
pub(crate) const OWN_SETTING: &str = "flash.own";

/// A write through flash that records its own change: `update` (an
/// `UPDATE ... RETURNING` of every column, whose `WHERE` already ends with
/// [`own_marker`]) and, in the same statement, the insert of its changes row:
/// the captured `columns` of each updated row as one row's array (`[a, b]`,
/// which the drain reads as it reads SQLite's records), with the
/// transaction's id. Returns the updated rows and the id as
/// [`crate::dialect::TXID_COLUMN`]. It replaces the trigger's function for
/// this statement (see `install`): cheaper than the function's
/// `array_agg`s over the transition table, and without its notification.
///
/// With `old`, the update also returns the row as it was (the columns
/// prefixed [`crate::dialect::OLD_PREFIX`], see
/// `dialect::update_returning_old`), recorded as the old keys.
pub(crate) fn own_record_sql(update: &str, table: &str, columns: &[String], old: bool) -> String {
    let row = |prefix: &str| {
        let cols = columns
            .iter()
            .map(|c| format!("flash_u.{}", dq(&format!("{prefix}{c}"))))
            .collect::<Vec<_>>()
            .join(", ");
        format!("json_build_array({cols})")
    };
    let old_keys = match old {
        true => row(crate::dialect::OLD_PREFIX),
        false => "NULL".to_owned(),
    };
    format!(
        "WITH flash_u AS ({update}), flash_c AS (INSERT INTO {CHANGES_TABLE} \
         (table_name, old_keys, new_keys, txid) SELECT {}, {old_keys}, {}, txid_current() \
         FROM flash_u) SELECT flash_u.*, txid_current() AS {} FROM flash_u",
        lit(table),
        row(""),
        crate::dialect::TXID_COLUMN
    )
}

/// The condition a statement of `own_record_sql` adds to its `WHERE`:
/// evaluated on the rows it updates, before the statement's triggers are
/// queued, it names `table` in `flash.own` until the statement's
/// (autocommit) transaction ends. Public for the benchmarks only (the cost
/// of triggers that skip): a statement that carries it without recording
/// its change itself is not captured.
pub fn own_marker(table: &str) -> String {
    format!(
        "set_config({}, {}, true) IS NOT NULL",
        lit(OWN_SETTING),
        lit(table)
    )
}

/// One drain round's claim: deletes the oldest `limit` rows no other drain
/// holds and returns them, in the round's transaction (rolled back when the
/// cache refused, so the rows stay). One statement where a read and a delete
/// would take two.
pub(super) fn take_rows(limit: usize) -> String {
    format!(
        "DELETE FROM {CHANGES_TABLE} WHERE id IN (SELECT id FROM {CHANGES_TABLE} \
         ORDER BY id LIMIT {limit} FOR UPDATE SKIP LOCKED) \
         RETURNING id, table_name, {DRAIN_COLUMNS}"
    )
}

/// `v` as a value of the startup packet's `options` (`-c name=value`,
/// separated by spaces): a space or backslash in it is escaped with a
/// backslash (PostgreSQL's default search path, `"$user", public`, has one).
#[cfg(feature = "postgres")]
fn startup_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace(' ', "\\ ")
}

/// The drain's own pool: the application's connect options and search path,
/// with asynchronous commit and READ COMMITTED transactions. A drain's commit only deletes applied records;
/// losing it in a server crash means applying them again, which is harmless,
/// and not waiting for the WAL flush keeps the drain from doubling the
/// writers' fsyncs.
#[cfg(feature = "postgres")]
pub(super) async fn drain_pool(
    db: &sea_orm::DatabaseConnection,
    max_connections: u32,
) -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, DatabaseBackend, SqlxPostgresConnector, Statement};
    let row = db
        .query_one(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT current_setting('search_path') AS p",
        ))
        .await?;
    let path: String = match row {
        Some(r) => r.try_get("", "p")?,
        None => String::new(),
    };
    let mut options = (*db.get_postgres_connection_pool().connect_options()).clone();
    options = options.options([
        ("synchronous_commit", "off"),
        // The drain's isolation (see `Drain::drain_once`), whatever the
        // database's default: a round's BEGIN then needs no SET TRANSACTION.
        (
            "default_transaction_isolation",
            startup_value("read committed").as_str(),
        ),
    ]);
    if !path.is_empty() {
        options = options.options([("search_path", startup_value(&path))]);
    }
    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .connect_lazy_with(options);
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}
