//! Counters and the event hook: every lookup and invalidation is counted (in
//! process, and through the `metrics` facade) and can be observed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How a lookup was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache.
    Hit,
    /// Served from the cache although stale, within allowtime or while another
    /// caller refreshes.
    StaleHit,
    /// Not in the cache (or invalidated): fetched from the database and filled
    /// (with [`crate::Settings::background_fills`], the fill under this
    /// lookup's lease was started and lands after it returned, unless a write
    /// replaced the lease meanwhile).
    Miss,
    /// Fetched from the database without filling (lost a lease, value too large,
    /// fill raced with an invalidation).
    MissNoFill,
    /// The cache is bypassed by the settings.
    Bypass,
    /// The cache failed; answered from the database.
    Degraded,
    /// Cache-only lookup that found nothing.
    NotCached,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Hit,
        Outcome::StaleHit,
        Outcome::Miss,
        Outcome::MissNoFill,
        Outcome::Bypass,
        Outcome::Degraded,
        Outcome::NotCached,
    ];

    /// The outcome's name, for logs and metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::StaleHit => "stale-hit",
            Outcome::Miss => "miss",
            Outcome::MissNoFill => "miss-no-fill",
            Outcome::Bypass => "bypass",
            Outcome::Degraded => "degraded",
            Outcome::NotCached => "not-cached",
        }
    }
}

/// One class's `flash_lookups_total` counters, one per outcome, and its
/// `flash_lookup_seconds` histogram, registered with the `metrics` recorder
/// on the class's first lookup: building a labelled key on every lookup
/// would cost a tenth of a warm batch's instructions.
#[derive(Clone, Default)]
pub struct ClassCounters(Arc<OnceLock<ClassHandles>>);

struct ClassHandles {
    lookups: [metrics::Counter; 7],
    seconds: metrics::Histogram,
}

impl std::fmt::Debug for ClassCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClassCounters")
    }
}

impl ClassCounters {
    fn get(&self, class: &str) -> &ClassHandles {
        self.0.get_or_init(|| ClassHandles {
            lookups: Outcome::ALL.map(|o| {
                metrics::counter!("flash_lookups_total", "class" => class.to_owned(), "outcome" => o.label())
            }),
            seconds: metrics::histogram!("flash_lookup_seconds", "class" => class.to_owned()),
        })
    }
}

/// Something flash did, for an observer hook (logging, the demo).
#[derive(Debug)]
pub enum FlashEvent<'a> {
    /// A lookup was answered.
    Lookup {
        /// The class looked up.
        class: &'a str,
        /// The key looked up.
        key: &'a str,
        /// How it was answered.
        outcome: Outcome,
    },
    /// The cache took the invalidation of `keys`.
    Invalidate {
        /// The model written (`"(retry)"` for a background retry).
        model: &'a str,
        /// The keys invalidated.
        keys: &'a [String],
    },
    /// The dynamic versions of a model's classes were bumped.
    VersionBump {
        /// The model.
        model: &'a str,
        /// Its classes.
        classes: &'a [String],
    },
}

pub(crate) type Observer = std::sync::Arc<dyn Fn(&FlashEvent<'_>) + Send + Sync>;

/// Process-local counters of one [`crate::Flash`] handle.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lookups served from the cache ([`Outcome::Hit`]).
    pub hits: AtomicU64,
    /// Lookups served stale ([`Outcome::StaleHit`]).
    pub stale_hits: AtomicU64,
    /// Lookups not served from the cache (miss, miss without fill, degraded, not cached).
    pub misses: AtomicU64,
    /// Values written into the cache.
    pub fills: AtomicU64,
    /// Calls of a class's fetch (the database).
    pub db_fetches: AtomicU64,
    /// Keys whose invalidation the cache took.
    pub invalidated_keys: AtomicU64,
    /// Failed cache operations.
    pub backend_errors: AtomicU64,
    /// Polls while waiting for another caller's fill.
    pub lease_waits: AtomicU64,
    /// Misses whose first read took the lease, then queried the database.
    pub leased_misses: AtomicU64,
    /// Cache requests those misses waited for before their query (one each
    /// when the backend reads and leases in one request): the cache's share
    /// of a miss's latency is `leased_round_trips / leased_misses` requests.
    pub leased_round_trips: AtomicU64,
    /// Entries read that were not served: another key's or class's bytes,
    /// corrupted, cut or extended, of another model layout, or unsealed by
    /// the secret (see [`crate::seal`]); each is refilled like a miss.
    pub rejected_entries: AtomicU64,
    /// The summary of cache errors logged while the cache fails.
    errors: ErrorLog,
}

/// Cache errors counted by operation and kind, logged as one line at most
/// every `every` (the first error after a quiet period at once): an outage
/// is a few lines, not one per lookup.
#[derive(Debug)]
struct ErrorLog {
    every_ms: AtomicU64,
    state: Mutex<ErrorCounts>,
}

