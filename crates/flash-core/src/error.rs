//! Typed errors. Cache failures never reach a caller of a lookup (they degrade to
//! the database); what does reach them is listed here.

use std::time::Duration;

/// A failure of a cache server or client. Lookups swallow these (and count them);
/// they surface only from the backend trait itself and from the conformance tests.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("cache backend unreachable: {0}")]
    Unreachable(String),
    #[error("cache backend timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache circuit breaker is open")]
    CircuitOpen,
    #[error("value of {size} bytes is over the backend's item limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("cache backend protocol error: {0}")]
    Protocol(String),
    #[error("bad cache URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
}

impl BackendError {
    /// The error's kind, for metrics labels and log summaries (never the
    /// message: it may name a key).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Unreachable(_) => "unreachable",
            BackendError::Timeout(_) => "timeout",
            BackendError::CircuitOpen => "circuit-open",
            BackendError::TooLarge { .. } => "too-large",
            BackendError::Protocol(_) => "protocol",
            BackendError::BadUrl { .. } => "bad-url",
        }
    }
}

/// A failure of the data source behind a cache class (the database).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SourceError(Box::new(e))
    }
    pub fn msg(m: impl Into<String>) -> Self {
        SourceError(m.into().into())
    }
}

/// A mistake in the declaration of cache classes, reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("cache class name {name:?} is declared twice: by the {first} and by the {second} (class names are part of the key; name one with `named`)")]
    DuplicateClass {
        name: String,
        first: String,
        second: String,
    },
    #[error("model {model:?} declares the {kind} key tuple {fields:?} twice")]
    DuplicateKeyTuple {
        model: String,
        kind: &'static str,
        fields: Vec<String>,
    },
    #[error("cached foreign key {model}.{field} points at {target:?}, which has no simple instance cache on its primary key {pk:?}")]
    CachedForeignKeyWithoutTarget {
        model: String,
        field: String,
        target: String,
        pk: Vec<String>,
    },
    #[error("model {0:?} is not registered")]
    UnknownModel(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cache class {class:?}: {reason}")]
    InvalidClass { class: String, reason: String },
}

/// What a lookup or a write through flash can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `get` found no row (the absence itself may have come from the cache).
    #[error("{model} matching {key} does not exist")]
    NotFound { model: String, key: String },
    /// No cache class is declared for this model and field set.
    #[error("no {kind} cache registered on {model} for fields {fields:?}")]
    CacheNotRegistered {
        model: String,
        kind: &'static str,
        fields: Vec<String>,
    },
    /// The lookup gave the wrong number of key values for its class.
    #[error("cache class {class} takes {expected} key values, got {got}")]
    KeyArity {
        class: String,
        expected: usize,
        got: usize,
    },
    /// The database failed.
    #[error("data source error: {0}")]
    Source(#[from] SourceError),
    /// A cache-only batch (or lookup) found nothing under this key.
    #[error("not in cache: {0}")]
    NotCached(String),
    /// A batch result was taken twice through the same handle.
    #[error("this batch result was already taken")]
    ResultTaken,
    /// A batch handle was used with the results of a batch it does not belong to
    /// (its value type differs from the query's at that position).
    #[error("batch handle does not belong to this batch")]
    ForeignHandle,
    /// One request scope was asked for one key with two different value types
    /// (two classes whose keys collide; a declaration mistake).
    #[error("key {0} was loaded with two different value types in one request")]
    KeyTypeConflict(String),
    /// The request scope's dispatcher task is gone (its runtime shut down).
    #[error("the request scope's dispatcher stopped")]
    ScopeStopped,
    /// A write on a transaction handle after the transaction was committed or
    /// rolled back.
    #[error("the transaction already finished")]
    TransactionFinished,
    /// Declaration error (only from start-up paths).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A backend error, only where the caller asked for the cache explicitly.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A value that could not be encoded for the cache.
    #[error("could not encode the value for the cache: {0}")]
    Encode(String),
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
