//! `FlashDb`: cached lookups and writes that invalidate, on a SeaORM connection.

use crate::convert::{column_name, model_name, to_field, ModelRecord};
use crate::lookup::Lookup;
use crate::outbox::{failpoint, now_ms, Outbox, Recorded, OUTBOX_TABLE};
use flash_core::{
    CacheKind, CacheValue, Class, Error, FieldValue, Flash, KeySet, Outcome, Query, Record,
    SourceError,
};
use futures::future::BoxFuture;
use sea_orm::sea_query::{self, Condition, IntoIden, SimpleExpr};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityName, EntityTrait, FromQueryResult,
    IntoActiveModel, Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, QuerySelect,
    QueryTrait, Statement, TransactionTrait, Value,
};
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

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

fn src(e: sea_orm::DbErr) -> Error {
    Error::Source(SourceError::new(e))
}

/// The handle a service keeps: a [`Flash`] and the database it caches.
/// Cloning is cheap (reference counts).
#[derive(Clone)]
pub struct FlashDb {
    flash: Flash,
    db: DatabaseConnection,
    /// The durable outbox, when on; shared by clones, its drain task stops
    /// with the last of them.
    outbox: Option<Arc<Outbox>>,
}

impl std::fmt::Debug for FlashDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlashDb")
            .field("flash", &self.flash)
            .field("outbox", &self.outbox.is_some())
            .finish()
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

/// The primary-key condition of one row.
fn pk_condition<E: EntityTrait>(row: &E::Model) -> Condition {
    E::PrimaryKey::iter().fold(Condition::all(), |c, p| {
        let col = p.into_column();
        c.add(col.eq(row.get(col)))
    })
}

/// Does some column of `E` read through a cast (a database enum)? Such
/// columns cannot be returned under another name as they are.
fn has_cast_columns<E: EntityTrait>() -> bool {
    E::Column::iter().any(|c| {
        let plain: SimpleExpr = sea_query::Expr::col(c).into();
        c.select_as(sea_query::Expr::col(c)) != plain
    })
}

/// Can a key-changing update of `E` on `conn` read the old row and update it
/// in one statement ([`update_returning_old`])?
fn one_statement_update<E: EntityTrait>(conn: &impl ConnectionTrait) -> bool {
    conn.get_database_backend() == DatabaseBackend::Postgres && !has_cast_columns::<E>()
}

fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A key-changing update on PostgreSQL in one statement that also returns
/// the row as it was: `UPDATE t SET .. FROM (SELECT * FROM t WHERE pk FOR
/// UPDATE) flash_old WHERE pk AND t.pk = flash_old.pk RETURNING t.*,
/// flash_old.*` (the old columns renamed). The subquery locks the row and
/// reads its latest committed version, so the old values are exactly the
/// ones this update replaces: what a transaction with `SELECT ... FOR
/// UPDATE` then `UPDATE` gives, in one round trip instead of four.
async fn update_returning_old<A, C>(
    conn: &C,
    am: A,
    pk: Condition,
) -> Result<
    (
        <A::Entity as EntityTrait>::Model,
        Option<<A::Entity as EntityTrait>::Model>,
    ),
    Error,
