//! An update through flash that records its own change (PostgreSQL with
//! capture): the update and its changes row are one statement, which the
//! table's statement triggers let pass (see `capture::own_record_sql`).

use super::statements::{pk_of_active, returning_all, sets_a_column, update_returning_old};
use super::{src, FlashDb};
use crate::capture;
use crate::convert::model_name;
use crate::dialect;
use flash_core::Error;
use sea_orm::sea_query;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ConnectionTrait, DbErr, EntityName, EntityTrait,
    FromQueryResult, IntoActiveModel, QueryTrait, Statement, Value,
};

impl FlashDb {
    /// With capture on PostgreSQL, an update records its change itself, in
    /// its own statement (see `update_captured`): the captured columns of
    /// its table then, else `None`.
    pub(super) fn records_own_update<A: ActiveModelTrait>(&self, am: &A) -> Option<Vec<String>> {
        let drain = self.capture.as_ref()?;
        let entity = A::Entity::default();
        if self.db.get_database_backend() != sea_orm::DatabaseBackend::Postgres
            || entity.schema_name().is_some()
            || !sets_a_column(am)
        {
            return None;
        }
        drain.captured_columns(entity.table_name())
    }

    /// An update of no key field with capture on PostgreSQL: the update and
    /// its changes row (the captured columns of the row as updated, with the
    /// transaction's id) are one statement, which its table's trigger lets
    /// pass (see `capture::own_record_sql`): no trigger function, no
    /// notification at commit. The write applies the invalidation before it
    /// returns, and wakes the other processes' drains only when that fails
    /// or takes longer than `DrainSettings::announce_after`.
    pub(super) async fn update_captured<A>(
        &self,
        am: A,
        columns: Vec<String>,
    ) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let model = model_name::<A::Entity>();
        let table = A::Entity::default().table_name().to_owned();
        if self.touches_key(&am) {
            // A key change: the statement also returns (and records) the
            // row as it was, read under its lock.
            let pk = pk_of_active(&am);
            let (m, old, txid) =
                update_returning_old(&self.db, am, pk, Some((&table, &columns))).await?;
            let mut rows = vec![&m];
            rows.extend(old.as_ref());
            let mut touched = self.keys_of(&rows);
            touched.txid = txid;
            touched.unannounced = true;
            touched.table = table;
            self.finish(&model, &touched, None).await;
            return Ok(m);
        }
        let backend = self.db.get_database_backend();
        let am = ActiveModelBehavior::before_save(am, &self.db, false)
            .await
            .map_err(src)?;
        let mut update = <A::Entity as EntityTrait>::update(am).into_query();
        update.and_where(sea_query::Expr::cust(capture::own_marker(&table)));
        let built = backend.build(&returning_all::<A::Entity>(update, backend));
        let sql = capture::own_record_sql(&built.sql, &table, &columns, false);
        let values = built.values.map(|v| v.0).unwrap_or_default();
        let (m, row) = self.updated_row::<A::Entity>(sql, values).await?;
        let mut touched = self.keys_of(&[&m]);
        touched.txid = row.try_get::<i64>("", dialect::TXID_COLUMN).ok();
        touched.unannounced = true;
        touched.table = table;
        self.finish(&model, &touched, None).await;
        A::after_save(m, &self.db, false).await.map_err(src)
    }

    /// Runs an update statement of one row that returns it, and reads the
    /// row (its other returned columns stay in the result).
    pub(super) async fn updated_row<E: EntityTrait>(
        &self,
        sql: String,
        values: Vec<Value>,
    ) -> Result<(E::Model, sea_orm::QueryResult), Error> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one(Statement::from_sql_and_values(backend, sql, values))
            .await
            .map_err(src)?
            .ok_or_else(|| src(DbErr::RecordNotUpdated))?;
        let m = E::Model::from_query_result(&row, "").map_err(src)?;
        Ok((m, row))
    }
}
