//! # flash-core
//!
//! The core of flash, a model cache framework: cache classes and their
//! declaration, keys, the value codec, the read path (the decision table with
//! leases), invalidation, batches and dynamic versions. It knows no ORM and no
//! cache server: those plug in through [`Backend`] and the fetchers of each class.

pub mod backend;
pub mod codec;
pub mod conformance;
pub mod error;
pub mod key;
#[cfg(feature = "memory")]
pub mod memory;
pub mod resilient;
pub mod value;

pub use backend::Backend;
pub use error::{BackendError, Error, RegistryError, SourceError};
#[cfg(feature = "memory")]
pub use memory::MemoryBackend;
pub use value::{FieldValue, Record};
