//! [`Hooked`]: the one forwarding test backend. It passes every operation to an
//! inner backend, counts the calls per operation, and lets a test inject an
//! error or a delay before an operation, watch what each operation returned,
//! and override what the backend says about itself (its name, its item
//! limit, whether reads are coalesced). A test states its fault in a closure
//! instead of writing a wrapper that forwards every [`Backend`] method.
//!
//! ```
//! use flash_core::{Backend, BackendError, MemoryBackend};
//! use flash_test_kit::hooked::{Hooked, Op};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // Invalidations (set_many) refused, everything else served by the store.
//! let b = Hooked::new(MemoryBackend::default()).before(|call| match call.op {
//!     Op::SetMany => Err(BackendError::Unreachable("test".into())),
//!     _ => Ok(()),
//! });
//! let ttl = std::time::Duration::from_secs(60);
//! assert!(b.set_many(&[("k".into(), b"v".to_vec())], ttl).await.is_err());
//! b.set("k", b"v", ttl).await.unwrap();
//! assert_eq!((b.calls(Op::SetMany), b.writes()), (1, 2));
//! # }
//! ```

use async_trait::async_trait;
use flash_core::{Backend, BackendError, Bytes, Lease, LeaseRead};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// One operation of the [`Backend`] trait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    GetMany,
    Set,
    Add,
    CompareAndSwap,
    Delete,
    SetMany,
}

impl Op {
    /// Every operation but [`Op::GetMany`] changes what the cache holds.
    pub fn is_write(self) -> bool {
        self != Op::GetMany
    }
}

const OPS: usize = 6;

/// One call, as a [`Hooked::before`] hook sees it.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: Op,
    /// The keys it reads or writes.
    pub keys: Vec<&'a str>,
    /// The values it would store: a set's or add's value, a compare-and-swap's
    /// new value (when not a delete), each item of a `set_many`.
    pub values: Vec<&'a [u8]>,
}

type Before = Box<dyn Fn(&Call<'_>) -> Result<(), BackendError> + Send + Sync>;
type After = Box<dyn Fn(Op, Result<(), &BackendError>) + Send + Sync>;

/// A backend that forwards to `inner`, with hooks. Built once by chaining
/// [`new`](Self::new) and the setters, then shared (usually in an `Arc`: the
/// test keeps one handle to read the counters, flash gets the other).
///
/// Each call: its counter goes up; the `before` hook, if any, may refuse it
/// with an error (the inner backend is then not called); the operation's
/// delay, if any, is slept; the inner backend answers; the `after` hook, if
/// any, sees the result the caller gets.
pub struct Hooked<B> {
    inner: B,
    /// Overrides of what the backend says about itself (`None`: the inner's).
    name: Option<&'static str>,
    max_value_size: Option<usize>,
    coalesce_reads: Option<bool>,
    delays: [Duration; OPS],
    reply_delays: [Duration; OPS],
    /// Pause between the keys of a multi-get (`None`: one inner call).
    split_reads: Option<Duration>,
    /// Forward `get_or_lease` and `swap_lease` to the inner backend (else
    /// the trait's defaults, made of the hooked `get_many`, `add` and
    /// `compare_and_swap`).
    native_leases: bool,
    before: Option<Before>,
    after: Option<After>,
    /// Calls per operation, [`Op`] as the index.
    calls: [AtomicU64; OPS],
}

impl<B: Backend> Hooked<B> {
    /// Forwards everything to `inner`, no hooks.
    pub fn new(inner: B) -> Self {
        Hooked {
            inner,
            name: None,
            max_value_size: None,
            coalesce_reads: None,
            delays: [Duration::ZERO; OPS],
            reply_delays: [Duration::ZERO; OPS],
            split_reads: None,
            native_leases: false,
            before: None,
            after: None,
            calls: Default::default(),
        }
    }

    /// The name reported to flash (logs, the `backend` label of metrics).
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// The item limit reported to flash (the inner backend does not enforce it:
    /// add a `before` hook for that).
    pub fn max_value_size(mut self, limit: usize) -> Self {
        self.max_value_size = Some(limit);
        self
    }

    /// Whether flash should coalesce concurrent reads of a key (a server
    /// backend says yes, the in-process one no).
    pub fn coalesce_reads(mut self, yes: bool) -> Self {
        self.coalesce_reads = Some(yes);
        self
    }

    /// Sleeps `delay` before each `op` reaches the inner backend.
    pub fn delay(mut self, op: Op, delay: Duration) -> Self {
        self.delays[op as usize] = delay;
        self
    }

    /// Sleeps `delay` after the inner backend answered `op`, before the
    /// caller gets the answer: a reply in flight while other calls land.
    pub fn reply_delay(mut self, op: Op, delay: Duration) -> Self {
        self.reply_delays[op as usize] = delay;
        self
    }

    /// Answers a multi-get key by key, pausing `pause` between keys: a
    /// multi-get that is not atomic (memcached, the in-process store, keys on
    /// several servers), its window widened so that writes land inside it.
    pub fn split_reads(mut self, pause: Duration) -> Self {
        self.split_reads = Some(pause);
        self
    }

    /// Forwards `get_or_lease` (counted and hooked as a [`Op::GetMany`]: it
    /// is the lookup's read) and `swap_lease` (as a [`Op::CompareAndSwap`])
    /// to the inner backend, so that its one-request miss is what runs.
    /// Without it they are the trait's defaults over the hooked operations.
    pub fn native_leases(mut self, yes: bool) -> Self {
        self.native_leases = yes;
        self
    }

    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let Some(pause) = self.split_reads.filter(|_| keys.len() > 1) else {
            return self.inner.get_many(keys).await;
        };
        let mut out = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            out.extend(self.inner.get_many(std::slice::from_ref(k)).await?);
        }
        Ok(out)
    }

    /// Runs before each call; an error is returned to the caller instead of
    /// calling the inner backend.
    pub fn before(
        mut self,
        hook: impl Fn(&Call<'_>) -> Result<(), BackendError> + Send + Sync + 'static,
    ) -> Self {
        self.before = Some(Box::new(hook));
        self
    }

    /// Runs after each call with its result (as the caller gets it).
    pub fn after(
        mut self,
        hook: impl Fn(Op, Result<(), &BackendError>) + Send + Sync + 'static,
    ) -> Self {
        self.after = Some(Box::new(hook));
        self
    }

    /// The wrapped backend, to read or write behind flash's back.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Calls of `op` so far (refused ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[op as usize].load(SeqCst)
    }

    /// Calls of every writing operation so far.
    pub fn writes(&self) -> u64 {
        [
            Op::Set,
            Op::Add,
            Op::CompareAndSwap,
            Op::Delete,
            Op::SetMany,
        ]
        .into_iter()
        .map(|op| self.calls(op))
        .sum()
    }

    async fn around<'a, T>(
        &self,
        op: Op,
        call: impl FnOnce() -> Call<'a>,
        forward: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.calls[op as usize].fetch_add(1, SeqCst);
        let refused = match &self.before {
            Some(hook) => hook(&call()).err(),
            None => None,
        };
        let result = match refused {
            Some(e) => Err(e),
            None => {
                let delay = self.delays[op as usize];
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let result = forward.await;
                let delay = self.reply_delays[op as usize];
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                result
            }
        };
        if let Some(hook) = &self.after {
            hook(op, result.as_ref().map(|_| ()));
        }
        result
    }
}

