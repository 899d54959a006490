//! SeaORM's connection traits on [`FlashDb`] (and [`ConnectionTrait`] on
//! [`FlashTxn`]), so that unchanged SeaORM code runs against `&fdb`:
//! `am.insert(&fdb)`, `Entity::update_many().exec(&fdb)`,
//! `Entity::find().all(&fdb)`, `fdb.execute_unprepared(..)`,
//! `TransactionTrait::transaction(&fdb, ..)`, `fdb.begin()`.
//!
//! Reads pass through to the database. A statement that may write runs on
//! the database and then, before the call returns, the capture settle
//! ([`FlashDb::apply_captured`]) applies every captured change visible now,
//! its own included: a lookup that starts after the call returned sees the
//! write, as after flash's own write methods. This needs capture (the
//! default, [`crate::Registrar::capture`]); without it a write through these
//! traits invalidates nothing (logged once per process).
//!
//! Which statements settle: every `execute` and `execute_unprepared`, and a
//! `query_one` / `query_all` whose leading keyword (after comments, blanks
//! and opening parentheses) is not `SELECT`, `SHOW`, `VALUES`, `DESCRIBE` or
//! `DESC`: SeaORM's `INSERT ... RETURNING` and `UPDATE ... RETURNING`
//! (PostgreSQL, SQLite), `DELETE ... RETURNING`, a `WITH` of any kind. A
//! `SELECT` that writes through a function it calls is taken for a read, and
//! so is every [`StreamTrait::stream`] (a stream is lazy: there is no "after"
//! to settle at); their writes are captured all the same and applied by the
//! drain within its lag.
//!
//! A statement that failed is returned as it is, without a settle (it
//! committed nothing), except `execute_unprepared`, whose text may hold
//! several statements of which the first ones committed: that one settles
//! either way and returns the statement's error.
//!
//! A cache that refuses the invalidations after the write committed does not
//! make the call fail (a cache outage must not fail a committed write): the
//! captured changes stay in the changes table for the drain, and this
//! process reads the refused keys from the database until its retry lands,
//! as after flash's own writes. Only a failure to read the changes table
//! back after the commit returns `DbErr::Custom` saying so: the write is in
//! the database, and the drain applies its changes when it can. Do not
//! blindly retry a non-idempotent write on that error.

use super::transaction::FlashTxn;
use super::FlashDb;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, StreamTrait, TransactionError, TransactionTrait,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;

/// May this statement write? `false` only for one that starts (after
/// comments, blanks and opening parentheses) with a read-only keyword.
pub(super) fn may_write(sql: &str) -> bool {
    let mut s = sql;
    loop {
        s = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    !matches!(
        word.as_str(),
        "SELECT" | "SHOW" | "VALUES" | "DESCRIBE" | "DESC"
    )
}

static NO_CAPTURE: Once = Once::new();

impl FlashDb {
    /// The settle of a write through the connection traits: every captured
    /// change visible now applied, errors as `DbErr`. Without capture,
    /// nothing to apply (logged once).
    pub(super) async fn settle(&self) -> Result<(), DbErr> {
        if !self.has_capture() {
            NO_CAPTURE.call_once(|| {
                tracing::warn!(
                    "a write through FlashDb's SeaORM connection traits with capture off: \
                     it invalidates nothing (turn capture on, or use FlashDb's write methods)"
                )
            });
            return Ok(());
        }
        // A cache that refuses is not an error here: the keys wait in this
        // process (read from the database meanwhile) and the records in the
        // changes table. Only the database failing to read them is.
        self.apply_captured().await.map(|_| ()).map_err(|e| {
            DbErr::Custom(format!(
                "the write committed, but its captured changes could not be read \
                 back (the drain applies them when it can): {e}"
            ))
        })
    }

    /// `out`, after a settle when `settle`; a settle failure replaces a
    /// success.
    async fn settled<T>(&self, settle: bool, out: Result<T, DbErr>) -> Result<T, DbErr> {
        if settle && out.is_ok() {
            self.settle().await?;
        }
        out
    }
}

/// Reads pass through; writes settle before they return (see the module
/// documentation).
#[async_trait::async_trait]
impl ConnectionTrait for FlashDb {
    fn get_database_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let out = self.db.execute(stmt).await;
        self.settled(true, out).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self.db.execute_unprepared(sql).await {
            Ok(r) => {
                self.settle().await?;
                Ok(r)
            }
            Err(e) => {
                // Earlier statements of the text may have committed.
                if let Err(s) = self.settle().await {
                    tracing::warn!(error = %s, "settle after a failed unprepared statement");
                }
                Err(e)
            }
        }
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let write = may_write(&stmt.sql);
        let out = self.db.query_one(stmt).await;
        self.settled(write, out).await
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let write = may_write(&stmt.sql);
        let out = self.db.query_all(stmt).await;
        self.settled(write, out).await
    }

    fn support_returning(&self) -> bool {
        self.db.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.db.is_mock_connection()
    }
}

