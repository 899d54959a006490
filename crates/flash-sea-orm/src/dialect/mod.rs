//! Every difference between PostgreSQL, MySQL and SQLite that flash relies
//! on. Each function here matches on the [`DatabaseBackend`] and either
//! answers (a placeholder, a column type, whether a statement form exists) or
//! hands over to the module of that database, which holds its SQL text. The
//! rest of the crate asks these questions and never matches on a backend
//! itself, so supporting a database, or a new form of one, happens here.
//!
//! - `postgres`: the key-changing update that returns the row it replaces.
//! - `mysql`: the upsert of `ON DUPLICATE KEY`.
//! - `sqlite`: taking the database's write lock before reading rows to change.

mod mysql;
mod postgres;
mod sqlite;

use sea_orm::sea_query::Condition;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, Statement,
};

pub(crate) use postgres::{txid_expr, update_returning_old, OLD_PREFIX, TXID_COLUMN};

/// The `n`-th (from 1) bind placeholder: `$n` on PostgreSQL, `?` elsewhere.
pub(crate) fn placeholder(backend: DatabaseBackend, n: usize) -> String {
    match backend {
        DatabaseBackend::Postgres => format!("${n}"),
        DatabaseBackend::MySql | DatabaseBackend::Sqlite => "?".to_owned(),
    }
}

/// `count` placeholders from the `first`-th on, comma separated.
pub(crate) fn placeholders(backend: DatabaseBackend, first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| placeholder(backend, n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The column type of an id the database assigns, and of a text of any
/// length (a few megabytes at least).
pub(crate) fn id_and_text_types(backend: DatabaseBackend) -> (&'static str, &'static str) {
    match backend {
        DatabaseBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "TEXT"),
        DatabaseBackend::MySql => ("BIGINT AUTO_INCREMENT PRIMARY KEY", "MEDIUMTEXT"),
        DatabaseBackend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
    }
}

/// Runs `stmt`, an `INSERT` of one row into a table whose `id` the database
/// assigns, and returns that id: through `RETURNING id` on PostgreSQL, the
/// driver's last insert id elsewhere. `None` when PostgreSQL returned no row.
pub(crate) async fn insert_returning_id<C: ConnectionTrait>(
    conn: &C,
    stmt: Statement,
) -> Result<Option<i64>, DbErr> {
    match stmt.db_backend {
        DatabaseBackend::Postgres => {
            let stmt = Statement {
                sql: format!("{} RETURNING id", stmt.sql),
                ..stmt
            };
            match conn.query_one(stmt).await? {
                Some(row) => Ok(Some(row.try_get::<i64>("", "id")?)),
                None => Ok(None),
            }
        }
        DatabaseBackend::MySql | DatabaseBackend::Sqlite => {
            Ok(Some(conn.execute(stmt).await?.last_insert_id() as i64))
        }
    }
}

/// Is the durable outbox on when the service does not say? Not on SQLite:
/// one file, used by one process, has no other writer to fall behind.
pub(crate) fn outbox_by_default(backend: DatabaseBackend) -> bool {
    match backend {
        DatabaseBackend::Postgres | DatabaseBackend::MySql => true,
        DatabaseBackend::Sqlite => false,
    }
}

/// Can one statement update a row of `E` and return the row as it was
/// before ([`update_returning_old`])? Only on PostgreSQL, and only for
/// entities without columns read through a cast.
pub(crate) fn updates_returning_old<E: EntityTrait>(backend: DatabaseBackend) -> bool {
    match backend {
        DatabaseBackend::Postgres => !postgres::has_cast_columns::<E>(),
        DatabaseBackend::MySql | DatabaseBackend::Sqlite => false,
    }
}

/// Can a write's statement also return the writing transaction's id
/// (`RETURNING ..., txid_current()`)? The capture triggers record it with
/// each change, so that a write through flash knows its own record.
pub(crate) fn returns_txid(backend: DatabaseBackend) -> bool {
    match backend {
        DatabaseBackend::Postgres => true,
        DatabaseBackend::MySql | DatabaseBackend::Sqlite => false,
    }
}

/// Can an `UPDATE ... RETURNING` be the input of an `INSERT` in the same
/// statement (a data-modifying `WITH`)? Then an update and its outbox row are
/// one statement.
pub(crate) fn inserts_from_update(backend: DatabaseBackend) -> bool {
    match backend {
        DatabaseBackend::Postgres => true,
        DatabaseBackend::MySql | DatabaseBackend::Sqlite => false,
    }
}

/// Reads the rows of `E` matching `cond` inside the transaction `txn` so that
/// no other writer can change them before it ends: `SELECT ... FOR UPDATE`,
/// or on SQLite the database's write lock first (see `sqlite::lock_for_write`).
pub(crate) async fn read_locked<E: EntityTrait, C: ConnectionTrait>(
    txn: &C,
    cond: Condition,
) -> Result<Vec<E::Model>, DbErr> {
    match txn.get_database_backend() {
        DatabaseBackend::Sqlite => {
            sqlite::lock_for_write::<E, _>(txn, cond.clone()).await?;
            E::find().filter(cond).all(txn).await
        }
        DatabaseBackend::Postgres | DatabaseBackend::MySql => {
            E::find().filter(cond).lock_exclusive().all(txn).await
        }
    }
}

/// `INSERT` of a row with the `keys` columns bound and `counter` = 1, or, if
/// a row with those keys exists (they must be its primary key or a unique
/// index), `counter + 1` instead.
pub(crate) fn insert_or_increment(
    backend: DatabaseBackend,
    table: &str,
    keys: &[&str],
    counter: &str,
) -> String {
    let insert = format!(
        "INSERT INTO {table} ({}, {counter}) VALUES ({}, 1)",
        keys.join(", "),
        placeholders(backend, 1, keys.len())
    );
    match backend {
        DatabaseBackend::MySql => mysql::increment_on_duplicate(insert, counter),
        // The SQL standard's form, which both take.
        DatabaseBackend::Postgres | DatabaseBackend::Sqlite => format!(
            "{insert} ON CONFLICT ({}) DO UPDATE SET {counter} = {table}.{counter} + 1",
            keys.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_by_database() {
        assert_eq!(placeholders(DatabaseBackend::Postgres, 4, 3), "$4, $5, $6");
        assert_eq!(placeholders(DatabaseBackend::MySql, 4, 3), "?, ?, ?");
        assert_eq!(placeholders(DatabaseBackend::Sqlite, 1, 1), "?");
    }

    /// The bump of `SqlVersionStore`, the upsert each database knows.
    #[test]
    fn insert_or_increment_by_database() {
        let sql = |b| {
            insert_or_increment(
                b,
                crate::VERSIONS_TABLE,
                &["cache_type", "cache_name"],
                "version",
            )
        };
        assert_eq!(
            sql(DatabaseBackend::MySql),
            "INSERT INTO flash_cache_versions (cache_type, cache_name, version) VALUES (?, ?, 1) \
             ON DUPLICATE KEY UPDATE version = version + 1"
        );
        assert_eq!(
            sql(DatabaseBackend::Postgres),
            "INSERT INTO flash_cache_versions (cache_type, cache_name, version) VALUES ($1, $2, 1) \
             ON CONFLICT (cache_type, cache_name) DO UPDATE SET version = flash_cache_versions.version + 1"
        );
        assert_eq!(
            sql(DatabaseBackend::Sqlite),
            "INSERT INTO flash_cache_versions (cache_type, cache_name, version) VALUES (?, ?, 1) \
             ON CONFLICT (cache_type, cache_name) DO UPDATE SET version = flash_cache_versions.version + 1"
        );
    }
}