>
where
    C: ConnectionTrait,
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
{
    const OLD: &str = "flash_old";
    let backend = conn.get_database_backend();
    let am = ActiveModelBehavior::before_save(am, conn, false)
        .await
        .map_err(src)?;
    let entity = A::Entity::default();
    let table = entity.table_name().to_owned();
    let mut old = sea_query::Query::select();
    old.column(sea_query::Asterisk)
        .from(entity.table_ref())
        .cond_where(pk)
        .lock(sea_query::LockType::Update);
    let mut update = A::Entity::update(am).into_query();
    update.from(sea_query::TableRef::SubQuery(
        old,
        sea_query::Alias::new(OLD).into_iden(),
    ));
    for p in <A::Entity as EntityTrait>::PrimaryKey::iter() {
        let c = p.into_column();
        update.and_where(sea_query::Expr::col((entity, c)).equals((sea_query::Alias::new(OLD), c)));
    }
    let columns: Vec<String> = <A::Entity as EntityTrait>::Column::iter()
        .map(|c| column_name(&c))
        .collect();
    let returning = columns
        .iter()
        .map(|c| format!("{}.{}", quoted(&table), quoted(c)))
        .chain(columns.iter().map(|c| {
            format!(
                "{}.{} AS {}",
                quoted(OLD),
                quoted(c),
                quoted(&format!("{OLD}_{c}"))
            )
        }))
        .collect::<Vec<_>>()
        .join(", ");
    let built = backend.build(&update);
    let stmt = Statement {
        sql: format!("{} RETURNING {returning}", built.sql),
        ..built
    };
    let row = conn
        .query_one(stmt)
        .await
        .map_err(src)?
        .ok_or_else(|| src(DbErr::RecordNotUpdated))?;
    type Model<A> = <<A as ActiveModelTrait>::Entity as EntityTrait>::Model;
    let new = Model::<A>::from_query_result(&row, "").map_err(src)?;
    let old = Model::<A>::from_query_result(&row, &format!("{OLD}_")).map_err(src)?;
    let new = A::after_save(new, conn, false).await.map_err(src)?;
    Ok((new, Some(old)))
}

/// Does `am` set a column other than its primary key (else SeaORM's update
/// is a read, and there is nothing to record)?
fn sets_a_column<A: ActiveModelTrait>(am: &A) -> bool {
    let pk: BTreeSet<String> = <A::Entity as EntityTrait>::PrimaryKey::iter()
        .map(|p| column_name(&p.into_column()))
        .collect();
    <A::Entity as EntityTrait>::Column::iter()
        .any(|c| am.get(c).is_set() && !pk.contains(&column_name(&c)))
}

/// The primary-key condition of many rows.
fn pks_condition<E: EntityTrait>(rows: &[E::Model]) -> Condition {
    let pks: Vec<E::Column> = E::PrimaryKey::iter().map(|p| p.into_column()).collect();
    if let [col] = pks.as_slice() {
        return Condition::all().add(col.is_in(rows.iter().map(|r| r.get(*col))));
    }
    rows.iter()
        .fold(Condition::any(), |c, r| c.add(pk_condition::<E>(r)))
}

/// Reads the rows matching `cond` inside `txn` so that no other writer can
/// change them before the transaction ends: `SELECT ... FOR UPDATE`, or on
/// SQLite (which locks the whole database, and whose deferred transactions
/// cannot upgrade a read to a write under contention) a no-op `UPDATE` first,
/// which takes the write lock, waiting for it as the busy timeout allows.
async fn read_locked<E: EntityTrait, C: ConnectionTrait>(
    txn: &C,
    cond: Condition,
) -> Result<Vec<E::Model>, Error> {
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        if let Some(pk) = E::PrimaryKey::iter().next() {
            let col = pk.into_column();
            E::update_many()
                .col_expr(col, sea_orm::sea_query::Expr::col(col).into())
                .filter(cond.clone())
                .exec(txn)
                .await
                .map_err(src)?;
        }
        return E::find().filter(cond).all(txn).await.map_err(src);
    }
    E::find()
        .filter(cond)
        .lock_exclusive()
        .all(txn)
        .await
        .map_err(src)
}

impl FlashDb {
    /// A handle without the durable outbox (see [`crate::Registrar`] for one with it).
    pub fn new(flash: Flash, db: DatabaseConnection) -> Self {
        FlashDb {
            flash,
            db,
            outbox: None,
        }
    }

    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Is the durable outbox on?
    pub fn has_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// Deletes the outbox rows this handle applied (the background task does
    /// it in batches; call this before a process exits).
    pub async fn flush_outbox(&self) -> Result<(), Error> {
        match &self.outbox {
            Some(o) => o.flush().await.map_err(src),
            None => Ok(()),
        }
    }

