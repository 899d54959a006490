//! Capture of every write, on the database side.
//!
//! flash invalidates the keys a write affects when the write goes through
//! [`FlashDb`](crate::FlashDb). Writes that do not (raw SQL, plain SeaORM,
//! other services, `ON DELETE CASCADE`) are captured here instead: triggers on
//! every cached table record, in the writing transaction, the old and the new
//! values of the *captured columns* (the union of the key columns of all cache
//! classes of the table, primary key included) of every inserted, updated or
//! deleted row into the table [`CHANGES_TABLE`]. A drain turns those values
//! into cache keys and invalidates them.
//!
//! Everything here is plain SQL text: [`changes_table_ddl`], [`ddl`] and
//! [`drop_ddl`] are pure, so a team can paste their output into a migration
//! file; [`install`] applies them to a database, replacing the triggers of a
//! table whose [`CaptureSpec`] changed and dropping those of tables that are
//! no longer cached.
//!
//! # The changes table
//!
//! | column       | meaning |
//! |--------------|---------|
//! | `id`         | auto-increment. Ids are taken at insert time, **not** at commit time: a drain must never use "the highest id seen" as a high-water mark (a transaction that commits later may hold a lower id). Treat the table as a queue: claim rows, invalidate, delete them. |
//! | `table_name` | the table written (unqualified name). |
//! | `old_keys`   | JSON array with one array per old row (deleted rows, rows before an update) holding the captured values in [`CaptureSpec::columns`] order; `NULL` for an insert, and for an update that changed no captured value (the old keys are then those of `new_keys`: see below). |
//! | `new_keys`   | likewise for the new rows (inserted rows, rows after an update); `NULL` for a delete. |
//! | `created_at` | the database's clock when the change was recorded (PostgreSQL: `now()`, the start of the writing transaction, µs; MySQL: `CURRENT_TIMESTAMP(6)`, UTC-stored `TIMESTAMP(6)`; SQLite: UTC text `YYYY-MM-DD HH:MM:SS.SSS`, ms). |
//! | `claimed_by` | `NULL` until a drain process claims the row; then that process's id (any text unique per process). |
//! | `claimed_at` | when it was claimed (same clock as `created_at`). A claim older than the drain's lease (its owner presumably died) may be taken over by another process: `UPDATE ... SET claimed_by = me, claimed_at = now WHERE id IN (...) AND (claimed_at IS NULL OR claimed_at < now - lease)`. |
//!
//! On PostgreSQL one row is recorded per *statement* (statement-level
//! triggers with transition tables), so `old_keys`/`new_keys` may hold many
//! rows; their order is unspecified and the two arrays are **not** aligned
//! row by row. On MySQL and SQLite one row is recorded per written row (the
//! arrays hold one element each). On every backend the drain invalidates the
//! keys of `old_keys ∪ new_keys`. An update records `new_keys` always and
//! `old_keys` only when some captured value changed (PostgreSQL: when the
//! statement's old rows differ from its new ones as a whole, then all old
//! rows; MySQL/SQLite: per row, compared byte for byte, so a change of case
//! under a case-insensitive collation counts). An update with `old_keys`
//! `NULL` changed no key: its old keys are its new keys. So a missing
//! `old_keys` never hides an old key.
//!
//! # Cascades
//!
//! Rows deleted or updated by a foreign key action (`ON DELETE CASCADE`,
//! `SET NULL`, `ON UPDATE CASCADE`) fire the child's triggers on PostgreSQL
//! and SQLite (with `PRAGMA foreign_keys = ON`, sqlx's default), so they are
//! captured like any write. MySQL/MariaDB fire no trigger for them: there
//! [`install`] reads the `ON DELETE CASCADE` foreign keys of the database and
//! adds `BEFORE DELETE` triggers (`flash_capture_<top>_c<n>_<version>`) on
//! every table whose deletes cascade (up to 4 keys deep) to a captured table,
//! cached or not, recording the rows about to be deleted as `old_keys`.
//! Still not captured on MySQL: `ON DELETE SET NULL` and `ON UPDATE CASCADE`
//! / `SET NULL` (a child row whose captured foreign key is rewritten by them).
//! Re-run [`install`] after a migration that changes foreign keys.
//!
//! PostgreSQL also calls `pg_notify('flash_changes', <table_name>)` per
//! capturing statement, delivered at commit, so a drain may `LISTEN` instead of
//! polling (notifications are best effort: poll as well).

