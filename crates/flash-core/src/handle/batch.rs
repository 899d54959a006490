//! Batches: many lazy lookups of different classes resolved with one
//! `get_many`, each falling back to the database on its own. Lookups the
//! near tier answers are left out of the `get_many`; the others' hits fill it
//! (guarded as a single lookup's are).

use super::read::ReadNow;
use super::Flash;
use crate::backend::Bytes;
use crate::class::{CacheValue, Class, ClassSpec, Invalidation};
use crate::error::{BackendError, Error};
use crate::key::{stale_key, with_key_buf};
use crate::near::Token;
use crate::stats::Outcome;
use crate::value::FieldValue;
use futures::future::{join_all, BoxFuture};
use std::any::Any;
use std::marker::PhantomData;

/// A lookup not yet run: a class and its key values. Run it alone with
/// [`Query::run`] or with others in a [`Batch`].
pub struct Query<T> {
    class: Class<T>,
    values: Vec<FieldValue>,
}

impl<T: CacheValue> Query<T> {
    /// A lookup of `class` for `values`, in key-field order.
    pub fn new(class: &Class<T>, values: Vec<FieldValue>) -> Self {
        Query {
            class: class.clone(),
            values,
        }
    }
    /// Runs the lookup alone (as [`Flash::get`]).
    pub async fn run(&self, flash: &Flash) -> Result<T, Error> {
        flash.get(&self.class, &self.values).await
    }
    /// The key the lookup reads.
    pub fn key(&self, flash: &Flash) -> Result<String, Error> {
        flash.key_of(&self.class, &self.values)
    }
}

/// Where a query's result sits in [`BatchResults`].
pub struct Handle<T> {
    index: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}

type Resolved = Result<(Box<dyn Any + Send>, Outcome), Error>;

trait Pending: Send + Sync {
    fn spec(&self) -> &ClassSpec;
    /// Appends the keys the query reads to `out`, its own first (built
    /// once: the batch's multi-get and the decision both use these).
    fn push_keys(&self, flash: &Flash, out: &mut Vec<String>) -> Result<(), Error>;
    /// The answer from the near tier, if the class has one that holds `key`.
    fn near_hit(&self, flash: &Flash, key: &str) -> Option<Resolved>;
    /// The answer when the cache holds a value to serve as is: decided
    /// without a future (most of a warm batch).
    fn try_hit(
        &self,
        flash: &Flash,
        key: &str,
        raw: &[Option<Bytes>],
        epoch: u64,
    ) -> Option<Resolved>;
    /// The query's key read without waiting, where the backend can (see
    /// [`Flash::read_now`]), the key built in the thread's buffer: `Ok`
    /// with a hit to serve as is, `Err` with the bytes read for the
    /// decision; `None` when it was not read.
    fn read_now(&self, flash: &Flash) -> Option<Result<Resolved, ReadNow>>;
    fn resolve<'a>(
        &'a self,
        flash: &'a Flash,
        key: &'a str,
        raw: Vec<Option<Bytes>>,
        epoch: u64,
        cache_only: bool,
    ) -> BoxFuture<'a, Resolved>;
    fn fetch<'a>(&'a self, flash: &'a Flash) -> BoxFuture<'a, Resolved>;
}

impl<T: CacheValue> Pending for Query<T> {
    fn spec(&self) -> &ClassSpec {
        &self.class.spec
    }
    fn try_hit(
        &self,
        flash: &Flash,
        key: &str,
        raw: &[Option<Bytes>],
        epoch: u64,
    ) -> Option<Resolved> {
        let v = flash.try_serve::<T>(&self.class.spec, key, raw, epoch)?;
        Some(Ok((Box::new(v) as Box<dyn Any + Send>, Outcome::Hit)))
    }
    fn read_now(&self, flash: &Flash) -> Option<Result<Resolved, ReadNow>> {
        let spec = &self.class.spec;
        with_key_buf(|key| {
            if !flash.key_in(spec, &self.values, key) {
                return None;
            }
            let now = flash.read_now(spec, key)?;
            Some(
                match flash.try_serve::<T>(spec, key, now.raw(), now.epoch) {
                    Some(v) => Ok(Ok((Box::new(v) as Box<dyn Any + Send>, Outcome::Hit))),
                    None => Err(now),
                },
            )
        })
    }
    fn push_keys(&self, flash: &Flash, out: &mut Vec<String>) -> Result<(), Error> {
        let key = flash.key_of(&self.class, &self.values)?;
        let stale =
            (self.class.spec.invalidation == Invalidation::Dynamic).then(|| stale_key(&key));
        out.push(key);
        out.extend(stale);
        Ok(())
    }
    fn near_hit(&self, flash: &Flash, key: &str) -> Option<Resolved> {
        let v = flash.near_hit::<T>(&self.class.spec, key)?;
        Some(Ok((Box::new(v) as Box<dyn Any + Send>, Outcome::Hit)))
    }
    fn resolve<'a>(
        &'a self,
        flash: &'a Flash,
        key: &'a str,
        raw: Vec<Option<Bytes>>,
        epoch: u64,
        cache_only: bool,
    ) -> BoxFuture<'a, Resolved> {
        Box::pin(async move {
            let (v, o) = flash
                .resolve(&self.class, &self.values, key, raw, epoch, cache_only)
                .await?;
            Ok((Box::new(v) as Box<dyn Any + Send>, o))
        })
    }
    fn fetch<'a>(&'a self, flash: &'a Flash) -> BoxFuture<'a, Resolved> {
        Box::pin(async move {
            let v = flash.fetch(&self.class, &self.values).await?;
            Ok((Box::new(v) as Box<dyn Any + Send>, Outcome::Degraded))
        })
    }
}

