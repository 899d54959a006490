//! The durable invalidation outbox: the keys a write must invalidate are
//! inserted into `flash_outbox` in the write's own transaction, and deleted
//! once applied. A crash between commit and invalidation, or a cache that was
//! unreachable, leaves rows behind; a background task re-applies them.
//! Re-applying is harmless: an invalidation only ever removes.
//!
//! A row holds either the keys themselves or, for an update that changes no
//! key field (whose keys are those of the row as it is now), the row's primary
//! key: on PostgreSQL that update and its record are then one statement, and
//! the drain resolves the keys from the current row. A later write that
//! changes the row's key fields records the keys it replaces itself.
//!
//! A write to a table on a related class's path also records the inputs of
//! its reverse queries (the joined columns' old and new values): the keys
//! they find are known only after the commit, so a writer that dies before
//! running them, or whose reverse query fails, leaves them to the drain,
//! which runs them again (from the current row, for a row recorded by its
//! primary key).
//!
//! `sql` holds the outbox's SQL text; this file holds the outbox's state and
//! its background drain.

pub(crate) mod sql;

use crate::convert::{model_name, to_value, ModelRecord};
use crate::db::Touched;
use crate::dialect;
use crate::related::{Index, SeedRecord};
use flash_core::{FieldValue, Flash, KeySet, Record};
use futures::future::BoxFuture;
use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Iterable,
    PrimaryKeyToColumn, QueryFilter, Statement, Value,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The table of the outbox (created by [`crate::Registrar::build`] when the
/// outbox is on).
pub const OUTBOX_TABLE: &str = "flash_outbox";

/// Settings of the outbox drain.
#[derive(Clone, Copy, Debug)]
pub struct OutboxSettings {
    /// How often the background task runs.
    pub interval: Duration,
    /// How old a row must be before the task re-applies it (the writer itself
    /// applies it right after its commit; this avoids doing it twice).
    pub grace: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            interval: Duration::from_millis(500),
            grace: Duration::from_secs(2),
        }
    }
}

/// What one outbox row records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Recorded {
    /// The keys to invalidate, and the reverse queries to run for more.
    Related {
        keys: KeySet,
        related: Vec<SeedRecord>,
    },
    /// The keys to invalidate.
    Keys(KeySet),
    /// Primary keys of rows whose current keys are to be invalidated.
    Rows { rows: Vec<Vec<FieldValue>> },
}

/// Loads the rows of one model by primary key and gives their keys, those
/// of the related classes whose paths pass through them included.
pub(crate) type Resolver = Arc<
    dyn Fn(
            DatabaseConnection,
            Flash,
            Arc<Index>,
            Vec<Vec<FieldValue>>,
        ) -> BoxFuture<'static, Result<KeySet, DbErr>>
        + Send
        + Sync,
>;

/// The resolver of entity `E` (its rows by primary key, then their keys).
pub(crate) fn resolver<E: EntityTrait>() -> Resolver
where
    E::Model: Sync,
{
    Arc::new(|db, flash, related, pks| {
        Box::pin(async move {
            let cols: Vec<E::Column> = E::PrimaryKey::iter().map(|p| p.into_column()).collect();
            let mut keys = KeySet::default();
            for chunk in pks.chunks(500) {
                let cond = chunk.iter().fold(Condition::any(), |any, pk| {
                    let row = cols.iter().zip(pk).fold(Condition::all(), |all, (c, v)| {
                        all.add(c.eq(to_value(c, v)))
                    });
                    any.add(row)
                });
                let rows = E::find().filter(cond).all(&db).await?;
                let recs: Vec<ModelRecord<'_, E::Model>> = rows.iter().map(ModelRecord).collect();
                let dyns: Vec<&dyn Record> = recs.iter().map(|r| r as &dyn Record).collect();
                keys.extend(flash.keys_for_rows(&model_name::<E>(), &dyns));
                let seeds = related.seeds(&model_name::<E>(), &dyns);
                keys.extend(related.resolve(&flash, &db, &seeds).await?);
            }
            Ok(keys)
        })
    })
}

pub(crate) struct Outbox {
    db: DatabaseConnection,
    flash: Flash,
    settings: OutboxSettings,
    /// Per model, how to turn recorded primary keys into keys.
    resolvers: HashMap<String, Resolver>,
    /// The related classes: recorded seeds back to reverse queries.
    related: Arc<Index>,
    /// Ids applied by their writers, deleted in batches by the task so that a
    /// write pays no extra statement for it. std Mutex: never held across await.
    applied: Mutex<Vec<i64>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) async fn create_table(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared(&sql::create_table(db.get_database_backend()))
        .await
        .map(|_| ())
}

