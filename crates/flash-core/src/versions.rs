//! Dynamic versions: one integer per cache class, kept in the database, bumped
//! per model (after a schema change) so that every old value counts as stale.
//!
//! Reads consult a process-local map; a background task reloads it from the
//! store every `refresh` interval, which bounds how long another process's bump
//! takes to be seen here.

use crate::error::SourceError;
use async_trait::async_trait;
use std::collections::HashMap;

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
