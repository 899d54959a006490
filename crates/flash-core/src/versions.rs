//! Dynamic versions: one integer per cache class, kept in the database, bumped
//! per model (after a schema change) so that every old value counts as stale.
//!
//! Reads consult a process-local map; a background task reloads it from the
//! store every `refresh` interval, which bounds how long another process's bump
//! takes to be seen here.

use crate::error::SourceError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::RwLock;

/// Where dynamic versions are persisted (a table the ORM adapter creates).
#[async_trait]
pub trait VersionStore: Send + Sync + 'static {
    /// All versions, by class name.
    async fn load(&self) -> Result<HashMap<String, i64>, SourceError>;
    /// Increments the version of each named class (creating rows at 1).
    async fn bump(&self, classes: &[(String, String)]) -> Result<(), SourceError>;
}

/// A store that keeps nothing: versions stay 0 (for setups without a database
/// table; bumps then only affect this process).
#[derive(Debug, Default)]
pub struct NoVersionStore;

#[async_trait]
impl VersionStore for NoVersionStore {
    async fn load(&self) -> Result<HashMap<String, i64>, SourceError> {
        Ok(HashMap::new())
    }
    async fn bump(&self, _: &[(String, String)]) -> Result<(), SourceError> {
        Ok(())
    }
}

/// The process-local view of the versions.
#[derive(Debug, Default)]
pub(crate) struct LocalVersions {
    // std RwLock: held only for a map read or swap, never across an await.
    map: RwLock<HashMap<String, i64>>,
}

impl LocalVersions {
    pub(crate) fn get(&self, class: &str) -> i64 {
        self.map
            .read()
            .map(|m| m.get(class).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Replaces the map, never moving a version backwards (a reload that raced
    /// with a local bump must not undo it).
    pub(crate) fn merge(&self, loaded: HashMap<String, i64>) {
        if let Ok(mut m) = self.map.write() {
            for (k, v) in loaded {
                let e = m.entry(k).or_insert(v);
                if v > *e {
                    *e = v;
                }
            }
        }
    }

    pub(crate) fn bump_local(&self, classes: &[String]) {
        if let Ok(mut m) = self.map.write() {
            for c in classes {
                *m.entry(c.clone()).or_insert(0) += 1;
            }
        }
    }
}
