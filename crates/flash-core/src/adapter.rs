//! The adapter API: what an ORM adapter or a cache-server backend crate uses
//! to plug into flash, and an application using flash does not need.
//!
//! Everything here is also exported at its usual path (the crate root, or
//! [`crate::backend`]); this module gathers it in one place, the way a
//! driver author reads it.
//!
//! # Writing a backend (memcached, Redis, ...)
//!
//! Implement [`Backend`]: bytes in, bytes out, with `add` and
//! `compare_and_swap` atomic on their key (leases rely on them). Report
//! failures as [`BackendError`]: the read path falls back to the database on
//! any of them, and [`ResilientBackend`] decides from the variant whether a
//! failure says something about the server's health. Keys are at most
//! [`MAX_KEY_LEN`] bytes of printable ASCII. Leave per-operation deadlines and
//! the circuit breaker to [`ResilientBackend`]; a backend only bounds its own
//! connection attempts.
//!
//! # Writing an ORM adapter
//!
//! * Declare models and their primary keys with [`FlashBuilder::model`]
//!   ([`ModelInfo`]) and cached foreign keys with
//!   [`FlashBuilder::cached_foreign_key`] ([`CachedForeignKey`]).
//! * Give every class a fallback that reads the database: a [`Fetch`]
//!   (a closure fits through [`FetchFn`]); database errors become
//!   [`SourceError`].
//! * Persist dynamic versions with a [`VersionStore`], set through
//!   [`FlashBuilder::version_store`].
//! * After a write, present the old and new rows as [`Record`]s. Either call
//!   [`Flash::invalidate_rows`], or, to make invalidation durable, compute
//!   the keys with [`Flash::keys_for_rows`], keep the [`KeySet`] (it is
//!   serialisable) and apply it with [`Flash::apply_invalidation`].
//!   [`Flash::retry_pending`] re-applies what the cache refused at once,
//!   instead of waiting for the handle's retry task.
//! * Find the class behind a typed query with [`Flash::simple_class`], and the
//!   declaration with [`Flash::model`] and [`Flash::cached_foreign_keys`].
//!
//! [`Flash`]: crate::Flash
//! [`Flash::invalidate_rows`]: crate::Flash::invalidate_rows
//! [`Flash::keys_for_rows`]: crate::Flash::keys_for_rows
//! [`Flash::apply_invalidation`]: crate::Flash::apply_invalidation
//! [`Flash::retry_pending`]: crate::Flash::retry_pending
//! [`Flash::simple_class`]: crate::Flash::simple_class
//! [`Flash::model`]: crate::Flash::model
//! [`Flash::cached_foreign_keys`]: crate::Flash::cached_foreign_keys
//! [`FlashBuilder::model`]: crate::FlashBuilder::model
//! [`FlashBuilder::cached_foreign_key`]: crate::FlashBuilder::cached_foreign_key
//! [`FlashBuilder::version_store`]: crate::FlashBuilder::version_store

pub use crate::backend::resilient::ResilientBackend;
pub use crate::backend::Backend;
pub use crate::class::{Fetch, FetchFn};
pub use crate::error::{BackendError, SourceError};
pub use crate::handle::KeySet;
pub use crate::key::MAX_KEY_LEN;
pub use crate::registry::{CachedForeignKey, ModelInfo};
pub use crate::value::{FieldValue, Record};
pub use crate::versions::VersionStore;