mod drain;
mod mysql;
mod postgres;
mod sqlite;
mod values;

pub use drain::DrainSettings;
pub(crate) use drain::{Drain, TableDecoder};
pub(crate) use values::Kind;

use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement};
use std::collections::{BTreeMap, BTreeSet};

/// The table the triggers write to.
pub const CHANGES_TABLE: &str = "flash_changes";
/// The `LISTEN` channel notified on PostgreSQL (payload: the table name).
pub const NOTIFY_CHANNEL: &str = "flash_changes";
/// Every trigger (and PostgreSQL function) installed here starts with this.
pub const TRIGGER_PREFIX: &str = "flash_capture_";
/// Version of the generated SQL; part of every trigger's version, so a new
/// format replaces the triggers installed by an older flash. Bump it with any
/// change of the generated trigger text or of the recorded format.
pub const FORMAT_VERSION: u32 = 1;

/// What to capture of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    table: String,
    primary_key: Vec<String>,
    columns: Vec<String>,
    hex: BTreeSet<String>,
    schema: Option<String>,
    cascades: Vec<CascadeCapture>,
}

/// A foreign key of `child` (`columns`) referencing `parent` (`references`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub child: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub references: Vec<String>,
}

/// MySQL/MariaDB only: rows deleted by `ON DELETE CASCADE` fire no trigger
/// there, so a `BEFORE DELETE` trigger on the table at the top of `path`
/// records the rows that the delete is about to cascade to: the rows of the
/// last table of `path` (`path[0].parent` is the spec's table, each next
/// hop's parent is the previous hop's child), their `columns` (that table's
/// captured columns, `hex` ones as hex) as `old_keys`.
/// [`install`] finds these from `information_schema` itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CascadeCapture {
    pub path: Vec<ForeignKey>,
    pub columns: Vec<String>,
    pub hex: Vec<String>,
}

impl CascadeCapture {
    /// The table whose rows are recorded.
    pub fn table(&self) -> &str {
        self.path
            .last()
            .map(|f| f.child.as_str())
            .unwrap_or_default()
    }
}

