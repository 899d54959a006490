//! # flash-core
//!
//! The core of flash, a model cache framework: cache classes and their
//! declaration, keys, the value codec, the read path (the decision table with
//! leases), invalidation, batches and dynamic versions. It knows no ORM and no
//! cache server: those plug in through [`Backend`], the [`Fetch`] of each class
//! and a [`VersionStore`].
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

pub mod backend;
pub mod batch;
pub mod class;
pub mod codec;
pub mod conformance;
pub mod error;
mod flash;
mod invalidate;
pub mod key;
#[cfg(feature = "memory")]
pub mod memory;
mod read;
pub mod registry;
pub mod resilient;
mod scope;
pub mod stats;
pub mod value;
pub mod versions;
mod wait;

pub use backend::Backend;
pub use batch::{Batch, BatchMode, BatchResults, Handle, Query};
pub use class::{durations, CacheKind, CacheValue, Class, ClassSpec, Fetch, FetchFn, Invalidation};
pub use error::{BackendError, Error, RegistryError, SourceError};
pub use flash::{Flash, FlashBuilder, Settings};
pub use invalidate::KeySet;
#[cfg(feature = "memory")]
pub use memory::MemoryBackend;
pub use read::{decide, Action};
pub use registry::{CachedForeignKey, ModelInfo};
pub use scope::Scope;
pub use stats::{FlashEvent, Outcome, Stats, StatsSnapshot};
pub use value::{FieldValue, Record};
pub use versions::{NoVersionStore, VersionStore};
