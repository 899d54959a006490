//! Dynamic versions as the handle sees them: the process-local view, the store
//! behind it, and the task that reloads the view every
//! [`Settings::version_refresh`](super::Settings::version_refresh).

use super::task::TaskGuard;
use super::Flash;
use crate::error::{Error, RegistryError, SourceError};
use crate::stats::FlashEvent;
use crate::versions::VersionStore;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The versions of one handle, and the reload task that keeps them fresh.
pub(super) struct Versions {
    /// Shared with the reload task, which writes into it.
    shared: Arc<Shared>,
    /// The reload task; it stops when the handle (and so this) is dropped.
    _reload: TaskGuard,
}

/// What the handle and its reload task share.
struct Shared {
    /// Where versions persist; `Arc<dyn>`: the adapter's table, picked at build.
    store: Arc<dyn VersionStore>,
    /// What lookups compare against; read on every lookup, so no round trip.
    local: LocalVersions,
}

impl Shared {
    /// Loads the store's versions into the local view.
    async fn reload(&self) -> Result<(), SourceError> {
        let v = self.store.load().await?;
        self.local.merge(v);
        Ok(())
    }
}

/// The process-local view of the versions.
#[derive(Debug, Default)]
struct LocalVersions {
    // std RwLock: held only for a map read or swap, never across an await.
    map: RwLock<HashMap<String, i64>>,
}

impl LocalVersions {
    /// The version of `class` (0 until one is loaded or bumped).
    fn get(&self, class: &str) -> i64 {
        self.map
            .read()
            .map(|m| m.get(class).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Replaces the map, never moving a version backwards (a reload that raced
    /// with a local bump must not undo it).
    fn merge(&self, loaded: HashMap<String, i64>) {
        if let Ok(mut m) = self.map.write() {
            for (k, v) in loaded {
                let e = m.entry(k).or_insert(v);
                if v > *e {
                    *e = v;
                }
            }
        }
    }

    /// Adds one to each of `classes`, in this process only.
    fn bump_local(&self, classes: &[String]) {
        if let Ok(mut m) = self.map.write() {
            for c in classes {
                *m.entry(c.clone()).or_insert(0) += 1;
            }
        }
    }
}

impl Versions {
    /// Loads the versions from `store` and starts reloading them `every` so often.
    pub(super) async fn start(
        store: Arc<dyn VersionStore>,
        every: Duration,
    ) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            store,
            local: LocalVersions::default(),
        });
        shared.reload().await?;
        // The task holds the shared state, not the handle: the guard, not a
        // weak reference, is what ends it.
        let task = shared.clone();
        let _reload = TaskGuard::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = task.reload().await {
                    tracing::warn!(error = %e, "could not reload dynamic versions");
                }
            }
        });
        Ok(Versions { shared, _reload })
    }

    /// The version of `class` as this process sees it.
    pub(super) fn get(&self, class: &str) -> i64 {
        self.shared.local.get(class)
    }
}

impl Flash {
    /// The current dynamic version of a class, as this process sees it.
    pub fn dynamic_version(&self, class: &str) -> i64 {
        self.versions().get(class)
    }

    /// Bumps the dynamic version of every class of `model`: every value cached
    /// before counts as stale. Returns the classes bumped.
    pub async fn bump_version_for_model(&self, model: &str) -> Result<Vec<String>, Error> {
        let classes: Vec<(String, String)> = self
            .classes_of_model(model)
            .map(|c| (c.kind.tag().to_owned(), c.name.clone()))
            .collect();
        if classes.is_empty() && !self.has_model(model) {
            return Err(RegistryError::UnknownModel(model.to_owned()).into());
        }
        let shared = &self.versions().shared;
        shared.store.bump(&classes).await?;
        let names: Vec<String> = classes.into_iter().map(|(_, n)| n).collect();
        let loaded = shared.store.load().await?;
        // A store that keeps nothing still bumps this process's view.
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !loaded.contains_key(*n))
            .cloned()
            .collect();
        shared.local.merge(loaded);
        shared.local.bump_local(&missing);
        self.emit(FlashEvent::VersionBump {
            model,
            classes: &names,
        });
        Ok(names)
    }

    /// Reloads dynamic versions at once, without waiting for the reload task.
    pub async fn reload_versions(&self) -> Result<(), Error> {
        Ok(self.versions().shared.reload().await?)
    }
}
