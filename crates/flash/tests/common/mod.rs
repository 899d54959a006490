//! Test harness: a fresh database (SQLite file, or a PostgreSQL schema / MySQL
//! database of its own when `DATABASE_URL` says so), the cache of
//! `FLASH_CACHE_URL` under a unique prefix, and a counter of SQL statements.
#![allow(dead_code)]

use async_trait::async_trait;
use flash::config::{cache_backend, cache_url, database_url};
use flash::demo::entities::{event, participation, user};
use flash::demo::{declare, schema, DemoClasses};
use flash_core::{Backend, BackendError, ClassSpec, FieldValue, FlashBuilder};
use flash_sea_orm::{CustomCache, FlashDb, Registrar};
use sea_orm::{ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id(), rand::random::<u32>())
}

/// Connects to a database of this test's own, counting statements into `counter`.
pub async fn fresh_db(counter: Arc<AtomicU64>) -> DatabaseConnection {
    let url = database_url();
    let name = unique("flash_t");
    let mut opts = if url.starts_with("postgres") {
        let admin = Database::connect(&url).await.expect("PostgreSQL reachable (DATABASE_URL)");
        admin.execute_unprepared(&format!("CREATE SCHEMA {name}")).await.expect("create schema");
        let mut o = ConnectOptions::new(url.clone());
        o.set_schema_search_path(name);
        o
    } else if url.starts_with("mysql") {
        let admin = Database::connect(&url).await.expect("MySQL reachable (DATABASE_URL)");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let base = url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(url.clone());
        ConnectOptions::new(format!("{base}/{name}"))
    } else {
        let path = std::env::temp_dir().join(format!("{name}.db"));
        ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()))
    };
    opts.sqlx_logging(false).max_connections(8);
    let mut db = Database::connect(opts).await.expect("database reachable");
    db.set_metric_callback(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    db
}

/// The event title by slug, with a spec chosen by the test (OFF, DYNAMIC,
/// allowtime, timeouts...).
pub struct TitleBySlug(pub ClassSpec);

#[async_trait]
impl CustomCache for TitleBySlug {
    type Output = Option<String>;
    fn spec(&self) -> ClassSpec {
        self.0.clone()
    }
    async fn compute(&self, db: &DatabaseConnection, key: &[FieldValue]) -> Result<Option<String>, DbErr> {
        let slug = match key.first() {
            Some(FieldValue::Str(s)) => s.clone(),
            _ => return Ok(None),
        };
        Ok(event::Entity::find().filter(event::Column::Slug.eq(slug)).one(db).await?.map(|e| e.title))
    }
}

/// Counts backend calls, to show round trips.
pub struct Counting {
    pub inner: Arc<dyn Backend>,
    pub get_many_calls: AtomicU64,
    pub writes: AtomicU64,
}

#[async_trait]
impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.get_many_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set(key, value, ttl).await
    }
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.add(key, value, ttl).await
    }
    async fn compare_and_swap(&self, key: &str, expected: &[u8], new: Option<&[u8]>, ttl: Duration) -> Result<bool, BackendError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.compare_and_swap(key, expected, new, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key).await
    }
    async fn set_many(&self, items: &[(String, Vec<u8>)], ttl: Duration) -> Result<(), BackendError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set_many(items, ttl).await
    }
    fn max_value_size(&self) -> usize {
        self.inner.max_value_size()
    }
}

pub struct Harness {
    pub fdb: FlashDb,
    pub classes: DemoClasses,
    pub queries: Arc<AtomicU64>,
    pub backend: Arc<Counting>,
    pub db: DatabaseConnection,
}

impl Harness {
    /// Statements run since the last call.
    pub fn take_queries(&self) -> u64 {
        self.queries.swap(0, Ordering::SeqCst)
    }
}

/// The demo declarations plus whatever `extra` registers, on a fresh database.
pub async fn harness_with<X>(
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
) -> (Harness, X) {
    let queries = Arc::new(AtomicU64::new(0));
    let db = fresh_db(queries.clone()).await;
    schema::create_tables(&db).await.expect("tables");
    let inner = match cache_backend(&cache_url()).await {
        Ok(b) => b,
        Err(e) => panic!("cache backend {} unreachable: {e}", cache_url()),
    };
    let backend = Arc::new(Counting { inner, get_many_calls: AtomicU64::new(0), writes: AtomicU64::new(0) });
    let prefix = unique("t") + ":";
    let b2 = backend.clone();
    let mut reg = Registrar::new(db.clone()).configure(|b| configure(b.backend_arc(b2).prefix(prefix)));
    let classes = declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let x = extra(&mut reg);
    let fdb = reg.build().await.expect("build");
    let h = Harness { fdb, classes, queries, backend, db };
    h.take_queries();
    (h, x)
}

pub async fn harness() -> Harness {
    harness_with(|b| b, |_| ()).await.0
}

pub async fn add_event(fdb: &FlashDb, slug: &str, city: &str) -> event::Model {
    fdb.insert(event::ActiveModel { slug: Set(slug.into()), title: Set(format!("Title of {slug}")), city: Set(city.into()), ..Default::default() })
        .await
        .expect("insert event")
}

pub async fn add_user(fdb: &FlashDb, name: &str) -> user::Model {
    fdb.insert(user::ActiveModel { username: Set(name.into()), name: Set(name.to_uppercase()), ..Default::default() })
        .await
        .expect("insert user")
}

pub async fn add_participation(fdb: &FlashDb, u: i32, e: i32) -> participation::Model {
    fdb.insert(participation::ActiveModel { user_id: Set(u), event_id: Set(e), role: Set("guest".into()), ..Default::default() })
        .await
        .expect("insert participation")
}
