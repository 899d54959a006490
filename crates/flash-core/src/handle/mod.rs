//! The [`Flash`] handle: what a service keeps to look values up and to
//! invalidate them. It is built once at start-up by a [`FlashBuilder`] and
//! holds the [`Settings`], the registry of classes, the backend and the
//! dynamic versions.
//!
//! The handle's work is split by what it does, one file each:
//!
//! * `read`: one lookup, following the decision table, and the fill protocol
//!   with leases;
//! * `leased`: the miss whose first read took the lease (one request), its
//!   background fill, and the near tier's hits and fills;
//! * `wait`: lookups of one key in this process sharing their reads;
//! * `pending`: fills running in the background, and waiting for them;
//! * `invalidate`: from changed rows to the keys they affect, and the markers
//!   written over them;
//! * `invalidator`: invalidations the cache refused, kept and retried in the
//!   background;
//! * `versions`: dynamic versions, and the task that reloads them;
//! * `settings`: the handle's [`Settings`] and their defaults;
//! * `store`: what a fill stores (encode, seal, compare-and-swap);
//! * `batch` and `scope`: many lookups in one round trip, and request scopes
//!   on top of batches;
//! * `page`: the hits of a page read without waiting, under one timer;
//! * `task`: the guard that ties a background task to its owner's lifetime.
//!
//! The submodules reach the shared state only through the methods of
//! [`Flash`] defined here, never through [`Inner`]'s fields.

pub mod batch;
mod invalidate;
mod invalidator;
mod leased;
mod now;
mod opened;
mod page;
mod pending;
mod read;
pub(crate) mod scope;
mod settings;
mod store;
pub(crate) mod task;
mod versions;
mod wait;

pub use invalidate::KeySet;
pub use page::PageReads;
pub use settings::Settings;

use crate::backend::Backend;
use crate::class::{CacheKind, CacheValue, Class, ClassSpec, Fetch, Invalidation};
use crate::error::{Error, RegistryError};
use crate::key::{build_key, build_key_in, is_plain_name, is_valid_prefix, stale_key};
use crate::near::{Near, NearBus, NearConfig, NearStats, NearTier};
use crate::registry::{CachedForeignKey, ModelInfo, Registry};
use crate::seal::Sealer;
use crate::stats::{FlashEvent, Observer, Stats};
use crate::value::FieldValue;
use crate::versions::{NoVersionStore, VersionStore};
use invalidator::Invalidator;
use pending::Pending;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use versions::Versions;
use wait::{Claims, Waits};

/// Configures and registers everything; [`FlashBuilder::build`] validates the
/// declaration and loads dynamic versions. Start one with [`Flash::builder`].
pub struct FlashBuilder {
    backend: Option<Arc<dyn Backend>>,
    settings: Settings,
    bypass: bool,
    registry: Registry,
    store: Arc<dyn VersionStore>,
    observer: Option<Observer>,
    leases: bool,
    secret: Option<Vec<u8>>,
    unsealed: bool,
    near: Option<(NearConfig, Arc<dyn NearBus>)>,
}