    /// Re-applies every invalidation left in the outbox now (instead of
    /// waiting for the background task). Returns the number of rows applied.
    pub async fn drain_outbox(&self) -> Result<usize, Error> {
        match &self.outbox {
            Some(o) => o.drain(true).await.map_err(src),
            None => Ok(0),
        }
    }
    pub fn flash(&self) -> &Flash {
        &self.flash
    }
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The cached lookups of entity `E` (the original's `Model.cache`).
    pub fn cache<E: EntityTrait>(&self) -> ModelCache<'_, E>
    where
        E::Model: CacheValue,
    {
        ModelCache {
            fdb: self,
            _e: PhantomData,
        }
    }

    /// A user-defined class's value (see [`crate::CustomCache`]).
    pub async fn get<T: CacheValue>(
        &self,
        class: &Class<T>,
        key: &[FieldValue],
    ) -> Result<T, Error> {
        self.flash.get(class, key).await
    }

    /// The row `row`'s cached foreign key points at, read through `T`'s
    /// primary-key cache (the seed's `participation.event`).
    pub async fn follow<T, M>(&self, row: &M) -> Result<Option<T::Model>, Error>
    where
        T: EntityTrait,
        T::Model: CacheValue,
        M: ModelTrait + Sync,
    {
        let model = model_name::<M::Entity>();
        let target = model_name::<T>();
        let not_registered = || Error::CacheNotRegistered {
            model: model.clone(),
            kind: "cached foreign key",
            fields: vec![target.clone()],
        };
        let fk = self
            .flash
            .cached_foreign_keys()
            .iter()
            .find(|f| f.model == model && f.target == target)
            .ok_or_else(not_registered)?;
        let value = ModelRecord(row)
            .field(&fk.field)
            .ok_or_else(not_registered)?;
        if value == FieldValue::Null {
            return Ok(None);
        }
        let pk = self
            .flash
            .model(&target)
            .map(|m| m.pk.clone())
            .unwrap_or_default();
        let class =
            self.flash
                .simple_class::<Option<T::Model>, _>(&target, CacheKind::Instance, &pk)?;
        self.flash.get(&class, &[value]).await
    }

    /// Names of the fields that some invalidating class of `model` is keyed by.
    fn key_fields(&self, model: &str) -> BTreeSet<String> {
        self.flash
            .classes()
            .filter(|c| c.model == model && c.invalidation != flash_core::Invalidation::Off)
            .flat_map(|c| c.key_fields.iter().cloned())
            .collect()
    }

    /// Applies the invalidation of a committed write. The write call returns
    /// only after this, so the writer reads its own write. A failure leaves
    /// the outbox row for the background task.
    async fn finish(&self, model: &str, keys: &KeySet, outbox_id: Option<i64>) {
        failpoint("after_commit");
        match self.flash.apply_invalidation(model, keys).await {
            Ok(()) => {
                if let (Some(ob), Some(id)) = (&self.outbox, outbox_id) {
                    ob.applied(id);
                }
            }
            Err(e) if outbox_id.is_some() => {
                tracing::warn!(model, error = %e, "invalidation deferred to the outbox")
            }
            Err(e) => {
                tracing::error!(model, keys = keys.len(), error = %e, "invalidation failed (no outbox to retry it)")
            }
        }
    }

    fn keys_of<M: ModelTrait + Sync>(&self, rows: &[&M]) -> KeySet {
        let model = model_name::<M::Entity>();
        let recs: Vec<ModelRecord<'_, M>> = rows.iter().map(|r| ModelRecord(*r)).collect();
        let dyns: Vec<&dyn Record> = recs.iter().map(|r| r as &dyn Record).collect();
        self.flash.keys_for_rows(&model, &dyns)
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
        if let Some(ob) = &self.outbox {
            if self.db.get_database_backend() == DatabaseBackend::Postgres
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
        let mut update = <A::Entity as EntityTrait>::update(am).into_query();
        update.returning(
            sea_query::Query::returning().exprs(
                <A::Entity as EntityTrait>::Column::iter()
                    .map(|c| c.select_as(c.into_returning_expr(backend))),
            ),
        );
        let built = backend.build(&update);
        let mut values = built.values.map(|v| v.0).unwrap_or_default();
        let n = values.len();
        values.extend([
            Value::from(model.clone()),
            Value::from(recorded),
            Value::from(now_ms()),
        ]);
        let sql = format!(
            "WITH flash_u AS ({}), flash_o AS (INSERT INTO {OUTBOX_TABLE} (model, keyset, created_ms) \
             SELECT ${}, ${}, ${} FROM flash_u RETURNING id) \
             SELECT flash_u.*, flash_o.id AS flash_outbox_id FROM flash_u, flash_o",
            built.sql,
            n + 1,
            n + 2,
            n + 3
        );
        let row = self
            .db
            .query_one(Statement::from_sql_and_values(backend, sql, values))
            .await
            .map_err(src)?
            .ok_or_else(|| src(DbErr::RecordNotUpdated))?;
        let m = <<A::Entity as EntityTrait>::Model as FromQueryResult>::from_query_result(&row, "")
            .map_err(src)?;
        let id: i64 = row.try_get("", "flash_outbox_id").map_err(src)?;
        let keys = self.keys_of(&[&m]);
        self.finish(&model, &keys, Some(id)).await;
        A::after_save(m, &self.db, false).await.map_err(src)
    }

    /// Does `am` set a field some invalidating class is keyed by (other than
    /// the primary key, which only locates the row)?
    fn touches_key<A: ActiveModelTrait>(&self, am: &A) -> bool {
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

    /// Manual invalidation (the seed's `invalidate_flash_cache`): the keys of
    /// the current values of every row matching `cond`, in every class.
    pub async fn invalidate_flash_cache<E>(&self, cond: Condition) -> Result<KeySet, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let rows = E::find().filter(cond).all(&self.db).await.map_err(src)?;
        let keys = self.keys_of(&rows.iter().collect::<Vec<_>>());
        self.flash
            .apply_invalidation(&model_name::<E>(), &keys)
            .await?;
        Ok(keys)
    }

    /// Runs `f` in a database transaction; the invalidations of the writes made
    /// through the [`FlashTxn`] are applied after the commit, and not at all on
    /// rollback.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send,
        F: for<'t> FnOnce(&'t mut FlashTxn) -> BoxFuture<'t, Result<T, Error>> + Send,
    {
        let txn = self.db.begin().await.map_err(src)?;
        let mut ftx = FlashTxn {
            fdb: self.clone(),
            txn: Some(txn),
            keys: Vec::new(),
        };
        let out = f(&mut ftx).await;
        let txn = ftx.txn.take().ok_or(Error::TransactionFinished)?;
        match out {
            Ok(v) => {
                let mut ids = Vec::with_capacity(ftx.keys.len());
                for (model, keys) in &ftx.keys {
                    ids.push(match &self.outbox {
                        Some(ob) => ob.record(&txn, model, keys).await.map_err(src)?,
                        None => None,
                    });
                }
                txn.commit().await.map_err(src)?;
                for ((model, keys), id) in ftx.keys.iter().zip(ids) {
                    self.finish(model, keys, id).await;
                }
                Ok(v)
            }
            Err(e) => {
                txn.rollback().await.map_err(src)?;
                Err(e)
            }
        }
    }

    async fn insert_on<A, C>(
        &self,
        conn: &C,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, KeySet), Error>
    where
        C: ConnectionTrait,
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let m = am.insert(conn).await.map_err(src)?;
        let keys = self.keys_of(&[&m]);
        Ok((m, keys))
    }

