//! The SQL text of the outbox table, in one place: its creation, the insert of
//! a row, the scan of the drain, the deletion of applied rows, and the
//! PostgreSQL statement that updates a row and records it at once. What
//! differs per database (types, placeholders) comes from [`crate::dialect`].

use super::OUTBOX_TABLE;
use crate::dialect;
use sea_orm::DatabaseBackend;

/// The columns an outbox row is inserted with, in bind order.
const COLUMNS: &str = "model, keyset, created_ms";

pub(super) fn create_table(backend: DatabaseBackend) -> String {
    let (id, text) = dialect::id_and_text_types(backend);
    format!(
        "CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (id {id}, model VARCHAR(64) NOT NULL, keyset {text} NOT NULL, created_ms BIGINT NOT NULL)"
    )
}

/// The insert of one row (model, keyset, created_ms), for
/// [`dialect::insert_returning_id`].
pub(super) fn insert(backend: DatabaseBackend) -> String {
    format!(
        "INSERT INTO {OUTBOX_TABLE} ({COLUMNS}) VALUES ({})",
        dialect::placeholders(backend, 1, 3)
    )
}

/// The rows created at or before a time (bound), oldest first, at most 1000.
pub(super) fn select_due(backend: DatabaseBackend) -> String {
    format!(
        "SELECT id, model, keyset FROM {OUTBOX_TABLE} WHERE created_ms <= {} ORDER BY id LIMIT 1000",
        dialect::placeholder(backend, 1)
    )
}

pub(super) fn delete_ids(ids: &[i64]) -> String {
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    format!("DELETE FROM {OUTBOX_TABLE} WHERE id IN ({list})")
}

/// `update` (an `UPDATE ... RETURNING` with `bound` values) and the insert of
/// its outbox row, whose three values are bound after the update's, as one
/// statement; it returns the updated row and the outbox row's id as
/// `flash_outbox_id`. Only where [`dialect::inserts_from_update`].
pub(crate) fn update_and_record(backend: DatabaseBackend, update: &str, bound: usize) -> String {
    format!(
        "WITH flash_u AS ({update}), flash_o AS (INSERT INTO {OUTBOX_TABLE} ({COLUMNS}) \
         SELECT {} FROM flash_u RETURNING id) \
         SELECT flash_u.*, flash_o.id AS flash_outbox_id FROM flash_u, flash_o",
        dialect::placeholders(backend, bound + 1, 3)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_by_database() {
        assert_eq!(
            insert(DatabaseBackend::Postgres),
            "INSERT INTO flash_outbox (model, keyset, created_ms) VALUES ($1, $2, $3)"
        );
        assert_eq!(
            insert(DatabaseBackend::MySql),
            "INSERT INTO flash_outbox (model, keyset, created_ms) VALUES (?, ?, ?)"
        );
        assert_eq!(
            select_due(DatabaseBackend::Postgres),
            "SELECT id, model, keyset FROM flash_outbox WHERE created_ms <= $1 ORDER BY id LIMIT 1000"
        );
        assert_eq!(
            update_and_record(DatabaseBackend::Postgres, "UPDATE t SET a = $1 RETURNING *", 1),
            "WITH flash_u AS (UPDATE t SET a = $1 RETURNING *), flash_o AS (INSERT INTO flash_outbox \
             (model, keyset, created_ms) SELECT $2, $3, $4 FROM flash_u RETURNING id) \
             SELECT flash_u.*, flash_o.id AS flash_outbox_id FROM flash_u, flash_o"
        );
        assert_eq!(
            delete_ids(&[3, 5]),
            "DELETE FROM flash_outbox WHERE id IN (3,5)"
        );
    }
}