impl Outbox {
    pub(crate) fn start(
        db: DatabaseConnection,
        flash: Flash,
        settings: OutboxSettings,
        resolvers: HashMap<String, Resolver>,
        related: Arc<Index>,
    ) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox {
            db,
            flash,
            settings,
            resolvers,
            related,
            applied: Mutex::new(Vec::new()),
            task: Mutex::new(None),
        });
        let weak: Weak<Outbox> = Arc::downgrade(&outbox);
        let task = tokio::spawn(async move {
            // One line when draining starts failing and one when it works
            // again, not one per round.
            let mut failing = false;
            loop {
                tokio::time::sleep(settings.interval).await;
                let Some(o) = weak.upgrade() else { return };
                match o.drain(false).await {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "outbox drain failed; will retry");
                    }
                    Err(e) => tracing::debug!(error = %e, "outbox drain failed again"),
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("outbox drain works again");
                    }
                    Ok(_) => {}
                }
            }
        });
        if let Ok(mut t) = outbox.task.lock() {
            *t = Some(task);
        }
        outbox
    }

    /// Can rows of `model` be recorded by primary key?
    pub(crate) fn resolves(&self, model: &str) -> bool {
        self.resolvers.contains_key(model)
    }

    /// Records what `touched` must invalidate in the write's transaction;
    /// returns the row id.
    pub(crate) async fn record<C: ConnectionTrait>(
        &self,
        conn: &C,
        model: &str,
        touched: &Touched,
    ) -> Result<Option<i64>, DbErr> {
        let keys = &touched.keys;
        let json = match touched.seeds.is_empty() {
            true if keys.is_empty() => return Ok(None),
            true => serde_json::to_string(keys),
            false => serde_json::to_string(&Recorded::Related {
                keys: keys.clone(),
                related: self.related.records(&touched.seeds),
            }),
        }
        .map_err(|e| DbErr::Custom(e.to_string()))?;
        let backend = conn.get_database_backend();
        let values = [
            Value::from(model.to_owned()),
            Value::from(json),
            Value::from(now_ms()),
        ];
        let stmt = Statement::from_sql_and_values(backend, sql::insert(backend), values);
        dialect::insert_returning_id(conn, stmt)
            .await?
            .ok_or_else(|| DbErr::Custom("outbox insert returned no id".into()))
            .map(Some)
    }

    /// The writer applied its invalidation: the row can go.
    pub(crate) fn applied(&self, id: i64) {
        if let Ok(mut a) = self.applied.lock() {
            a.push(id);
        }
    }

    async fn delete_ids(&self, ids: &[i64]) -> Result<(), DbErr> {
        for chunk in ids.chunks(500) {
            self.db.execute_unprepared(&sql::delete_ids(chunk)).await?;
        }
        Ok(())
    }

    /// Deletes the rows applied by their writers.
    pub(crate) async fn flush(&self) -> Result<(), DbErr> {
        let done: Vec<i64> = self
            .applied
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        self.delete_ids(&done).await
    }

    /// Deletes applied rows and re-applies leftovers (older than the grace
    /// period, or all of them with `all`). Returns the number re-applied.
    pub(crate) async fn drain(&self, all: bool) -> Result<usize, DbErr> {
        self.flush().await?;
        let backend = self.db.get_database_backend();
        let cutoff = if all {
            i64::MAX
        } else {
            now_ms() - self.settings.grace.as_millis() as i64
        };
        let stmt = Statement::from_sql_and_values(
            backend,
            sql::select_due(backend),
            [Value::from(cutoff)],
        );
        let rows = self.db.query_all(stmt).await?;
        let mut repaired = Vec::new();
        for r in rows {
            let id: i64 = r.try_get("", "id")?;
            let model: String = r.try_get("", "model")?;
            let json: String = r.try_get("", "keyset")?;
            let keys = match serde_json::from_str(&json) {
                Ok(Recorded::Keys(k)) => k,
                Ok(Recorded::Related { mut keys, related }) => {
                    let seeds = self.related.seeds_of(&related);
                    keys.extend(self.related.resolve(&self.flash, &self.db, &seeds).await?);
                    keys
                }
                Ok(Recorded::Rows { rows }) => match self.resolvers.get(&model) {
                    Some(resolve) => {
                        let (db, flash) = (self.db.clone(), self.flash.clone());
                        resolve(db, flash, self.related.clone(), rows).await?
                    }
                    None => {
                        tracing::error!(
                            id,
                            model,
                            "outbox row of a model without a resolver dropped"
                        );
                        repaired.push(id);
                        continue;
                    }
                },
                Err(e) => {
                    tracing::error!(id, error = %e, "undecodable outbox row dropped");
                    repaired.push(id);
                    continue;
                }
            };
            // A cache still unreachable leaves this row and the rest for the
            // next round (each would only wait for its own failure).
            if self.flash.apply_invalidation(&model, &keys).await.is_err() {
                break;
            }
            repaired.push(id);
        }
        self.delete_ids(&repaired).await?;
        if !repaired.is_empty() {
            tracing::info!(rows = repaired.len(), "outbox re-applied invalidations");
        }
        Ok(repaired.len())
    }
}

/// Test failpoints: `FLASH_FAILPOINT=<name>@<n>` aborts the process the n-th
/// time the named point is reached (used to kill a writer right after its
/// commit, before its invalidation).
pub(crate) fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("FLASH_FAILPOINT").ok()?;
        let (n, at) = v.split_once('@').unwrap_or((v.as_str(), "1"));
        Some((n.to_owned(), at.parse().unwrap_or(1)))
    });
    if let Some((n, at)) = spec {
        if n == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
