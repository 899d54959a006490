//! PostgreSQL's SQL: a key-changing update that reads the row it replaces
//! and updates it in one statement (`UPDATE ... FROM (SELECT ... FOR UPDATE)
//! ... RETURNING`), which no other supported database can express.

use crate::convert::column_name;
use sea_orm::sea_query::{
    self, Alias, Asterisk, Condition, Expr, IntoIden, LockType, SimpleExpr, TableRef,
    UpdateStatement,
};
use sea_orm::{ColumnTrait, DatabaseBackend, EntityTrait, Iterable, PrimaryKeyToColumn, Statement};

/// The alias of the row as it was, in [`update_returning_old`].
const OLD: &str = "flash_old";

/// The prefix of the old row's columns in the row [`update_returning_old`]
/// returns (`FromQueryResult::from_query_result(&row, OLD_PREFIX)` reads them).
pub(crate) const OLD_PREFIX: &str = "flash_old_";

/// The column of the writing transaction's id (`txid_current()`) in the row
/// [`update_returning_old`] returns (and [`txid_expr`] names): what the
/// capture triggers record, so that the drain knows the write's record.
pub(crate) const TXID_COLUMN: &str = "flash_txid";

/// Does some column of `E` read through a cast (a database enum)? Such
/// columns cannot be returned under another name as they are.
pub(super) fn has_cast_columns<E: EntityTrait>() -> bool {
    E::Column::iter().any(|c| {
        let plain: SimpleExpr = Expr::col(c).into();
        c.select_as(Expr::col(c)) != plain
    })
}

fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `update` (of one row of `E`, found by `pk`) made to return the row as it
/// was too: `UPDATE t SET .. FROM (SELECT * FROM t WHERE pk FOR UPDATE)
/// flash_old WHERE pk AND t.pk = flash_old.pk RETURNING t.*, flash_old.*`
/// (the old columns renamed with [`OLD_PREFIX`]). The subquery locks the row
/// and reads its latest committed version, so the old values are exactly the
/// ones this update replaces: what a transaction with `SELECT ... FOR UPDATE`
/// then `UPDATE` gives, in one round trip instead of four.
pub(crate) fn update_returning_old<E: EntityTrait>(
    mut update: UpdateStatement,
    pk: Condition,
    with_txid: bool,
) -> Statement {
    let entity = E::default();
    let table = entity.table_name().to_owned();
    let mut old = sea_query::Query::select();
    old.column(Asterisk)
        .from(entity.table_ref())
        .cond_where(pk)
        .lock(LockType::Update);
    update.from(TableRef::SubQuery(old, Alias::new(OLD).into_iden()));
    for p in E::PrimaryKey::iter() {
        let c = p.into_column();
        update.and_where(Expr::col((entity, c)).equals((Alias::new(OLD), c)));
    }
    let columns: Vec<String> = E::Column::iter().map(|c| column_name(&c)).collect();
    let returning = columns
        .iter()
        .map(|c| format!("{}.{}", quoted(&table), quoted(c)))
        .chain(columns.iter().map(|c| {
            format!(
                "{}.{} AS {}",
                quoted(OLD),
                quoted(c),
                quoted(&format!("{OLD_PREFIX}{c}"))
            )
        }))
        .collect::<Vec<_>>()
        .join(", ");
    let built = DatabaseBackend::Postgres.build(&update);
    let txid = match with_txid {
        true => format!(", txid_current() AS {}", quoted(TXID_COLUMN)),
        false => String::new(),
    };
    Statement {
        sql: format!("{} RETURNING {returning}{txid}", built.sql),
        ..built
    }
}

/// `txid_current() AS flash_txid`, to return after a row's columns.
pub(crate) fn txid_expr() -> SimpleExpr {
    Expr::cust(format!("txid_current() AS {}", quoted(TXID_COLUMN)))
}
