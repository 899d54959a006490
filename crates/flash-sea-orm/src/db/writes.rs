//! Writes that invalidate: insert, update, save, delete, update-many,
//! delete-many and manual invalidation. Each write finds the keys of the rows
//! it changes (old and new values of every key field), records them in the
//! outbox in its own transaction when the outbox is on, and applies the
//! invalidation after the commit. A write that changes key fields reads the
//! old rows under a lock in its transaction, so that the keys it invalidates
//! are exactly the ones it replaced.

use super::statements::{
    counted_with_txid, lock_rows, pk_condition, pk_of_active, pks_condition, read_locked,
    returning_all, saved_with_txid, sets_a_column, update_returning_old,
};
use super::{src, FlashDb};
use crate::convert::{column_name, model_name, to_field, ModelRecord};
use crate::dialect;
use crate::outbox::{failpoint, now_ms, sql as outbox_sql, Recorded};
use crate::related::Seeds;
use flash_core::{Error, FieldValue, KeySet, Record};
use sea_orm::sea_query::{self, Condition, SimpleExpr};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, QueryTrait, TransactionTrait, Value,
};
use std::collections::BTreeSet;

/// Runs a write (`|conn| future of (result, keys)`): with the outbox, in a
/// transaction that also records the keys; then applies the invalidation.
macro_rules! durable_write {
    // `$owned`: is `$conn` a transaction flash opened for this write alone?
    // Then a write that locks rows needs no transaction (savepoint) of its own.
    ($self:ident, $model:expr, |$conn:ident, $owned:ident| $op:expr) => {{
        let model = $model;
        match &$self.outbox {
            None => {
                let $conn = &$self.db;
                let $owned = false;
                let (out, keys) = $op.await?;
                $self.finish(&model, &keys, None).await;
                Ok(out)
            }
            Some(ob) => {
                let txn = $self.db.begin().await.map_err(src)?;
                let (out, keys) = {
                    let $conn = &txn;
                    let $owned = true;
                    $op.await?
                };
                let id = ob.record(&txn, &model, &keys).await.map_err(src)?;
                txn.commit().await.map_err(src)?;
                $self.finish(&model, &keys, id).await;
                Ok(out)
            }
        }
    }};
}

/// Runs `$op` (a write that locks the rows it reads) on `$conn` when `$owned`
/// (a transaction of this write alone), else in a transaction of its own.
macro_rules! locked_write {
    ($conn:ident, $owned:expr, |$txn:ident| $op:expr) => {{
        if $owned {
            let $txn = $conn;
            $op.await
        } else {
            let txn = $conn.begin().await.map_err(src)?;
            let out = {
                let $txn = &txn;
                $op.await?
            };
            txn.commit().await.map_err(src)?;
            Ok(out)
        }
    }};
}

/// What a write changed, for its invalidation: the keys of its rows (old
/// and new values) and the seeds of the reverse queries of the related
/// classes whose paths pass through them (run after the commit).
#[derive(Clone, Debug, Default)]
pub(crate) struct Touched {
    pub(crate) keys: KeySet,
    pub(crate) seeds: Seeds,
    /// The writing transaction's id, when the statement returned it
    /// (PostgreSQL with capture): the drain then knows the write's captured
    /// record, and only deletes it once the write applied its invalidation.
    pub(crate) txid: Option<i64>,
    /// The write recorded its change itself, without the triggers'
    /// notification (see `FlashDb::update_captured`): the other processes'
    /// drains are woken only if its own invalidation fails or lags.
    pub(crate) unannounced: bool,
    /// The table written, when `unannounced`.
    pub(crate) table: String,
}

impl Touched {
    pub(crate) fn extend(&mut self, other: Touched) {
        self.keys.extend(other.keys);
        self.seeds.extend(other.seeds);
        self.txid = self.txid.or(other.txid);
        self.unannounced |= other.unannounced;
    }
}

/// Column changes for [`FlashDb::update_many`].
pub struct Changes<E: EntityTrait> {
    sets: Vec<(E::Column, SimpleExpr)>,
}

