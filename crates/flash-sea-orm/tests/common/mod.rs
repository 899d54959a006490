//! Test harness of flash-sea-orm: two small entities (`post`, `comment`), a
//! database of the test's own (SQLite in memory, or a fresh PostgreSQL schema
//! / MySQL database when `DATABASE_URL` names a server), the in-process cache,
//! and handles on them.
#![allow(dead_code)]

use flash_core::{Backend, MemoryBackend};
use flash_sea_orm::{by, CacheMeta, FlashDb, OutboxSettings, Outcome, Registrar};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Schema, Statement};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A post, looked up by id and by slug.
pub mod post {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "post")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(unique)]
        pub slug: String,
        pub title: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A comment, listed by post and checked for existence by post.
pub mod comment {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "comment")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub post_id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A database of one test: dropped by [`TestDb::drop`].
pub struct TestDb {
    pub conn: DatabaseConnection,
    /// `DATABASE_URL`, or `None` for SQLite in memory.
    url: Option<String>,
    /// The schema (PostgreSQL) or database (MySQL) of this test.
    ns: String,
}

fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "flash_sea_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

async fn admin(url: &str, sql: &str) {
    let db = Database::connect(url)
        .await
        .expect("DATABASE_URL reachable");
    db.execute_unprepared(sql).await.expect(sql);
    db.close().await.ok();
}

impl TestDb {
    /// A fresh database with the `post` and `comment` tables.
    pub async fn new() -> TestDb {
        let url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.starts_with("sqlite"));
        let ns = unique_name();
        let opts = match &url {
            Some(u) if u.starts_with("postgres") => {
                admin(u, &format!("CREATE SCHEMA {ns}")).await;
                let mut o = ConnectOptions::new(u.clone());
                o.set_schema_search_path(ns.clone());
                o
            }
            Some(u) if u.starts_with("mysql") => {
                admin(u, &format!("CREATE DATABASE {ns}")).await;
                let base = u.rsplit_once('/').map_or(u.as_str(), |(b, _)| b);
                ConnectOptions::new(format!("{base}/{ns}"))
            }
            Some(u) => panic!("DATABASE_URL {u:?}: postgres://, mysql:// or sqlite expected"),
            // One connection (SeaORM's default for SQLite): the in-memory
            // database lives as long as it does.
            None => ConnectOptions::new("sqlite::memory:"),
        };
        let mut opts = opts;
        opts.sqlx_logging(false);
        if url.is_some() {
            opts.max_connections(4);
        }
        let conn = Database::connect(opts).await.expect("test database");
        let backend = conn.get_database_backend();
        let schema = Schema::new(backend);
        for mut stmt in [
            schema.create_table_from_entity(post::Entity),
            schema.create_table_from_entity(comment::Entity),
        ] {
            conn.execute(backend.build(stmt.if_not_exists()))
                .await
                .expect("create table");
        }
        TestDb { conn, url, ns }
    }

    /// Closes the connections and drops the schema or database.
    pub async fn drop(self) {
        self.conn.close().await.ok();
        match &self.url {
            Some(u) if u.starts_with("postgres") => {
                admin(u, &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.ns)).await
            }
            Some(u) => admin(u, &format!("DROP DATABASE IF EXISTS {}", self.ns)).await,
            None => {}
        }
    }

    /// `SELECT COUNT(*) FROM table`.
    pub async fn count(&self, table: &str) -> i64 {
        let backend = self.conn.get_database_backend();
        let row = self
            .conn
            .query_one(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get("", "n").expect("count as i64")
    }
}

/// A handle on `db` and `cache`, with `post` (by id, by slug) and `comment`
/// (list by post, exists by post) declared; the outbox on or off, its
/// background drain out of the way (tests drain by hand).
pub async fn handle(db: &TestDb, cache: Arc<dyn Backend>, outbox: bool) -> FlashDb {
    let mut reg = Registrar::new(db.conn.clone())
        .configure(|b| b.backend_arc(cache))
        .outbox(outbox)
        // These tests look at flash's own write path and the outbox; capture
        // has tests of its own.
        .capture(false)
        .outbox_settings(OutboxSettings {
            interval: Duration::from_secs(3600),
            grace: Duration::ZERO,
        });
    reg.entity(
        CacheMeta::<post::Entity>::new()
            .get_key([post::Column::Id])
            .get_key([post::Column::Slug]),
    )
    .expect("post declarations");
    reg.entity(
        CacheMeta::<comment::Entity>::new()
            .filter_key([comment::Column::PostId])
            .exists_key([comment::Column::PostId]),
    )
    .expect("comment declarations");
    reg.build().await.expect("build")
}

/// A fresh database and a handle on a cache of its own.
pub async fn setup(outbox: bool) -> (TestDb, FlashDb) {
    let db = TestDb::new().await;
    let fdb = handle(&db, Arc::new(MemoryBackend::default()), outbox).await;
    (db, fdb)
}

/// The post of `slug` (or `None`) and whether the cache answered.
pub async fn post_by_slug(fdb: &FlashDb, slug: &str) -> (Option<post::Model>, Outcome) {
    fdb.cache::<post::Entity>()
        .get_with_outcome(by(post::Column::Slug, slug))
        .await
        .expect("lookup by slug")
}

/// The comments of post `id` and whether the cache answered.
pub async fn comments_of(fdb: &FlashDb, id: i32) -> (Vec<comment::Model>, Outcome) {
    fdb.cache::<comment::Entity>()
        .filter_with_outcome(by(comment::Column::PostId, id))
        .await
        .expect("comments of a post")
}
