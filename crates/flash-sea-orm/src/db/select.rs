//! `select_related`: an instance lookup that embeds the rows its foreign
//! keys point at, read in the same cache round trip, each under its own key
//! (the target's primary-key instance class), and handed back as a tuple,
//! the way SeaORM's `find_also_related` does.
//!
//! The related keys depend on the row's foreign-key values, which are only
//! known once the row is read. The handle remembers them per key (a hint):
//! the next read of that key asks the cache for the row and the hinted
//! related keys together, in one `get_many`. A row whose foreign key changed
//! since (or the first read of a key in this process) costs a second round
//! trip for the related rows; a hint never decides what is returned, the row
//! read does. With the in-process store there is no round trip to save: the
//! row is read, then each related row, each hit decided on the spot and the
//! page's hits timed together ([`flash_core::PageReads`]); a row that is not
//! such a hit gets a lookup of its own (a store that cannot answer without
//! waiting gets the related rows as a batch: one `get_many`).
//!
//! Through a request scope ([`crate::RequestCache::select_related`]) every
//! row goes through the scope: the row and its hinted related rows are
//! loaded together (one batch), and each is kept in the scope's memo under
//! its own key, shared with the request's other lookups of that key.

use super::lookups::{not_found, ModelCache};
use super::FlashDb;
use crate::convert::to_field;
use crate::lookup::Lookup;
use crate::related::Path;
use flash_core::{
    Batch, BatchResults, CacheKind, CacheValue, Class, Error, FieldValue, Flash, Handle, PageReads,
    Query, Scope,
};
use sea_orm::{EntityTrait, ModelTrait, Related};
use std::any::Any;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

impl<'a, E: EntityTrait> ModelCache<'a, E>
where
    E::Model: CacheValue,
{
    /// Instance lookups of `E` that also return the row of `T` its foreign
    /// key points at (declared with [`crate::CacheMeta::select_related`]).
    /// Add a second relation with [`SelectRelated::and`].
    pub fn select_related<T>(&self) -> SelectRelated<'a, E, (T,)>
    where
        E: Related<T>,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let mut s = SelectRelated {
            fdb: self.fdb,
            cache: ModelCache {
                fdb: self.fdb,
                first: std::sync::OnceLock::new(),
                _e: PhantomData,
            },
            embeds: vec![Path::related::<E, T>()],
            slots: Vec::new(),
            scope: None,
            _r: PhantomData,
        };
        s.resolve_slot::<T>();
        s
    }
}

/// An instance lookup of `E` embedding the rows of the entities in `R`.
pub struct SelectRelated<'a, E: EntityTrait, R> {
    fdb: &'a FlashDb,
    cache: ModelCache<'a, E>,
    embeds: Vec<Result<Path, String>>,
    /// The `Slot<E, T>` of each embedded relation, found once when the lookup
    /// is made (`None`: not declared; the lookup then says why).
    slots: Vec<Option<Arc<dyn Any + Send + Sync>>>,
    /// The request scope the lookups go through, if any.
    scope: Option<&'a Scope>,
    _r: PhantomData<fn() -> R>,
}

/// One embedded relation of a lookup: the row's foreign-key column (found
/// by name once, when the lookup is made; `None`: no such column, no
/// related row) and the target's instance class on the column it points at.
struct Slot<E: EntityTrait, T: EntityTrait> {
    fk: Option<E::Column>,
    class: Class<Option<T::Model>>,
}

/// An embedded row: read with the row (the hint was right, or there is no
/// foreign key) or to be read in a second round trip.
enum Step<T> {
    Ready(Option<T>),
    Later(Handle<Option<T>>),
}

/// A related row loaded through a scope for a remembered foreign-key value,
/// with that value (to check against the row's).
type Hinted<T> = (Result<Option<T>, Error>, FieldValue);

