//! Configuration by URL from the environment: `DATABASE_URL` and
//! `FLASH_CACHE_URL`. Unset means SQLite in memory and the in-process cache.
//! A cache URL's query sets the client's timeout, retries, breaker and pool
//! ([`CacheOptions`], keys and defaults in [`QUERY_KEYS`]).

use flash_core::resilient::ResilientBackend;
use flash_core::{Backend, BackendError, MemoryBackend};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::sync::Arc;
use std::time::Duration;

pub use crate::options::{CacheOptions, OptionError, QUERY_KEYS};

/// The database used when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite::memory:";
/// The cache used when `FLASH_CACHE_URL` is unset.
pub const DEFAULT_CACHE_URL: &str = "memory://";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot connect to the database {url}: {source}")]
    Database { url: String, source: DbErr },
    #[error(transparent)]
    Cache(#[from] BackendError),
    #[error("cache URL scheme of {0:?} is not supported by this build (enable the feature)")]
    UnsupportedCache(String),
    #[error(transparent)]
    CacheOption(#[from] OptionError),
}

/// `DATABASE_URL`, or the in-memory SQLite default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into())
}

/// `FLASH_CACHE_URL`, or the in-process default.
pub fn cache_url() -> String {
    std::env::var("FLASH_CACHE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_CACHE_URL.into())
}

/// Connects to a database by URL. An in-memory SQLite database lives in one
/// connection (each connection would otherwise see its own empty database).
pub async fn connect_database(url: &str) -> Result<DatabaseConnection, ConfigError> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false);
    if url.starts_with("sqlite") && url.contains(":memory:") {
        opts.max_connections(1).min_connections(1);
    } else {
        opts.max_connections(16);
    }
    sqlite_for_concurrency(&mut opts, url);
    Database::connect(opts)
        .await
        .map_err(|source| ConfigError::Database {
            url: url.into(),
            source,
        })
}

/// Per-operation timeout of a cache server by default: an unreachable cache
/// costs at most this, then the circuit breaker stops paying it.
pub const CACHE_OP_TIMEOUT: Duration = Duration::from_millis(50);

/// The cache backend for a URL: `memory://`, `redis://`, `rediss://`,
/// `redis+cluster://`, `memcache://`, with the default [`CacheOptions`] and
/// those of the URL's query. Server backends are wrapped in a timeout and a
/// circuit breaker, so an outage degrades to the database.
pub async fn cache_backend(url: &str) -> Result<Arc<dyn Backend>, ConfigError> {
    cache_backend_with(url, CacheOptions::default()).await
}

/// [`cache_backend`] starting from `options` (the URL's query, when it sets
/// something, wins).
pub async fn cache_backend_with(
    url: &str,
    options: CacheOptions,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let scheme = url.split("://").next().unwrap_or_default().to_owned();
    let (o, url) = options.apply_url(url)?;
    let url = url.as_str();
    if o.pool_size.is_some() && scheme != "memcache" {
        // Redis clients multiplex one connection; the in-process store has none.
        return Err(OptionError::NotApplicable {
            key: "pool_size".into(),
            scheme,
        }
        .into());
    }
    fn wrap<B: Backend>(b: B, o: &CacheOptions) -> Arc<dyn Backend> {
        Arc::new(
            ResilientBackend::builder(b)
                .timeout(o.timeout)
                .retries(o.retries)
                .failure_threshold(o.breaker_failures)
                .cool_down(o.breaker_cool_down)
                .build(),
        )
    }
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryBackend::default())),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(wrap(flash_redis::RedisBackend::connect_lazy(url)?, &o)),
        #[cfg(feature = "redis")]
        "redis+cluster" => Ok(wrap(
            flash_redis::RedisClusterBackend::connect(url).await?,
            &o,
        )),
        #[cfg(feature = "memcache")]
        "memcache" => {
            // Lazy: a service must start while its cache is down.
            let b = match o.pool_size {
                Some(n) => flash_memcache::MemcacheBackend::with_pool_size(url, n)?,
                None => flash_memcache::MemcacheBackend::new(url)?,
            };
            Ok(wrap(b, &o))
        }
        _ => Err(ConfigError::UnsupportedCache(url.into())),
    }
}

/// Connects to a namespace of its own inside `url`'s database: a PostgreSQL
/// schema or a MySQL database named `ns` (created when `create`), or, for
/// SQLite, a file of that name in the temp directory. Tests, the stress test
/// and the benchmarks use it to stay out of each other's tables.
pub async fn connect_namespace(
    url: &str,
    ns: &str,
    create: bool,
    max_connections: u32,
) -> Result<DatabaseConnection, ConfigError> {
    let db_err = |source| ConfigError::Database {
        url: url.into(),
        source,
    };
    let mut opts = if url.starts_with("postgres") {
        if create {
            let admin = Database::connect(url).await.map_err(db_err)?;
            sea_orm::ConnectionTrait::execute_unprepared(
                &admin,
                &format!("CREATE SCHEMA IF NOT EXISTS {ns}"),
            )
            .await
            .map_err(db_err)?;
        }
        let mut o = ConnectOptions::new(url.to_owned());
        o.set_schema_search_path(ns.to_owned());
        o
    } else if url.starts_with("mysql") {
        if create {
            let admin = Database::connect(url).await.map_err(db_err)?;
            sea_orm::ConnectionTrait::execute_unprepared(
                &admin,
                &format!("CREATE DATABASE IF NOT EXISTS {ns}"),
            )
            .await
            .map_err(db_err)?;
        }
        let base = url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or_else(|| url.to_owned());
        ConnectOptions::new(format!("{base}/{ns}"))
    } else {
        let path = std::env::temp_dir().join(format!("{ns}.db"));
        ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()))
    };
    opts.sqlx_logging(false).max_connections(max_connections);
    sqlite_for_concurrency(&mut opts, url);
    Database::connect(opts).await.map_err(db_err)
}

/// SQLite files shared by tasks (or processes): WAL, so that readers do not
/// block the writer, and a busy timeout, so that writers wait for each other
/// instead of failing with "database is locked".
fn sqlite_for_concurrency(opts: &mut ConnectOptions, url: &str) {
    if url.starts_with("sqlite") && !url.contains(":memory:") {
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
        });
    }
}

/// Drops a namespace made by [`connect_namespace`].
pub async fn drop_namespace(url: &str, ns: &str) -> Result<(), ConfigError> {
    let db_err = |source| ConfigError::Database {
        url: url.into(),
        source,
    };
    if url.starts_with("postgres") || url.starts_with("mysql") {
        let admin = Database::connect(url).await.map_err(db_err)?;
        let sql = if url.starts_with("postgres") {
            format!("DROP SCHEMA IF EXISTS {ns} CASCADE")
        } else {
            format!("DROP DATABASE IF EXISTS {ns}")
        };
        sea_orm::ConnectionTrait::execute_unprepared(&admin, &sql)
            .await
            .map_err(db_err)?;
    } else {
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{ns}.db")));
    }
    Ok(())
}