    /// `owned`: `conn` is a transaction of this write alone (see
    /// `durable_write!`); otherwise a key change opens one (a savepoint in a
    /// caller's transaction, which a failure then leaves usable).
    async fn update_on<A, C>(
        &self,
        conn: &C,
        owned: bool,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, KeySet), Error>
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
            let m = am.update(conn).await.map_err(src)?;
            let keys = self.keys_of(&[&m]);
            return Ok((m, keys));
        }
        let owned = owned || one_statement_update::<A::Entity>(conn);
        locked_write!(conn, owned, |txn| self.update_locked(txn, am))
    }

    /// A key field changes: read the old row under a lock in the same
    /// transaction, so that its old keys are exactly the ones replaced (on
    /// PostgreSQL one statement does both, atomic in any transaction or none).
    async fn update_locked<A, C>(
        &self,
        txn: &C,
        am: A,
    ) -> Result<(<A::Entity as EntityTrait>::Model, KeySet), Error>
    where
        C: ConnectionTrait,
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let pk = <A::Entity as EntityTrait>::PrimaryKey::iter().fold(Condition::all(), |c, p| {
            let col = p.into_column();
            match am.get(col).into_value() {
                Some(v) => c.add(col.eq(v)),
                None => c,
            }
        });
        let (m, old) = if one_statement_update::<A::Entity>(txn) {
            update_returning_old(txn, am, pk).await?
        } else {
            let old = read_locked::<A::Entity, _>(txn, pk)
                .await?
                .into_iter()
                .next();
            (am.update(txn).await.map_err(src)?, old)
        };
        let mut rows = vec![&m];
        rows.extend(old.as_ref());
        let keys = self.keys_of(&rows);
        Ok((m, keys))
    }

    async fn update_many_on<E, C>(
        &self,
        conn: &C,
        owned: bool,
        cond: Condition,
        changes: Changes<E>,
    ) -> Result<(u64, KeySet), Error>
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
    ) -> Result<(u64, KeySet), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        let old = read_locked::<E, _>(txn, cond.clone()).await?;
        if old.is_empty() {
            return Ok((0, KeySet::default()));
        }
        // Only the rows read above are updated, so every updated row's old
        // values are known.
        let mut q = E::update_many()
            .filter(cond)
            .filter(pks_condition::<E>(&old));
        for (col, expr) in changes.sets {
            q = q.col_expr(col, expr);
        }
        let n = q.exec(txn).await.map_err(src)?.rows_affected;
        let new = E::find()
            .filter(pks_condition::<E>(&old))
            .all(txn)
            .await
            .map_err(src)?;
        let rows: Vec<&E::Model> = old.iter().chain(new.iter()).collect();
        Ok((n, self.keys_of(&rows)))
    }

    async fn delete_on<E, C>(
        &self,
        conn: &C,
        owned: bool,
        cond: Condition,
    ) -> Result<(u64, KeySet), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait + TransactionTrait,
    {
        locked_write!(conn, owned, |txn| self.delete_locked::<E, _>(txn, cond))
    }

    async fn delete_locked<E, C>(&self, txn: &C, cond: Condition) -> Result<(u64, KeySet), Error>
    where
        E: EntityTrait,
        E::Model: Sync,
        C: ConnectionTrait,
    {
        let old = read_locked::<E, _>(txn, cond.clone()).await?;
        if old.is_empty() {
            return Ok((0, KeySet::default()));
        }
        let n = E::delete_many()
            .filter(cond)
            .filter(pks_condition::<E>(&old))
            .exec(txn)
            .await
            .map_err(src)?
            .rows_affected;
        Ok((n, self.keys_of(&old.iter().collect::<Vec<_>>())))
    }
}