impl FlashBuilder {
    /// Puts a near tier (in-process, see [`crate::near`]) in front of the
    /// backend for the classes of `config`, kept coherent over `bus`.
    pub fn near_cache(mut self, config: NearConfig, bus: Arc<dyn NearBus>) -> Self {
        self.near = Some((config, bus));
        self
    }
    /// The cache backend (default: the in-process [`crate::MemoryBackend`]).
    pub fn backend(mut self, b: impl Backend) -> Self {
        self.backend = Some(Arc::new(b));
        self
    }
    /// The cache backend, already shared (a test can keep a reference to it).
    pub fn backend_arc(mut self, b: Arc<dyn Backend>) -> Self {
        self.backend = Some(b);
        self
    }
    /// See [`Settings::prefix`].
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.settings.prefix = p.into();
        self
    }
    /// See [`Settings::default_timeout`].
    pub fn default_timeout(mut self, t: Duration) -> Self {
        self.settings.default_timeout = t;
        self
    }
    /// See [`Settings::lock_timeout`].
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.settings.lock_timeout = t;
        self
    }
    /// See [`Settings::lease_wait`].
    pub fn lease_wait(mut self, t: Duration) -> Self {
        self.settings.lease_wait = t;
        self
    }
    /// Retries of a refused invalidation within the write call (default 2).
    pub fn invalidation_retries(mut self, n: u32) -> Self {
        self.settings.invalidation_retries = n;
        self
    }
    /// See [`Settings::version_refresh`].
    pub fn version_refresh(mut self, t: Duration) -> Self {
        self.settings.version_refresh = t;
        self
    }
    /// The secret of the values' tags: with it, a value in a shared cache
    /// is served only if its tag is a keyed MAC by the same secret, so a
    /// client that can write to the cache server but does not hold the
    /// secret cannot plant a row (its values are misses). Every process
    /// sharing the cache needs the same secret. See [`crate::seal`].
    pub fn entry_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = Some(secret.into());
        self
    }
    /// See [`Settings::time_lookups`].
    pub fn time_lookups(mut self, on: bool) -> Self {
        self.settings.time_lookups = on;
        self
    }
    /// See [`Settings::log_keys`].
    pub fn log_keys(mut self, on: bool) -> Self {
        self.settings.log_keys = on;
        self
    }
    /// See [`Settings::error_summary_every`].
    pub fn error_summary_every(mut self, every: Duration) -> Self {
        self.settings.error_summary_every = every;
        self
    }
    /// See [`Settings::background_fills`].
    pub fn background_fills(mut self, on: bool) -> Self {
        self.settings.background_fills = on;
        self
    }
    /// Reads go to the database, nothing is written to the cache.
    pub fn bypass(mut self, on: bool) -> Self {
        self.bypass = on;
        self
    }
    /// The database alias of `model`, part of its keys (see [`Settings::db_alias`]).
    pub fn db_alias(mut self, model: &str, alias: &str) -> Self {
        self.settings
            .db_alias
            .insert(model.to_owned(), alias.to_owned());
        self
    }
    /// Where dynamic versions are kept (default: nowhere, [`NoVersionStore`]).
    pub fn version_store(mut self, s: impl VersionStore) -> Self {
        self.store = Arc::new(s);
        self
    }
    /// Called for every lookup, invalidation and version bump.
    pub fn observer(mut self, f: impl Fn(&FlashEvent<'_>) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }
    /// Test-only: pause between the database read and the cache fill (widens
    /// the race window a stress test probes).
    #[doc(hidden)]
    pub fn unsafe_fill_delay(mut self, d: Duration) -> Self {
        self.settings.fill_delay = d;
        self
    }
    /// Bench-only switch: values in a shared cache carry no seal and none is
    /// checked (the format before seals, to measure what they cost).
    #[doc(hidden)]
    pub fn unsafe_unsealed_entries(mut self) -> Self {
        self.unsealed = true;
        self
    }
    /// Test-only switch: fill without leases (plain set). Exists so that the
    /// stress test can show it detects stale entries.
    #[doc(hidden)]
    pub fn unsafe_disable_leases(mut self) -> Self {
        self.leases = false;
        self
    }

    /// Declares a model (its primary key is needed for cached foreign keys).
    pub fn model(&mut self, info: ModelInfo) -> Result<(), RegistryError> {
        self.registry.add_model(info)
    }

    /// Registers a cache class with its fallback.
    pub fn register<T: CacheValue>(
        &mut self,
        spec: ClassSpec,
        fetch: impl Fetch<T> + 'static,
    ) -> Result<Class<T>, RegistryError> {
        let class = Class {
            spec: Arc::new(spec),
            fetch: Arc::new(fetch) as Arc<dyn Fetch<T>>,
        };
        self.registry
            .add_class(class.spec.clone(), Arc::new(class.clone()))?;
        Ok(class)
    }

    /// Declares that `model.field` is read through `target`'s primary-key cache;
    /// checked at [`Self::build`].
    pub fn cached_foreign_key(&mut self, model: &str, field: &str, target: &str) {
        self.registry.cached_fks.push(CachedForeignKey {
            model: model.into(),
            field: field.into(),
            target: target.into(),
        });
    }

    /// Validates the declaration, loads dynamic versions and starts the two
    /// background tasks: the version reload and the invalidation retry. Both
    /// stop when the last clone of the handle is dropped.
    pub async fn build(self) -> Result<Flash, Error> {
        if !is_valid_prefix(&self.settings.prefix) {
            return Err(RegistryError::InvalidName {
                name: self.settings.prefix,
                reason: "prefix must be [A-Za-z0-9_:.-], at most 64 bytes",
            }
            .into());
        }
        for alias in self.settings.db_alias.values() {
            if !is_plain_name(alias) {
                return Err(RegistryError::InvalidName {
                    name: alias.clone(),
                    reason: "database aliases are [A-Za-z0-9_]",
                }
                .into());
            }
        }
        self.registry.validate()?;
        #[cfg(feature = "memory")]
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(crate::backend::memory::MemoryBackend::default()));
        #[cfg(not(feature = "memory"))]
        let backend = self.backend.ok_or_else(|| RegistryError::InvalidClass {
            class: "-".into(),
            reason: "no cache backend configured".into(),
        })?;
        let refresh = self.settings.version_refresh;
        let stats = Stats::default();
        let sealer = (backend.shared() && !self.unsealed).then(|| match &self.secret {
            Some(s) => Sealer::with_secret(s),
            None => Sealer::unkeyed(),
        });
        stats.set_error_summary_every(self.settings.error_summary_every);
        let inner = Arc::new(Inner {
            backend,
            settings: self.settings,
            bypass: AtomicBool::new(self.bypass),
            registry: self.registry,
            versions: Versions::start(self.store, refresh).await?,
            stats,
            observer: self.observer,
            leases: self.leases,
            sealer,
            invalidator: Invalidator::default(),
            waits: Waits::default(),
            claims: Claims::default(),
            pending: Pending::default(),
            near: self.near.map(|(config, bus)| Near::start(config, bus)),
        });
        // The retry task needs the handle (it writes markers through it), so
        // it starts once the handle exists.
        inner
            .invalidator
            .start_retries(Arc::downgrade(&inner), refresh);
        Ok(Flash { inner })
    }
}

