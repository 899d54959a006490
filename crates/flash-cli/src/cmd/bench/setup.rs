//! The targets of a run: databases (PostgreSQL in a schema of its own, SQLite
//! in a temporary file) seeded with the same rows, and caches (in-process,
//! Redis, memcached), each with a raw client beside flash's backend.

use super::stats::BenchResult;
use flash::config::{cache_backend, connect_database};
use flash_core::{Backend, MemoryBackend};
use flash_sea_orm::{FlashDb, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::{declare, schema};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait, Set};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a server may take to answer the reachability probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const DEFAULT_MEMCACHE_URL: &str = "memcache://127.0.0.1:11211";

/// The user whose participations make the 50-row filter list.
pub const LIST_USER: i32 = 1;
pub const LIST_ROWS: i32 = 50;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// PostgreSQL: `FLASH_BENCH_PG_URL`, else `DATABASE_URL` when it is a
/// PostgreSQL URL, else the local test server.
pub fn pg_url() -> String {
    env("FLASH_BENCH_PG_URL")
        .or_else(|| env("DATABASE_URL").filter(|u| u.starts_with("postgres")))
        .unwrap_or_else(|| DEFAULT_PG_URL.into())
}

/// A cache URL of `scheme`: `FLASH_BENCH_<NAME>_URL`, else `FLASH_CACHE_URL`
/// when it has that scheme, else the local default.
fn cache_url_for(var: &str, scheme: &str, default: &str) -> String {
    env(var)
        .or_else(|| env("FLASH_CACHE_URL").filter(|u| u.starts_with(&format!("{scheme}://"))))
        .unwrap_or_else(|| default.into())
}

enum Cleanup {
    PgSchema {
        admin: DatabaseConnection,
        schema: String,
    },
    File(PathBuf),
}

/// A seeded database.
pub struct DbTarget {
    pub name: &'static str,
    /// Where it is, for the report (no credentials).
    pub location: String,
    pub db: DatabaseConnection,
    cleanup: Cleanup,
}