impl<E: EntityTrait> Default for Changes<E> {
    fn default() -> Self {
        Changes { sets: Vec::new() }
    }
}

impl<E: EntityTrait> Changes<E> {
    pub fn new() -> Self {
        Self::default()
    }
    /// `col = value`.
    pub fn set(mut self, col: E::Column, value: impl Into<Value>) -> Self {
        self.sets.push((col, SimpleExpr::Value(value.into())));
        self
    }
    /// `col = expr` (e.g. `Expr::col(Column::Seats).add(1)`).
    pub fn set_expr(mut self, col: E::Column, expr: impl Into<SimpleExpr>) -> Self {
        self.sets.push((col, expr.into()));
        self
    }
}

impl FlashDb {
    /// Should a write on `conn` return its transaction's id (capture on, on
    /// PostgreSQL)? See `Touched::txid`.
    fn returns_txid<C: ConnectionTrait>(&self, conn: &C) -> bool {
        self.has_capture() && dialect::returns_txid(conn.get_database_backend())
    }

    /// Names of the fields that some invalidating class of `model` is keyed by.
    /// Also the columns related classes join on: a write that changes one
    /// invalidates for its old value too.
    fn key_fields(&self, model: &str) -> BTreeSet<String> {
        self.flash
            .classes()
            .filter(|c| c.model == model && c.invalidation != flash_core::Invalidation::Off)
            .flat_map(|c| c.key_fields.iter().cloned())
            .chain(self.related.joined_columns(model).map(str::to_owned))
            .collect()
    }

    /// Applies the invalidation of a committed write. The write call returns
    /// only after this, so the writer reads its own write. A failure leaves
    /// the write's captured record (or its outbox row) for the background
    /// drain.
    pub(super) async fn finish(&self, model: &str, touched: &Touched, outbox_id: Option<i64>) {
        let drain = match &self.capture {
            Some(d) if touched.unannounced => d,
            _ => {
                self.apply_touched(model, touched, outbox_id).await;
                return;
            }
        };
        // A record no notification announced: the other processes' drains
        // are woken only if this process's invalidation fails or lags.
        let announce = || drain.announce(touched.txid, &touched.table);
        let mut apply = std::pin::pin!(self.apply_touched(model, touched, outbox_id));
        match tokio::time::timeout(drain.announce_after(), &mut apply).await {
            Ok(true) => {}
            Ok(false) => announce(),
            Err(_) => {
                announce();
                apply.await;
            }
        }
    }

    /// [`Self::finish`]'s work; whether the invalidation was applied in full
    /// (reverse queries included).
    async fn apply_touched(&self, model: &str, touched: &Touched, outbox_id: Option<i64>) -> bool {
        failpoint("after_commit");
        let mut related = None;
        // A failed reverse query keeps the outbox row (it records the
        // query's inputs): the drain runs it again.
        let mut complete = true;
        if !touched.seeds.is_empty() {
            // After the commit: see the related module's documentation.
            match self
                .related
                .resolve(&self.flash, &self.db, &touched.seeds)
                .await
            {
                Ok(more) => {
                    let mut all = touched.keys.clone();
                    all.extend(more);
                    related = Some(all);
                }
                Err(e) => {
                    complete = false;
                    tracing::warn!(model, error = %e,
                        "reverse query of related classes failed (the outbox's or capture's drain repeats it)")
                }
            }
        }
        let resolved = touched.seeds.is_empty() || related.is_some();
        let keys = related.as_ref().unwrap_or(&touched.keys);
        let result = self.flash.apply_invalidation(model, keys).await;
        let applied = result.is_ok() && complete;
        match result {
            Ok(()) => {
                if let (Some(ob), Some(id), true) = (&self.outbox, outbox_id, complete) {
                    ob.applied(id);
                }
                // The write's captured record needs no second application
                // (its reverse queries included) by this process's drain.
                if let (Some(drain), Some(txid), true) = (&self.capture, touched.txid, resolved) {
                    drain.applied_by_writer(txid, model, keys, &touched.seeds);
                }
            }
            // The refusal is in the cache-error summary; the outbox keeps the keys.
            Err(e) if outbox_id.is_some() => {
                tracing::debug!(model, error = %e, "invalidation deferred to the outbox")
            }
            // The keys wait in this process's pending set, and the write's
            // captured record in the changes table: nothing is lost, and the
            // drain says once when it starts failing and when it recovers.
            Err(e) if self.has_capture() => {
                tracing::debug!(model, error = %e, "invalidation deferred to the capture drain")
            }
            Err(e) => {
                tracing::error!(model, keys = keys.len(), error = %e, "invalidation failed (no outbox to retry it)")
            }
        }
        applied
    }