/// The state every clone of a [`Flash`] shares. Built once by
/// [`FlashBuilder::build`]; nothing in it is replaced afterwards, so only the
/// parts that change at run time have interior mutability.
pub(crate) struct Inner {
    /// Where values, leases and markers live. `Arc<dyn>`: chosen at run time
    /// from configuration, and shared with the reader tasks of `waits`, which
    /// may outlive the lookup that started them.
    backend: Arc<dyn Backend>,
    /// Read on every lookup, never written after build: no lock.
    settings: Settings,
    /// The run-time bypass switch. Atomic: flipped through any clone while
    /// lookups read it; `Relaxed`, as it orders nothing else.
    bypass: AtomicBool,
    /// The declared classes and models, immutable after build: no lock.
    registry: Registry,
    /// Dynamic versions: this process's view, the store behind it and the
    /// task that reloads it.
    versions: Versions,
    /// In-process counters; atomics, bumped from every task.
    stats: Stats,
    /// The user's event hook, if any. An `Arc` so that the builder's closure
    /// is shared, not cloned.
    observer: Option<Observer>,
    /// Fill under leases (always, except in the stress test that shows why).
    leases: bool,
    /// Seals values for a shared backend; `None` for the in-process store.
    sealer: Option<Sealer>,
    /// Invalidations the cache refused, kept until it takes them, and the
    /// task that retries them.
    invalidator: Invalidator,
    /// Shared reads: lookups of one key in this process wait on one read.
    waits: Waits,
    /// Keys whose lease a task of this process is taking or holds.
    claims: Claims,
    /// Fills running in the background.
    pending: Pending,
    /// The near tier, when configured.
    near: Option<Near>,
}

