//! The statements a write through flash runs besides SeaORM's own: the
//! key-changing update that returns the old row, the update and the writes
//! that return their transaction's id (for capture), the locked reads of the
//! rows a write changes, and the primary-key conditions that tie a write to
//! exactly those rows.

use super::src;
use crate::capture;
use crate::convert::column_name;
use crate::dialect;
use flash_core::Error;
use sea_orm::sea_query::{self, Condition};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    FromQueryResult, IntoActiveModel, Iterable, ModelTrait, PrimaryKeyToColumn, QueryTrait,
    Statement,
};
use std::collections::BTreeSet;

/// The primary-key condition of one row.
pub(super) fn pk_condition<E: EntityTrait>(row: &E::Model) -> Condition {
    E::PrimaryKey::iter().fold(Condition::all(), |c, p| {
        let col = p.into_column();
        c.add(col.eq(row.get(col)))
    })
}

/// A key-changing update in one statement that also returns the row as it
/// was (see [`dialect::update_returning_old`]), with the entity's
/// `before_save` and `after_save` around it as SeaORM's own update runs them.
///
/// `own`: the table and its captured columns when the statement records its
/// change itself (see `capture::own_record_sql`; autocommit only, as its
/// mark lasts until the transaction ends).
pub(super) async fn update_returning_old<A, C>(
    conn: &C,
    am: A,
    pk: Condition,
    own: Option<(&str, &[String])>,
) -> Result<
    (
        <A::Entity as EntityTrait>::Model,
        Option<<A::Entity as EntityTrait>::Model>,
        Option<i64>,
    ),
    Error,
>
where
    C: ConnectionTrait,
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
{
    let am = ActiveModelBehavior::before_save(am, conn, false)
        .await
        .map_err(src)?;
    let mut update = A::Entity::update(am).into_query();
    let stmt = match own {
        None => dialect::update_returning_old::<A::Entity>(update, pk, true),
        Some((table, columns)) => {
            update.and_where(sea_query::Expr::cust(capture::own_marker(table)));
            let s = dialect::update_returning_old::<A::Entity>(update, pk, false);
            let sql = capture::own_record_sql(&s.sql, table, columns, true);
            Statement { sql, ..s }
        }
    };
    let row = conn
        .query_one(stmt)
        .await
        .map_err(src)?
        .ok_or_else(|| src(DbErr::RecordNotUpdated))?;
    type Model<A> = <<A as ActiveModelTrait>::Entity as EntityTrait>::Model;
    let new = Model::<A>::from_query_result(&row, "").map_err(src)?;
    let old = Model::<A>::from_query_result(&row, dialect::OLD_PREFIX).map_err(src)?;
    let txid = row.try_get::<i64>("", dialect::TXID_COLUMN).ok();
    let new = A::after_save(new, conn, false).await.map_err(src)?;
    Ok((new, Some(old), txid))
}

/// SeaORM's insert (`insert`) or update of one row (`before_save`, the
/// statement, `after_save`), also returning the writing transaction's id
/// (PostgreSQL).
pub(super) async fn saved_with_txid<A, C>(
    conn: &C,
    am: A,
    insert: bool,
) -> Result<(<A::Entity as EntityTrait>::Model, Option<i64>), Error>
where
    C: ConnectionTrait,
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
{
    let backend = conn.get_database_backend();
    let am = ActiveModelBehavior::before_save(am, conn, insert)
        .await
        .map_err(src)?;
    let returning = sea_query::Query::returning().exprs(
        <A::Entity as EntityTrait>::Column::iter()
            .map(|c| c.select_as(c.into_returning_expr(backend)))
            .chain([dialect::txid_expr()]),
    );
    let (stmt, none) = if insert {
        let mut q = <A::Entity as EntityTrait>::insert(am).into_query();
        q.returning(returning);
        (backend.build(&q), DbErr::RecordNotInserted)
    } else {
        let mut q = <A::Entity as EntityTrait>::update(am).into_query();
        q.returning(returning);
        (backend.build(&q), DbErr::RecordNotUpdated)
    };
    let row = conn
        .query_one(stmt)
        .await
        .map_err(src)?
        .ok_or_else(|| src(none))?;
    let m = <<A::Entity as EntityTrait>::Model as FromQueryResult>::from_query_result(&row, "")
        .map_err(src)?;
    let txid = row.try_get::<i64>("", dialect::TXID_COLUMN).ok();
    let m = A::after_save(m, conn, insert).await.map_err(src)?;
    Ok((m, txid))
}