    pub(super) fn keys_of<M: ModelTrait + Sync>(&self, rows: &[&M]) -> Touched {
        let model = model_name::<M::Entity>();
        let recs: Vec<ModelRecord<'_, M>> = rows.iter().map(|r| ModelRecord(*r)).collect();
        let dyns: Vec<&dyn Record> = recs.iter().map(|r| r as &dyn Record).collect();
        Touched {
            keys: self.flash.keys_for_rows(&model, &dyns),
            seeds: self.related.seeds(&model, &dyns),
            txid: None,
            unannounced: false,
            table: String::new(),
        }
    }

    /// Inserts a row; the keys of its key-field values are invalidated (a
    /// cached "does not exist" must go).
    pub async fn insert<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        durable_write!(self, model_name::<A::Entity>(), |conn, _owned| self
            .insert_on(conn, am))
    }

    /// Updates a row; keys of its old and new key-field values are invalidated.
    pub async fn update<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let model = model_name::<A::Entity>();
        if let Some(columns) = self.records_own_update(&am) {
            return self.update_captured(am, columns).await;
        }
        if let Some(ob) = &self.outbox {
            if dialect::inserts_from_update(self.db.get_database_backend())
                && ob.resolves(&model)
                && !self.touches_key(&am)
                && sets_a_column(&am)
            {
                return self.update_recorded(am).await;
            }
        }
        durable_write!(self, model, |conn, owned| self.update_on(conn, owned, am))
    }

    /// An update that changes no key field, on PostgreSQL with the outbox:
    /// the update and its outbox row (the row's primary key; its keys are
    /// resolved from the current row should the drain need them) are one
    /// statement, atomic without a transaction's extra round trips.
    async fn update_recorded<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let model = model_name::<A::Entity>();
        let backend = self.db.get_database_backend();
        let am = ActiveModelBehavior::before_save(am, &self.db, false)
            .await
            .map_err(src)?;
        let pk: Vec<FieldValue> = <A::Entity as EntityTrait>::PrimaryKey::iter()
            .map(|p| am.get(p.into_column()).into_value().map(|v| to_field(&v)))
            .collect::<Option<_>>()
            .ok_or_else(|| src(DbErr::RecordNotUpdated))?;
        let recorded = serde_json::to_string(&Recorded::Rows { rows: vec![pk] })
            .map_err(|e| src(DbErr::Custom(e.to_string())))?;
        let update = <A::Entity as EntityTrait>::update(am).into_query();
        let built = backend.build(&returning_all::<A::Entity>(update, backend));
        let mut values = built.values.map(|v| v.0).unwrap_or_default();
        let n = values.len();
        values.extend([
            Value::from(model.clone()),
            Value::from(recorded),
            Value::from(now_ms()),
        ]);
        let sql = outbox_sql::update_and_record(backend, &built.sql, n);
        let (m, row) = self.updated_row::<A::Entity>(sql, values).await?;
        let id: i64 = row.try_get("", "flash_outbox_id").map_err(src)?;
        let keys = self.keys_of(&[&m]);
        self.finish(&model, &keys, Some(id)).await;
        A::after_save(m, &self.db, false).await.map_err(src)
    }

    /// Does `am` set a field some invalidating class is keyed by (other than
    /// the primary key, which only locates the row)?
    pub(super) fn touches_key<A: ActiveModelTrait>(&self, am: &A) -> bool {
        let mut key_fields = self.key_fields(&model_name::<A::Entity>());
        for p in <A::Entity as EntityTrait>::PrimaryKey::iter() {
            key_fields.remove(&column_name(&p.into_column()));
        }
        <A::Entity as EntityTrait>::Column::iter()
            .any(|c| am.get(c).is_set() && key_fields.contains(&column_name(&c)))
    }

    /// Inserts when the primary key is not set, updates otherwise.
    pub async fn save<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let pk_set = <A::Entity as EntityTrait>::PrimaryKey::iter()
            .all(|p| !am.get(p.into_column()).is_not_set());
        if pk_set {
            self.update(am).await
        } else {
            self.insert(am).await
        }
    }

    /// Deletes a row (by primary key); the keys of its values are invalidated.
    pub async fn delete<E>(&self, row: &E::Model) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        durable_write!(self, model_name::<E>(), |conn, owned| async {
            let (n, mut keys) = self
                .delete_on::<E, _>(conn, owned, pk_condition::<E>(row))
                .await?;
            // The caller's copy may hold values the row no longer has.
            keys.extend(self.keys_of(&[row]));
            Ok::<_, Error>((n, keys))
        })
    }

    /// `UPDATE ... WHERE cond`; keys of the old and new values of every
    /// affected row are invalidated. Returns the number of rows updated.
    pub async fn update_many<E>(&self, cond: Condition, changes: Changes<E>) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        durable_write!(self, model_name::<E>(), |conn, owned| self
            .update_many_on(conn, owned, cond, changes))
    }

    /// `DELETE ... WHERE cond`; keys of every deleted row are invalidated.
    pub async fn delete_many<E>(&self, cond: Condition) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        durable_write!(self, model_name::<E>(), |conn, owned| self
            .delete_on::<E, _>(conn, owned, cond))
    }

    /// Manual invalidation: the keys of
    /// the current values of every row matching `cond`, in every class.
    pub async fn invalidate_flash_cache<E>(&self, cond: Condition) -> Result<KeySet, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let rows = E::find().filter(cond).all(&self.db).await.map_err(src)?;
        let touched = self.keys_of(&rows.iter().collect::<Vec<_>>());
        let mut keys = touched.keys;
        keys.extend(
            self.related
                .resolve(&self.flash, &self.db, &touched.seeds)
                .await
                .map_err(src)?,
        );
        self.flash
            .apply_invalidation(&model_name::<E>(), &keys)
            .await?;
        Ok(keys)
    }

    pub(super) async fn insert_on<A, C>(
        &self,
        conn: &C,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, Touched), Error>
    where
        C: ConnectionTrait,
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        if self.returns_txid(conn) {
            let (m, txid) = saved_with_txid(conn, am, true).await?;
            let mut keys = self.keys_of(&[&m]);
            keys.txid = txid;
            return Ok((m, keys));
        }
        let m = am.insert(conn).await.map_err(src)?;
        let keys = self.keys_of(&[&m]);
        Ok((m, keys))
    }

    /// `owned`: `conn` is a transaction of this write alone (see
    /// `durable_write!`); otherwise a key change opens one (a savepoint in a
    /// caller's transaction, which a failure then leaves usable).
    pub(super) async fn update_on<A, C>(
        &self,
        conn: &C,
        owned: bool,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, Touched), Error>
    where
        C: ConnectionTrait + TransactionTrait,
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        // The primary key only locates the row (`UPDATE ... WHERE pk = ?`): it
        // cannot change here, so it does not make a key change.
        if !self.touches_key(&am) {
            // Key values cannot change: the new row's keys are all there is to
            // invalidate, and one statement does it.
            if self.returns_txid(conn) && sets_a_column(&am) {
                let (m, txid) = saved_with_txid(conn, am, false).await?;
                let mut keys = self.keys_of(&[&m]);
                keys.txid = txid;
                return Ok((m, keys));
            }
            let m = am.update(conn).await.map_err(src)?;
            let keys = self.keys_of(&[&m]);
            return Ok((m, keys));
        }
        let owned =
            owned || dialect::updates_returning_old::<A::Entity>(conn.get_database_backend());
        locked_write!(conn, owned, |txn| self.update_locked(txn, am))
    }

    /// A key field changes: read the old row under a lock in the same
    /// transaction, so that its old keys are exactly the ones replaced (on
    /// PostgreSQL one statement does both, atomic in any transaction or none).
    async fn update_locked<A, C>(
        &self,
        txn: &C,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, Touched), Error>
    where
        C: ConnectionTrait,
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let pk = pk_of_active(&am);
        let (m, old, txid) =
            if dialect::updates_returning_old::<A::Entity>(txn.get_database_backend()) {
                update_returning_old(txn, am, pk, None).await?
            } else {
                let old = read_locked::<A::Entity, _>(txn, pk)
                    .await?
                    .into_iter()
                    .next();
                (am.update(txn).await.map_err(src)?, old, None)
            };
        let mut rows = vec![&m];
        rows.extend(old.as_ref());
        let mut keys = self.keys_of(&rows);
        keys.txid = txid;
        Ok((m, keys))
    }

    pub(super) async fn update_many_on<E, C>(
        &self,
        conn: &C,
        owned: bool,
        cond: Condition,
        changes: Changes<E>,
    ) -> Result<(u64, Touched), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait + TransactionTrait,
    {
        locked_write!(conn, owned, |txn| self
            .update_many_locked(txn, cond, changes))
    }

    async fn update_many_locked<E, C>(
        &self,
        txn: &C,
        cond: Condition,
        changes: Changes<E>,
    ) -> Result<(u64, Touched), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        let Some((old, only_old)) = lock_rows::<E, _>(txn, &cond).await? else {
            return Ok((0, Touched::default()));
        };
        // Only the rows read above are updated, so every updated row's old
        // values are known.
        let mut q = E::update_many().filter(cond).filter(only_old);
        for (col, expr) in changes.sets {
            q = q.col_expr(col, expr);
        }
        let (n, txid) = if self.returns_txid(txn) {
            let mut stmt = q.into_query();
            stmt.returning(sea_query::Query::returning().expr(dialect::txid_expr()));
            counted_with_txid(txn, txn.get_database_backend().build(&stmt)).await?
        } else {
            (q.exec(txn).await.map_err(src)?.rows_affected, None)
        };
        let new = E::find()
            .filter(pks_condition::<E>(&old))
            .all(txn)
            .await
            .map_err(src)?;
        let rows: Vec<&E::Model> = old.iter().chain(new.iter()).collect();
        let mut touched = self.keys_of(&rows);
        touched.txid = txid;
        Ok((n, touched))
    }

    pub(super) async fn delete_on<E, C>(
        &self,
        conn: &C,
        owned: bool,
        cond: Condition,
    ) -> Result<(u64, Touched), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait + TransactionTrait,
    {
        locked_write!(conn, owned, |txn| self.delete_locked::<E, _>(txn, cond))
    }

    async fn delete_locked<E, C>(&self, txn: &C, cond: Condition) -> Result<(u64, Touched), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        let Some((old, only_old)) = lock_rows::<E, _>(txn, &cond).await? else {
            return Ok((0, Touched::default()));
        };
        let q = E::delete_many().filter(cond).filter(only_old);
        let (n, txid) = if self.returns_txid(txn) {
            let mut stmt = q.into_query();
            stmt.returning(sea_query::Query::returning().expr(dialect::txid_expr()));
            counted_with_txid(txn, txn.get_database_backend().build(&stmt)).await?
        } else {
            (q.exec(txn).await.map_err(src)?.rows_affected, None)
        };
        let mut touched = self.keys_of(&old.iter().collect::<Vec<_>>());
        touched.txid = txid;
        Ok((n, touched))
    }
}
