//! Dynamic versions as the handle sees them: the process-local view, the store
//! behind it, and the task that reloads the view every
//! [`Settings::version_refresh`](super::Settings::version_refresh).

use super::task::TaskGuard;
use super::Flash;
use crate::error::{Error, RegistryError, SourceError};
use crate::stats::FlashEvent;
use crate::versions::{LocalVersions, VersionStore};
use std::sync::Arc;
use std::time::Duration;

/// The versions of one handle, and the reload task that keeps them fresh.
pub(super) struct Versions {
    /// Shared with the reload task, which writes into it.
    shared: Arc<Shared>,
    /// The reload task; it stops when the handle (and so this) is dropped.
    _reload: TaskGuard,
}

struct Shared {
    /// Where versions persist; `Arc<dyn>`: the adapter's table, picked at build.
    store: Arc<dyn VersionStore>,
    /// What lookups compare against; read on every lookup, so no round trip.
    local: LocalVersions,
}

impl Shared {
    async fn reload(&self) -> Result<(), SourceError> {
        let v = self.store.load().await?;
        self.local.merge(v);
        Ok(())
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