/// The rows of `E` matching `cond`, locked until the transaction `txn` ends
/// (see [`dialect::read_locked`]).
pub(super) async fn read_locked<E: EntityTrait, C: ConnectionTrait>(
    txn: &C,
    cond: Condition,
) -> Result<Vec<E::Model>, Error> {
    dialect::read_locked::<E, _>(txn, cond).await.map_err(src)
}

/// The rows of `E` matching `cond`, locked until the transaction `txn` ends,
/// and the condition on their primary keys; `None` when no row matches. A
/// write filtered on both changes exactly the rows whose keys were read.
pub(super) async fn lock_rows<E: EntityTrait, C: ConnectionTrait>(
    txn: &C,
    cond: &Condition,
) -> Result<Option<(Vec<E::Model>, Condition)>, Error> {
    let old = read_locked::<E, _>(txn, cond.clone()).await?;
    if old.is_empty() {
        return Ok(None);
    }
    let only_old = pks_condition::<E>(&old);
    Ok(Some((old, only_old)))
}

/// Runs `stmt`, a write `RETURNING` [`dialect::txid_expr`] for each row:
/// the rows written and the transaction's id.
pub(super) async fn counted_with_txid<C: ConnectionTrait>(
    conn: &C,
    stmt: Statement,
) -> Result<(u64, Option<i64>), Error> {
    let rows = conn.query_all(stmt).await.map_err(src)?;
    let txid = rows
        .first()
        .and_then(|r| r.try_get::<i64>("", dialect::TXID_COLUMN).ok());
    Ok((rows.len() as u64, txid))
}

/// Does `am` set a column other than its primary key (else SeaORM's update
/// is a read, and there is nothing to record)?
pub(super) fn sets_a_column<A: ActiveModelTrait>(am: &A) -> bool {
    let pk: BTreeSet<String> = <A::Entity as EntityTrait>::PrimaryKey::iter()
        .map(|p| column_name(&p.into_column()))
        .collect();
    <A::Entity as EntityTrait>::Column::iter()
        .any(|c| am.get(c).is_set() && !pk.contains(&column_name(&c)))
}

/// The primary-key condition of many rows.
pub(super) fn pks_condition<E: EntityTrait>(rows: &[E::Model]) -> Condition {
    let pks: Vec<E::Column> = E::PrimaryKey::iter().map(|p| p.into_column()).collect();
    if let [col] = pks.as_slice() {
        return Condition::all().add(col.is_in(rows.iter().map(|r| r.get(*col))));
    }
    rows.iter()
        .fold(Condition::any(), |c, r| c.add(pk_condition::<E>(r)))
}

/// The primary-key condition of the row `am` updates.
pub(super) fn pk_of_active<A: ActiveModelTrait>(am: &A) -> Condition {
    <A::Entity as EntityTrait>::PrimaryKey::iter().fold(Condition::all(), |c, p| {
        let col = p.into_column();
        match am.get(col).into_value() {
            Some(v) => c.add(col.eq(v)),
            None => c,
        }
    })
}

/// `update` returning every column of `E` (as SeaORM's own update reads them
/// back).
pub(super) fn returning_all<E: EntityTrait>(
    mut update: sea_query::UpdateStatement,
    backend: sea_orm::DatabaseBackend,
) -> sea_query::UpdateStatement {
    update.returning(
        sea_query::Query::returning()
            .exprs(E::Column::iter().map(|c| c.select_as(c.into_returning_expr(backend)))),
    );
    update
}
