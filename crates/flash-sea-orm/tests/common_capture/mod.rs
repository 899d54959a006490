//! Databases of a test's own for the capture tests: SQLite in memory always;
//! a fresh PostgreSQL schema / MySQL database when `FLASH_TEST_PG_URL` /
//! `FLASH_TEST_MYSQL_URL` are set (defaulted when `FLASH_REQUIRE_SERVERS` is
//! set, which also makes an unreachable server a failure instead of a skip).
#![allow(dead_code)]

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    Statement, Value,
};
use std::sync::atomic::{AtomicU32, Ordering};

pub const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

fn required() -> bool {
    std::env::var_os("FLASH_REQUIRE_SERVERS").is_some()
}

pub fn pg_url() -> Option<String> {
    std::env::var("FLASH_TEST_PG_URL")
        .ok()
        .or_else(|| required().then(|| PG_DEFAULT.to_owned()))
}

pub fn mysql_url() -> Option<String> {
    std::env::var("FLASH_TEST_MYSQL_URL")
        .ok()
        .or_else(|| required().then(|| MYSQL_DEFAULT.to_owned()))
}

pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}_{}_{}_{}",
        std::process::id(),
        nanos % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A database of one test's own; [`TestDb::finish`] drops it.
pub struct TestDb {
    pub db: DatabaseConnection,
    pub backend: DatabaseBackend,
    /// Server URL and namespace to drop.
    ns: Option<(String, String)>,
    pub url: Option<String>,
    /// How to open more connections to the same database ([`TestDb::peers`]).
    connect: Option<ConnectOptions>,
    /// SQLite file to remove.
    file: Option<std::path::PathBuf>,
}

impl TestDb {
    pub async fn finish(self) {
        let _ = self.db.close().await;
        if let Some(f) = &self.file {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = f.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        if let Some((url, ns)) = self.ns {
            let admin = Database::connect(url.as_str()).await.expect("admin");
            let sql = if url.starts_with("postgres") {
                format!("DROP SCHEMA IF EXISTS {ns} CASCADE")
            } else {
                format!("DROP DATABASE IF EXISTS {ns}")
            };
            admin
                .execute_unprepared(&sql)
                .await
                .expect("drop namespace");
            let _ = admin.close().await;
        }
    }

    /// Runs `sql` (`?` placeholders, rewritten to `$n` on PostgreSQL).
    pub async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
        exec_on(&self.db, sql, values).await
    }

    /// `n` pools of their own (one connection each) on the same database:
    /// other processes, as far as the database can tell. None for SQLite in
    /// memory.
    pub async fn peers(&self, n: usize) -> Option<Vec<DatabaseConnection>> {
        let o = self.connect.as_ref()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut o = o.clone();
            o.max_connections(1).min_connections(1);
            out.push(Database::connect(o).await.expect("peer"));
        }
        Some(out)
    }

    pub async fn run(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

pub async fn exec_on<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<u64, DbErr> {
    let backend = c.get_database_backend();
    let sql = placeholders(backend, sql);
    Ok(
        c.execute(Statement::from_sql_and_values(backend, sql, values))
            .await?
            .rows_affected(),
    )
}

pub fn placeholders(backend: DatabaseBackend, sql: &str) -> String {
    if backend != DatabaseBackend::Postgres {
        return sql.to_owned();
    }
    let mut out = String::new();
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

async fn sqlite() -> TestDb {
    let mut o = ConnectOptions::new("sqlite::memory:");
    o.max_connections(1).min_connections(1).sqlx_logging(false);
    TestDb {
        db: Database::connect(o).await.expect("sqlite in memory"),
        backend: DatabaseBackend::Sqlite,
        ns: None,
        url: None,
        connect: None,
        file: None,
    }
}

/// SQLite in a file of its own, which [`TestDb::peers`] can share.
pub async fn sqlite_file() -> TestDb {
    let file = std::env::temp_dir().join(format!("{}.sqlite", unique("flash_cap")));
    let mut o = ConnectOptions::new(format!("sqlite://{}?mode=rwc", file.display()));
    o.max_connections(1).min_connections(1).sqlx_logging(false);
    TestDb {
        db: Database::connect(o.clone()).await.expect("sqlite file"),
        backend: DatabaseBackend::Sqlite,
        ns: None,
        url: None,
        connect: Some(o),
        file: Some(file),
    }
}

async fn server(url: &str) -> Option<TestDb> {
    let mut probe = ConnectOptions::new(url.to_owned());
    probe
        .connect_timeout(std::time::Duration::from_secs(3))
        .acquire_timeout(std::time::Duration::from_secs(3))
        .max_connections(1)
        .sqlx_logging(false);
    let admin = match Database::connect(probe).await {
        Ok(a) => a,
        Err(e) if !required() => {
            eprintln!("skipping {url}: {e}");
            return None;
        }
        Err(e) => panic!("{url} unreachable: {e}"),
    };
    let ns = unique("flash_cap");
    let pg = url.starts_with("postgres");
    let create = if pg {
        format!("CREATE SCHEMA {ns}")
    } else {
        format!("CREATE DATABASE {ns} CHARACTER SET utf8mb4")
    };
    admin.execute_unprepared(&create).await.expect("namespace");
    let _ = admin.close().await;
    let mut o = if pg {
        let mut o = ConnectOptions::new(url.to_owned());
        o.set_schema_search_path(ns.clone());
        o
    } else {
        let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
        ConnectOptions::new(format!("{base}/{ns}"))
    };
    o.max_connections(2).sqlx_logging(false);
    let db = Database::connect(o.clone()).await.expect("test namespace");
    eprintln!("capture test on {url} ({ns})");
    Some(TestDb {
        backend: db.get_database_backend(),
        db,
        ns: Some((url.to_owned(), ns)),
        url: Some(url.to_owned()),
        connect: Some(o),
        file: None,
    })
}

/// SQLite, plus PostgreSQL and MySQL when configured and reachable.
pub async fn databases() -> Vec<TestDb> {
    let mut out = vec![sqlite().await];
    out.extend(servers().await);
    out
}

/// PostgreSQL and MySQL when configured and reachable.
pub async fn servers() -> Vec<TestDb> {
    let mut out = Vec::new();
    if let Some(u) = pg_url() {
        out.extend(server(&u).await);
    }
    if let Some(u) = mysql_url() {
        out.extend(server(&u).await);
    }
    out
}

pub async fn postgres() -> Option<TestDb> {
    match pg_url() {
        Some(u) => server(&u).await,
        None => None,
    }
}
