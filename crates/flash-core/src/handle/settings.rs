//! The settings of a [`Flash`](super::Flash) handle and their defaults
//! (set through [`FlashBuilder`](super::FlashBuilder)).

use crate::class::durations::CACHE_TIME_WEEK;
use std::collections::HashMap;
use std::time::Duration;

/// Settings of a [`Flash`](super::Flash) handle; all have defaults (see
/// [`FlashBuilder`](super::FlashBuilder)).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace prefix of every key.
    pub prefix: String,
    /// TTL of a class without its own timeout (one week).
    pub default_timeout: Duration,
    /// How long a write lock (allowtime / DYNAMIC refresh) is held at most.
    pub lock_timeout: Duration,
    /// How long a fill lease lives if its holder never comes back.
    pub lease_ttl: Duration,
    /// How long a lookup waits for another caller's fill before going to the
    /// database itself (without filling).
    pub lease_wait: Duration,
    /// TTL of the stale marker an UNSET invalidation writes.
    pub stale_ttl: Duration,
    /// How many times a write call retries an invalidation the cache refused
    /// (2 ms, then 8 ms, 32 ms... apart) before it leaves it to the retry
    /// task. A client reconnecting to a restarted server needs one retry.
    /// A timeout is not retried: a hung server costs a write one deadline.
    pub invalidation_retries: u32,
    /// How often dynamic versions are reloaded from the store (the bound on how
    /// long another process's bump takes to be seen).
    pub version_refresh: Duration,
    /// Database alias per model (part of the key); `"default"` otherwise.
    pub db_alias: HashMap<String, String>,
    /// Whether lookup spans carry the key (it holds the key values, which
    /// may be personal data; default off: spans carry the class only).
    pub log_keys: bool,
    /// How often, at most, the one-line summary of cache errors (counts by
    /// operation and kind) is logged while the cache fails (default 10 s;
    /// the first error after a quiet period is logged at once).
    pub error_summary_every: Duration,
    /// Whether a miss that took its lease in its first read fills the cache
    /// in the background (default: yes). The caller then has its row after
    /// one cache request and the query; the lease makes the others wait for
    /// this fill and keeps a late one harmless. [`Flash::settled`](super::Flash::settled) waits for
    /// the fills in flight.
    pub background_fills: bool,
    /// Whether lookups are timed into `flash_lookup_seconds{class}` (default:
    /// yes). Two clock reads per lookup (one per batch): about 150
    /// instructions of an in-process hit's 8 300 (see the README).
    pub time_lookups: bool,
    /// Test-only: a pause between reading the database and filling the cache,
    /// to widen the race window in stress tests (zero in production).
    #[doc(hidden)]
    pub fill_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prefix: "flash:".into(),
            default_timeout: CACHE_TIME_WEEK,
            lock_timeout: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(10),
            lease_wait: Duration::from_millis(500),
            stale_ttl: Duration::from_secs(60),
            invalidation_retries: 2,
            version_refresh: Duration::from_secs(5),
            db_alias: HashMap::new(),
            log_keys: false,
            error_summary_every: Duration::from_secs(10),
            background_fills: true,
            time_lookups: true,
            fill_delay: Duration::ZERO,
        }
    }
}