/// The handle services keep: lookups, invalidation, versions. Cloning is cheap
/// (one reference count) and all clones share the backend and the registry.
/// Dropping the last clone stops the handle's background tasks.
#[derive(Clone)]
pub struct Flash {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Flash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flash")
            .field("backend", &self.inner.backend.name())
            .field("classes", &self.inner.registry.classes.len())
            .finish()
    }
}

impl Flash {
    /// A builder; without [`FlashBuilder::backend`] the in-process backend is used
    /// (when the `memory` feature is on).
    pub fn builder() -> FlashBuilder {
        FlashBuilder {
            backend: None,
            settings: Settings::default(),
            bypass: false,
            registry: Registry::default(),
            store: Arc::new(NoVersionStore),
            observer: None,
            leases: true,
            secret: None,
            unsealed: false,
            near: None,
        }
    }

    /// The settings the handle was built with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
    /// The cache backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }
    /// The sealer of values, when the backend is shared.
    pub(crate) fn sealer(&self) -> Option<&Sealer> {
        self.inner.sealer.as_ref()
    }
    /// The in-process counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }
    /// Do lookups go straight to the database?
    pub fn is_bypassed(&self) -> bool {
        self.inner.bypass.load(Ordering::Relaxed)
    }
    /// Returns once every fill this handle started in the background has
    /// stored its value or given up (see [`Settings::background_fills`]).
    pub async fn settled(&self) {
        self.pending_fills().settled().await;
    }
    /// The near tier's counters, when there is one.
    pub fn near_stats(&self) -> Option<&NearStats> {
        self.near().map(|n| &n.stats)
    }
    /// Is the near tier's invalidation channel healthy (its entries served)?
    /// `false` without a near tier.
    pub fn near_healthy(&self) -> bool {
        self.near().is_some_and(|n| n.healthy())
    }
    /// Turns the bypass switch on or off at run time.
    pub fn set_bypass(&self, on: bool) {
        self.inner.bypass.store(on, Ordering::Relaxed);
    }
    /// Every registered class.
    pub fn classes(&self) -> impl Iterator<Item = &ClassSpec> {
        self.inner.registry.classes.iter().map(|c| &**c)
    }
    /// A declared model.
    pub fn model(&self, name: &str) -> Option<&ModelInfo> {
        self.inner.registry.models.get(name)
    }
    /// Every declared cached foreign key.
    pub fn cached_foreign_keys(&self) -> &[CachedForeignKey] {
        &self.inner.registry.cached_fks
    }

    /// The simple class of `model` keyed by exactly `fields` (any order).
    pub fn simple_class<T: CacheValue, S: AsRef<str>>(
        &self,
        model: &str,
        kind: CacheKind,
        fields: &[S],
    ) -> Result<Class<T>, Error> {
        self.simple_class_ref(model, kind, fields).cloned()
    }

    /// [`Self::simple_class`] borrowed from the registry: a lookup that
    /// finds its class for each call need not count references to it.
    pub fn simple_class_ref<T: CacheValue, S: AsRef<str>>(
        &self,
        model: &str,
        kind: CacheKind,
        fields: &[S],
    ) -> Result<&Class<T>, Error> {
        let not_registered = || Error::CacheNotRegistered {
            model: model.to_owned(),
            kind: kind.label(),
            fields: fields.iter().map(|f| f.as_ref().to_owned()).collect(),
        };
        let handle = self
            .inner
            .registry
            .simple_handle(model, kind, fields)
            .ok_or_else(not_registered)?;
        handle.downcast_ref::<Class<T>>().ok_or_else(not_registered)
    }

    /// The key of a lookup of `class` for `values`, in the order of the
    /// class's key fields.
    pub fn key_of<T>(&self, class: &Class<T>, values: &[FieldValue]) -> Result<String, Error> {
        self.spec_key(&class.spec, values)
    }

