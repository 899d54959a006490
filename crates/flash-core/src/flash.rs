//! The `Flash` handle: settings, the registry of classes, the backend and the
//! dynamic versions, built once at start-up.

use crate::backend::Backend;
use crate::class::{durations::CACHE_TIME_WEEK, CacheKind, CacheValue, Class, ClassSpec, Fetch};
use crate::error::{Error, RegistryError};
use crate::key::{build_key, is_plain_name, is_valid_prefix};
use crate::registry::{CachedForeignKey, ModelInfo, Registry};
use crate::stats::{FlashEvent, Observer, Stats};
use crate::value::FieldValue;
use crate::versions::{LocalVersions, NoVersionStore, VersionStore};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of a [`Flash`] handle; all have defaults (see [`FlashBuilder`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace prefix of every key.
    pub prefix: String,
    /// TTL of a class without its own timeout (one week).
    pub default_timeout: Duration,
    /// How long a write lock (allowtime / DYNAMIC refresh) is held at most.
    pub lock_timeout: Duration,
    /// How long a fill lease lives if its holder never comes back.
    pub lease_ttl: Duration,
    /// How long a lookup waits for another caller's fill before going to the
    /// database itself (without filling).
    pub lease_wait: Duration,
    /// TTL of the stale marker an UNSET invalidation writes.
    pub stale_ttl: Duration,
    /// How many times a write call retries an invalidation the cache refused
    /// (2 ms, then 8 ms, 32 ms... apart) before it leaves it to the retry
    /// task. A client reconnecting to a restarted server needs one retry.
    /// A timeout is not retried: a hung server costs a write one deadline.
    pub invalidation_retries: u32,
    /// How often dynamic versions are reloaded from the store (the bound on how
    /// long another process's bump takes to be seen).
    pub version_refresh: Duration,
    /// Database alias per model (part of the key); `"default"` otherwise.
    pub db_alias: HashMap<String, String>,
    /// Test-only: a pause between reading the database and filling the cache,
    /// to widen the race window in stress tests (zero in production).
    #[doc(hidden)]
    pub fill_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prefix: "flash:".into(),
            default_timeout: CACHE_TIME_WEEK,
            lock_timeout: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(10),
            lease_wait: Duration::from_millis(500),
            stale_ttl: Duration::from_secs(60),
            invalidation_retries: 2,
            version_refresh: Duration::from_secs(5),
            db_alias: HashMap::new(),
            fill_delay: Duration::ZERO,
        }
    }
}

/// Configures and registers everything; [`FlashBuilder::build`] validates the
/// declaration and loads dynamic versions.
pub struct FlashBuilder {
    backend: Option<Arc<dyn Backend>>,
    settings: Settings,
    bypass: bool,
    registry: Registry,
    store: Arc<dyn VersionStore>,
    observer: Option<Observer>,
    leases: bool,
}

impl FlashBuilder {
    pub fn backend(mut self, b: impl Backend) -> Self {
        self.backend = Some(Arc::new(b));
        self
    }
    pub fn backend_arc(mut self, b: Arc<dyn Backend>) -> Self {
        self.backend = Some(b);
        self
    }
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.settings.prefix = p.into();
        self
    }
    pub fn default_timeout(mut self, t: Duration) -> Self {
        self.settings.default_timeout = t;
        self
    }
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.settings.lock_timeout = t;
        self
    }
    pub fn lease_wait(mut self, t: Duration) -> Self {
        self.settings.lease_wait = t;
        self
    }
    /// Retries of a refused invalidation within the write call (default 2).
    pub fn invalidation_retries(mut self, n: u32) -> Self {
        self.settings.invalidation_retries = n;
        self
    }
    pub fn version_refresh(mut self, t: Duration) -> Self {
        self.settings.version_refresh = t;
        self
    }
    /// Reads go to the database, nothing is written to the cache.
    pub fn bypass(mut self, on: bool) -> Self {
        self.bypass = on;
        self
    }
    pub fn db_alias(mut self, model: &str, alias: &str) -> Self {
        self.settings
            .db_alias
            .insert(model.to_owned(), alias.to_owned());
        self
    }
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
    /// Test-only switch: fill without leases (plain set), the way the original
    /// did. Exists so that the stress test can show it detects stale entries.
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

    /// Validates the declaration, loads dynamic versions and starts the task
    /// that keeps them fresh (it stops when the last handle is dropped).
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
            .unwrap_or_else(|| Arc::new(crate::memory::MemoryBackend::default()));
        #[cfg(not(feature = "memory"))]
        let backend = self.backend.ok_or_else(|| RegistryError::InvalidClass {
            class: "-".into(),
            reason: "no cache backend configured".into(),
        })?;
        let versions = LocalVersions::default();
        versions.merge(self.store.load().await?);
        let inner = Arc::new(Inner {
            backend,
            settings: self.settings,
            bypass: AtomicBool::new(self.bypass),
            registry: self.registry,
            store: self.store,
            versions,
            stats: Stats::default(),
            observer: self.observer,
            leases: self.leases,
            pending: std::sync::Mutex::new(crate::KeySet::default()),
            has_pending: AtomicBool::new(false),
            waits: crate::wait::Waits::default(),
            claims: crate::wait::Claims::default(),
            refresher: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let every = inner.settings.version_refresh;
        // The task holds only a weak reference, so dropping every Flash handle
        // ends it; Inner's Drop aborts it right away.
        // One task does both background jobs: re-applying refused invalidations
        // (every 200 ms) and reloading dynamic versions (every `every`).
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(200).min(every);
            let mut since_reload = Duration::ZERO;
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                let flash = Flash { inner };
                if let Err(e) = flash.retry_pending().await {
                    tracing::debug!(error = %e, "pending invalidations still refused");
                }
                since_reload += tick;
                if since_reload >= every {
                    since_reload = Duration::ZERO;
                    match flash.inner.store.load().await {
                        Ok(v) => flash.inner.versions.merge(v),
                        Err(e) => tracing::warn!(error = %e, "could not reload dynamic versions"),
                    }
                }
            }
        });
        if let Ok(mut slot) = inner.refresher.lock() {
            *slot = Some(task);
        }
        Ok(Flash { inner })
    }
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) settings: Settings,
    pub(crate) bypass: AtomicBool,
    pub(crate) registry: Registry,
    pub(crate) store: Arc<dyn VersionStore>,
    pub(crate) versions: LocalVersions,
    pub(crate) stats: Stats,
    pub(crate) observer: Option<Observer>,
    pub(crate) leases: bool,
    /// Invalidations the cache refused, re-applied by the background task.
    /// std Mutex: held for set operations only, never across an await.
    pub(crate) pending: std::sync::Mutex<crate::KeySet>,
    /// Fast path for lookups: is anything pending at all?
    pub(crate) has_pending: AtomicBool,
    /// Shared polls of lease waiters (one per key at a time).
    pub(crate) waits: crate::wait::Waits,
    /// Keys whose lease a task of this process is taking or holds.
    pub(crate) claims: crate::wait::Claims,
    refresher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.refresher.lock() {
            if let Some(t) = slot.take() {
                t.abort();
            }
        }
    }
}

