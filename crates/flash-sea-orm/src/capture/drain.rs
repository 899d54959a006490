//! The drain: captured changes to invalidations, in every process.
//!
//! Each process runs one background task that takes rows of the changes
//! table, computes the keys of every class for the old and the new values
//! (as a write through flash does), writes the invalidation markers and
//! deletes the rows. On PostgreSQL it wakes on the triggers' notification
//! (`LISTEN`, delivered at commit) and also polls, in case a notification
//! was lost with its connection; on MySQL and SQLite it polls.
//!
//! Several processes drain one table: each takes its rows inside a
//! transaction with `FOR UPDATE SKIP LOCKED` (PostgreSQL, MySQL 8 /
//! MariaDB 10.6), invalidates, deletes them and commits. A process that dies
//! rolls back, and its rows are taken by the next drain; a process that
//! cannot reach the cache rolls back too, leaving them to a process that
//! can. Applying a row twice is harmless: an invalidation only removes.
//!
//! A write through [`FlashDb`](crate::FlashDb)'s connection methods applies
//! every change visible after it committed ([`Drain::apply_visible`]),
//! regardless of other processes' claims, before it returns: read your
//! writes, exactly.

use super::own::OwnWrites;
use super::values::TableDecoder;
use super::CHANGES_TABLE;
use crate::related::{Index, Seeds};
use flash_core::{Flash, KeySet};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, IsolationLevel, QueryResult,
    TransactionTrait,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How the drain runs. Every field has a default that suits a service on a
/// local network; all are documented in the README's guarantee.
#[derive(Clone, Copy, Debug)]
pub struct DrainSettings {
    /// How often the drain polls on MySQL and SQLite (default 20 ms): the
    /// bound of the lag of a write from elsewhere, plus one drain.
    pub poll_interval: Duration,
    /// How often the drain polls on PostgreSQL besides waking on
    /// notifications (default 250 ms): the lag bound while the listening
    /// connection is being re-established.
    pub listen_poll_interval: Duration,
    /// Rows taken per transaction (default 500).
    pub batch: usize,
    /// Whether the drain wakes on PostgreSQL's notifications (default yes;
    /// without, it only polls).
    pub listen: bool,
    /// How long a drain woken by a notification waits for more before it
    /// takes rows (default 2 ms): part of the capture lag on PostgreSQL, in
    /// exchange for one drain round per burst of writes instead of one per
    /// write.
    pub gather: Duration,
    /// How long a drain whose cache refused an invalidation leaves the rows
    /// to other processes' drains before it takes rows again (default 200 ms):
    /// a process cut off from the cache must not keep locking rows that
    /// others could apply. (The others are woken when it rolls back.)
    pub backoff_after_failure: Duration,
    /// PostgreSQL: how long a write through flash that recorded its change
    /// itself (an update of no key field: see `FlashDb::update`) waits for
    /// its own invalidation before it wakes the other processes' drains
    /// (default 5 ms; an invalidation takes microseconds in process and a
    /// round trip with a server, so only a cut-off or stalled process waits
    /// that long). Such a record sends no notification at commit: its
    /// writer applies it, and only when that fails or lags (this process
    /// cut off from the cache) do the others need to. The capture lag of
    /// that case grows by this much.
    pub announce_after: Duration,
    /// PostgreSQL: connections of the drain's own pool (default 4), used by
    /// the background drain and by [`FlashDb::apply_captured`](crate::FlashDb::apply_captured).
    /// Its sessions commit asynchronously (`synchronous_commit = off`): a
    /// drain's commit only deletes records it applied, so losing one in a
    /// server crash applies them again, and the writers' commits do not wait
    /// behind the drain's WAL flushes. Elsewhere the drain uses the
    /// application's pool.
    pub connections: u32,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            poll_interval: Duration::from_millis(20),
            listen_poll_interval: Duration::from_millis(250),
            batch: 500,
            listen: true,
            gather: Duration::from_millis(2),
            backoff_after_failure: Duration::from_millis(200),
            announce_after: Duration::from_millis(5),
            connections: 4,
        }
    }
}