impl<E: EntityTrait, T: EntityTrait> Slot<E, T>
where
    T::Model: CacheValue,
{
    /// The row's value of the foreign key.
    fn fk_of(&self, row: &E::Model) -> FieldValue {
        self.fk.map_or(FieldValue::Null, |c| to_field(&row.get(c)))
    }

    fn add(&self, batch: &mut Batch<'_>, v: &FieldValue) -> Handle<Option<T::Model>> {
        batch.add(Query::new(&self.class, vec![v.clone()]))
    }

    /// The embedded row for the foreign-key value `v`, a hit among the
    /// page's (an in-process store that answers without waiting), else by
    /// a lookup of its own.
    async fn get_in<'p>(
        &'p self,
        page: &mut PageReads<'p>,
        flash: &Flash,
        v: &FieldValue,
    ) -> Result<Option<T::Model>, Error> {
        let v = std::slice::from_ref(v);
        match v {
            [FieldValue::Null] => Ok(None),
            v => match page.hit(&self.class, v) {
                Some(hit) => Ok(hit),
                None => flash.get(&self.class, v).await,
            },
        }
    }

    /// [`Self::add`] unless the foreign key is null (no row to read).
    fn add_some(&self, batch: &mut Batch<'_>, v: &FieldValue) -> Option<Handle<Option<T::Model>>> {
        (*v != FieldValue::Null).then(|| self.add(batch, v))
    }

    /// The embedded row for the foreign-key value `actual`, from the first
    /// round trip when it read that key, else planned into `second`.
    /// Through a scope: the embedded row for `v` (from the scope's memo,
    /// or batched with the loads started with it).
    async fn load(&self, scope: &Scope, v: &FieldValue) -> Result<Option<T::Model>, Error> {
        match v {
            FieldValue::Null => Ok(None),
            v => scope.load(Query::new(&self.class, vec![v.clone()])).await,
        }
    }

    /// Through a scope: the load of the hinted value, started with the row's.
    async fn load_hinted(
        &self,
        scope: &Scope,
        hinted: Option<&FieldValue>,
    ) -> Option<Hinted<T::Model>> {
        let v = hinted?;
        Some((self.load(scope, v).await, v.clone()))
    }

    /// Through a scope: the embedded row for `actual`, the hinted load's
    /// when the hint was right, else a load of its own.
    async fn settle(
        &self,
        scope: &Scope,
        hinted: Option<Hinted<T::Model>>,
        actual: &FieldValue,
    ) -> Result<Option<T::Model>, Error> {
        match hinted {
            Some((r, v)) if v == *actual => r,
            _ => self.load(scope, actual).await,
        }
    }

    fn step(
        &self,
        first: &mut BatchResults,
        read: Option<(Handle<Option<T::Model>>, &FieldValue)>,
        actual: &FieldValue,
        second: &mut Batch<'_>,
    ) -> Result<Step<T::Model>, Error> {
        if *actual == FieldValue::Null {
            return Ok(Step::Ready(None));
        }
        match read {
            Some((h, hinted)) if hinted == actual => Ok(Step::Ready(first.take(h)?)),
            _ => Ok(Step::Later(self.add(second, actual))),
        }
    }
}

fn finish<T>(step: Step<T>, second: &mut Option<BatchResults>) -> Result<Option<T>, Error>
where
    T: 'static,
{
    match step {
        Step::Ready(v) => Ok(v),
        Step::Later(h) => second.as_mut().ok_or(Error::ResultTaken)?.take(h),
    }
}

/// The `i`-th remembered foreign-key value, when there is one to read.
fn hinted(hint: &Option<Arc<[FieldValue]>>, i: usize) -> Option<&FieldValue> {
    hint.as_ref()
        .and_then(|h| h.get(i))
        .filter(|v| **v != FieldValue::Null)
}