/// Writes inside [`FlashDb::transaction`]; their invalidations wait for the commit.
pub struct FlashTxn {
    fdb: FlashDb,
    txn: Option<DatabaseTransaction>,
    keys: Vec<(String, KeySet)>,
}

impl FlashTxn {
    /// The transaction, for reads and writes that need no invalidation.
    pub fn conn(&self) -> &DatabaseTransaction {
        self.txn
            .as_ref()
            .expect("transaction is open while the closure runs")
    }
    fn record(&mut self, model: String, keys: KeySet) {
        self.keys.push((model, keys));
    }
    pub async fn insert<A>(&mut self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let (m, keys) = self.fdb.insert_on(self.conn(), am).await?;
        self.record(model_name::<A::Entity>(), keys);
        Ok(m)
    }
    pub async fn update<A>(&mut self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let (m, keys) = self.fdb.update_on(self.conn(), false, am).await?;
        self.record(model_name::<A::Entity>(), keys);
        Ok(m)
    }
    pub async fn update_many<E>(
        &mut self,
        cond: Condition,
        changes: Changes<E>,
    ) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, keys) = self
            .fdb
            .update_many_on(self.conn(), false, cond, changes)
            .await?;
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
    pub async fn delete_many<E>(&mut self, cond: Condition) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, keys) = self.fdb.delete_on::<E, _>(self.conn(), false, cond).await?;
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
    pub async fn delete<E>(&mut self, row: &E::Model) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, mut keys) = self
            .fdb
            .delete_on::<E, _>(self.conn(), false, pk_condition::<E>(row))
            .await?;
        keys.extend(self.fdb.keys_of(&[row]));
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
}