impl CaptureSpec {
    /// Captures `key_columns` (the union of the key columns of every cache
    /// class of `table`) plus the primary key. The captured values are
    /// recorded in [`columns`](Self::columns) order: primary key first, then
    /// the other columns in the order given, without duplicates.
    pub fn new<P, K>(table: &str, primary_key: P, key_columns: K) -> Result<Self, DbErr>
    where
        P: IntoIterator,
        P::Item: AsRef<str>,
        K: IntoIterator,
        K::Item: AsRef<str>,
    {
        let primary_key: Vec<String> = primary_key
            .into_iter()
            .map(|c| c.as_ref().to_owned())
            .collect();
        if primary_key.is_empty() {
            return Err(DbErr::Custom(format!(
                "capture of {table}: a primary key is required"
            )));
        }
        let mut columns: Vec<String> = Vec::new();
        for c in primary_key
            .iter()
            .cloned()
            .chain(key_columns.into_iter().map(|c| c.as_ref().to_owned()))
        {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        for name in std::iter::once(table).chain(columns.iter().map(String::as_str)) {
            check_identifier(name)?;
        }
        Ok(CaptureSpec {
            table: table.to_owned(),
            primary_key,
            columns,
            hex: BTreeSet::new(),
            schema: None,
            cascades: Vec::new(),
        })
    }

    /// A table that is not cached itself but whose deletes cascade to cached
    /// tables (MySQL): it gets the [`CascadeCapture`] triggers only.
    pub fn cascade_only(table: &str) -> Result<Self, DbErr> {
        check_identifier(table)?;
        Ok(CaptureSpec {
            table: table.to_owned(),
            primary_key: Vec::new(),
            columns: Vec::new(),
            hex: BTreeSet::new(),
            schema: None,
            cascades: Vec::new(),
        })
    }

    /// Adds captures of rows that deletes of this table cascade to (used on
    /// MySQL/MariaDB only; see [`CascadeCapture`]).
    pub fn with_cascades(mut self, cascades: impl IntoIterator<Item = CascadeCapture>) -> Self {
        for c in cascades {
            if !c.path.is_empty() && !self.cascades.contains(&c) {
                self.cascades.push(c);
            }
        }
        self.cascades.sort();
        self
    }

    pub fn cascades(&self) -> &[CascadeCapture] {
        &self.cascades
    }

    /// Does the table capture its own rows (not [`cascade_only`](Self::cascade_only))?
    pub fn captures_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Captures these columns as hexadecimal text (uppercase, no prefix)
    /// instead of their value: needed on MySQL/MariaDB for binary columns
    /// (`BINARY(16)` UUIDs...), which JSON cannot hold. [`install`] finds them
    /// itself on MySQL; SQLite hexes any BLOB value by itself; PostgreSQL
    /// renders `bytea` as `"\\x..."` text and needs none.
    pub fn with_hex<K>(mut self, columns: K) -> Self
    where
        K: IntoIterator,
        K::Item: AsRef<str>,
    {
        for c in columns {
            let c = c.as_ref();
            if self.columns.iter().any(|x| x == c) {
                self.hex.insert(c.to_owned());
            }
        }
        self
    }

    /// Qualifies the table, the changes table and the trigger function with a
    /// PostgreSQL schema (MySQL and SQLite ignore it). Without one the DDL is
    /// unqualified: it uses the `search_path` of the installing connection,
    /// and the trigger function finds `flash_changes` through the
    /// `search_path` of each *writing* connection. [`install`] qualifies with
    /// `current_schema()`. Not part of the version.
    pub fn in_schema(mut self, schema: &str) -> Result<Self, DbErr> {
        check_identifier(schema)?;
        self.schema = Some(schema.to_owned());
        Ok(self)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    /// The captured columns, in the order of the values of each recorded row.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The columns captured as hex text.
    pub fn hex_columns(&self) -> impl Iterator<Item = &str> {
        self.hex.iter().map(String::as_str)
    }

    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// `v<FORMAT_VERSION><8 hex digits>`: a hash of the format version, the
    /// table, its primary key, the captured columns and the hex columns. The
    /// suffix of every trigger name.
    pub fn version(&self) -> String {
        let mut h = Fnv::new();
        h.write(b"flash-capture");
        h.write(&FORMAT_VERSION.to_le_bytes());
        h.field(&self.table);
        for c in &self.primary_key {
            h.field(c);
        }
        h.write(b"|");
        for c in &self.columns {
            h.field(c);
        }
        h.write(b"|");
        for c in &self.hex {
            h.field(c);
        }
        for c in &self.cascades {
            h.write(b"|cascade");
            for f in &c.path {
                h.field(&f.child);
                let arrow = ["->", f.parent.as_str()];
                let columns = f.columns.iter().map(String::as_str);
                for x in columns
                    .chain(arrow)
                    .chain(f.references.iter().map(String::as_str))
                {
                    h.field(x);
                }
            }
            h.write(b"|");
            let columns = c.columns.iter().map(String::as_str);
            for x in columns
                .chain(["hex"])
                .chain(c.hex.iter().map(String::as_str))
            {
                h.field(x);
            }
        }
        format!("v{FORMAT_VERSION}{:08x}", (h.0 >> 32) as u32 ^ h.0 as u32)
    }

    /// The names of the triggers [`ddl`] creates for `backend`.
    pub fn trigger_names(&self, backend: DatabaseBackend) -> Vec<String> {
        let mut out: Vec<String> = if self.captures_rows() {
            ["i", "u", "d"]
                .iter()
                .map(|ev| self.object_name(ev))
                .collect()
        } else {
            Vec::new()
        };
        if backend == DatabaseBackend::MySql {
            out.extend((0..self.cascades.len()).map(|i| self.object_name(&format!("c{i}"))));
        }
        out
    }

    /// `flash_capture_<table>_<tag>_<version>`, the table part truncated so
    /// that the name fits in 63 bytes (PostgreSQL's limit; MySQL's is 64).
    fn object_name(&self, tag: &str) -> String {
        let version = self.version();
        let room = 63 - TRIGGER_PREFIX.len() - tag.len() - version.len() - 2;
        let mut t = self.table.as_str();
        while t.len() > room {
            let mut end = room.min(t.len() - 1);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t = &t[..end];
        }
        format!("{TRIGGER_PREFIX}{t}_{tag}_{version}")
    }
}

fn check_identifier(name: &str) -> Result<(), DbErr> {
    if name.is_empty()
        || name.contains('\0')
        || name.contains('\\')
        || name.contains("$flash$")
        || name.len() > 63
    {
        return Err(DbErr::Custom(format!(
            "capture: unsupported identifier {name:?} (empty, longer than 63 bytes, or holding NUL, a backslash or \"$flash$\")"
        )));
    }
    Ok(())
}

/// FNV-1a, 64 bits: a hash that is the same in every build and process.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn field(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }
}

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
/// versions: see [`drop_ddl`] or [`install`].
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
    let mut out = drop_triggers_ddl(backend, schema, &spec.table, &names);
    if backend == DatabaseBackend::Postgres && spec.captures_rows() {
        out.push(postgres::drop_function(schema, &spec.object_name("f")));
    }
    out
}