impl<'a, E: EntityTrait, R> SelectRelated<'a, E, R>
where
    E::Model: CacheValue,
{
    /// The same lookup through a request scope (see the module docs).
    pub(crate) fn in_scope(mut self, scope: &'a Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Remembers the row's foreign-key values under its key, if they changed.
    async fn remember(
        &self,
        key: String,
        hint: Option<Arc<[FieldValue]>>,
        actual: Arc<[FieldValue]>,
    ) {
        if hint.as_deref() != Some(&actual[..]) {
            self.fdb.related.remember(key, actual).await;
        }
    }

    /// Finds the slot of the relation just added (the last of `embeds`).
    fn resolve_slot<T>(&mut self)
    where
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let slot = self
            .find_slot::<T>(self.embeds.len() - 1)
            .ok()
            .map(|s| Arc::new(s) as Arc<dyn Any + Send + Sync>);
        self.slots.push(slot);
    }

    /// The slot of the `i`-th embedded relation, to `T`.
    fn slot<T>(&self, i: usize) -> Result<&Slot<E, T>, Error>
    where
        T: EntityTrait,
        T::Model: CacheValue,
    {
        match self.slots.get(i).and_then(|s| s.as_ref()) {
            Some(s) => s.downcast_ref::<Slot<E, T>>().ok_or(Error::ForeignHandle),
            // Not found when the lookup was made: the error says why.
            None => Err(self.find_slot::<T>(i).err().unwrap_or(Error::ForeignHandle)),
        }
    }

    /// Looks the slot of the `i`-th embedded relation up.
    fn find_slot<T>(&self, i: usize) -> Result<Slot<E, T>, Error>
    where
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let not_declared = || Error::CacheNotRegistered {
            model: crate::convert::model_name::<E>(),
            kind: "select_related",
            fields: vec![crate::convert::model_name::<T>()],
        };
        let path = self.embeds[i].as_ref().map_err(|_| not_declared())?;
        if !self.fdb.related.embeds(path) {
            return Err(not_declared());
        }
        let hop = &path.0[0];
        let class = self.fdb.flash.simple_class::<Option<T::Model>, _>(
            &hop.to_tbl,
            CacheKind::Instance,
            &[&hop.to_col],
        )?;
        Ok(Slot {
            fk: E::Column::from_str(&hop.from_col).ok(),
            class,
        })
    }

    /// Is the cache in this process? Then there is no round trip to save:
    /// the row is read first, then its related rows (by single lookups when
    /// the store answers without waiting, else as a batch), without the hint,
    /// whose own read would cost as much as a store read. (An in-process
    /// store is the backend that does not coalesce reads.)
    fn in_process(&self) -> bool {
        !self.fdb.flash.backend().coalesce_reads()
    }

    /// The row found by `lk`, a hit among the page's, else by a lookup of
    /// its own (see [`Self::in_process`]).
    async fn row_in<'p>(
        &'p self,
        page: &mut PageReads<'p>,
        lk: &Lookup<E>,
    ) -> Result<Option<E::Model>, Error> {
        match self.cache.hit_in(page, CacheKind::Instance, lk) {
            Some(row) => Ok(row),
            None => self.row(lk).await,
        }
    }

    /// The row found by `lk`, by a lookup of its own (see [`Self::in_process`]).
    async fn row(&self, lk: &Lookup<E>) -> Result<Option<E::Model>, Error> {
        let (row, _) = self
            .cache
            .lookup::<Option<E::Model>>(CacheKind::Instance, lk)
            .await?;
        Ok(row)
    }

    /// The row's class, its key, the lookup's values and the hint.
    async fn plan(
        &self,
        lk: &Lookup<E>,
    ) -> Result<
        (
            Class<Option<E::Model>>,
            String,
            Vec<FieldValue>,
            Option<Arc<[FieldValue]>>,
        ),
        Error,
    > {
        let (class, values) = self
            .cache
            .class::<Option<E::Model>>(CacheKind::Instance, lk)?;
        let key = self.fdb.flash.key_of(&class, &values)?;
        let hint = self.fdb.related.hint(&key).await;
        Ok((class, key, values, hint))
    }
}

