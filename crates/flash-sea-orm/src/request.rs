//! Typed lookups through a request scope ([`flash_core::Scope`]): the
//! original's `get_async` / `filter_async`. Lookups started together share one
//! batch, and a request never asks the cache twice for one key.

use crate::db::not_found;
use crate::lookup::Lookup;
use crate::{FlashDb, SelectRelated};
use flash_core::{CacheValue, Error, Scope};
use sea_orm::{EntityTrait, Related};
use std::marker::PhantomData;

/// One request's lookups; start one per request with [`FlashDb::request`].
/// Cheap to clone; clones share the batch queue and the memo.
///
/// ```no_run
/// # use flash_sea_orm::{by, FlashDb};
/// # async fn f<E: sea_orm::EntityTrait, U: sea_orm::EntityTrait>(fdb: FlashDb, e: E::Column, u: U::Column)
/// # -> Result<(), flash_core::Error>
/// # where E::Model: flash_core::CacheValue, U::Model: flash_core::CacheValue {
/// let req = fdb.request();
/// // One get_many for both lookups.
/// let (event, user) = tokio::join!(
///     req.cache::<E>().get(by(e, 1)),
///     req.cache::<U>().get_or_none(by(u, 2)),
/// );
/// // Answered from the request's memo, without the cache.
/// let again = req.cache::<E>().get(by(e, 1)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Request {
    fdb: FlashDb,
    scope: Scope,
}

impl FlashDb {
    /// A request scope for typed lookups (see [`Request`]).
    pub fn request(&self) -> Request {
        Request {
            fdb: self.clone(),
            scope: self.flash().scope(),
        }
    }
}

impl Request {
    /// Lookups of entity `E` in this request, like [`FlashDb::cache`].
    pub fn cache<E: EntityTrait>(&self) -> RequestCache<'_, E>
    where
        E::Model: CacheValue,
    {
        RequestCache {
            req: self,
            _e: PhantomData,
        }
    }

    /// The underlying scope, for queries of user-defined classes
    /// (`scope().load(Query::new(&class, values))`).
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

/// Lookups of one entity through a [`Request`]. `Copy`: its lookups take it
/// by value, so that lookups started together can be joined.
pub struct RequestCache<'a, E: EntityTrait> {
    req: &'a Request,
    _e: PhantomData<fn() -> E>,
}

impl<E: EntityTrait> Clone for RequestCache<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: EntityTrait> Copy for RequestCache<'_, E> {}

impl<'a, E: EntityTrait> RequestCache<'a, E>
where
    E::Model: CacheValue,
{
    /// The row found by `lk`; [`Error::NotFound`] when there is none.
    pub async fn get(self, lk: Lookup<E>) -> Result<E::Model, Error> {
        self.get_or_none(lk.clone())
            .await?
            .ok_or_else(|| not_found(&lk))
    }

    /// The row found by `lk`, or `None`.
    pub async fn get_or_none(self, lk: Lookup<E>) -> Result<Option<E::Model>, Error> {
        let q = self.req.fdb.cache::<E>().get_query(&lk)?;
        self.req.scope.load(q).await
    }

    /// The rows matching `lk`.
    pub async fn filter(self, lk: Lookup<E>) -> Result<Vec<E::Model>, Error> {
        let q = self.req.fdb.cache::<E>().filter_query(&lk)?;
        self.req.scope.load(q).await
    }

    /// The row of `T` related to the row found by `lk` (a class of
    /// [`crate::CacheMeta::related_get`]), or `None`.
    pub async fn related_get<T>(self, lk: Lookup<E>) -> Result<Option<T::Model>, Error>
    where
        E: Related<T>,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let cache = self.req.fdb.cache::<E>();
        let q = cache.related::<T>().get_query(&lk)?;
        self.req.scope.load(q).await
    }

    /// The rows of `T` related to the rows matching `lk` (a class of
    /// [`crate::CacheMeta::related_filter`]).
    pub async fn related_filter<T>(self, lk: Lookup<E>) -> Result<Vec<T::Model>, Error>
    where
        E: Related<T>,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let cache = self.req.fdb.cache::<E>();
        let q = cache.related::<T>().filter_query(&lk)?;
        self.req.scope.load(q).await
    }

    /// `select_related` through the request: the row and the rows its
    /// foreign keys point at ([`crate::CacheMeta::select_related`]), each
    /// kept in the request's memo under its own key (a repeat lookup, or a
    /// `get` of one of those rows, asks the cache nothing). The row and the
    /// related rows this process last saw it point at are loaded in one
    /// batch. Add a second relation with [`SelectRelated::and`].
    pub fn select_related<T>(self) -> SelectRelated<'a, E, (T,)>
    where
        E: Related<T>,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let req: &'a Request = self.req;
        req.fdb
            .cache::<E>()
            .select_related::<T>()
            .in_scope(&req.scope)
    }

    /// Whether any row matches `lk` (an `exists_key` class).
    pub async fn exists(self, lk: Lookup<E>) -> Result<bool, Error> {
        let q = self.req.fdb.cache::<E>().exists_query(&lk)?;
        self.req.scope.load(q).await
    }
}
