//! The near tier over a real Redis: two `Flash` handles on one server and one
//! channel stand for two processes. An unreachable server skips the tests,
//! unless `FLASH_REQUIRE_SERVERS` is set.

use async_trait::async_trait;
use flash_core::{
    BackendError, Class, ClassSpec, FetchFn, FieldValue, Flash, KeySet, NearBus, NearConfig, Query,
    SourceError,
};
use flash_redis::{RedisBackend, RedisBus};
use flash_test_kit::hooked::{Hooked, Op};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_millis(500);

fn url() -> String {
    std::env::var("FLASH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn unique(test: &str) -> String {
    format!("nt{}x{}{}", std::process::id(), rand_suffix(), test)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        % 1_000_000_007
}

async fn redis() -> Option<RedisBackend> {
    match RedisBackend::connect(&url()).await {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("FLASH_REQUIRE_SERVERS").is_none() => {
            eprintln!("skipping: Redis unreachable ({e})");
            None
        }
        Err(e) => panic!("Redis unreachable and FLASH_REQUIRE_SERVERS is set: {e}"),
    }
}

/// The "database" both processes read: slug → title.
type Db = Arc<Mutex<HashMap<String, String>>>;

/// A bus whose receiving side can be muted: messages that arrive while it is
/// are dropped, as on a subscription that died without the client noticing.
struct Mutable {
    inner: RedisBus,
    muted: Arc<AtomicBool>,
}

#[async_trait]
impl NearBus for Mutable {
    async fn publish(&self, message: &[u8]) -> Result<(), BackendError> {
        self.inner.publish(message).await
    }
    async fn listen(
        &self,
        deliver: &(dyn for<'m> Fn(&'m [u8]) + Send + Sync),
        lost: &(dyn Fn() + Send + Sync),
    ) {
        let muted = self.muted.clone();
        let filtered = move |m: &[u8]| {
            if !muted.load(SeqCst) {
                deliver(m)
            }
        };
        self.inner.listen(&filtered, lost).await
    }
}

struct Process {
    flash: Flash,
    class: Class<String>,
    muted: Arc<AtomicBool>,
}