impl<'a, E: EntityTrait, T: EntityTrait> SelectRelated<'a, E, (T,)>
where
    E::Model: CacheValue + Sync,
    T::Model: CacheValue,
{
    /// Also embeds the row of `U` (a second foreign key of `E`).
    pub fn and<U>(self) -> SelectRelated<'a, E, (T, U)>
    where
        E: Related<U>,
        U: EntityTrait,
        U::Model: CacheValue,
    {
        let mut embeds = self.embeds;
        embeds.push(Path::related::<E, U>());
        let mut s = SelectRelated {
            fdb: self.fdb,
            cache: self.cache,
            embeds,
            slots: self.slots,
            scope: self.scope,
            _r: PhantomData,
        };
        s.resolve_slot::<U>();
        s
    }

    /// The row found by `lk` and the row of `T` it points at;
    /// [`Error::NotFound`] when there is no row.
    pub async fn get(&self, lk: Lookup<E>) -> Result<(E::Model, Option<T::Model>), Error> {
        self.page(&lk).await?.ok_or_else(|| not_found(&lk))
    }

    /// Like [`Self::get`], `None` when there is no row.
    pub async fn get_or_none(
        &self,
        lk: Lookup<E>,
    ) -> Result<Option<(E::Model, Option<T::Model>)>, Error> {
        self.page(&lk).await
    }

    /// The page of `lk`, by reference: `get` keeps the lookup for its
    /// error without a copy per page.
    async fn page(&self, lk: &Lookup<E>) -> Result<Option<(E::Model, Option<T::Model>)>, Error> {
        let s1 = self.slot::<T>(0)?;
        if let Some(scope) = self.scope {
            let (class, key, values, hint) = self.plan(lk).await?;
            let (row, l1) = futures::join!(
                scope.load(Query::new(&class, values)),
                s1.load_hinted(scope, hinted(&hint, 0)),
            );
            let Some(row) = row? else {
                return Ok(None);
            };
            let actual: Arc<[FieldValue]> = Arc::new([s1.fk_of(&row)]);
            let v1 = s1.settle(scope, l1, &actual[0]).await?;
            self.remember(key, hint, actual).await;
            return Ok(Some((row, v1)));
        }
        if self.in_process() {
            let flash = &self.fdb.flash;
            if flash.backend().answers_now() {
                let mut page = flash.page_reads();
                let Some(row) = self.row_in(&mut page, lk).await? else {
                    return Ok(None);
                };
                let v1 = s1.get_in(&mut page, flash, &s1.fk_of(&row)).await?;
                return Ok(Some((row, v1)));
            }
            let Some(row) = self.row(lk).await? else {
                return Ok(None);
            };
            let mut batch = flash.batch();
            let h1 = s1.add_some(&mut batch, &s1.fk_of(&row));
            let mut res = batch.run().await;
            let v1 = h1.map(|h| res.take(h)).transpose()?.flatten();
            return Ok(Some((row, v1)));
        }
        let (class, key, values, hint) = self.plan(lk).await?;
        let flash = &self.fdb.flash;
        let mut batch = flash.batch();
        let h0 = batch.add(Query::new(&class, values));
        let h1 = hinted(&hint, 0).map(|v| (s1.add(&mut batch, v), v));
        let mut first = batch.run().await;
        let Some(row) = first.take(h0)? else {
            return Ok(None);
        };
        let actual: Arc<[FieldValue]> = Arc::new([s1.fk_of(&row)]);
        let mut second = flash.batch();
        let st1 = s1.step(&mut first, h1, &actual[0], &mut second)?;
        let mut second = match matches!(st1, Step::Later(_)) {
            true => Some(second.run().await),
            false => None,
        };
        let v1 = finish(st1, &mut second)?;
        self.remember(key, hint, actual).await;
        Ok(Some((row, v1)))
    }
}

