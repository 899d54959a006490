//! # flash-sea-orm
//!
//! flash on SeaORM: declare per entity which field tuples rows are looked up
//! by ([`CacheMeta`]), register them on a [`Registrar`], and use the
//! [`FlashDb`] handle for cached lookups and for writes that invalidate
//! exactly the keys they affect.

pub mod capture;
mod convert;
mod db;
mod lookup;
mod meta;
mod outbox;
mod registrar;
mod request;
mod versions;

pub use convert::{model_name, to_field, to_value, ModelRecord};
pub use db::{Changes, FlashDb, FlashTxn, ModelCache};
pub use flash_core::{self as core, durations, Error, FieldValue, Invalidation, Outcome};
pub use lookup::{by, Lookup};
pub use meta::CacheMeta;
pub use outbox::{OutboxSettings, OUTBOX_TABLE};
pub use registrar::{CustomCache, Registrar};
pub use request::{Request, RequestCache};
pub use versions::{SqlVersionStore, VERSIONS_TABLE};
