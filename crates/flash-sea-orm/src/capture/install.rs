//! Applying capture to a live database: [`installed`] lists the triggers in
//! place, [`install`] brings them in line with the specs. Installs are
//! serialized across processes (several processes of one service start at
//! once and each installs), and on MySQL/MariaDB the binary columns and the
//! `ON DELETE CASCADE` chains of the schema are discovered here.

use super::ddl::drop_triggers_ddl;
use super::{
    changes_table_ddl, ddl, mysql, postgres, sqlite, CaptureSpec, CascadeCapture, ForeignKey,
    TRIGGER_PREFIX,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, Statement, TransactionTrait,
    Value,
};
use std::collections::{BTreeMap, BTreeSet};

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
///
/// Safe to call from several processes at once (every process of a service
/// at startup): installs are serialized by a lock, and each one reads the
/// installed triggers only once it holds it, so the first installs and the
/// others find its triggers and report them unchanged.
/// - PostgreSQL: the whole install is one transaction (DDL is transactional
///   there: a failed install leaves nothing behind, and old and new triggers
///   are swapped atomically) that first takes
///   `pg_advisory_xact_lock(`[`PG_INSTALL_LOCK_KEY`](super::PG_INSTALL_LOCK_KEY)`)`, released at its end.
///   It waits as long as the connection's `lock_timeout` allows (none by
///   default).
/// - MySQL/MariaDB: `GET_LOCK('flash_capture.<database>', 60)` (the
///   database name cut to 50 characters; fails after 60 s), held by the
///   connection that runs the whole install, pinned by a transaction (each
///   DDL statement still commits on its own), then `RELEASE_LOCK`. A lock
///   whose connection dies is released by the server. (An install future
///   dropped half-way returns its connection to the pool still holding the
///   lock: others then wait until that connection closes, or fail after 60 s.)
/// - SQLite: one transaction whose first statement writes (creating the
///   changes table, or deleting nothing from it), taking the database's write
///   lock before anything is read, like `BEGIN IMMEDIATE`; another install
///   waits for it within the connection's busy timeout (sqlx: 5 s).
///
/// `db` may be a transaction: the install then runs in a savepoint of it (on
/// PostgreSQL the lock is held until that transaction ends; on MySQL each DDL
/// statement commits it).
pub async fn install<C>(db: &C, specs: &[CaptureSpec]) -> Result<CaptureReport, DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    install_as(db, specs, true).await
}

/// [`install`], except that the triggers of tables not in `specs` are left
/// alone: what a service's start-up does ([`crate::Registrar::build`]), so
/// that services with different declarations can share a database. Removing
/// capture from a table that is no longer cached is [`install`]'s job (a
/// migration, or [`crate::Registrar::prune_capture`]).
pub async fn install_keeping_others<C>(
    db: &C,
    specs: &[CaptureSpec],
) -> Result<CaptureReport, DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    install_as(db, specs, false).await
}

async fn install_as<C>(db: &C, specs: &[CaptureSpec], prune: bool) -> Result<CaptureReport, DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    let mut seen = BTreeSet::new();
    for s in specs {
        if !seen.insert(s.table()) {
            return Err(DbErr::Custom(format!(
                "capture: table {} given twice",
                s.table()
            )));
        }
    }
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_unprepared(&postgres::lock_install()).await?;
            let report = apply(&txn, specs, prune).await?;
            txn.commit().await?;
            Ok(report)
        }
        DatabaseBackend::MySql => {
            let txn = db.begin().await?;
            mysql::lock_install(&txn).await?;
            let result = apply(&txn, specs, prune).await;
            let unlocked = mysql::unlock_install(&txn).await;
            // Every DDL statement committed the transaction already: ending it
            // only returns the connection (nested in a caller's transaction,
            // its savepoint is gone and RELEASE SAVEPOINT fails: harmless).
            let _ = txn.commit().await;
            let report = result?;
            unlocked?;
            Ok(report)
        }
        DatabaseBackend::Sqlite => {
            let mut exists = changes_table_exists(db).await?;
            loop {
                let txn = db.begin().await?;
                // The first statement writes: see the doc above.
                let first = if exists {
                    sqlite::TAKE_WRITE_LOCK.to_owned()
                } else {
                    sqlite::create_changes_table(false)
                };
                if let Err(e) = txn.execute_unprepared(&first).await {
                    txn.rollback().await?;
                    // Created by another install meanwhile: lock with a write to it.
                    if !exists && changes_table_exists(db).await? {
                        exists = true;
                        continue;
                    }
                    return Err(e);
                }
                let mut report = apply(&txn, specs, prune).await?;
                report.created_changes_table = !exists;
                txn.commit().await?;
                return Ok(report);
            }
        }
    }
}

async fn changes_table_exists<C: ConnectionTrait>(db: &C) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => postgres::CHANGES_EXISTS,
        DatabaseBackend::MySql => mysql::CHANGES_EXISTS,
        DatabaseBackend::Sqlite => sqlite::CHANGES_EXISTS,
    };
    Ok(db
        .query_one(Statement::from_string(backend, sql.to_owned()))
        .await?
        .is_some())
}

