//! Invalidations the cache refused: kept in this process until the cache takes
//! them, retried by a background task. While a key is pending, lookups of it
//! go to the database, so this process never serves what a write replaced.

use super::task::TaskGuard;
use super::{Flash, Inner};
use crate::handle::KeySet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock, Weak};
use std::time::Duration;

/// Bound of the keys one process keeps for re-application.
const MAX_PENDING_KEYS: usize = 1_000_000;

/// How often the retry task re-applies what is pending (or every
/// [`Settings::version_refresh`](super::Settings::version_refresh), if shorter).
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// The pending-invalidation set of one handle and the task that retries it.
#[derive(Default)]
pub(super) struct Invalidator {
    /// The keys refused so far. std Mutex: held for set operations only,
    /// never across an await.
    pending: Mutex<KeySet>,
    /// Is anything pending at all? Lets every lookup skip the lock.
    has_pending: AtomicBool,
    /// Counts the times pending keys were forgotten (their markers landed).
    /// A cache read that started before such a moment may hold bytes older
    /// than the markers while the key no longer shows as pending: lookups
    /// note this counter before they read and distrust what they read when
    /// it moved (see [`Invalidator::untrusted`]).
    cleared: AtomicU64,
    /// The retry task. Set once, right after the handle is built (the task
    /// needs the handle); aborted when the handle is dropped.
    retry_task: OnceLock<TaskGuard>,
}

impl Invalidator {
    /// Starts the retry task. It holds only a weak reference to the handle,
    /// so it does not keep it alive; dropping the handle aborts it.
    pub(super) fn start_retries(&self, handle: Weak<Inner>, version_refresh: Duration) {
        let every = RETRY_EVERY.min(version_refresh);
        let task = TaskGuard::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = handle.upgrade() else {
                    return;
                };
                if let Err(e) = (Flash { inner }).retry_pending().await {
                    tracing::debug!(error = %e, "pending invalidations still refused");
                }
            }
        });
        let _ = self.retry_task.set(task);
    }

    /// Keeps `keys` for the retry task (unless that would pass the bound).
    pub(super) fn defer(&self, keys: &KeySet) {
        if let Ok(mut p) = self.pending.lock() {
            if p.len() + keys.len() > MAX_PENDING_KEYS {
                tracing::error!(keys = keys.len(), "too many pending invalidations; dropping some (the outbox, if on, still has them)");
                metrics::counter!("flash_invalidations_dropped_total").increment(keys.len() as u64);
                return;
            }
            p.extend(keys.clone());
            self.has_pending.store(true, SeqCst);
        }
    }

    /// Is `key` waiting for an invalidation the cache has not taken yet?
    pub(super) fn is_pending(&self, key: &str) -> bool {
        if !self.has_pending.load(SeqCst) {
            return false;
        }
        self.pending
            .lock()
            .map(|p| p.unset.contains(key) || p.dynamic.contains(key))
            .unwrap_or(false)
    }

    /// The moment a cache read starts, for [`Invalidator::untrusted`].
    pub(super) fn read_epoch(&self) -> u64 {
        self.cleared.load(SeqCst)
    }

    /// May the bytes read for `key` by a read that started at `epoch` be
    /// older than an invalidation this process made? Yes while the key is
    /// pending, and also when pending keys were forgotten since the read
    /// started: the read may have been answered before the markers landed.
    /// (Forgetting is rare: only after the cache refused a write.)
    pub(super) fn untrusted(&self, key: &str, epoch: u64) -> bool {
        self.is_pending(key) || self.cleared.load(SeqCst) != epoch
    }

    /// What is pending now, or `None` when nothing is.
    pub(super) fn pending(&self) -> Option<KeySet> {
        if !self.has_pending.load(SeqCst) {
            return None;
        }
        Some(self.pending.lock().map(|p| p.clone()).unwrap_or_default())
    }

    /// Forgets `keys`: the cache has taken them.
    pub(super) fn applied(&self, keys: &KeySet) {
        if let Ok(mut p) = self.pending.lock() {
            // Before the keys stop showing as pending (both under the lock):
            // a reader that no longer sees them pending sees the new count.
            self.cleared.fetch_add(1, SeqCst);
            p.unset.retain(|k| !keys.unset.contains(k));
            p.dynamic.retain(|k| !keys.dynamic.contains(k));
            if p.is_empty() {
                self.has_pending.store(false, SeqCst);
            }
        }
    }
}