/// Where a query's keys sit in the batch's list, the near tier's fill
/// guard, and what an in-process read gave it already.
struct Plan {
    start: usize,
    len: usize,
    token: Option<Token>,
    now: Option<ReadNow>,
}

/// How a batch treats misses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchMode {
    /// Misses fall back to the database (and fill).
    #[default]
    Fallback,
    /// No database: a miss is [`Error::NotCached`] in the results.
    CacheOnly,
}

/// Many queries, one round trip.
pub struct Batch<'f> {
    flash: &'f Flash,
    queries: Vec<Box<dyn Pending>>,
    mode: BatchMode,
}

impl Flash {
    /// An empty batch; misses fall back to the database.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            flash: self,
            queries: Vec::new(),
            mode: BatchMode::Fallback,
        }
    }
    /// A lazy query of `class`.
    pub fn query<T: CacheValue>(&self, class: &Class<T>, values: Vec<FieldValue>) -> Query<T> {
        Query::new(class, values)
    }
}

impl<'f> Batch<'f> {
    /// Adds `q`; its result is taken from the [`BatchResults`] with the handle.
    pub fn add<T: CacheValue>(&mut self, q: Query<T>) -> Handle<T> {
        self.queries.push(Box::new(q));
        Handle {
            index: self.queries.len() - 1,
            _t: PhantomData,
        }
    }
    /// How the batch treats misses.
    pub fn mode(mut self, mode: BatchMode) -> Self {
        self.mode = mode;
        self
    }
    /// Misses are [`Error::NotCached`]; the database is not read.
    pub fn cache_only(self) -> Self {
        self.mode(BatchMode::CacheOnly)
    }