impl<E: EntityTrait, T: EntityTrait, U: EntityTrait> SelectRelated<'_, E, (T, U)>
where
    E::Model: CacheValue + Sync,
    T::Model: CacheValue,
    U::Model: CacheValue,
{
    /// The row found by `lk` and the rows of `T` and `U` it points at;
    /// [`Error::NotFound`] when there is no row.
    #[allow(clippy::type_complexity)]
    pub async fn get(
        &self,
        lk: Lookup<E>,
    ) -> Result<(E::Model, Option<T::Model>, Option<U::Model>), Error> {
        self.page(&lk).await?.ok_or_else(|| not_found(&lk))
    }

    /// Like [`Self::get`], `None` when there is no row.
    #[allow(clippy::type_complexity)]
    pub async fn get_or_none(
        &self,
        lk: Lookup<E>,
    ) -> Result<Option<(E::Model, Option<T::Model>, Option<U::Model>)>, Error> {
        self.page(&lk).await
    }

    /// The page of `lk`, by reference: `get` keeps the lookup for its
    /// error without a copy per page.
    async fn page(
        &self,
        lk: &Lookup<E>,
    ) -> Result<Option<(E::Model, Option<T::Model>, Option<U::Model>)>, Error> {
        let (s1, s2) = (self.slot::<T>(0)?, self.slot::<U>(1)?);
        if let Some(scope) = self.scope {
            let (class, key, values, hint) = self.plan(lk).await?;
            let (row, l1, l2) = futures::join!(
                scope.load(Query::new(&class, values)),
                s1.load_hinted(scope, hinted(&hint, 0)),
                s2.load_hinted(scope, hinted(&hint, 1)),
            );
            let Some(row) = row? else {
                return Ok(None);
            };
            let actual: Arc<[FieldValue]> = Arc::new([s1.fk_of(&row), s2.fk_of(&row)]);
            // A wrong hint's rows are loaded together too (one more batch).
            let (v1, v2) = futures::join!(
                s1.settle(scope, l1, &actual[0]),
                s2.settle(scope, l2, &actual[1]),
            );
            self.remember(key, hint, actual).await;
            return Ok(Some((row, v1?, v2?)));
        }
        if self.in_process() {
            let flash = &self.fdb.flash;
            if flash.backend().answers_now() {
                let mut page = flash.page_reads();
                let Some(row) = self.row_in(&mut page, lk).await? else {
                    return Ok(None);
                };
                let v1 = s1.get_in(&mut page, flash, &s1.fk_of(&row)).await?;
                let v2 = s2.get_in(&mut page, flash, &s2.fk_of(&row)).await?;
                return Ok(Some((row, v1, v2)));
            }
            let Some(row) = self.row(lk).await? else {
                return Ok(None);
            };
            let mut batch = flash.batch();
            let h1 = s1.add_some(&mut batch, &s1.fk_of(&row));
            let h2 = s2.add_some(&mut batch, &s2.fk_of(&row));
            let mut res = batch.run().await;
            let v1 = h1.map(|h| res.take(h)).transpose()?.flatten();
            let v2 = h2.map(|h| res.take(h)).transpose()?.flatten();
            return Ok(Some((row, v1, v2)));
        }
        let (class, key, values, hint) = self.plan(lk).await?;
        let flash = &self.fdb.flash;
        let mut batch = flash.batch();
        let h0 = batch.add(Query::new(&class, values));
        let h1 = hinted(&hint, 0).map(|v| (s1.add(&mut batch, v), v));
        let h2 = hinted(&hint, 1).map(|v| (s2.add(&mut batch, v), v));
        let mut first = batch.run().await;
        let Some(row) = first.take(h0)? else {
            return Ok(None);
        };
        let actual: Arc<[FieldValue]> = Arc::new([s1.fk_of(&row), s2.fk_of(&row)]);
        let mut second = flash.batch();
        let st1 = s1.step(&mut first, h1, &actual[0], &mut second)?;
        let st2 = s2.step(&mut first, h2, &actual[1], &mut second)?;
        let later = matches!(st1, Step::Later(_)) || matches!(st2, Step::Later(_));
        let mut second = match later {
            true => Some(second.run().await),
            false => None,
        };
        let (v1, v2) = (finish(st1, &mut second)?, finish(st2, &mut second)?);
        self.remember(key, hint, actual).await;
        Ok(Some((row, v1, v2)))
    }
}
