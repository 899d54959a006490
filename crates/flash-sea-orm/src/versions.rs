//! Dynamic versions in a table flash creates: `flash_cache_versions`. Every
//! process that caches a database reads the versions a bump writes, so they
//! are kept in that database. The one statement that differs per database
//! (the upsert of a bump) comes from [`crate::dialect`].

use crate::dialect;
use async_trait::async_trait;
use flash_core::{SourceError, VersionStore};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement, Value};
use std::collections::HashMap;

/// The table of [`SqlVersionStore`].
pub const VERSIONS_TABLE: &str = "flash_cache_versions";

/// Keeps dynamic versions in `flash_cache_versions (cache_type, cache_name,
/// version)`, unique on the pair.
#[derive(Clone, Debug)]
pub struct SqlVersionStore {
    db: DatabaseConnection,
}

impl SqlVersionStore {
    /// A store on `db`; cloning it clones the connection pool's handle.
    pub fn new(db: DatabaseConnection) -> Self {
        SqlVersionStore { db }
    }

    /// Creates the table if it does not exist.
    pub async fn create_table(&self) -> Result<(), sea_orm::DbErr> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (cache_type VARCHAR(16) NOT NULL, cache_name VARCHAR(128) NOT NULL, \
             version BIGINT NOT NULL, PRIMARY KEY (cache_type, cache_name))"
        );
        self.db.execute_unprepared(&sql).await.map(|_| ())
    }
}

#[async_trait]
impl VersionStore for SqlVersionStore {
    async fn load(&self) -> Result<HashMap<String, i64>, SourceError> {
        let backend = self.db.get_database_backend();
        let stmt = Statement::from_string(
            backend,
            format!("SELECT cache_name, version FROM {VERSIONS_TABLE}"),
        );
        let rows = self.db.query_all(stmt).await.map_err(SourceError::new)?;
        let mut out = HashMap::new();
        for r in rows {
            let name: String = r.try_get("", "cache_name").map_err(SourceError::new)?;
            let v: i64 = r.try_get("", "version").map_err(SourceError::new)?;
            out.insert(name, v);
        }
        Ok(out)
    }

    async fn bump(&self, classes: &[(String, String)]) -> Result<(), SourceError> {
        let backend = self.db.get_database_backend();
        let sql = dialect::insert_or_increment(
            backend,
            VERSIONS_TABLE,
            &["cache_type", "cache_name"],
            "version",
        );
        for (ty, name) in classes {
            let stmt = Statement::from_sql_and_values(
                backend,
                &sql,
                [Value::from(ty.clone()), Value::from(name.clone())],
            );
            self.db.execute(stmt).await.map_err(SourceError::new)?;
        }
        Ok(())
    }
}
