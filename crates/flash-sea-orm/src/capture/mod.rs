//! Capture of every write, on the database side.
//!
//! flash invalidates the keys a write affects when the write goes through
//! [`FlashDb`](crate::FlashDb). Writes that do not (raw SQL, plain SeaORM,
//! other services, `ON DELETE CASCADE`) are captured here instead: triggers on
//! every cached table record, in the writing transaction, the old and the new
//! values of the *captured columns* (the union of the key columns of all cache
//! classes of the table, primary key included) of every inserted, updated or
//! deleted row into the table [`CHANGES_TABLE`]. A drain turns those values
//! into cache keys and invalidates them.
//!
//! Everything here is plain SQL text: [`changes_table_ddl`], [`ddl`] and
//! [`drop_ddl`] are pure, so a team can paste their output into a migration
//! file; [`install`] applies them to a database, replacing the triggers of a
//! table whose [`CaptureSpec`] changed and dropping those of tables that are
//! no longer cached.
//!
//! # The changes table
//!
//! | column       | meaning |
//! |--------------|---------|
//! | `id`         | primary key, auto-increment (PostgreSQL `BIGSERIAL`, MySQL `BIGINT AUTO_INCREMENT`, SQLite `INTEGER PRIMARY KEY AUTOINCREMENT`). Ids are taken at insert time, **not** at commit time: a drain must never use "the highest id seen" as a high-water mark (a transaction that commits later may hold a lower id). Treat the table as a queue (see *Draining*). |
//! | `table_name` | the table written (unqualified name). |
//! | `old_keys`   | the captured values of the old rows (deleted rows, rows before an update), in [`CaptureSpec::columns`] order: on PostgreSQL column by column, `{"c": [[a1, a2, …], [b1, b2, …]]}` (one `array_agg` per column: cheaper to build for a statement of many rows); on MySQL row by row, a JSON array with one array per row, `[[a1, b1], [a2, b2]]` (PostgreSQL's and SQLite's form before format 4, still read); on SQLite, whose row triggers record one row each, that row's array, `[a1, b1]`. `NULL` for an insert, and for an update that changed no captured value (the old keys are then those of `new_keys`: see below). PostgreSQL `JSON`, MySQL `LONGTEXT`, SQLite `TEXT`. |
//! | `new_keys`   | likewise for the new rows (inserted rows, rows after an update); `NULL` for a delete. |
//! | `created_at` | the database's clock when the change was recorded (PostgreSQL: `now()`, the start of the writing transaction, µs; MySQL: `CURRENT_TIMESTAMP(6)`, UTC-stored `TIMESTAMP(6)`; SQLite: `julianday('now')`, a `REAL` Julian day number, ms; a table created by flash before format 4 holds UTC text `YYYY-MM-DD HH:MM:SS.SSS`, which formatting cost a row trigger as much as the rest of its record). |
//!
//! Those are all the columns the triggers and a drain use. (A table created by
//! an earlier flash may also have `claimed_by` and `claimed_at` columns, of a
//! former claim protocol: nothing reads or writes them any more; drop them at
//! leisure.)
//!
//! On PostgreSQL one row is recorded per *statement* (statement-level
//! triggers with transition tables), so `old_keys`/`new_keys` may hold many
//! rows; their order is unspecified and the two arrays are **not** aligned
//! row by row. On MySQL and SQLite one row is recorded per written row (the
//! arrays hold one element each), except a MySQL cascade capture (see
//! *Cascades*): one row per deleted parent and cascaded-to table, holding all
//! the rows the delete cascades to there. On every backend the drain invalidates the
//! keys of `old_keys ∪ new_keys`. An update records `new_keys` always and
//! `old_keys` only when some captured value changed (PostgreSQL: when the
//! statement's old rows differ from its new ones as a whole, then all old
//! rows; MySQL/SQLite: per row, compared byte for byte, so a change of case
//! under a case-insensitive collation counts). An update with `old_keys`
//! `NULL` changed no key: its old keys are its new keys. So a missing
//! `old_keys` never hides an old key.
//!
//! # Cascades
//!
//! Rows deleted or updated by a foreign key action (`ON DELETE CASCADE`,
//! `SET NULL`, `ON UPDATE CASCADE`) fire the child's triggers on PostgreSQL
//! and SQLite (with `PRAGMA foreign_keys = ON`, sqlx's default), so they are
//! captured like any write. MySQL/MariaDB fire no trigger for them: there
//! [`install`] reads the `ON DELETE CASCADE` and `ON DELETE SET NULL` foreign
//! keys of the database and adds `BEFORE DELETE` triggers
//! (`flash_capture_<top>_c<n>_<version>`) on every table whose deletes cascade
//! (up to 4 keys deep, the last hop possibly setting NULL) to a captured
//! table, cached or not, recording the rows about to be deleted as
//! `old_keys`, or, for rows about to be set NULL, their keys before as
//! `old_keys` and after as `new_keys`. Likewise for `ON UPDATE CASCADE` /
//! `SET NULL` of a captured table's foreign key (one hop): a `BEFORE UPDATE`
//! trigger on the parent records, when a referenced column changes, the
//! child rows referencing the old values, before and after the action.
//! Re-run [`install`] after a migration that changes foreign keys.
//!
//! PostgreSQL also calls `pg_notify('flash_changes', '<txid> <schema>.<table>')` per
//! capturing statement, delivered at commit, so a drain may `LISTEN` instead of
//! polling (notifications are best effort: poll as well).
//!
//! # A write's own record (PostgreSQL)
//!
//! An update through `FlashDb::update` records its change itself, in its
//! statement (`own_record_sql`): one row's array per updated row, `[a, b]`,
//! in `new_keys` (and `old_keys` for a key change), with the transaction's
//! id. Its `WHERE` sets the transaction-local setting `flash.own` to the
//! table's name, and the statement triggers' `WHEN (pg_trigger_depth() > 0
//! OR current_setting('flash.own', true) IS DISTINCT FROM '<table>')` skips
//! their function for that statement only: the statement is autocommit, and
//! statements run inside it by triggers or foreign key actions are at depth
//! 1 or more. It sends no notification; its writer announces it only when
//! its own invalidation fails or lags (`DrainSettings::announce_after`).
//!
//! # Draining
//!
//! A drain claims rows with row locks, not with columns: in **one
//! transaction** it
//!
//! 1. `SELECT id, table_name, old_keys, new_keys FROM flash_changes ORDER BY id
//!    LIMIT n FOR UPDATE SKIP LOCKED` (PostgreSQL 9.5+, MySQL 8.0+, MariaDB
//!    10.6+): rows another drain holds are skipped, not waited for;
//! 2. invalidates the keys of those rows;
//! 3. `DELETE FROM flash_changes WHERE id IN (...)`;
//! 4. `COMMIT`.
//!
//! A drain that dies before its commit rolls back: its rows are unlocked and
//! the next drain takes them, so nothing is stranded (at worst keys are
//! invalidated twice). `ORDER BY id LIMIT n` walks the primary key: no other
//! index is needed. On MySQL/MariaDB run that transaction at `READ COMMITTED`:
//! under the default `REPEATABLE READ` a locking read also takes next-key
//! (gap) locks, and the one on the end of the index would hold back every
//! trigger's `INSERT` until the drain commits. SQLite has no row locks (and
//! no `FOR UPDATE`): a drain does the same in a transaction that takes the
//! write lock first (`BEGIN IMMEDIATE`), so drains take turns.
//!
//! # Recorded values
//!
//! Each captured value is the database's own JSON rendering of the column
//! (PostgreSQL `json_build_array` of `array_agg`, MySQL `JSON_ARRAY`, SQLite `json_array`),
//! except binary values on MySQL and SQLite, recorded as hex text (JSON holds
//! no bytes); SQL `NULL` is JSON `null` everywhere. A drain decodes
//! them per backend:
//!
//! | type | PostgreSQL | MySQL / MariaDB | SQLite |
//! |------|------------|-----------------|--------|
//! | integers, decimals, floats | JSON number (`bigint` in full; `float` `NaN`/`Infinity` as strings) | JSON number (`BIGINT UNSIGNED` up to 2⁶⁴−1: more than an `i64`) | JSON number |
//! | booleans | `true` / `false` | `1` / `0` (`BOOLEAN` is `TINYINT(1)`) | `1` / `0` |
//! | text | JSON string | JSON string | JSON string |
//! | UUID | `"0a1b2c3d-4e5f-…"` (`uuid`, lowercase, hyphenated) | binary column: see below | BLOB: see below |
//! | binary | `bytea`: its text form `\x0a1b…` (`\x`, then lowercase hex), so the JSON string `"\\x0a1b…"` | `BINARY`/`VARBINARY`/`BLOB`/`BIT` columns: uppercase hex, no prefix (`HEX()`: [`install`] finds them; see [`CaptureSpec::with_hex`]) | any BLOB value: uppercase hex, no prefix (`hex()`) |
//! | date-times | `timestamp`: `"2024-01-02T03:04:05.123456"` (ISO 8601, `T`, no zone; `timestamptz` adds the offset of the *writing* session's `TimeZone`) | `DATETIME(6)`: `"2024-01-02 03:04:05.123456"` (space; `TIMESTAMP` in the writing session's `time_zone`) | the stored value as is (sqlx writes text `"2024-01-02 03:04:05.123456"`) |

