//! SQLite's locking: SQLite locks the whole database, and a deferred
//! transaction that has read cannot always upgrade to a write under
//! contention, so a write that reads rows first takes the write lock itself.

use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter};

/// Takes the database's write lock in the transaction `txn` with a no-op
/// `UPDATE` of the rows matching `cond` (`SET pk = pk`), waiting for the lock
/// as the busy timeout allows. Reads that follow in `txn` see rows no other
/// writer can change before `txn` ends.
pub(super) async fn lock_for_write<E: EntityTrait, C: ConnectionTrait>(
    txn: &C,
    cond: Condition,
) -> Result<(), DbErr> {
    if let Some(pk) = E::PrimaryKey::iter().next() {
        let col = pk.into_column();
        E::update_many()
            .col_expr(col, Expr::col(col).into())
            .filter(cond)
            .exec(txn)
            .await?;
    }
    Ok(())
}
