//! The near tier itself: the store, the generations that guard fills, the
//! channel's health, and the two background tasks (listen, heartbeat).

use crate::backend::Bytes;
use crate::error::BackendError;
use crate::handle::task::TaskGuard;
use async_trait::async_trait;
use moka::sync::Cache;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Generations are kept per stripe of keys (a key's hash picks its stripe):
/// an invalidation of one key refuses only the fills of its stripe.
const STRIPES: usize = 4096;

/// The channel every process publishes invalidated keys (and heartbeats) on.
/// Implemented by `flash_redis::RedisBus` (Redis pub/sub).
#[async_trait]
pub trait NearBus: Send + Sync + 'static {
    /// Sends `message` to every subscribed process (this one included).
    async fn publish(&self, message: &[u8]) -> Result<(), BackendError>;

    /// Subscribes and hands every message to `deliver`, for as long as the
    /// returned future runs; when the subscription is lost it calls `lost`
    /// and subscribes again.
    async fn listen(
        &self,
        deliver: &(dyn for<'m> Fn(&'m [u8]) + Send + Sync),
        lost: &(dyn Fn() + Send + Sync),
    );
}

/// Settings of the near tier.
#[derive(Clone, Debug)]
pub struct NearConfig {
    /// Bytes of keys and values the tier holds at most (approximately).
    pub capacity_bytes: u64,
    /// Classes with a near tier (their names); `None`: every class that can
    /// have one (not DYNAMIC classes, whose reads need their stale marker).
    pub classes: Option<HashSet<String>>,
    /// Near entries are served only if the channel was heard within this.
    pub bound: Duration,
    /// How often this process publishes a heartbeat (well under `bound`).
    pub heartbeat: Duration,
    /// Every near entry expires after this, whatever the channel says.
    pub ttl: Duration,
    /// Test-only: fills without the generation check (the race it prevents).
    #[doc(hidden)]
    pub unguarded: bool,
}

impl Default for NearConfig {
    fn default() -> Self {
        NearConfig {
            capacity_bytes: 64 * 1024 * 1024,
            classes: None,
            bound: Duration::from_millis(1000),
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(30),
            unguarded: false,
        }
    }
}

impl NearConfig {
    /// Only these classes get a near tier.
    pub fn classes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.classes = Some(names.into_iter().map(Into::into).collect());
        self
    }
    /// See [`Self::capacity_bytes`].
    pub fn capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = bytes;
        self
    }
    /// See [`Self::bound`] (the heartbeat becomes a fifth of it).
    pub fn bound(mut self, bound: Duration) -> Self {
        self.bound = bound;
        self.heartbeat = bound / 5;
        self
    }
    /// See [`Self::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
    /// Test-only: see [`Self::unguarded`].
    #[doc(hidden)]
    pub fn unsafe_unguarded(mut self) -> Self {
        self.unguarded = true;
        self
    }
}

/// Counters of the near tier.
#[derive(Debug, Default)]
pub struct NearStats {
    /// Lookups served from the near tier.
    pub hits: AtomicU64,
    /// Entries stored.
    pub fills: AtomicU64,
    /// Fills dropped because an invalidation (or a clear) came during their read.
    pub fills_refused: AtomicU64,
    /// Lookups that skipped the tier because the channel was not healthy.
    pub bypassed: AtomicU64,
    /// Times the tier was emptied (channel lost, or heard again after a gap).
    pub clears: AtomicU64,
    /// Invalidation messages whose publish failed.
    pub publish_errors: AtomicU64,
}

/// A fill's guard: the key's stripe generation and the tier's epoch when its
/// read started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    epoch: u64,
    stripe: u64,
}

pub(crate) struct NearTier {
    cache: Cache<String, Bytes>,
    stripes: Box<[AtomicU64]>,
    epoch: AtomicU64,
    /// Milliseconds since `origin` when the channel was last heard (0: never).
    heard_ms: AtomicU64,
    origin: Instant,
    config: NearConfig,
    bus: Arc<dyn NearBus>,
    pub(crate) stats: NearStats,
}

fn stripe_of(key: &str) -> usize {
    // FNV-1a: cheap, and any spread will do.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % STRIPES as u64) as usize
}

impl NearTier {
    fn new(config: NearConfig, bus: Arc<dyn NearBus>) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|k: &String, v: &Bytes| {
                (k.len() + v.len() + 64).try_into().unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl)
            .build();
        NearTier {
            cache,
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            heard_ms: AtomicU64::new(0),
            origin: Instant::now(),
            config,
            bus,
            stats: NearStats::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "never heard".
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Is the channel known healthy (heard within the bound)?
    pub(crate) fn healthy(&self) -> bool {
        let heard = self.heard_ms.load(SeqCst);
        heard != 0 && self.now_ms().saturating_sub(heard) <= self.config.bound.as_millis() as u64
    }

    /// Does `class` (by name; DYNAMIC classes never) use the tier?
    pub(crate) fn covers(&self, class: &str, dynamic: bool) -> bool {
        !dynamic
            && self
                .config
                .classes
                .as_ref()
                .is_none_or(|c| c.contains(class))
    }

    /// The near entry of `key`, while the channel is healthy.
    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        if !self.healthy() {
            self.stats.bypassed.fetch_add(1, SeqCst);
            return None;
        }
        self.cache.get(key)
    }

