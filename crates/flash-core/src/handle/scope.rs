//! Request scopes: async lookups batched DataLoader-style. Lookups
//! started together through one [`Scope`] (in one `join!`, `join_all`, or
//! tasks that start them before the scope's dispatcher runs) are resolved as
//! one [`crate::Batch`], one `get_many`; and every value a scope has loaded is
//! kept for the rest of its life, so a request that asks twice asks the cache
//! once.
//!
//! A scope is meant to live as long as one request: its memo is never
//! invalidated, which is what "the rest of the request" means. Clones share
//! the batch queue and the memo.

use super::batch::{Batch, BatchResults, Query};
use super::Flash;
use crate::class::CacheValue;
use crate::error::Error;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{oneshot, OnceCell};

/// Adds one queued lookup to the batch; the returned closure delivers its result.
type Enqueue = Box<dyn FnOnce(&mut Batch<'_>) -> Deliver + Send>;
type Deliver = Box<dyn FnOnce(&mut BatchResults) + Send>;
type Value = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct State {
    /// Lookups waiting for the next batch.
    queue: Vec<Enqueue>,
    /// Is a dispatcher task on its way to run the queue?
    scheduled: bool,
    /// Loaded values by cache key (a cell per key: concurrent lookups of one
    /// key wait for the first one's load).
    memo: HashMap<String, Arc<OnceCell<Value>>>,
}

/// A request's view of the cache; see the module docs. Start one with
/// [`Flash::scope`].
///
/// ```no_run
/// # async fn f(flash: flash_core::Flash, a: flash_core::Query<u32>, b: flash_core::Query<String>)
/// # -> Result<(), flash_core::Error> {
/// let scope = flash.scope();
/// // One get_many for both; a second load of either key is answered from the scope.
/// let (x, y) = tokio::join!(scope.load(a), scope.load(b));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Scope {
    flash: Flash,
    state: Arc<Mutex<State>>,
}

impl Flash {
    /// A request scope: lookups started together share one batch, and loaded
    /// values are kept for the scope's life.
    pub fn scope(&self) -> Scope {
        Scope {
            flash: self.clone(),
            state: Arc::default(),
        }
    }
}

impl Scope {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Never held across an await, nor while user code runs.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads `query`: from the scope's memo, or with the other lookups
    /// started with it in one batch. Errors are not kept: a later load of the
    /// same key tries again.
    pub async fn load<T: CacheValue>(&self, query: Query<T>) -> Result<T, Error> {
        let key = query.key(&self.flash)?;
        let cell = self.lock().memo.entry(key.clone()).or_default().clone();
        let value = cell
            .get_or_try_init(|| async {
                let v: T = self.batched(query).await?;
                Ok::<Value, Error>(Arc::new(v))
            })
            .await?;
        value
            .downcast_ref::<T>()
            .cloned()
            .ok_or(Error::KeyTypeConflict(key))
    }

    /// Number of keys the scope holds values for.
    pub fn memoised(&self) -> usize {
        self.lock()
            .memo
            .values()
            .filter(|c| c.initialized())
            .count()
    }

    /// Queues `query` for the next batch and waits for its result.
    async fn batched<T: CacheValue>(&self, query: Query<T>) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel::<Result<T, Error>>();
        let enqueue: Enqueue = Box::new(move |batch: &mut Batch<'_>| {
            let handle = batch.add(query);
            Box::new(move |results: &mut BatchResults| {
                let _ = tx.send(results.take(handle));
            })
        });
        let dispatch = {
            let mut state = self.lock();
            state.queue.push(enqueue);
            !std::mem::replace(&mut state.scheduled, true)
        };
        if dispatch {
            // A task of its own, so that the batch runs even if the lookup
            // that scheduled it is dropped. It starts after the current poll
            // of the caller's task, when the lookups started with this one
            // have queued too.
            let scope = self.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                scope.dispatch().await;
            });
        }
        rx.await.unwrap_or(Err(Error::ScopeStopped))
    }

    async fn dispatch(&self) {
        let queued = {
            let mut state = self.lock();
            state.scheduled = false;
            std::mem::take(&mut state.queue)
        };
        let mut batch = self.flash.batch();
        let deliveries: Vec<Deliver> = queued.into_iter().map(|q| q(&mut batch)).collect();
        tracing::trace!(lookups = deliveries.len(), "scope batch");
        let mut results = batch.run().await;
        for deliver in deliveries {
            deliver(&mut results);
        }
    }
}