fn drop_triggers_ddl(
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

/// A `flash_capture_*` trigger found in the database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledTrigger {
    /// The table it is on.
    pub table: String,
    pub name: String,
    /// The version suffix of its name (see [`CaptureSpec::version`]).
    pub version: String,
    /// PostgreSQL: the function it runs.
    pub function: Option<String>,
}

/// The `flash_capture_*` triggers of the current schema (PostgreSQL:
/// `current_schema()`), database (MySQL: `DATABASE()`) or main database
/// (SQLite), sorted by table and name.
pub async fn installed<C: ConnectionTrait>(db: &C) -> Result<Vec<InstalledTrigger>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => postgres::LIST_TRIGGERS,
        DatabaseBackend::MySql => mysql::LIST_TRIGGERS,
        DatabaseBackend::Sqlite => sqlite::LIST_TRIGGERS,
    };
    let rows = db
        .query_all(Statement::from_string(backend, sql.to_owned()))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let table: String = r.try_get_by_index(0)?;
        let name: String = r.try_get_by_index(1)?;
        let function: Option<String> = if backend == DatabaseBackend::Postgres {
            Some(r.try_get_by_index(2)?)
        } else {
            None
        };
        let version = name.rsplit('_').next().unwrap_or_default().to_owned();
        out.push(InstalledTrigger {
            table,
            name,
            version,
            function,
        });
    }
    out.sort();
    Ok(out)
}

/// What [`install`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureReport {
    /// The changes table did not exist and was created.
    pub created_changes_table: bool,
    /// Tables captured for the first time.
    pub installed: Vec<String>,
    /// Tables whose triggers were replaced (their spec or flash's format changed).
    pub replaced: Vec<String>,
    /// Tables whose triggers were already those of their spec.
    pub unchanged: Vec<String>,
    /// Tables that are no longer in the specs, whose triggers were dropped.
    pub dropped: Vec<String>,
}

impl CaptureReport {
    /// Did the call change anything?
    pub fn changed(&self) -> bool {
        self.created_changes_table
            || !self.installed.is_empty()
            || !self.replaced.is_empty()
            || !self.dropped.is_empty()
    }
}