/// The drain of one [`FlashDb`](crate::FlashDb) (shared by its clones).
pub(crate) struct Drain {
    db: DatabaseConnection,
    flash: Flash,
    tables: HashMap<String, TableDecoder>,
    /// The related classes: changes to the tables on their paths invalidate
    /// them through reverse queries.
    related: Arc<Index>,
    settings: DrainSettings,
    /// Wakes the task early (a notification arrived, or a test asks).
    wake: Notify,
    /// The transaction ids of the notifications since the last round
    /// (`None`: a notification without one). std Mutex: never held across
    /// an await.
    notified: Mutex<Vec<Option<i64>>>,
    /// Writes through flash in this process that applied their own
    /// invalidation (PostgreSQL): see [`Drain::applied_by_writer`].
    by_writer: OwnWrites,
    /// The background task; aborted when the drain is dropped. std Mutex:
    /// set once at start, never held across an await.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Drain {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }
}

/// One row of the changes table as read.
struct Change {
    id: i64,
    table: String,
    old: Option<String>,
    new: Option<String>,
    /// Microseconds from the write's record to now, by the database's clock.
    age_us: i64,
    /// The writing transaction's id (PostgreSQL).
    txid: Option<i64>,
}

impl Drain {
    /// Starts the background drain of `db`'s changes table.
    pub(crate) fn start(
        db: DatabaseConnection,
        flash: Flash,
        tables: HashMap<String, TableDecoder>,
        related: Arc<Index>,
        settings: DrainSettings,
    ) -> Arc<Drain> {
        let drain = Arc::new(Drain {
            db,
            flash,
            tables,
            related,
            settings,
            wake: Notify::new(),
            notified: Mutex::new(Vec::new()),
            by_writer: OwnWrites::default(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run(Arc::downgrade(&drain)));
        if let Ok(mut t) = drain.task.lock() {
            *t = Some(task);
        }
        drain
    }

    /// A write through flash in transaction `txid` applied the invalidation
    /// of `keys` (its related keys included, found from `seeds`) of `model`
    /// itself: the records of that transaction whose keys and seeds it
    /// covers are deleted by this drain without being applied again, and
    /// their notification wakes no round (the next poll deletes them). A
    /// record of the same transaction that it does not cover (a cascade, a
    /// raw statement in the same transaction) is applied as any other.
    pub(crate) fn applied_by_writer(&self, txid: i64, model: &str, keys: &KeySet, seeds: &Seeds) {
        self.by_writer.record(txid, model, keys, seeds);
    }

    /// The captured columns of `table`, in the order its records hold them
    /// (see `postgres::own_record_sql`); `None` for a table not captured.
    pub(crate) fn captured_columns(&self, table: &str) -> Option<Vec<String>> {
        let dec = self.tables.get(table)?;
        Some(dec.columns.iter().map(|(c, _)| c.clone()).collect())
    }

    /// See [`DrainSettings::announce_after`].
    pub(crate) fn announce_after(&self) -> Duration {
        self.settings.announce_after
    }

    /// Wakes every process's drain of this schema (PostgreSQL), in the
    /// background, with the notification the trigger of `table` would have
    /// sent for transaction `txid`: a write's own record that its writer
    /// could not apply (in time) is then taken by a process that can reach
    /// the cache.
    pub(crate) fn announce(&self, txid: Option<i64>, table: &str) {
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let db = self.db.clone();
            let sql = super::postgres::announce(txid, table);
            tokio::spawn(async move {
                if let Err(e) = db.execute_unprepared(&sql).await {
                    tracing::debug!(error = %e, "waking the drains failed (they poll)");
                }
            });
        }
    }

    /// Were all the notifications since the last round for transactions
    /// whose writers applied their invalidation themselves?
    fn woken_only_by_writers(&self) -> bool {
        let notified = match self.notified.lock() {
            Ok(mut n) => std::mem::take(&mut *n),
            Err(_) => return false,
        };
        !notified.is_empty() && self.by_writer.all_known(&notified)
    }

    /// Applies every change visible now, whoever else is draining it, and
    /// deletes what it applied. Returns the number of changes applied. What
    /// the cache refused stays in the table for the drain, and its keys are
    /// kept by this process, which reads them from the database until the
    /// cache takes them: so a caller still reads its own writes.
    pub(crate) async fn apply_visible(&self) -> Result<usize, DbErr> {
        let mut total = 0;
        loop {
            let rows = read(&self.db, self.settings.batch, false).await?;
            let (applied, complete) = self.apply(&rows).await;
            delete(&self.db, &applied).await?;
            total += applied.len();
            if !complete || rows.len() < self.settings.batch {
                return Ok(total);
            }
        }
    }

    /// Takes, applies and deletes one batch of rows no other drain holds.
    /// Returns the number of rows taken and whether all were applied.
    async fn drain_once(&self) -> Result<(usize, bool), DbErr> {
        let backend = self.db.get_database_backend();
        if backend == DatabaseBackend::Sqlite {
            // One writer at a time: nothing to skip.
            let rows = read(&self.db, self.settings.batch, false).await?;
            let (applied, complete) = self.apply(&rows).await;
            delete(&self.db, &applied).await?;
            return Ok((rows.len(), complete));
        }
        // READ COMMITTED: on MySQL, REPEATABLE READ's locking read would also
        // lock the gap after the last row and hold back every trigger insert
        // until this transaction commits. (PostgreSQL: the drain's own pool
        // sets it as its sessions' default, which saves a statement a round.)
        let txn = if backend == DatabaseBackend::Postgres {
            self.db.begin().await?
        } else {
            self.db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await?
        };
        if backend != DatabaseBackend::Postgres {
            let rows = read(&txn, self.settings.batch, true).await?;
            let (applied, complete) = self.apply(&rows).await;
            delete(&txn, &applied).await?;
            txn.commit().await?;
            return Ok((rows.len(), complete));
        }
        // PostgreSQL: claimed and deleted in one statement, kept only when
        // every invalidation was applied (a model that was applied is applied
        // again later, which is harmless).
        let sql = super::postgres::take_rows(self.settings.batch);
        let rows = txn
            .query_all(sea_orm::Statement::from_string(backend, sql))
            .await?
            .iter()
            .map(change)
            .collect::<Result<Vec<_>, _>>()?;
        let (_, complete) = self.apply(&rows).await;
        if complete {
            txn.commit().await?;
        } else {
            txn.rollback().await?;
            // Hand the rows over: the other processes' drains were woken by
            // the same notification, found them locked by this one and went
            // back to sleep until their next poll. Wake them now that the
            // rows are free.
            let _ = self
                .db
                .execute_unprepared(&super::postgres::wake_drains())
                .await;
        }
        Ok((rows.len(), complete))
    }

    /// Invalidates the keys of `rows` (one write per model), those of the
    /// related classes found by reverse queries included. The ids applied,
    /// and whether that was all of them. A model whose invalidation the cache
    /// refused (or whose reverse queries failed) keeps its rows, and its keys
    /// wait in this process's pending set (see `Flash::apply_invalidation`).
    async fn apply(&self, rows: &[Change]) -> (Vec<i64>, bool) {
        let mut by_model: BTreeMap<&str, (KeySet, Vec<i64>, Seeds)> = BTreeMap::new();
        let mut applied = Vec::new();
        let mut by_writer = 0u64;
        for c in rows {
            let Some(dec) = self.tables.get(&c.table) else {
                // A table no longer cached: nothing to invalidate.
                applied.push(c.id);
                continue;
            };
            let decoded = dec.rows(c.old.as_deref()).and_then(|mut rows| {
                rows.extend(dec.rows(c.new.as_deref())?);
                Ok(rows)
            });
            let records = match decoded {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(id = c.id, table = %c.table, error = %e, "undecodable captured change dropped");
                    applied.push(c.id);
                    continue;
                }
            };
            let dyns: Vec<&dyn flash_core::Record> = records
                .iter()
                .map(|r| r as &dyn flash_core::Record)
                .collect();
            let keys = self.flash.keys_for_rows(&dec.model, &dyns);
            let seeds = self.related.seeds(&dec.model, &dyns);
            if self.by_writer.covers(c.txid, &dec.model, &keys, &seeds) {
                // Its writer applied it before its call returned.
                applied.push(c.id);
                by_writer += 1;
                continue;
            }
            let entry = by_model.entry(&dec.model).or_default();
            entry.0.extend(keys);
            entry.1.push(c.id);
            entry.2.extend(seeds);
            metrics::histogram!("flash_invalidation_lag_seconds")
                .record(c.age_us.max(0) as f64 / 1e6);
        }
        metrics::counter!("flash_captured_rows_total").increment(rows.len() as u64);
        metrics::counter!("flash_captured_rows_applied_by_writer_total").increment(by_writer);
        metrics::gauge!("flash_outbox_backlog").set(rows.len() as f64);
        let mut complete = true;
        for (model, (mut keys, ids, seeds)) in by_model {
            if !seeds.is_empty() {
                match self.related.resolve(&self.flash, &self.db, &seeds).await {
                    Ok(more) => keys.extend(more),
                    Err(e) => {
                        tracing::debug!(model, error = %e, "reverse query of related classes failed");
                        complete = false;
                        continue;
                    }
                }
            }
            if self.flash.apply_invalidation(model, &keys).await.is_err() {
                complete = false;
                continue;
            }
            metrics::counter!("flash_applied_keys_total").increment(keys.len() as u64);
            applied.extend(ids);
        }
        (applied, complete)
    }
}