#[derive(Debug, Default)]
struct ErrorCounts {
    last_line: Option<Instant>,
    counts: BTreeMap<(&'static str, &'static str), u64>,
}

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog {
            every_ms: AtomicU64::new(10_000),
            state: Mutex::default(),
        }
    }
}

impl ErrorLog {
    fn record(&self, op: &'static str, kind: &'static str) {
        let every = Duration::from_millis(self.every_ms.load(Relaxed));
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s.counts.entry((op, kind)).or_default() += 1;
        let due = s.last_line.is_none_or(|t| t.elapsed() >= every);
        if !due {
            return;
        }
        let counts = std::mem::take(&mut s.counts);
        s.last_line = Some(Instant::now());
        drop(s);
        let total: u64 = counts.values().sum();
        let by_op: Vec<String> = counts
            .iter()
            .map(|((op, kind), n)| format!("{op}/{kind}={n}"))
            .collect();
        tracing::warn!(
            errors = total,
            by_op = %by_op.join(" "),
            next_summary_in = ?every,
            "cache errors; lookups are served from the database"
        );
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::hits`].
    pub hits: u64,
    /// See [`Stats::stale_hits`].
    pub stale_hits: u64,
    /// See [`Stats::misses`].
    pub misses: u64,
    /// See [`Stats::fills`].
    pub fills: u64,
    /// See [`Stats::db_fetches`].
    pub db_fetches: u64,
    /// See [`Stats::invalidated_keys`].
    pub invalidated_keys: u64,
    /// See [`Stats::backend_errors`].
    pub backend_errors: u64,
    /// See [`Stats::lease_waits`].
    pub lease_waits: u64,
    /// See [`Stats::rejected_entries`].
    pub rejected_entries: u64,
    /// See [`Stats::leased_misses`].
    pub leased_misses: u64,
    /// See [`Stats::leased_round_trips`].
    pub leased_round_trips: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Relaxed),
            stale_hits: self.stale_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            fills: self.fills.load(Relaxed),
            db_fetches: self.db_fetches.load(Relaxed),
            invalidated_keys: self.invalidated_keys.load(Relaxed),
            backend_errors: self.backend_errors.load(Relaxed),
            lease_waits: self.lease_waits.load(Relaxed),
            rejected_entries: self.rejected_entries.load(Relaxed),
            leased_misses: self.leased_misses.load(Relaxed),
            leased_round_trips: self.leased_round_trips.load(Relaxed),
        }
    }

    /// Counts a lookup of `class` answered with `o`; `took` (when timed) goes
    /// to `flash_lookup_seconds{class}`.
    pub(crate) fn outcome(
        &self,
        class: &crate::class::ClassSpec,
        o: Outcome,
        took: Option<Duration>,
    ) {
        let c = match o {
            Outcome::Hit => &self.hits,
            Outcome::StaleHit => &self.stale_hits,
            Outcome::Miss | Outcome::MissNoFill | Outcome::Degraded | Outcome::NotCached => {
                &self.misses
            }
            Outcome::Bypass => return,
        };
        c.fetch_add(1, Relaxed);
        let h = class.counters.get(&class.name);
        h.lookups[o as usize].increment(1);
        if let Some(t) = took {
            h.seconds.record(t.as_secs_f64());
        }
    }

    /// A lookup's time alone, its outcome counted already (the hits of a
    /// page, timed together: [`crate::handle::PageReads`]).
    pub(crate) fn lookup_seconds(&self, class: &crate::class::ClassSpec, took: Duration) {
        let h = class.counters.get(&class.name);
        h.seconds.record(took.as_secs_f64());
    }

    pub(crate) fn leased_miss(&self, round_trips: u32) {
        self.leased_misses.fetch_add(1, Relaxed);
        self.leased_round_trips
            .fetch_add(u64::from(round_trips), Relaxed);
        metrics::histogram!("flash_miss_cache_round_trips").record(f64::from(round_trips));
    }

    pub(crate) fn rejected(&self, class: &crate::class::ClassSpec, why: crate::seal::Reject) {
        self.rejected_entries.fetch_add(1, Relaxed);
        metrics::counter!("flash_rejected_entries_total", "class" => class.name.clone(), "reason" => why.label())
            .increment(1);
    }

    /// How often, at most, the summary of cache errors is logged while the
    /// cache fails (default 10 s; see [`crate::FlashBuilder::error_summary_every`]).
    pub(crate) fn set_error_summary_every(&self, every: Duration) {
        self.errors
            .every_ms
            .store(every.as_millis().try_into().unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn backend_error(&self, op: &'static str, e: &crate::error::BackendError) {
        self.backend_errors.fetch_add(1, Relaxed);
        let kind = e.kind();
        metrics::counter!("flash_cache_errors_total", "op" => op, "error" => kind).increment(1);
        tracing::debug!(op, error = %e, "cache backend error; serving from the database");
        self.errors.record(op, kind);
    }
}