    /// The key of a lookup of the class declared by `spec` (for adapters
    /// that compute keys of classes whose value type they do not name).
    pub fn spec_key(&self, spec: &ClassSpec, values: &[FieldValue]) -> Result<String, Error> {
        if values.len() != spec.key_fields.len() {
            return Err(Error::KeyArity {
                class: spec.name.clone(),
                expected: spec.key_fields.len(),
                got: values.len(),
            });
        }
        Ok(self.key_for_spec(spec, values))
    }

    /// The key of `spec` for `values` (their number already checked).
    fn key_for_spec(&self, spec: &ClassSpec, values: &[FieldValue]) -> String {
        let s = &self.inner.settings;
        build_key(
            &s.prefix,
            spec.kind.tag(),
            self.db_alias(spec),
            &spec.name,
            values,
            spec.version,
        )
    }

    /// [`Self::spec_key`] built into `buf` (see [`crate::key::with_key_buf`]);
    /// `false` for a wrong number of values ([`Self::spec_key`] says why).
    pub(crate) fn key_in(&self, spec: &ClassSpec, values: &[FieldValue], buf: &mut String) -> bool {
        if values.len() != spec.key_fields.len() {
            return false;
        }
        build_key_in(
            buf,
            &self.inner.settings.prefix,
            spec.kind.tag(),
            self.db_alias(spec),
            &spec.name,
            values,
            spec.version,
        );
        true
    }

    /// The database alias in the keys of `spec`'s class.
    fn db_alias(&self, spec: &ClassSpec) -> &str {
        self.inner
            .settings
            .db_alias
            .get(&spec.model)
            .map(String::as_str)
            .unwrap_or("default")
    }

    /// Hands `e` to the user's observer, if there is one.
    fn emit(&self, e: FlashEvent<'_>) {
        if let Some(o) = &self.inner.observer {
            o(&e);
        }
    }

    /// The registry's classes of `model`.
    fn classes_of_model<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a ClassSpec> {
        self.inner.registry.classes_of_model(model).map(|c| &**c)
    }

    /// Is `model` declared (with or without classes)?
    fn has_model(&self, model: &str) -> bool {
        self.inner.registry.models.contains_key(model)
    }

    /// Do fills take a lease first?
    fn uses_leases(&self) -> bool {
        self.inner.leases
    }

    /// Where lookups of one key in this process share their reads.
    fn shared_reads(&self) -> &Waits {
        &self.inner.waits
    }

    /// Which keys a task of this process is filling.
    fn fill_claims(&self) -> &Claims {
        &self.inner.claims
    }

    /// The near tier of `spec`'s class, if it has one.
    fn near_for(&self, spec: &ClassSpec) -> Option<&NearTier> {
        let near = &self.inner.near.as_ref()?.tier;
        near.covers(
            &spec.name,
            spec.invalidation == crate::class::Invalidation::Dynamic,
        )
        .then_some(&**near)
    }

    /// The near tier, if there is one.
    fn near(&self) -> Option<&NearTier> {
        self.inner.near.as_ref().map(|n| &*n.tier)
    }

    /// Fills running in the background.
    fn pending_fills(&self) -> &Pending {
        &self.inner.pending
    }

    /// Refused invalidations, kept for the retry task.
    fn invalidator(&self) -> &Invalidator {
        &self.inner.invalidator
    }

    /// The dynamic versions and their store.
    fn versions(&self) -> &Versions {
        &self.inner.versions
    }
}

/// [`read_keys`] taking the key it was built with (no copy of it).
pub(crate) fn read_keys_owned(spec: &ClassSpec, key: String) -> Vec<String> {
    if spec.invalidation == Invalidation::Dynamic {
        let stale = stale_key(&key);
        vec![key, stale]
    } else {
        vec![key]
    }
}

/// The keys one lookup reads: the value, and for DYNAMIC its stale marker.
pub(crate) fn read_keys(spec: &ClassSpec, key: &str) -> Vec<String> {
    if spec.invalidation == Invalidation::Dynamic {
        vec![key.to_owned(), stale_key(key)]
    } else {
        vec![key.to_owned()]
    }
}