/// The handle services keep: lookups, invalidation, versions. Cloning is cheap
/// (one reference count) and all clones share the backend and the registry.
#[derive(Clone)]
pub struct Flash {
    pub(crate) inner: Arc<Inner>,
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
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }
    pub fn is_bypassed(&self) -> bool {
        self.inner.bypass.load(Ordering::Relaxed)
    }
    /// Turns the bypass switch on or off at run time.
    pub fn set_bypass(&self, on: bool) {
        self.inner.bypass.store(on, Ordering::Relaxed);
    }
    pub fn classes(&self) -> impl Iterator<Item = &ClassSpec> {
        self.inner.registry.classes.iter().map(|c| &**c)
    }
    pub fn model(&self, name: &str) -> Option<&ModelInfo> {
        self.inner.registry.models.get(name)
    }
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
        handle
            .downcast_ref::<Class<T>>()
            .cloned()
            .ok_or_else(not_registered)
    }

    /// The key of a lookup. `values` are in any order of `fields` of the
    /// class's key fields; see [`Self::key_of`] for values in key order.
    pub fn key_of<T>(&self, class: &Class<T>, values: &[FieldValue]) -> Result<String, Error> {
        let spec = &class.spec;
        if values.len() != spec.key_fields.len() {
            return Err(Error::KeyArity {
                class: spec.name.clone(),
                expected: spec.key_fields.len(),
                got: values.len(),
            });
        }
        Ok(self.key_for_spec(spec, values))
    }

    pub(crate) fn key_for_spec(&self, spec: &ClassSpec, values: &[FieldValue]) -> String {
        let s = &self.inner.settings;
        let alias = s
            .db_alias
            .get(&spec.model)
            .map(String::as_str)
            .unwrap_or("default");
        build_key(
            &s.prefix,
            spec.kind.tag(),
            alias,
            &spec.name,
            values,
            spec.version,
        )
    }

    pub(crate) fn emit(&self, e: FlashEvent<'_>) {
        if let Some(o) = &self.inner.observer {
            o(&e);
        }
    }

    /// The current dynamic version of a class, as this process sees it.
    pub fn dynamic_version(&self, class: &str) -> i64 {
        self.inner.versions.get(class)
    }

    /// Bumps the dynamic version of every class of `model`: every value cached
    /// before counts as stale. Returns the classes bumped.
    pub async fn bump_version_for_model(&self, model: &str) -> Result<Vec<String>, Error> {
        let classes: Vec<(String, String)> = self
            .inner
            .registry
            .classes_of_model(model)
            .map(|c| (c.kind.tag().to_owned(), c.name.clone()))
            .collect();
        if classes.is_empty() && !self.inner.registry.models.contains_key(model) {
            return Err(RegistryError::UnknownModel(model.to_owned()).into());
        }
        self.inner.store.bump(&classes).await?;
        let names: Vec<String> = classes.into_iter().map(|(_, n)| n).collect();
        let loaded = self.inner.store.load().await?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !loaded.contains_key(*n))
            .cloned()
            .collect();
        self.inner.versions.merge(loaded);
        self.inner.versions.bump_local(&missing);
        self.emit(FlashEvent::VersionBump {
            model,
            classes: &names,
        });
        Ok(names)
    }

    /// Reloads dynamic versions now (instead of waiting for the refresh task).
    pub async fn reload_versions(&self) -> Result<(), Error> {
        let v = self.inner.store.load().await?;
        self.inner.versions.merge(v);
        Ok(())
    }
}
