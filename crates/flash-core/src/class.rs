//! Cache classes: what is cached, under which key fields, for how long, and how
//! it is invalidated.

use crate::error::SourceError;
use crate::value::FieldValue;
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Named durations for timeouts.
pub mod durations {
    use std::time::Duration;
    /// One minute.
    pub const CACHE_TIME_MINUTE: Duration = Duration::from_secs(60);
    /// One hour.
    pub const CACHE_TIME_HOUR: Duration = Duration::from_secs(60 * 60);
    /// One day.
    pub const CACHE_TIME_DAY: Duration = Duration::from_secs(24 * 60 * 60);
    /// One week (the default timeout).
    pub const CACHE_TIME_WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);
}

/// How writes to the model reach a class's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Invalidation {
    /// Writes never touch the keys; only the timeout (or allowtime) refreshes them.
    Off,
    /// Writes overwrite the keys of old and new key-field values with a stale marker.
    #[default]
    Unset,
    /// Writes set a separate `__stale` marker and leave the value; the next read
    /// refreshes (one caller, under a write lock).
    Dynamic,
}

/// A row (or no row) found by key fields, or a derived value of a set of rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// One row (or none) found by its key fields.
    Instance,
    /// The rows matching the key fields, or a value derived from them.
    Queryset,
    /// Whether any row matches.
    Exists,
}

impl CacheKind {
    /// The cache-type segment of the key.
    pub fn tag(self) -> &'static str {
        match self {
            CacheKind::Instance => "i",
            CacheKind::Queryset => "q",
            CacheKind::Exists => "e",
        }
    }
    /// The kind's name, for messages and metrics.
    pub fn label(self) -> &'static str {
        match self {
            CacheKind::Instance => "instance",
            CacheKind::Queryset => "queryset",
            CacheKind::Exists => "exists",
        }
    }
}

/// The declaration of one cache class.
#[derive(Clone, Debug)]
pub struct ClassSpec {
    /// Unique among all classes: it is part of the key.
    pub name: String,
    /// What the class caches.
    pub kind: CacheKind,
    /// The model (table) whose writes invalidate this class.
    pub model: String,
    /// The model's fields the lookup is keyed by, in key order.
    pub key_fields: Vec<String>,
    /// TTL of a filled value; `None` takes the default from the settings.
    pub timeout: Option<Duration>,
    /// Static version, part of the key: bump it when the fetch logic changes.
    pub version: u32,
    /// How writes to the model reach the class's keys.
    pub invalidation: Invalidation,
    /// How long a value may be served without checking whether it is stale.
    pub allowtime: Option<Duration>,
    /// A plain "row by fields" / "rows by fields" class, reachable through the
    /// model's manager; user-defined fetches are not simple.
    pub simple: bool,
    /// Compress payloads above this many bytes (none when `None`).
    pub compress_above: Option<usize>,
    /// A fingerprint of the layout of the class's value (for a model's
    /// classes: its column names and types, set by the ORM adapter at
    /// start-up). Stored in every value and checked on every read: a value
    /// filled by code with another layout is a miss. 0 for custom classes
    /// unless they set one (bump it, or the static version, when the value
    /// type changes).
    pub layout: u64,
    /// What [`Self::layout`](field@Self::layout) was derived from, when set by
    /// [`Self::layout_of`] (for a model's classes: `column:Type:nullable` per
    /// column, in field order). Recorded in the catalog so that an
    /// operator's tool can decode values without the application's types.
    pub layout_parts: Vec<String>,
    /// This class's lookup counters (metrics facade).
    #[doc(hidden)]
    pub counters: crate::stats::ClassCounters,
}