async fn process(
    backend: impl flash_core::Backend,
    ns: &str,
    db: &Db,
    config: NearConfig,
) -> Process {
    let muted = Arc::new(AtomicBool::new(false));
    let bus = Mutable {
        inner: RedisBus::new(&url(), &format!("{ns}:near")).unwrap(),
        muted: muted.clone(),
    };
    let db = db.clone();
    let mut b = Flash::builder()
        .backend(backend)
        .prefix(format!("{ns}:"))
        .near_cache(config, Arc::new(bus));
    let class = b
        .register::<String>(
            ClassSpec::instance("NearTitle", "event", &["slug"]),
            FetchFn(move |k: Vec<FieldValue>| {
                let db = db.clone();
                Box::pin(async move {
                    let slug = match &k[0] {
                        FieldValue::Str(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    Ok::<_, SourceError>(db.lock().unwrap().get(&slug).cloned().unwrap_or_default())
                }) as _
            }),
        )
        .unwrap();
    let flash = b.build().await.unwrap();
    let started = Instant::now();
    while !flash.near_healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "near channel never heard"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Process {
        flash,
        class,
        muted,
    }
}

impl Process {
    async fn get(&self, slug: &str) -> String {
        self.flash.get(&self.class, &[slug.into()]).await.unwrap()
    }
    /// `slugs` looked up in one batch.
    async fn batch(&self, slugs: &[&str]) -> Vec<String> {
        let mut batch = self.flash.batch();
        let handles: Vec<_> = slugs
            .iter()
            .map(|s| batch.add(Query::new(&self.class, vec![(*s).into()])))
            .collect();
        let mut results = batch.run().await;
        handles
            .into_iter()
            .map(|h| results.take(h).unwrap())
            .collect()
    }
    fn near_hits(&self) -> u64 {
        self.flash.near_stats().unwrap().hits.load(SeqCst)
    }
    /// What a write of `slug` does after its commit: invalidate its key.
    async fn invalidate(&self, slug: &str) {
        let key = self.flash.key_of(&self.class, &[slug.into()]).unwrap();
        let keys = KeySet {
            unset: BTreeSet::from([key]),
            dynamic: BTreeSet::new(),
        };
        self.flash.apply_invalidation("event", &keys).await.unwrap();
    }
    /// Reads until the near tier serves `slug`.
    async fn warm(&self, slug: &str) {
        for _ in 0..50 {
            let before = self.near_hits();
            self.get(slug).await;
            self.flash.settled().await;
            if self.near_hits() > before {
                return;
            }
        }
        panic!("{slug} never served by the near tier");
    }
}

fn config() -> NearConfig {
    NearConfig::default().bound(BOUND)
}

#[tokio::test]
async fn a_write_in_one_process_reaches_the_others_near_tier() {
    let Some(redis) = redis().await else { return };
    let ns = unique("coh");
    let db: Db = Arc::new(Mutex::new(HashMap::from([("a".into(), "v1".into())])));
    let a = process(redis.clone(), &ns, &db, config()).await;
    let b = process(redis, &ns, &db, config()).await;
    a.warm("a").await;
    b.warm("a").await;
    let hits = a.near_hits();
    assert_eq!(a.get("a").await, "v1");
    assert!(a.near_hits() > hits, "served from the near tier");

    db.lock().unwrap().insert("a".into(), "v2".into());
    let wrote = Instant::now();
    b.invalidate("a").await;
    assert_eq!(b.get("a").await, "v2", "read-your-writes in the writer");
    loop {
        let seen = a.get("a").await;
        if seen == "v2" {
            break;
        }
        assert!(
            wrote.elapsed() < BOUND,
            "the other process served {seen} {:?} after the write",
            wrote.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "the other process saw the write after {:?}",
        wrote.elapsed()
    );
}

#[tokio::test]
async fn a_deaf_process_stops_serving_its_near_tier_within_the_bound() {
    let Some(redis) = redis().await else { return };
    let ns = unique("deaf");
    let db: Db = Arc::new(Mutex::new(HashMap::from([("a".into(), "v1".into())])));
    let a = process(redis.clone(), &ns, &db, config()).await;
    let b = process(redis, &ns, &db, config()).await;
    a.warm("a").await;

    // A stops hearing the channel; B's write does not reach its near tier.
    a.muted.store(true, SeqCst);
    db.lock().unwrap().insert("a".into(), "v2".into());
    let wrote = Instant::now();
    b.invalidate("a").await;
    loop {
        let seen = a.get("a").await;
        if seen == "v2" {
            break;
        }
        assert!(
            wrote.elapsed() < BOUND + Duration::from_millis(100),
            "stale {seen} past the bound: {:?}",
            wrote.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!a.flash.near_healthy(), "bypassed while deaf");
    let bypassed = a.flash.near_stats().unwrap().bypassed.load(SeqCst);
    assert!(bypassed > 0);

    // Heard again: emptied first, then served again.
    let clears = a.flash.near_stats().unwrap().clears.load(SeqCst);
    a.muted.store(false, SeqCst);
    let started = Instant::now();
    while !a.flash.near_healthy() {
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        a.flash.near_stats().unwrap().clears.load(SeqCst) > clears,
        "emptied"
    );
    a.warm("a").await;
    assert_eq!(a.get("a").await, "v2");
}

/// A's remote read returns the old bytes, but its reply is held back while
/// B writes and A's channel delivers the invalidation; then A fills its near
/// tier from that read. With the generation check the fill is dropped; with
/// `unsafe_unguarded` it stays and A serves the old title afterwards.
/// With `batch`, A's read is a batch's multi-get (whose hits fill the tier too).
async fn fill_racing_an_invalidation(config: NearConfig, batch: bool) -> String {
    let Some(redis) = redis().await else {
        return "v2".into();
    };
    let ns = unique("race");
    let db: Db = Arc::new(Mutex::new(HashMap::from([("a".into(), "v1".into())])));
    let b = process(redis.clone(), &ns, &db, NearConfig::default().bound(BOUND)).await;
    b.get("a").await;
    b.flash.settled().await;
    let slow = Hooked::new(redis).reply_delay(Op::GetMany, Duration::from_millis(300));
    let a = Arc::new(process(slow, &ns, &db, config).await);
    let reader = a.clone();
    let read = tokio::spawn(async move {
        if batch {
            reader.batch(&["a"]).await.remove(0)
        } else {
            reader.get("a").await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.lock().unwrap().insert("a".into(), "v2".into());
    b.invalidate("a").await;
    assert_eq!(
        read.await.unwrap(),
        "v1",
        "the read started before the write"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.get("a").await
}

#[tokio::test]
async fn a_near_fill_racing_an_invalidation_does_not_survive_it() {
    assert_eq!(fill_racing_an_invalidation(config(), false).await, "v2");
}

#[tokio::test]
async fn without_the_generation_check_the_racing_fill_is_stale() {
    if redis().await.is_none() {
        return;
    }
    assert_eq!(
        fill_racing_an_invalidation(config().unsafe_unguarded(), false).await,
        "v1",
        "the schedule must produce the stale near entry the check prevents"
    );
}

#[tokio::test]
async fn a_batch_is_served_by_the_near_tier_without_a_remote_read() {
    let Some(redis) = redis().await else { return };
    let ns = unique("batch");
    let db: Db = Arc::new(Mutex::new(HashMap::from([
        ("a".into(), "v1".into()),
        ("b".into(), "w1".into()),
    ])));
    let hooked = Arc::new(Hooked::new(redis));
    let p = process(hooked.clone(), &ns, &db, config()).await;
    p.warm("a").await;
    let (reads, hits) = (hooked.calls(Op::GetMany), p.near_hits());
    assert_eq!(p.batch(&["a"]).await, ["v1"]);
    assert_eq!(hooked.calls(Op::GetMany), reads, "no remote read");
    assert_eq!(p.near_hits(), hits + 1, "served by the near tier");

    // "b" is in the cache server only; a batch's remote hit fills the near
    // tier, so the next batch reads nothing remotely.
    p.get("b").await;
    p.flash.settled().await;
    let reads = hooked.calls(Op::GetMany);
    assert_eq!(p.batch(&["a", "b"]).await, ["v1", "w1"]);
    assert_eq!(hooked.calls(Op::GetMany), reads + 1, "one read, for b");
    let hits = p.near_hits();
    assert_eq!(p.batch(&["a", "b"]).await, ["v1", "w1"]);
    assert_eq!(hooked.calls(Op::GetMany), reads + 1, "no remote read");
    assert_eq!(p.near_hits(), hits + 2);
}

#[tokio::test]
async fn a_write_in_one_process_reaches_the_others_near_tier_in_batches() {
    let Some(redis) = redis().await else { return };
    let ns = unique("cohb");
    let db: Db = Arc::new(Mutex::new(HashMap::from([("a".into(), "v1".into())])));
    let a = process(redis.clone(), &ns, &db, config()).await;
    let b = process(redis, &ns, &db, config()).await;
    a.warm("a").await;
    b.warm("a").await;
    let hits = a.near_hits();
    assert_eq!(a.batch(&["a"]).await, ["v1"]);
    assert!(a.near_hits() > hits, "served from the near tier");

    db.lock().unwrap().insert("a".into(), "v2".into());
    let wrote = Instant::now();
    b.invalidate("a").await;
    assert_eq!(
        b.batch(&["a"]).await,
        ["v2"],
        "read-your-writes in the writer"
    );
    loop {
        let seen = a.batch(&["a"]).await.remove(0);
        if seen == "v2" {
            break;
        }
        assert!(
            wrote.elapsed() < BOUND,
            "the other process's batch served {seen} {:?} after the write",
            wrote.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_batch_near_fill_racing_an_invalidation_does_not_survive_it() {
    assert_eq!(fill_racing_an_invalidation(config(), true).await, "v2");
}

#[tokio::test]
async fn without_the_generation_check_a_batch_racing_fill_is_stale() {
    if redis().await.is_none() {
        return;
    }
    assert_eq!(
        fill_racing_an_invalidation(config().unsafe_unguarded(), true).await,
        "v1",
        "the schedule must produce the stale near entry the check prevents"
    );
}