impl DbTarget {
    /// Drops what the run created (the PostgreSQL schema, the SQLite file).
    pub async fn cleanup(self) {
        let DbTarget { db, cleanup, .. } = self;
        let _ = db.close().await;
        match cleanup {
            Cleanup::PgSchema { admin, schema } => {
                let _ = admin
                    .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
                let _ = admin.close().await;
            }
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

/// PostgreSQL, in a schema named after this process (so that nothing collides
/// with the tests or another run). `Err` when unreachable.
pub async fn postgres() -> BenchResult<DbTarget> {
    let url = pg_url();
    let admin = tokio::time::timeout(PROBE_TIMEOUT, Database::connect(url.as_str()))
        .await
        .map_err(|_| format!("{url}: no answer within {PROBE_TIMEOUT:?}"))??;
    let schema = format!("flash_bench_{}", std::process::id());
    admin
        .execute_unprepared(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await?;
    let mut opts = ConnectOptions::new(url);
    opts.sqlx_logging(false)
        .max_connections(16)
        .set_schema_search_path(schema.clone());
    let db = Database::connect(opts).await?;
    Ok(DbTarget {
        name: "PostgreSQL",
        location: format!("{}, schema {schema}", redact(&pg_url())),
        db,
        cleanup: Cleanup::PgSchema { admin, schema },
    })
}

/// SQLite in a temporary file (an in-memory database would be one connection,
/// which would serialise the concurrent runs).
pub async fn sqlite() -> BenchResult<DbTarget> {
    let path = std::env::temp_dir().join(format!("flash_bench_{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let db = connect_database(&format!("sqlite://{}?mode=rwc", path.display())).await?;
    Ok(DbTarget {
        name: "SQLite",
        location: format!("file {}", path.display()),
        db,
        cleanup: Cleanup::File(path),
    })
}

/// Creates the demo tables and fills them: `events` events (ids 1..=events),
/// 200 users, [`LIST_ROWS`] participations of [`LIST_USER`] and a few of
/// every other user. Plain SeaORM bulk inserts: the caches start empty anyway.
pub async fn seed(db: &DatabaseConnection, events: i32) -> BenchResult<()> {
    schema::create_tables(db).await?;
    let users = (1..=200).map(|id| user::ActiveModel {
        id: Set(id),
        username: Set(format!("user{id}")),
        name: Set(format!("User number {id}")),
    });
    insert_chunked::<user::Entity, _>(db, users).await?;
    let evs = (1..=events).map(|id| event::ActiveModel {
        id: Set(id),
        slug: Set(format!("event-{id:06}")),
        title: Set(format!("The event number {id}, a fine evening")),
        city: Set(["Oslo", "Bergen", "Paris", "Lyon"][id as usize % 4].into()),
        // Other columns (the stress test's revision) keep their database defaults.
        ..Default::default()
    });
    insert_chunked::<event::Entity, _>(db, evs).await?;
    let mut parts = Vec::new();
    for e in 1..=LIST_ROWS {
        parts.push((LIST_USER, e));
    }
    for u in 2..=200 {
        for k in 0..5 {
            parts.push((u, (u * 7 + k * 13) % events + 1));
        }
    }
    let parts = parts
        .into_iter()
        .enumerate()
        .map(|(i, (u, e))| participation::ActiveModel {
            id: Set(i as i32 + 1),
            user_id: Set(u),
            event_id: Set(e),
            role: Set("guest".into()),
        });
    insert_chunked::<participation::Entity, _>(db, parts).await?;
    Ok(())
}

async fn insert_chunked<E, A>(
    db: &DatabaseConnection,
    rows: impl Iterator<Item = A>,
) -> BenchResult<()>
where
    E: EntityTrait,
    A: sea_orm::ActiveModelTrait<Entity = E>,
{
    let rows: Vec<A> = rows.collect();
    // Well under the bind-parameter limits of both databases.
    for chunk in rows.chunks(500) {
        E::insert_many(chunk.to_vec()).exec(db).await?;
    }
    Ok(())
}

/// A cache: flash's backend as an application gets it from
/// [`cache_backend`] (for servers: wrapped in `ResilientBackend`) and the
/// same client without flash or the wrapper, for the floor.
pub struct CacheTarget {
    pub name: &'static str,
    pub url: String,
    pub flash_backend: Arc<dyn Backend>,
    pub raw: Arc<dyn Backend>,
    /// What the raw client is, for the tables.
    pub raw_label: &'static str,
    /// `host:port` of the server, for the hand-written wire client.
    pub wire_addr: Option<String>,
}

impl CacheTarget {
    pub fn memory() -> (Self, MemoryBackend) {
        let mem = MemoryBackend::default();
        let target = CacheTarget {
            name: "in-process",
            url: "memory://".into(),
            flash_backend: Arc::new(mem.clone()),
            raw: Arc::new(mem.clone()),
            raw_label: "MemoryBackend::get_many (moka get, value shared: no copy)",
            wire_addr: None,
        };
        (target, mem)
    }

    pub async fn redis() -> BenchResult<Self> {
        let url = cache_url_for("FLASH_BENCH_REDIS_URL", "redis", DEFAULT_REDIS_URL);
        let raw = tokio::time::timeout(PROBE_TIMEOUT, flash_redis::RedisBackend::connect(&url))
            .await
            .map_err(|_| format!("{url}: no answer"))??;
        Ok(CacheTarget {
            name: "Redis",
            flash_backend: cache_backend(&url).await?,
            raw: Arc::new(raw),
            raw_label: "RedisBackend::get_many (redis crate ConnectionManager)",
            wire_addr: host_port(&url, "redis://"),
            url,
        })
    }

    pub async fn memcache() -> BenchResult<Self> {
        let url = cache_url_for("FLASH_BENCH_MEMCACHE_URL", "memcache", DEFAULT_MEMCACHE_URL);
        let raw = tokio::time::timeout(
            PROBE_TIMEOUT,
            flash_memcache::MemcacheBackend::connect(&url),
        )
        .await
        .map_err(|_| format!("{url}: no answer"))??;
        // The wire floor talks to one server: only meaningful with one.
        let single = raw.server_addrs().len() == 1;
        Ok(CacheTarget {
            name: "memcached",
            flash_backend: cache_backend(&url).await?,
            wire_addr: single.then(|| raw.server_addrs()[0].to_owned()),
            raw: Arc::new(raw),
            raw_label: "MemcacheBackend::get_many (async-memcached, pooled)",
            url,
        })
    }
}

/// `url` without its password, if any.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// `host:port` of a single-server URL (no credentials: the wire client sends none).
fn host_port(url: &str, scheme: &str) -> Option<String> {
    let rest = url.strip_prefix(scheme)?;
    let hp = rest.split(['/', '?']).next()?;
    (!hp.is_empty() && !hp.contains(['@', ','])).then(|| hp.to_owned())
}

/// A [`FlashDb`] with the demo declarations on `db`, keys under `prefix`;
/// with `capture`, a drain runs (the triggers are installed by the caller:
/// see `capture::ddl`).
/// [`flash_db`] with a near tier in front of `backend`.
pub async fn flash_db_near(
    db: &DatabaseConnection,
    backend: Arc<dyn Backend>,
    prefix: String,
    near: flash_core::NearConfig,
    bus: Arc<dyn flash_core::NearBus>,
) -> BenchResult<FlashDb> {
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(backend).prefix(prefix).near_cache(near, bus))
        .capture(false)
        .install_capture(false);
    declare(&mut reg, Duration::from_secs(60))?;
    Ok(reg.build().await?)
}

pub async fn flash_db(
    db: &DatabaseConnection,
    backend: Arc<dyn Backend>,
    prefix: String,
    outbox: bool,
    capture: bool,
) -> BenchResult<FlashDb> {
    let mut reg = Registrar::new(db.clone())
        .configure(|b| b.backend_arc(backend).prefix(prefix))
        .capture(capture)
        .install_capture(false)
        .outbox(outbox);
    declare(&mut reg, Duration::from_secs(60))?;
    Ok(reg.build().await?)
}

/// A [`FlashDb`] like [`flash_db`] (no outbox, no capture), its builder
/// finished by `configure`.
pub async fn flash_db_with(
    db: &DatabaseConnection,
    backend: Arc<dyn Backend>,
    prefix: String,
    configure: impl FnOnce(flash_core::FlashBuilder) -> flash_core::FlashBuilder,
) -> BenchResult<FlashDb> {
    let mut reg = Registrar::new(db.clone())
        .configure(|b| configure(b.backend_arc(backend).prefix(prefix)))
        .capture(false)
        .install_capture(false)
        .outbox(false);
    declare(&mut reg, Duration::from_secs(60))?;
    Ok(reg.build().await?)
}