    /// Resolves every query: one `get_many` for all keys, then each query's own
    /// decision (and fallback) concurrently. Errors are per query.
    pub async fn run(self) -> BatchResults {
        let flash = self.flash;
        let started = flash.settings().time_lookups.then(std::time::Instant::now);
        let cache_only = self.mode == BatchMode::CacheOnly;
        let bypassed = flash.is_bypassed();
        // Every query's keys moved into one list; a query keeps its range
        // (and the near tier's fill guard, taken before the read). Queries
        // answered already (a bad key, a near hit, an in-process hit) have
        // no range. An in-process store is read query by query without
        // waiting, as a single lookup reads it: a hit is decided on the
        // spot (its key never leaves the thread's buffer), the others keep
        // what they read.
        let mut all_keys: Vec<String> = Vec::with_capacity(self.queries.len());
        let mut results: Vec<Option<Resolved>> = Vec::with_capacity(self.queries.len());
        let mut planned: Vec<Option<Plan>> = Vec::with_capacity(self.queries.len());
        let mut to_read = false;
        for q in &self.queries {
            let now = match !bypassed && flash.may_read_now(q.spec()) {
                true => q.read_now(flash),
                false => None,
            };
            let now = match now {
                Some(Ok(hit)) => {
                    results.push(Some(hit));
                    planned.push(None);
                    continue;
                }
                Some(Err(now)) => Some(now),
                None => None,
            };
            let start = all_keys.len();
            if let Err(e) = q.push_keys(flash, &mut all_keys) {
                results.push(Some(Err(e)));
                planned.push(None);
                continue;
            }
            let key = &all_keys[start];
            let near_hit = (!bypassed && now.is_none())
                .then(|| q.near_hit(flash, key))
                .flatten();
            if let Some(hit) = near_hit {
                all_keys.truncate(start);
                results.push(Some(hit));
                planned.push(None);
                continue;
            }
            let token = flash.near_for(q.spec()).map(|n| n.token(key));
            to_read |= now.is_none();
            results.push(None);
            planned.push(Some(Plan {
                start,
                len: all_keys.len() - start,
                token,
                now,
            }));
        }
        let all_keys = &all_keys;
        let epoch = flash.read_epoch();
        let fetched = if bypassed || !to_read {
            None
        } else {
            // One answer per key, or none: a short answer is the backend's
            // error (the queries then go to the database), not a panic.
            let read = flash.backend().get_many(all_keys).await.and_then(|r| {
                match r.len() == all_keys.len() {
                    true => Ok(r),
                    false => Err(BackendError::Protocol(format!(
                        "{} answers to {} keys",
                        r.len(),
                        all_keys.len()
                    ))),
                }
            });
            match read {
                Ok(r) => Some(r),
                Err(e) => {
                    flash.stats().backend_error("get_many", &e);
                    None
                }
            }
        };
        let raw = fetched.as_deref();
        // Hits are decided on the spot, on the read's own slice of the
        // answer; only the rest become futures (with a copy of their slice).
        let mut futures: Vec<(usize, BoxFuture<'_, Resolved>)> = Vec::new();
        for (i, (q, plan)) in self.queries.iter().zip(planned).enumerate() {
            let Some(Plan {
                start,
                len,
                token,
                now,
            }) = plan
            else {
                continue;
            };
            let key = all_keys[start].as_str();
            // Read already, and not a hit (decided above).
            if let Some(now) = now {
                let epoch = now.epoch;
                let mine = now.into_raw();
                futures.push((
                    i,
                    Box::pin(async move { q.resolve(flash, key, mine, epoch, cache_only).await }),
                ));
                continue;
            }
            match raw {
                Some(raw) => {
                    let mine = &raw[start..start + len];
                    match q.try_hit(flash, key, mine, epoch) {
                        Some(hit) => {
                            if let (Some(token), Some(near), Some(Some(bytes))) =
                                (token, flash.near_for(q.spec()), mine.first())
                            {
                                near.fill(key, bytes, token);
                            }
                            results[i] = Some(hit);
                        }
                        None => {
                            let mine = mine.to_vec();
                            futures.push((
                                i,
                                Box::pin(async move {
                                    q.resolve(flash, key, mine, epoch, cache_only).await
                                }),
                            ))
                        }
                    }
                }
                None if cache_only => {
                    results[i] = Some(Err(Error::NotCached(all_keys[start].clone())))
                }
                None => futures.push((i, q.fetch(flash))),
            }
        }
        // A warm batch has none: no join to build and poll then.
        if !futures.is_empty() {
            let (slots, futures): (Vec<usize>, Vec<_>) = futures.into_iter().unzip();
            for (i, r) in slots.into_iter().zip(join_all(futures).await) {
                results[i] = Some(r);
            }
        }
        // Each query's latency is the batch's: its result is the caller's
        // when the whole batch has run.
        let took = started.map(|t| t.elapsed());
        for (q, r) in self.queries.iter().zip(&results) {
            if let Some(Ok((_, o))) = r {
                flash.stats().outcome(q.spec(), *o, took);
            }
        }
        BatchResults { results }
    }
}

/// The results of a batch, taken out by [`Handle`].
pub struct BatchResults {
    results: Vec<Option<Resolved>>,
}

impl BatchResults {
    /// The result of one query (errors as results). Taking twice gives
    /// [`Error::ResultTaken`].
    pub fn take<T: 'static>(&mut self, h: Handle<T>) -> Result<T, Error> {
        self.take_with_outcome(h).map(|(v, _)| v)
    }
    /// The result and how it was answered.
    pub fn take_with_outcome<T: 'static>(&mut self, h: Handle<T>) -> Result<(T, Outcome), Error> {
        match self.results.get_mut(h.index).and_then(Option::take) {
            Some(Ok((v, o))) => v
                .downcast::<T>()
                .map(|b| (*b, o))
                .map_err(|_| Error::ForeignHandle),
            Some(Err(e)) => Err(e),
            None => Err(Error::ResultTaken),
        }
    }
    /// The value, or `None` on any error.
    pub fn take_or_none<T: 'static>(&mut self, h: Handle<T>) -> Option<T> {
        self.take(h).ok()
    }
    /// Number of queries that failed (including cache-only misses).
    pub fn error_count(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r, Some(Err(_))))
            .count()
    }
    /// The first error, if any.
    pub fn first_error(&self) -> Option<&Error> {
        self.results.iter().find_map(|r| match r {
            Some(Err(e)) => Some(e),
            _ => None,
        })
    }
}