    /// Noted before the remote read whose bytes may fill the tier.
    pub(crate) fn token(&self, key: &str) -> Token {
        Token {
            epoch: self.epoch.load(SeqCst),
            stripe: self.stripes[stripe_of(key)].load(SeqCst),
        }
    }

    fn current(&self, key: &str) -> Token {
        self.token(key)
    }

    /// Stores `bytes` (read remotely after `token` was taken) unless the
    /// channel is unhealthy or an invalidation of the key came since.
    /// Stored first, checked after: an invalidation bumps the generation
    /// before it removes the key, so whichever order the two run in, a
    /// fill that raced it does not stay.
    pub(crate) fn fill(&self, key: &str, bytes: &Bytes, token: Token) {
        if !self.healthy() {
            return;
        }
        if !self.config.unguarded && self.current(key) != token {
            self.stats.fills_refused.fetch_add(1, SeqCst);
            return;
        }
        self.cache.insert(key.to_owned(), bytes.clone());
        if !self.config.unguarded && self.current(key) != token {
            self.cache.invalidate(key);
            self.stats.fills_refused.fetch_add(1, SeqCst);
            return;
        }
        self.stats.fills.fetch_add(1, SeqCst);
    }

    /// Drops `keys` and refuses the fills in flight for them.
    pub(crate) fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        for k in keys {
            self.stripes[stripe_of(k)].fetch_add(1, SeqCst);
            self.cache.invalidate(k);
        }
    }

    /// Empties the tier and refuses every fill in flight.
    fn clear(&self) {
        self.epoch.fetch_add(1, SeqCst);
        self.cache.invalidate_all();
        self.stats.clears.fetch_add(1, SeqCst);
    }

    /// A message from the channel: keys to drop, or a heartbeat. The tier
    /// is emptied first when the channel had gone quiet past the bound
    /// (messages may have been lost in the gap).
    fn deliver(&self, message: &[u8]) {
        if let Some(keys) = message.strip_prefix(b"k\n") {
            let keys = keys
                .split(|&b| b == b'\n')
                .filter_map(|k| std::str::from_utf8(k).ok());
            self.invalidate(keys);
        }
        if !self.healthy() {
            self.clear();
        }
        self.heard_ms.store(self.now_ms(), SeqCst);
    }

    fn lost(&self) {
        self.heard_ms.store(0, SeqCst);
        self.clear();
    }

    /// Publishes `keys` to the other processes (three tries).
    pub(crate) async fn publish(&self, keys: &[&str]) {
        if keys.is_empty() {
            return;
        }
        let mut message = b"k\n".to_vec();
        message.extend_from_slice(keys.join("\n").as_bytes());
        let mut pause = Duration::from_millis(2);
        for attempt in 0..3 {
            match self.bus.publish(&message).await {
                Ok(()) => return,
                Err(e) if attempt == 2 => {
                    self.stats.publish_errors.fetch_add(1, SeqCst);
                    tracing::warn!(error = %e, keys = keys.len(), "near tier: invalidation not published; other processes keep their near entries until they expire");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
    }
}

/// The tier and the tasks that keep it coherent (aborted when dropped).
pub(crate) struct Near {
    pub(crate) tier: Arc<NearTier>,
    _listen: TaskGuard,
    _heartbeat: TaskGuard,
}

impl Near {
    pub(crate) fn start(config: NearConfig, bus: Arc<dyn NearBus>) -> Self {
        let heartbeat = config.heartbeat;
        let tier = Arc::new(NearTier::new(config, bus.clone()));
        let weak: Weak<NearTier> = Arc::downgrade(&tier);
        let (w1, w2) = (weak.clone(), weak.clone());
        let listen_bus = bus.clone();
        let listen = TaskGuard::spawn(async move {
            let deliver = move |m: &[u8]| {
                if let Some(t) = w1.upgrade() {
                    t.deliver(m);
                }
            };
            let lost = move || {
                if let Some(t) = w2.upgrade() {
                    t.lost();
                }
            };
            listen_bus.listen(&deliver, &lost).await;
        });
        let beat = TaskGuard::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    return;
                }
                if let Err(e) = bus.publish(b"h").await {
                    tracing::debug!(error = %e, "near tier: heartbeat not published");
                }
            }
        });
        Near {
            tier,
            _listen: listen,
            _heartbeat: beat,
        }
    }
}