impl ClassSpec {
    fn new(kind: CacheKind, name: &str, model: &str, key_fields: &[&str]) -> Self {
        ClassSpec {
            name: name.to_owned(),
            kind,
            model: model.to_owned(),
            key_fields: key_fields.iter().map(|s| (*s).to_owned()).collect(),
            timeout: None,
            version: 0,
            invalidation: Invalidation::Unset,
            allowtime: None,
            simple: false,
            compress_above: None,
            layout: 0,
            layout_parts: Vec::new(),
            counters: Default::default(),
        }
    }
    /// An instance cache: one row (or none) of `model` found by `key_fields`.
    pub fn instance(name: &str, model: &str, key_fields: &[&str]) -> Self {
        Self::new(CacheKind::Instance, name, model, key_fields)
    }
    /// A queryset cache: the rows of `model` matching `key_fields`, or any
    /// value derived from them.
    pub fn queryset(name: &str, model: &str, key_fields: &[&str]) -> Self {
        Self::new(CacheKind::Queryset, name, model, key_fields)
    }
    /// An existence cache: whether any row of `model` matches `key_fields`.
    pub fn exists(name: &str, model: &str, key_fields: &[&str]) -> Self {
        Self::new(CacheKind::Exists, name, model, key_fields)
    }
    /// See [`Self::timeout`](field@Self::timeout).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// See [`Self::version`](field@Self::version).
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }
    /// See [`Self::invalidation`](field@Self::invalidation).
    pub fn invalidation(mut self, i: Invalidation) -> Self {
        self.invalidation = i;
        self
    }
    /// See [`Self::allowtime`](field@Self::allowtime).
    pub fn allowtime(mut self, t: Duration) -> Self {
        self.allowtime = Some(t);
        self
    }
    /// See [`Self::simple`](field@Self::simple).
    pub fn simple(mut self, simple: bool) -> Self {
        self.simple = simple;
        self
    }
    /// The declaration in words, for error messages: "instance cache on event
    /// by (slug)", "custom queryset cache on event by (city)".
    pub fn describe(&self) -> String {
        format!(
            "{}{} cache on {} by ({})",
            if self.simple { "" } else { "custom " },
            self.kind.label(),
            self.model,
            self.key_fields.join(", ")
        )
    }
    /// See [`Self::layout`](field@Self::layout).
    pub fn layout(mut self, fingerprint: u64) -> Self {
        self.layout = fingerprint;
        self
    }
    /// The layout described by `parts`: its fingerprint
    /// ([`crate::seal::fingerprint`]) and the parts themselves.
    pub fn layout_of(mut self, parts: Vec<String>) -> Self {
        self.layout = crate::seal::fingerprint(&parts);
        self.layout_parts = parts;
        self
    }
    /// See [`Self::compress_above`](field@Self::compress_above).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }
}

/// The fallback of a class: computes its value from the data source.
#[async_trait]
pub trait Fetch<T>: Send + Sync {
    /// The value for `key` (the key-field values, in key order).
    async fn fetch(&self, key: &[FieldValue]) -> Result<T, SourceError>;
}

/// A [`Fetch`] made from a closure returning a boxed future.
pub struct FetchFn<F>(pub F);

#[async_trait]
impl<T, F> Fetch<T> for FetchFn<F>
where
    T: Send + 'static,
    F: Fn(Vec<FieldValue>) -> BoxFuture<'static, Result<T, SourceError>> + Send + Sync,
{
    async fn fetch(&self, key: &[FieldValue]) -> Result<T, SourceError> {
        (self.0)(key.to_vec()).await
    }
}

/// What a class's result must be: cloneable, serde, thread-safe.
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CacheValue for T {}

/// A registered cache class: its declaration and its fallback. Cloning is cheap
/// (two reference counts).
pub struct Class<T> {
    pub(crate) spec: Arc<ClassSpec>,
    pub(crate) fetch: Arc<dyn Fetch<T>>,
}

impl<T> Clone for Class<T> {
    fn clone(&self) -> Self {
        Class {
            spec: self.spec.clone(),
            fetch: self.fetch.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Class<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Class").field("spec", &self.spec).finish()
    }
}

impl<T> Class<T> {
    /// The class's declaration.
    pub fn spec(&self) -> &ClassSpec {
        &self.spec
    }
    /// The class's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}