/// Streams pass through, unsettled: for reads (see the module documentation).
impl StreamTrait for FlashDb {
    type Stream<'a> = <sea_orm::DatabaseConnection as StreamTrait>::Stream<'a>;

    fn stream<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        self.db.stream(stmt)
    }
}

/// Transactions on the database connection.
///
/// [`TransactionTrait::transaction`] (and `transaction_with_config`) commits
/// and then settles before it returns: the writes of the callback are
/// invalidated when it returns `Ok`, read your writes as with flash's own
/// writes. A rollback (the callback's `Err`) needs no settle.
///
/// [`TransactionTrait::begin`] (and `begin_with_config`) returns SeaORM's own
/// [`DatabaseTransaction`]. Its `commit()` is SeaORM's, which flash does not
/// see: the writes made through it are captured in the transaction and
/// applied by the drain task *after* the commit, within the capture lag (on
/// PostgreSQL on the triggers' notification, else on the next poll, 20 ms by
/// default; see [`crate::capture::DrainSettings`]), not before `commit()`
/// returns. A lookup that starts right after `commit()` returned may still
/// see the old value. For read your writes call
/// [`FlashDb::apply_captured`] after the commit, or use
/// [`TransactionTrait::transaction`] on the handle or [`FlashDb::transaction`].
///
/// Note that the method call `fdb.transaction(..)` resolves to flash's own
/// inherent [`FlashDb::transaction`] (closure over a [`FlashTxn`]); SeaORM's
/// is reached from generic code (`C: TransactionTrait`) or as
/// `TransactionTrait::transaction(&fdb, ..)`.
#[async_trait::async_trait]
impl TransactionTrait for FlashDb {
    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db.begin().await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_config(isolation_level, access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let out = self.db.transaction(callback).await?;
        self.settle().await.map_err(TransactionError::Connection)?;
        Ok(out)
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let out = self
            .db
            .transaction_with_config(callback, isolation_level, access_mode)
            .await?;
        self.settle().await.map_err(TransactionError::Connection)?;
        Ok(out)
    }
}

/// Statements inside [`FlashDb::transaction`]: they run on its transaction,
/// and one that may write (as above) makes the commit settle, so that
/// `FlashDb::transaction` returns after their invalidations too. Nothing is
/// invalidated on rollback (nothing to: the rows did not change).
#[async_trait::async_trait]
impl ConnectionTrait for FlashTxn {
    fn get_database_backend(&self) -> DbBackend {
        self.conn().get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.mark_write();
        self.conn().execute(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.mark_write();
        self.conn().execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if may_write(&stmt.sql) {
            self.mark_write();
        }
        self.conn().query_one(stmt).await
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if may_write(&stmt.sql) {
            self.mark_write();
        }
        self.conn().query_all(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.conn().support_returning()
    }
}

/// Nested transactions (savepoints) of a [`FlashTxn`]: whatever they write is
/// settled at the outer commit, as if written through the `FlashTxn`.
#[async_trait::async_trait]
impl TransactionTrait for FlashTxn {
    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.mark_write();
        self.conn().begin().await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.mark_write();
        self.conn()
            .begin_with_config(isolation_level, access_mode)
            .await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.mark_write();
        self.conn().transaction(callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.mark_write();
        self.conn()
            .transaction_with_config(callback, isolation_level, access_mode)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::may_write;

    #[test]
    fn leading_keyword() {
        for read in [
            "SELECT 1",
            "  select * from event",
            "(SELECT 1) UNION (SELECT 2)",
            "-- c\nSELECT 1",
            "/* x */ SELECT 1",
            "SHOW TABLES",
            "VALUES (1)",
        ] {
            assert!(!may_write(read), "{read}");
        }
        for write in [
            "INSERT INTO event (slug) VALUES ($1) RETURNING id",
            "UPDATE event SET title = $1 WHERE id = $2 RETURNING *",
            "delete from event where id = 1 returning id",
            "WITH x AS (SELECT 1) UPDATE event SET title = 'a'",
            "/* SELECT */ UPDATE event SET title = 'a'",
            "-- SELECT\nDELETE FROM event",
            "REPLACE INTO event VALUES (1)",
            "",
        ] {
            assert!(may_write(write), "{write}");
        }
    }
}