/// Creates the changes table if needed, installs the triggers of each spec
/// whose installed version differs (new triggers first, then the old ones are
/// dropped, so that no write goes uncaptured in between), and drops the
/// `flash_capture_*` triggers of tables not in `specs`. Idempotent.
///
/// Works on the current schema (PostgreSQL: specs without a schema are
/// qualified with `current_schema()`), the current database (MySQL, where
/// binary captured columns are found and hexed) or SQLite's main database.
/// Run it from one process at a time (a migration, or startup under a lock):
/// two concurrent installs of a new version may fail on "already exists";
/// running it again then succeeds.
pub async fn install<C: ConnectionTrait>(
    db: &C,
    specs: &[CaptureSpec],
) -> Result<CaptureReport, DbErr> {
    let backend = db.get_database_backend();
    let mut report = CaptureReport::default();
    let mut seen = BTreeSet::new();
    for s in specs {
        if !seen.insert(s.table.as_str()) {
            return Err(DbErr::Custom(format!(
                "capture: table {} given twice",
                s.table
            )));
        }
    }

    let exists = db
        .query_one(Statement::from_string(
            backend,
            match backend {
                DatabaseBackend::Postgres => postgres::CHANGES_EXISTS,
                DatabaseBackend::MySql => mysql::CHANGES_EXISTS,
                DatabaseBackend::Sqlite => sqlite::CHANGES_EXISTS,
            }
            .to_owned(),
        ))
        .await?
        .is_some();
    if !exists {
        for sql in changes_table_ddl(backend) {
            db.execute_unprepared(&sql).await?;
        }
        report.created_changes_table = true;
    }

    let schema = if backend == DatabaseBackend::Postgres {
        let row = db
            .query_one(Statement::from_string(
                backend,
                "SELECT current_schema()::text".to_owned(),
            ))
            .await?
            .ok_or_else(|| DbErr::Custom("current_schema() returned nothing".into()))?;
        Some(row.try_get_by_index::<String>(0)?)
    } else {
        None
    };

    let mut specs: Vec<CaptureSpec> = specs.to_vec();
    if backend == DatabaseBackend::MySql {
        mysql::add_cascades(db, &mut specs).await?;
    }

    let mut by_table: BTreeMap<String, Vec<InstalledTrigger>> = BTreeMap::new();
    for t in installed(db).await? {
        by_table.entry(t.table.clone()).or_default().push(t);
    }

    for spec in &specs {
        let mut spec = spec.clone();
        if let (Some(s), None) = (&schema, &spec.schema) {
            spec = spec.in_schema(s)?;
        }
        let want: BTreeSet<String> = spec.trigger_names(backend).into_iter().collect();
        let have = by_table.remove(&spec.table).unwrap_or_default();
        let have_names: BTreeSet<String> = have.iter().map(|t| t.name.clone()).collect();
        if have_names == want {
            report.unchanged.push(spec.table.clone());
            continue;
        }
        for sql in ddl(backend, &spec) {
            db.execute_unprepared(&sql).await?;
        }
        let stale: Vec<InstalledTrigger> = have
            .into_iter()
            .filter(|t| !want.contains(&t.name))
            .collect();
        drop_installed(db, backend, spec.schema(), &spec.table, &stale).await?;
        if have_names.is_empty() {
            report.installed.push(spec.table.clone());
        } else {
            report.replaced.push(spec.table.clone());
        }
    }

    for (table, stale) in by_table {
        drop_installed(db, backend, schema.as_deref(), &table, &stale).await?;
        report.dropped.push(table);
    }
    Ok(report)
}

async fn drop_installed<C: ConnectionTrait>(
    db: &C,
    backend: DatabaseBackend,
    schema: Option<&str>,
    table: &str,
    triggers: &[InstalledTrigger],
) -> Result<(), DbErr> {
    let names: Vec<String> = triggers.iter().map(|t| t.name.clone()).collect();
    for sql in drop_triggers_ddl(backend, schema, table, &names) {
        db.execute_unprepared(&sql).await?;
    }
    let functions: BTreeSet<&str> = triggers
        .iter()
        .filter_map(|t| t.function.as_deref())
        .collect();
    for f in functions {
        if f.starts_with(TRIGGER_PREFIX) {
            db.execute_unprepared(&postgres::drop_function(schema, f))
                .await?;
        }
    }
    Ok(())
}

/// `"name"` (PostgreSQL, SQLite).
fn dq(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`.
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_orders_pk_first_and_dedups() {
        let s = CaptureSpec::new("event", ["id"], ["slug", "id", "city", "slug"]).unwrap();
        assert_eq!(s.columns(), ["id", "slug", "city"]);
        let v = s.version();
        assert_eq!(v.len(), 10);
        assert!(v.starts_with("v1"));
        let s2 = CaptureSpec::new("event", ["id"], ["slug"]).unwrap();
        assert_ne!(s2.version(), v);
        assert_eq!(
            s.clone().in_schema("x").unwrap().version(),
            v,
            "schema is not part of the version"
        );
    }

    #[test]
    fn long_names_fit() {
        let t = "é".repeat(31);
        let s = CaptureSpec::new(&t, ["id"], ["a"]).unwrap();
        for n in s.trigger_names(DatabaseBackend::Postgres) {
            assert!(n.len() <= 63, "{n}");
            assert!(n.ends_with(&s.version()));
        }
    }

    #[test]
    fn bad_identifiers_refused() {
        assert!(CaptureSpec::new("a\\b", ["id"], ["x"]).is_err());
        assert!(CaptureSpec::new("t", Vec::<String>::new(), ["x"]).is_err());
    }
}