mod ddl;
mod drain;
mod install;
mod mysql;
mod own;
mod postgres;
mod spec;
mod sqlite;
mod values;

pub use drain::DrainSettings;
pub(crate) use drain::{connection as drain_connection, Drain};
#[doc(hidden)]
pub use postgres::own_marker;
pub(crate) use postgres::own_record_sql;
pub(crate) use values::Kind;
pub(crate) use values::TableDecoder;

pub use ddl::{changes_table_ddl, ddl, drop_ddl};
pub use install::{install, install_keeping_others, installed, CaptureReport, InstalledTrigger};
pub use spec::{CaptureSpec, CascadeCapture, ForeignKey};

use ddl::{dq, lit};

/// The table the triggers write to.
pub const CHANGES_TABLE: &str = "flash_changes";
/// The `LISTEN` channel notified on PostgreSQL (payload: the writing
/// transaction's id, `txid_current()`, a space, and `<schema>.<table>`).
pub const NOTIFY_CHANNEL: &str = "flash_changes";
/// Every trigger (and PostgreSQL function) installed here starts with this.
pub const TRIGGER_PREFIX: &str = "flash_capture_";
/// Version of the generated trigger SQL and of the recorded values; part of
/// every trigger's version, so a new format replaces the triggers installed by
/// an older flash. Bump it with any change of the generated trigger text or of
/// what the triggers record. The changes table is not covered (a trigger names
/// the columns it fills; [`install`] creates the table only when it is absent).
pub const FORMAT_VERSION: u32 = 5;
/// The name of the lock serializing [`install`]s (MySQL/MariaDB:
/// `GET_LOCK('flash_capture.<database>')`).
pub const INSTALL_LOCK: &str = "flash_capture";
/// PostgreSQL: the `pg_advisory_xact_lock` key serializing [`install`]s
/// within a database: the 64-bit FNV-1a hash of [`INSTALL_LOCK`],
/// `-5654463861724154320` (what `pg_locks` shows as `classid` `2978434835`,
/// `objid` `2393241136`, `objsubid` `1`).
pub const PG_INSTALL_LOCK_KEY: i64 = spec::fnv1a(INSTALL_LOCK.as_bytes()) as i64;
