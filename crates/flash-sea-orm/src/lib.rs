//! # flash-sea-orm
//!
//! flash on SeaORM: declare per entity which field tuples rows are looked up
//! by ([`CacheMeta`]), register them on a [`Registrar`], and use the
//! [`FlashDb`] handle for cached lookups and for writes that invalidate
//! exactly the keys they affect.
//!
//! ## Layout
//!
//! - `meta`: [`CacheMeta`], what one entity declares (instance, queryset and
//!   existence caches, cached foreign keys, settings).
//! - `registrar`: [`Registrar`], start-up: the declarations of every entity
//!   and [`CustomCache`], checked and built into a [`FlashDb`].
//! - `db`: the [`FlashDb`] handle, split by concern:
//!   - `db/mod.rs`: the handle itself, its construction and accessors;
//!   - `db/lookups.rs`: cached reads, [`ModelCache`];
//!   - `db/related.rs`: lookups of related classes, [`RelatedCache`];
//!   - `db/select.rs`: `select_related` lookups, [`SelectRelated`];
//!   - `db/writes.rs`: writes that invalidate, [`Changes`];
//!   - `db/statements.rs`: the statements those writes run besides
//!     SeaORM's own (old rows returned, transaction ids, locked reads);
//!   - `db/transaction.rs`: [`FlashTxn`], writes invalidated after a commit.
//! - `related`: related classes: relation paths, their fetch and reverse
//!   queries, and the index of which tables' writes invalidate them.
//! - `request`: [`Request`], lookups of one request batched and memoised.
//! - `lookup`: [`Lookup`] and [`by`], the key-field values of a lookup.
//! - `outbox`: the durable invalidation outbox, its table ([`OUTBOX_TABLE`])
//!   and background drain; `outbox/sql.rs` holds its SQL text.
//! - `versions`: [`SqlVersionStore`], dynamic versions in [`VERSIONS_TABLE`].
//! - [`catalog`]: the classes of every model, in `flash_cache_classes`, for
//!   operators' tools.
//! - `dialect`: every difference between PostgreSQL, MySQL and SQLite (one
//!   file per database); no other module matches on the database.
//! - `convert`: between SeaORM values and flash's field values.
//! - `near_bus`: [`PgBus`], the near tier's invalidation channel on
//!   PostgreSQL `LISTEN`/`NOTIFY` (for memcached, which has no pub/sub).

pub mod capture;
pub mod catalog;
mod convert;
mod db;
mod dialect;
mod lookup;
mod meta;
mod near_bus;
mod outbox;
mod registrar;
mod related;
mod request;
mod versions;

pub use convert::{model_name, to_field, to_value, ModelRecord};
pub use db::{Changes, FlashDb, FlashTxn, ModelCache, RelatedCache, SelectRelated};
pub use flash_core::{self as core, durations, Error, FieldValue, Invalidation, Outcome};
pub use lookup::{by, by_object, Lookup};
pub use meta::CacheMeta;
pub use near_bus::PgBus;
pub use outbox::{OutboxSettings, OUTBOX_TABLE};
pub use registrar::{CustomCache, Registrar};
pub use request::{Request, RequestCache};
pub use versions::{SqlVersionStore, VERSIONS_TABLE};
