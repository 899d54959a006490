//! Waiting for another caller's fill, with one poll per key per process.
//!
//! Callers that lost the lease on a key wait for the winner's value. If each
//! polled the cache, a burst of a thousand lookups would be a thousand polls
//! every few milliseconds. Instead one poller task per key reads the cache and
//! publishes each read with the instant it *started*; a waiter only accepts a
//! read that started after it began waiting, so what it gets is exactly what
//! its own read would have returned (a value filled under a valid lease), never
//! an older answer.

use crate::backend::{Backend, Bytes, Lease, LeaseRead};
use crate::error::BackendError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One read of the keys by a reader task.
#[derive(Clone, Debug)]
struct Read {
    started: Instant,
    result: Result<Vec<Option<Bytes>>, BackendError>,
}

type Readers = Arc<Mutex<HashMap<String, watch::Receiver<Option<Read>>>>>;

/// The shared readers of one `Flash` handle. Cloning shares them.
#[derive(Clone, Default)]
pub(super) struct Waits {
    // std Mutex: held for a map lookup or insert, never across an await.
    readers: Readers,
}

fn lock(p: &Readers) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<Read>>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a reader task paces its reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// Read at once and again right away for whoever joined meanwhile: the
    /// first read of a lookup, coalesced across a burst.
    Now,
    /// Poll with a growing pause (1 ms to 20 ms): waiting for another
    /// caller's fill.
    Poll,
}

impl Waits {
    /// The next read of `keys` that started after this call, or `None` when
    /// `deadline` comes first.
    pub(super) async fn next_read(
        &self,
        backend: &Arc<dyn Backend>,
        keys: &[String],
        pace: Pace,
        deadline: Instant,
    ) -> Option<Result<Vec<Option<Bytes>>, BackendError>> {
        self.next_read_or_lease(backend, keys, pace, None, deadline)
            .await
            .map(|r| r.map(|r| r.values))
    }

    /// Like [`Self::next_read`]; with `lease` (the lease entry, the marker
    /// prefix it may replace and its TTL),
    /// a caller that reads itself reads with [`Backend::get_or_lease`] and
    /// may come back holding the lease. Those who shared its read see the
    /// lease in the key, as a read after it would, and wait for the fill.
    pub(super) async fn next_read_or_lease(
        &self,
        backend: &Arc<dyn Backend>,
        keys: &[String],
        pace: Pace,
        lease: Option<(&[u8], &[u8], Duration)>,
        deadline: Instant,
    ) -> Option<Result<LeaseRead, BackendError>> {
        let joined = Instant::now();
        let id = format!(
            "{}{}",
            if pace == Pace::Now { 'n' } else { 'p' },
            keys.join("\n")
        );
        let (mut rx, lead) = {
            let mut readers = lock(&self.readers);
            match readers.get(&id) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    readers.insert(id.clone(), rx.clone());
                    (rx, Some(tx))
                }
            }
        };
        if let Some(tx) = lead {
            if pace == Pace::Now {
                // The first caller reads itself (no task, no hop between
                // threads on the common, uncontended path) and hands over to a
                // reader task only if others joined while it read.
                let result = match lease {
                    Some((lease, over, ttl)) => backend.get_or_lease(keys, lease, over, ttl).await,
                    None => backend.get_many(keys).await.map(|values| LeaseRead {
                        values,
                        lease: None,
                        round_trips: 1,
                    }),
                };
                let shared = result.as_ref().map(|r| {
                    let mut values = r.values.clone();
                    match (&r.lease, values.first_mut()) {
                        (Some(Lease::Bytes(b)), Some(v)) => *v = Some(Bytes::copy_from_slice(b)),
                        (Some(Lease::Token(_)), Some(v)) => *v = Some(Bytes::new()),
                        _ => {}
                    }
                    values
                });
                let _ = tx.send(Some(Read {
                    started: joined,
                    result: shared.map_err(Clone::clone),
                }));
                drop(rx);
                let mut map = lock(&self.readers);
                if tx.receiver_count() <= 1 {
                    map.remove(&id);
                } else {
                    drop(map);
                    tokio::spawn(reader(
                        self.readers.clone(),
                        backend.clone(),
                        id,
                        keys.to_vec(),
                        pace,
                        tx,
                    ));
                }
                return Some(result);
            }
            tokio::spawn(reader(
                self.readers.clone(),
                backend.clone(),
                id.clone(),
                keys.to_vec(),
                pace,
                tx,
            ));
        }
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The reading caller was cancelled before it handed over:
                // clear its entry and start again.
                Ok(Err(_)) => {
                    {
                        let mut map = lock(&self.readers);
                        if map.get(&id).is_some_and(|r| r.same_channel(&rx)) {
                            map.remove(&id);
                        }
                    }
                    return Box::pin(self.next_read_or_lease(backend, keys, pace, lease, deadline))
                        .await;
                }
                Err(_) => return None,
            }
            if let Some(r) = rx.borrow_and_update().as_ref() {
                if r.started >= joined {
                    return Some(r.result.clone().map(|values| LeaseRead {
                        values,
                        lease: None,
                        round_trips: 1,
                    }));
                }
            }
        }
    }
}

/// Reads `keys` while anyone waits for a read.
async fn reader(
    readers: Readers,
    backend: Arc<dyn Backend>,
    id: String,
    keys: Vec<String>,
    pace: Pace,
    tx: watch::Sender<Option<Read>>,
) {
    let mut pause = Duration::from_millis(1);
    loop {
        if pace == Pace::Poll {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let started = Instant::now();
        let result = backend.get_many(&keys).await;
        let _ = tx.send(Some(Read { started, result }));
        // Waiters subscribe under this lock, so none can join between the
        // check and the removal. One receiver is the map's own.
        tokio::task::yield_now().await;
        let mut map = lock(&readers);
        if tx.receiver_count() <= 1 {
            map.remove(&id);
            return;
        }
    }
}

/// Keys on which a task of this process is taking (or holds) the lease: the
/// others of the process wait for its fill instead of sending their own
/// attempt, so a burst in one process costs the cache one attempt.
#[derive(Clone, Default)]
pub(super) struct Claims {
    // std Mutex: held for a set insert or remove, never across an await.
    keys: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Releases a claim when dropped (also when the lookup is cancelled).
pub(super) struct Claim {
    keys: Arc<Mutex<std::collections::HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Claims {
    /// The claim on `key`, unless another task of this process has it.
    pub(super) fn try_claim(&self, key: &str) -> Option<Claim> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.insert(key.to_owned()).then(|| Claim {
            keys: self.keys.clone(),
            key: key.to_owned(),
        })
    }
}