/// The connection the drain of `db` works on: on PostgreSQL its own pool
/// (see [`DrainSettings::connections`]), elsewhere `db`.
pub(crate) async fn connection(
    db: &DatabaseConnection,
    settings: &DrainSettings,
) -> Result<DatabaseConnection, DbErr> {
    #[cfg(feature = "postgres")]
    if db.get_database_backend() == DatabaseBackend::Postgres {
        return super::postgres::drain_pool(db, settings.connections.max(1)).await;
    }
    let _ = settings;
    Ok(db.clone())
}

/// The background task: drain on every wake-up and poll tick, until the
/// drain is dropped.
async fn run(drain: Weak<Drain>) {
    let (backend, listen_db, listens) = match drain.upgrade() {
        Some(d) => (d.db.get_database_backend(), d.db.clone(), d.settings.listen),
        None => return,
    };
    if backend == DatabaseBackend::Postgres && listens {
        tokio::spawn(listen(drain.clone(), listen_db));
    }
    let mut failing = false;
    let mut last_round = Instant::now();
    loop {
        let Some(d) = drain.upgrade() else { return };
        let every = match backend {
            DatabaseBackend::Postgres => d.settings.listen_poll_interval,
            _ => d.settings.poll_interval,
        };
        if tokio::time::timeout(every, d.wake.notified()).await.is_ok() {
            // Woken by a notification: let the writes of the next moment
            // join this round, so that a burst of writes costs the database
            // one drain round, not one per write.
            tokio::time::sleep(d.settings.gather).await;
            // Only this process's own writes, already applied: their
            // records wait for the next poll, which deletes them in bulk.
            if !failing && d.woken_only_by_writers() && last_round.elapsed() < every {
                continue;
            }
        }
        last_round = Instant::now();
        let started = Instant::now();
        let mut taken = 0;
        let result = loop {
            match d.drain_once().await {
                Ok((n, true)) if n == d.settings.batch => taken += n,
                Ok((n, complete)) => break Ok((taken + n, complete)),
                Err(e) => break Err(e),
            }
        };
        // One log line per change of state, not per round.
        match result {
            Ok((_, true)) if failing => {
                failing = false;
                tracing::info!("captured changes are being applied again");
            }
            Ok((_, false)) | Err(_) if !failing => {
                failing = true;
                match &result {
                    Err(e) => tracing::warn!(error = %e, "draining captured changes failed; retrying"),
                    _ => tracing::warn!("the cache refused captured invalidations; they stay in the changes table until it takes them"),
                }
            }
            _ => {}
        }
        if let Ok((n, _)) = result {
            if n > 0 {
                tracing::debug!(rows = n, took = ?started.elapsed(), "captured changes applied");
            }
        }
        if failing {
            let pause = d.settings.backoff_after_failure;
            drop(d);
            tokio::time::sleep(pause).await;
        }
    }
}

