//! # flash-core
//!
//! The core of flash, a model cache framework: cache classes and their
//! declaration, keys, the value codec, the read path (the decision table with
//! leases), invalidation, batches and dynamic versions. It knows no ORM and no
//! cache server: those plug in through [`Backend`], the [`Fetch`] of each class
//! and a [`VersionStore`] (see [`adapter`]).
//!
//! ```
//! use flash_core::{Flash, ClassSpec, FetchFn, FieldValue, SourceError};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flash_core::Error> {
//! let mut b = Flash::builder();
//! // "the title of an event by slug", fetched from wherever the data lives
//! let title = b.register::<Option<String>>(
//!     ClassSpec::instance("TitleOnSlug", "event", &["slug"]),
//!     FetchFn(|key: Vec<FieldValue>| Box::pin(async move {
//!         Ok::<_, SourceError>(Some(format!("title of {}", key[0])))
//!     }) as _),
//! )?;
//! let flash = b.build().await?;
//! let (v, outcome) = flash.lookup(&title, &["rock".into()]).await?;
//! assert_eq!(outcome, flash_core::Outcome::Miss);
//! let (w, outcome) = flash.lookup(&title, &["rock".into()]).await?;
//! assert_eq!((v, outcome), (w, flash_core::Outcome::Hit));
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * [`Flash`] (`handle/`): the handle a service keeps, its builder and
//!   settings; in its folder, one file per part of its work: the read path,
//!   invalidation, the invalidation retry, dynamic versions, batches
//!   ([`batch`]), request scopes ([`Scope`]) and shared waits.
//! * `decide`: the read decision table ([`decide`], [`Action`]), pure and
//!   tested row by row.
//! * [`class`]: cache classes: what is cached, by which key fields, for how
//!   long, invalidated how.
//! * [`registry`]: the set of classes and models, checked at build.
//! * [`key`]: cache keys, valid for every server and injective.
//! * [`naming`]: class names derived from declarations, injective too.
//! * [`codec`]: what a cache entry holds (value, lease, stale marker) and its
//!   bytes.
//! * [`seal`]: the tag that binds a shared cache's values to their key (a
//!   MAC with a secret), and the layout check.
//! * [`value`]: key-field values and rows, independent of any ORM.
//! * [`versions`]: dynamic versions and where they persist.
//! * [`backend`]: the [`Backend`] trait; the in-process backend
//!   ([`memory`], feature `memory`) and the timeout and circuit-breaker
//!   wrapper ([`resilient`]).
//! * [`stats`]: counters, metrics and the event hook.
//! * [`error`]: the error types.
//! * [`adapter`]: the API for ORM adapters and backend crates, in one place.

#![warn(missing_docs)]

pub mod adapter;
pub mod backend;
pub mod class;
pub mod codec;
mod decide;
#[allow(missing_docs)] // Each variant is described by its #[error] message.
pub mod error;
mod handle;
pub mod key;
pub mod naming;
pub mod near;
pub mod registry;
pub mod seal;
pub mod stats;
pub mod value;
pub mod versions;

#[cfg(feature = "memory")]
pub use backend::memory;
pub use backend::resilient;
pub use backend::{Backend, Bytes, Lease, LeaseRead};
pub use class::{durations, CacheKind, CacheValue, Class, ClassSpec, Fetch, FetchFn, Invalidation};
pub use decide::{decide, Action};
pub use error::{BackendError, Error, RegistryError, SourceError};
pub use handle::batch::{self, Batch, BatchMode, BatchResults, Handle, Query};
pub use handle::scope::Scope;
pub use handle::{Flash, FlashBuilder, KeySet, PageReads, Settings};
#[cfg(feature = "memory")]
pub use memory::MemoryBackend;
pub use near::{NearBus, NearConfig, NearStats};
pub use registry::{CachedForeignKey, ModelInfo};
pub use stats::{FlashEvent, Outcome, Stats, StatsSnapshot};
pub use value::{FieldValue, Record};
pub use versions::{NoVersionStore, VersionStore};