/// The install proper, on the connection holding the install lock.
async fn apply(
    db: &DatabaseTransaction,
    specs: &[CaptureSpec],
    prune: bool,
) -> Result<CaptureReport, DbErr> {
    let backend = db.get_database_backend();
    let mut report = CaptureReport::default();
    if !changes_table_exists(db).await? {
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
        add_cascades(db, &mut specs).await?;
    }

    let mut by_table: BTreeMap<String, Vec<InstalledTrigger>> = BTreeMap::new();
    for t in installed(db).await? {
        by_table.entry(t.table.clone()).or_default().push(t);
    }

    for spec in &specs {
        let mut spec = spec.clone();
        if let (Some(s), None) = (&schema, spec.schema()) {
            spec = spec.in_schema(s)?;
        }
        let table = spec.table().to_owned();
        let want: BTreeSet<String> = spec.trigger_names(backend).into_iter().collect();
        let have = by_table.remove(&table).unwrap_or_default();
        let have_names: BTreeSet<String> = have.iter().map(|t| t.name.clone()).collect();
        if have_names == want {
            report.unchanged.push(table);
            continue;
        }
        for sql in ddl(backend, &spec) {
            db.execute_unprepared(&sql).await?;
        }
        let stale: Vec<InstalledTrigger> = have
            .into_iter()
            .filter(|t| !want.contains(&t.name))
            .collect();
        drop_installed(db, backend, spec.schema(), &table, &stale).await?;
        if have_names.is_empty() {
            report.installed.push(table);
        } else {
            report.replaced.push(table);
        }
    }

    for (table, stale) in by_table.into_iter().filter(|_| prune) {
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

// MySQL/MariaDB: what the schema says about the captured tables.

/// The captured columns of `spec` whose type is binary (JSON cannot hold them).
async fn binary_columns<C: ConnectionTrait>(
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

/// Hexes the binary captured columns of `specs`, and adds to them (or to
/// cascade-only specs of uncached tables) the captures of rows reached by
/// `ON DELETE CASCADE` chains (up to 4 foreign keys deep, cycles excluded)
/// ending in a captured table, the last of them possibly `ON DELETE SET NULL`.
async fn add_cascades<C: ConnectionTrait>(
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
             CAST(k.REFERENCED_COLUMN_NAME AS CHAR), CAST(r.DELETE_RULE AS CHAR), \
             CAST(r.UPDATE_RULE AS CHAR) \
             FROM information_schema.KEY_COLUMN_USAGE k \
             JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
             ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
             AND r.TABLE_NAME = k.TABLE_NAME \
             WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_SCHEMA = DATABASE() \
             AND (r.DELETE_RULE IN ('CASCADE', 'SET NULL') \
                  OR r.UPDATE_RULE IN ('CASCADE', 'SET NULL')) \
             ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION"
                .to_owned(),
        ))
        .await?;
    // (child, constraint) → the foreign key and its delete and update rules.
    let mut all: BTreeMap<(String, String), (ForeignKey, String, String)> = BTreeMap::new();
    for r in rows {
        let child: String = r.try_get_by_index(0)?;
        let name: String = r.try_get_by_index(1)?;
        let col: String = r.try_get_by_index(2)?;
        let parent: String = r.try_get_by_index(3)?;
        let rcol: String = r.try_get_by_index(4)?;
        let on_delete: String = r.try_get_by_index(5)?;
        let on_update: String = r.try_get_by_index(6)?;
        let (fk, _, _) = all.entry((child.clone(), name)).or_insert((
            ForeignKey {
                child,
                columns: Vec::new(),
                parent,
                references: Vec::new(),
            },
            on_delete,
            on_update,
        ));
        fk.columns.push(col);
        fk.references.push(rcol);
    }
    let acts = |rule: &str| rule == "CASCADE" || rule == "SET NULL";
    // The delete actions: the foreign key and whether it sets NULL.
    let fks: Vec<(ForeignKey, bool)> = all
        .values()
        .filter(|(_, d, _)| acts(d))
        .map(|(f, d, _)| (f.clone(), d == "SET NULL"))
        .collect();
    let mut found: BTreeMap<String, Vec<CascadeCapture>> = BTreeMap::new();
    for spec in specs.iter().filter(|s| s.captures_rows()) {
        // Paths upwards from the captured table, as lists of hops bottom-up.
        // The first hop may set NULL; the rest must cascade (a row set to
        // NULL stays, so nothing below it is reached).
        let mut stack: Vec<(Vec<&ForeignKey>, bool)> = fks
            .iter()
            .filter(|(f, _)| f.child == spec.table() && f.parent != f.child)
            .map(|(f, null)| (vec![f], *null))
            .collect();
        while let Some((up, set_null)) = stack.pop() {
            let top = up.last().map(|f| f.parent.clone()).unwrap_or_default();
            let path: Vec<ForeignKey> = up.iter().rev().map(|f| (*f).clone()).collect();
            found.entry(top.clone()).or_default().push(CascadeCapture {
                path,
                columns: spec.columns().to_vec(),
                hex: spec.hex_columns().map(str::to_owned).collect(),
                set_null,
                on_update: false,
            });
            if up.len() < 4 {
                let cascades = fks.iter().filter(|(_, null)| !null).map(|(f, _)| f);
                for f in cascades.filter(|f| f.child == top) {
                    let seen = f.parent == spec.table() || up.iter().any(|u| u.child == f.parent);
                    if !seen {
                        let mut next = up.clone();
                        next.push(f);
                        stack.push((next, set_null));
                    }
                }
            }
        }
    }
    // The update actions, one hop: a captured table's foreign-key columns
    // changed by its parent's key change. (A further hop would need those
    // columns to be referenced in turn, with an update action.)
    for spec in specs.iter().filter(|s| s.captures_rows()) {
        for (f, _, rule) in all.values() {
            if f.child == spec.table() && f.parent != f.child && acts(rule) {
                found
                    .entry(f.parent.clone())
                    .or_default()
                    .push(CascadeCapture {
                        path: vec![f.clone()],
                        columns: spec.columns().to_vec(),
                        hex: spec.hex_columns().map(str::to_owned).collect(),
                        set_null: rule == "SET NULL",
                        on_update: true,
                    });
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