/// PostgreSQL: wakes the drain on every notification of the triggers.
/// sqlx's listener reconnects by itself; what was notified meanwhile is
/// found by the drain's polling.
#[cfg(feature = "postgres")]
async fn listen(drain: Weak<Drain>, db: DatabaseConnection) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut listener = loop {
        let attempt = async {
            let mut l = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
            l.listen(super::NOTIFY_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN for captured changes failed; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if drain.strong_count() == 0 {
                    return;
                }
            }
        }
    };
    // Notifications are per database: those of another schema's tables
    // (another service, another test) are not this drain's to apply.
    let schema = match drain.upgrade() {
        Some(d) => current_schema(&d.db).await,
        None => return,
    };
    let prefix = schema.map(|s| format!("{s}."));
    loop {
        let got = listener.recv().await;
        let Some(d) = drain.upgrade() else { return };
        match got {
            Ok(n) => {
                // Payload: "<txid> <schema>.<table>" (see `postgres::install`);
                // a handback's (`wake_drains`) is empty.
                let (txid, table) = match n.payload().split_once(' ') {
                    Some((t, table)) => (t.parse::<i64>().ok(), Some(table)),
                    None => (None, None),
                };
                let other =
                    matches!((&prefix, table), (Some(p), Some(t)) if !t.starts_with(p.as_str()));
                if other {
                    continue;
                }
                if let Ok(mut v) = d.notified.lock() {
                    v.push(txid);
                }
                d.wake.notify_one()
            }
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The schema the drain's changes table is in (its connections' first
/// schema on the search path); `None` when it cannot be read, and then every
/// notification wakes the drain.
#[cfg(feature = "postgres")]
async fn current_schema(db: &DatabaseConnection) -> Option<String> {
    let row = db
        .query_one(sea_orm::Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT current_schema()::text AS s",
        ))
        .await
        .ok()??;
    row.try_get::<Option<String>>("", "s").ok().flatten()
}

#[cfg(not(feature = "postgres"))]
async fn listen(_drain: Weak<Drain>, _db: DatabaseConnection) {}

/// The oldest `limit` changes; with `lock`, only rows no other drain holds,
/// locked until the transaction ends.
async fn read<C: ConnectionTrait>(db: &C, limit: usize, lock: bool) -> Result<Vec<Change>, DbErr> {
    let backend = db.get_database_backend();
    let columns = match backend {
        DatabaseBackend::Postgres => super::postgres::DRAIN_COLUMNS,
        DatabaseBackend::MySql => super::mysql::DRAIN_COLUMNS,
        DatabaseBackend::Sqlite => super::sqlite::DRAIN_COLUMNS,
    };
    let lock = if lock { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "SELECT id, table_name, {columns} FROM {CHANGES_TABLE} ORDER BY id LIMIT {limit}{lock}"
    );
    let rows = db
        .query_all(sea_orm::Statement::from_string(backend, sql))
        .await?;
    rows.iter().map(change).collect()
}

fn change(r: &QueryResult) -> Result<Change, DbErr> {
    Ok(Change {
        id: r.try_get("", "id")?,
        table: r.try_get("", "table_name")?,
        old: r.try_get("", "old_keys")?,
        new: r.try_get("", "new_keys")?,
        age_us: r.try_get::<Option<i64>>("", "age_us")?.unwrap_or(0),
        // PostgreSQL only (see `postgres::DRAIN_COLUMNS`).
        txid: r.try_get::<Option<i64>>("", "txid").ok().flatten(),
    })
}

async fn delete<C: ConnectionTrait>(db: &C, ids: &[i64]) -> Result<(), DbErr> {
    for chunk in ids.chunks(500) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        db.execute_unprepared(&format!("DELETE FROM {CHANGES_TABLE} WHERE id IN ({list})"))
            .await?;
    }
    Ok(())
}