#[async_trait]
impl<B: Backend> Backend for Hooked<B> {
    fn name(&self) -> &'static str {
        self.name.unwrap_or_else(|| self.inner.name())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let call = || Call {
            op: Op::GetMany,
            keys: keys.iter().map(String::as_str).collect(),
            values: Vec::new(),
        };
        self.around(Op::GetMany, call, self.read(keys)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), BackendError> {
        let call = || Call {
            op: Op::Set,
            keys: vec![key],
            values: vec![value],
        };
        self.around(Op::Set, call, self.inner.set(key, value, ttl))
            .await
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, BackendError> {
        let call = || Call {
            op: Op::Add,
            keys: vec![key],
            values: vec![value],
        };
        self.around(Op::Add, call, self.inner.add(key, value, ttl))
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let call = || Call {
            op: Op::CompareAndSwap,
            keys: vec![key],
            values: new.into_iter().collect(),
        };
        let forward = self.inner.compare_and_swap(key, expected, new, ttl);
        self.around(Op::CompareAndSwap, call, forward).await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let call = || Call {
            op: Op::Delete,
            keys: vec![key],
            values: Vec::new(),
        };
        self.around(Op::Delete, call, self.inner.delete(key)).await
    }

    async fn set_many(
        &self,
        items: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let call = || Call {
            op: Op::SetMany,
            keys: items.iter().map(|(k, _)| k.as_str()).collect(),
            values: items.iter().map(|(_, v)| v.as_slice()).collect(),
        };
        self.around(Op::SetMany, call, self.inner.set_many(items, ttl))
            .await
    }

    async fn get_or_lease(
        &self,
        keys: &[String],
        lease: &[u8],
        over: &[u8],
        ttl: Duration,
    ) -> Result<LeaseRead, BackendError> {
        if !self.native_leases || self.split_reads.is_some() {
            // The trait's default, through the hooks of each operation.
            let values = self.get_many(keys).await?;
            let took = match (keys.first(), values.first()) {
                (Some(key), Some(None)) => self.add(key, lease, ttl).await?,
                (Some(key), Some(Some(v))) if !over.is_empty() && v.starts_with(over) => {
                    self.compare_and_swap(key, v, Some(lease), ttl).await?
                }
                _ => {
                    return Ok(LeaseRead {
                        values,
                        lease: None,
                        round_trips: 1,
                    })
                }
            };
            return Ok(LeaseRead {
                values,
                lease: took.then(|| Lease::Bytes(lease.to_vec())),
                round_trips: 2,
            });
        }
        let call = || Call {
            op: Op::GetMany,
            keys: keys.iter().map(String::as_str).collect(),
            values: Vec::new(),
        };
        let forward = self.inner.get_or_lease(keys, lease, over, ttl);
        self.around(Op::GetMany, call, forward).await
    }

    async fn swap_lease(
        &self,
        key: &str,
        lease: &Lease,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        match lease {
            Lease::Bytes(b) if !self.native_leases => self.compare_and_swap(key, b, new, ttl).await,
            _ => {
                let call = || Call {
                    op: Op::CompareAndSwap,
                    keys: vec![key],
                    values: new.into_iter().collect(),
                };
                let forward = self.inner.swap_lease(key, lease, new, ttl);
                self.around(Op::CompareAndSwap, call, forward).await
            }
        }
    }

    fn max_value_size(&self) -> usize {
        self.max_value_size
            .unwrap_or_else(|| self.inner.max_value_size())
    }

    fn coalesce_reads(&self) -> bool {
        self.coalesce_reads
            .unwrap_or_else(|| self.inner.coalesce_reads())
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}
