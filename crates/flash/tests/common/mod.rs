//! Test harness: a fresh database (SQLite file, or a PostgreSQL schema / MySQL
//! database of its own when `DATABASE_URL` says so), the cache of
//! `FLASH_CACHE_URL` under a unique prefix, and a counter of SQL statements.
#![allow(dead_code)]

use async_trait::async_trait;
use flash::config::{cache_backend, cache_url, database_url};
use flash_core::{Backend, ClassSpec, FieldValue, FlashBuilder};
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{CustomCache, FlashDb, Registrar};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::{declare, schema, DemoClasses, Hooked};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A drain that polls once an hour and listens to nothing: it runs only
/// when asked (`apply_captured`, a write's settle), so that what each call
/// applies is known.
pub fn quiet() -> DrainSettings {
    DrainSettings {
        poll_interval: Duration::from_secs(3600),
        listen_poll_interval: Duration::from_secs(3600),
        listen: false,
        ..DrainSettings::default()
    }
}

pub fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id(), rand::random::<u32>())
}

/// Connects to a database of this test's own, counting statements into `counter`.
pub async fn fresh_db(counter: Arc<AtomicU64>) -> DatabaseConnection {
    let url = database_url();
    let mut db = flash::config::connect_namespace(&url, &unique("flash_t"), true, 8)
        .await
        .unwrap_or_else(|e| panic!("database of DATABASE_URL reachable: {e}"));
    // The capture drain's own statements (it polls `flash_changes`) are not
    // the application's queries.
    db.set_metric_callback(move |info| {
        if !info
            .statement
            .sql
            .contains(flash_sea_orm::capture::CHANGES_TABLE)
        {
            counter.fetch_add(1, Ordering::SeqCst);
        }
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
    async fn compute(
        &self,
        db: &DatabaseConnection,
        key: &[FieldValue],
    ) -> Result<Option<String>, DbErr> {
        let slug = match key.first() {
            Some(FieldValue::Str(s)) => s.clone(),
            _ => return Ok(None),
        };
        Ok(event::Entity::find()
            .filter(event::Column::Slug.eq(slug))
            .one(db)
            .await?
            .map(|e| e.title))
    }
}

pub struct Harness {
    pub fdb: FlashDb,
    pub classes: DemoClasses,
    pub queries: Arc<AtomicU64>,
    /// The cache, counting calls (`calls(Op::GetMany)`, `writes()`) to show round trips.
    pub backend: Arc<Hooked<Arc<dyn Backend>>>,
    pub db: DatabaseConnection,
}

impl Harness {
    /// Statements run since the last call.
    pub fn take_queries(&self) -> u64 {
        self.queries.swap(0, Ordering::SeqCst)
    }

    /// Applies the captured records of the writes so far. A write through
    /// flash invalidates its keys at once and its captured record does so
    /// again when drained: tests that count hits and misses after writes
    /// settle first, so that the second invalidation cannot land mid-count.
    pub async fn settle(&self) {
        self.fdb
            .apply_captured()
            .await
            .expect("captured changes applied");
    }
}

/// The demo declarations plus whatever `extra` registers, on a fresh database.
pub async fn harness_with<X>(
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
) -> (Harness, X) {
    let backend = match cache_backend(&cache_url()).await {
        Ok(b) => b,
        Err(e) => panic!("cache backend {} unreachable: {e}", cache_url()),
    };
    harness_on(backend, configure, extra).await
}

pub async fn harness() -> Harness {
    harness_with(|b| b, |_| ()).await.0
}

pub async fn add_event(fdb: &FlashDb, slug: &str, city: &str) -> event::Model {
    fdb.insert(event::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        city: Set(city.into()),
        ..Default::default()
    })
    .await
    .expect("insert event")
}

pub async fn add_user(fdb: &FlashDb, name: &str) -> user::Model {
    fdb.insert(user::ActiveModel {
        username: Set(name.into()),
        name: Set(name.to_uppercase()),
        ..Default::default()
    })
    .await
    .expect("insert user")
}

pub async fn add_participation(fdb: &FlashDb, u: i32, e: i32) -> participation::Model {
    fdb.insert(participation::ActiveModel {
        user_id: Set(u),
        event_id: Set(e),
        role: Set("guest".into()),
        ..Default::default()
    })
    .await
    .expect("insert participation")
}

// ---------------------------------------------------------------------------
// Added for outage.rs and large_values.rs: a harness on a backend chosen by the
// test, and cache servers of a test's own that it may kill and restart.

/// Like [`harness_with`], on `backend` instead of the cache of `FLASH_CACHE_URL`
/// (still wrapped in a call-counting [`Hooked`], under a unique prefix).
pub async fn harness_on<X>(
    backend: Arc<dyn Backend>,
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
) -> (Harness, X) {
    harness_draining(backend, configure, extra, DrainSettings::default()).await
}

/// A drain that runs only when a test settles ([`Harness::settle`]): for
/// tests that count hits, misses and round trips after writes through flash,
/// whose captured records would otherwise invalidate the written keys a
/// second time at a moment of the drain's choosing.
pub fn quiet_drain() -> DrainSettings {
    DrainSettings {
        poll_interval: Duration::from_secs(3600),
        listen_poll_interval: Duration::from_secs(3600),
        listen: false,
        ..DrainSettings::default()
    }
}

/// [`harness_with`] with [`quiet_drain`].
pub async fn quiet_harness_with<X>(
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
) -> (Harness, X) {
    let backend = match cache_backend(&cache_url()).await {
        Ok(b) => b,
        Err(e) => panic!("cache backend {} unreachable: {e}", cache_url()),
    };
    harness_draining(backend, configure, extra, quiet_drain()).await
}

/// [`harness`] with [`quiet_drain`].
pub async fn quiet_harness() -> Harness {
    quiet_harness_with(|b| b, |_| ()).await.0
}

pub async fn harness_draining<X>(
    backend: Arc<dyn Backend>,
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
    drain: DrainSettings,
) -> (Harness, X) {
    harness_leasing(backend, configure, extra, drain, false).await
}

/// [`harness_draining`]; with `native_leases`, the counting wrapper forwards
/// the backend's own one-request read-or-lease (see `Hooked::native_leases`).
pub async fn harness_leasing<X>(
    backend: Arc<dyn Backend>,
    configure: impl FnOnce(FlashBuilder) -> FlashBuilder,
    extra: impl FnOnce(&mut Registrar) -> X,
    drain: DrainSettings,
    native_leases: bool,
) -> (Harness, X) {
    let queries = Arc::new(AtomicU64::new(0));
    let db = fresh_db(queries.clone()).await;
    schema::create_tables(&db).await.expect("tables");
    // Named, and coalescing reads whatever it wraps, as the counting wrapper
    // it replaces was.
    let backend = Arc::new(
        Hooked::new(backend)
            .name("counting")
            .coalesce_reads(true)
            .native_leases(native_leases),
    );
    let prefix = unique("t") + ":";
    let b2 = backend.clone();
    let mut reg = Registrar::new(db.clone())
        .configure(|b| configure(b.backend_arc(b2).prefix(prefix)))
        .drain_settings(drain);
    let classes = declare(&mut reg, Duration::from_secs(60)).expect("declarations");
    let x = extra(&mut reg);
    let fdb = reg.build().await.expect("build");
    let h = Harness {
        fdb,
        classes,
        queries,
        backend,
        db,
    };
    h.take_queries();
    (h, x)
}

/// `FLASH_REQUIRE_SERVERS` set (and not empty): tests needing cache servers
/// fail instead of skipping when those are missing.
pub fn servers_required() -> bool {
    std::env::var_os("FLASH_REQUIRE_SERVERS").is_some_and(|v| !v.is_empty())
}

/// Skips (`None`, with a note on stderr) or, under `FLASH_REQUIRE_SERVERS`, fails.
pub fn skip_or_fail<T>(test: &str, why: &str) -> Option<T> {
    if servers_required() {
        panic!("{test}: {why} (FLASH_REQUIRE_SERVERS is set; run `bash scripts/servers.sh start`)");
    }
    eprintln!("skipping {test}: {why} (set FLASH_REQUIRE_SERVERS=1 to make this a failure)");
    None
}

/// An executable on `PATH`.
pub fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A loopback port nothing listens on (the OS's pick, released at once).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Redis,
    Memcached,
}

/// A redis-server or memcached of one test's own, on a free loopback port, run
/// as a child process (not daemonized) so that the test can SIGKILL it and
/// start it again on the same port. Killed when dropped.
pub struct TestServer {
    pub kind: ServerKind,
    pub port: u16,
    bin: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl TestServer {
    /// Starts a server; `None` (skip) when the binary is missing and
    /// `FLASH_REQUIRE_SERVERS` is unset.
    pub async fn start(kind: ServerKind, test: &str) -> Option<TestServer> {
        let name = match kind {
            ServerKind::Redis => "redis-server",
            ServerKind::Memcached => "memcached",
        };
        let Some(bin) = find_binary(name) else {
            return skip_or_fail(test, &format!("{name} not found on PATH"));
        };
        // The port is free when picked but may be taken before the server binds
        // it; then the child exits and another port is tried.
        for _ in 0..5 {
            let mut s = TestServer {
                kind,
                port: free_port(),
                bin: bin.clone(),
                child: None,
            };
            if s.spawn_and_wait().await.is_ok() {
                return Some(s);
            }
        }
        panic!("{test}: could not start {name} on a free port");
    }

    /// The cache URL of this server for `flash::config::cache_backend`.
    pub fn url(&self) -> String {
        match self.kind {
            ServerKind::Redis => format!("redis://127.0.0.1:{}/0", self.port),
            ServerKind::Memcached => format!("memcache://127.0.0.1:{}", self.port),
        }
    }

    /// The process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL (what `Child::kill` sends on unix): no goodbye to the clients,
    /// and the data is gone (no persistence configured).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait().await {
            panic!("restarting {:?} on port {}: {e}", self.kind, self.port);
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut cmd = std::process::Command::new(&self.bin);
        match self.kind {
            ServerKind::Redis => {
                cmd.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ]);
                cmd.current_dir(std::env::temp_dir());
            }
            ServerKind::Memcached => {
                // -U 0: no UDP; -u root is only used (and needed) when run as root.
                cmd.args([
                    "-p",
                    &port,
                    "-U",
                    "0",
                    "-l",
                    "127.0.0.1",
                    "-u",
                    "root",
                    "-m",
                    "64",
                ]);
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited at start: {status}"));
            }
            if self.answers().await {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                self.kill();
                return Err("did not answer within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One protocol-level ping (`PING` / `version`).
    pub async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ask, want): (&[u8], &[u8]) = match self.kind {
            ServerKind::Redis => (b"PING\r\n", b"+PONG"),
            ServerKind::Memcached => (b"version\r\n", b"VERSION"),
        };
        let ping = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            s.write_all(ask).await.ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            Some(buf[..n].starts_with(want))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Some(true))
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `event` table as other code (an older or newer deploy) declares it:
/// the same columns, `title` before `slug`. Its values encode like the
/// current ones with the two strings swapped.
pub mod event_v2 {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "event")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub title: String,
        pub slug: String,
        pub city: String,
        pub revision: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