/// The error of a `get` that found no row.
pub(crate) fn not_found<E: EntityTrait>(lk: &Lookup<E>) -> Error {
    Error::NotFound {
        model: model_name::<E>(),
        key: lk
            .pairs
            .iter()
            .map(|(c, v)| format!("{}={}", column_name(c), to_field(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Cached lookups of one entity, by its declared field tuples.
pub struct ModelCache<'a, E: EntityTrait> {
    fdb: &'a FlashDb,
    _e: PhantomData<E>,
}

impl<E: EntityTrait> ModelCache<'_, E>
where
    E::Model: CacheValue,
{
    fn class<T: CacheValue>(&self, kind: CacheKind, lk: &Lookup<E>) -> Result<Class<T>, Error> {
        let entity = E::default();
        self.fdb
            .flash
            .simple_class::<T, _>(entity.table_name(), kind, &lk.field_names())
    }

    /// The row found by `lk`; [`Error::NotFound`] when there is none (the
    /// absence is cached too).
    pub async fn get(&self, lk: Lookup<E>) -> Result<E::Model, Error> {
        let (row, _) = self.get_with_outcome(lk.clone()).await?;
        row.ok_or_else(|| not_found(&lk))
    }

    /// The row found by `lk`, or `None`.
    pub async fn get_or_none(&self, lk: Lookup<E>) -> Result<Option<E::Model>, Error> {
        self.get_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::get_or_none`], also telling hit or miss.
    pub async fn get_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Option<E::Model>, Outcome), Error> {
        let class = self.class::<Option<E::Model>>(CacheKind::Instance, &lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        self.fdb.flash.lookup(&class, &values).await
    }

    /// The rows matching `lk`.
    pub async fn filter(&self, lk: Lookup<E>) -> Result<Vec<E::Model>, Error> {
        self.filter_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::filter`], also telling hit or miss.
    pub async fn filter_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Vec<E::Model>, Outcome), Error> {
        let class = self.class::<Vec<E::Model>>(CacheKind::Queryset, &lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        self.fdb.flash.lookup(&class, &values).await
    }

    /// Whether any row matches `lk` (declared with [`crate::CacheMeta::exists_key`]).
    pub async fn exists(&self, lk: Lookup<E>) -> Result<bool, Error> {
        self.exists_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::exists`], also telling hit or miss.
    pub async fn exists_with_outcome(&self, lk: Lookup<E>) -> Result<(bool, Outcome), Error> {
        let class = self.class::<bool>(CacheKind::Exists, &lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        self.fdb.flash.lookup(&class, &values).await
    }

    /// A lazy existence lookup, for a [`flash_core::Batch`].
    pub fn exists_query(&self, lk: &Lookup<E>) -> Result<Query<bool>, Error> {
        let class = self.class::<bool>(CacheKind::Exists, lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        Ok(Query::new(&class, values))
    }

    /// The cache key (the string stored in the cache server) of an instance
    /// lookup: for inspecting the cache or invalidating one entry by hand.
    /// (Declaring a lookup is [`crate::CacheMeta::get_key`].)
    pub fn cache_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        let class = self.class::<Option<E::Model>>(CacheKind::Instance, lk)?;
        self.fdb
            .flash
            .key_of(&class, &lk.values_in(&class.spec().key_fields))
    }

    /// The cache key of a filter lookup.
    pub fn filter_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        let class = self.class::<Vec<E::Model>>(CacheKind::Queryset, lk)?;
        self.fdb
            .flash
            .key_of(&class, &lk.values_in(&class.spec().key_fields))
    }

    /// A lazy instance lookup, for a [`flash_core::Batch`].
    pub fn get_query(&self, lk: &Lookup<E>) -> Result<Query<Option<E::Model>>, Error> {
        let class = self.class::<Option<E::Model>>(CacheKind::Instance, lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        Ok(Query::new(&class, values))
    }

    /// A lazy filter lookup, for a [`flash_core::Batch`].
    pub fn filter_query(&self, lk: &Lookup<E>) -> Result<Query<Vec<E::Model>>, Error> {
        let class = self.class::<Vec<E::Model>>(CacheKind::Queryset, lk)?;
        let values = lk.values_in(&class.spec().key_fields);
        Ok(Query::new(&class, values))
    }
}
