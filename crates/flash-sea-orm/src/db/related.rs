//! Lookups of related classes: [`ModelCache::related`] and
//! [`ModelCache::linked`] give the [`RelatedCache`] of a relation path,
//! whose lookups read the classes `CacheMeta::related_get` and its siblings
//! declared on it.

use super::lookups::ModelCache;
use super::FlashDb;
use crate::convert::model_name;
use crate::lookup::Lookup;
use crate::related::Path;
use flash_core::{CacheKind, CacheValue, Class, Error, FieldValue, Outcome, Query};
use sea_orm::{EntityTrait, Linked, Related};
use std::marker::PhantomData;

impl<'a, E: EntityTrait> ModelCache<'a, E>
where
    E::Model: CacheValue,
{
    /// The related classes of `E` through `Related<T>` (declared with
    /// [`crate::CacheMeta::related_get`] / [`crate::CacheMeta::related_filter`]).
    pub fn related<T>(&self) -> RelatedCache<'a, E, T>
    where
        E: Related<T>,
        T: EntityTrait,
    {
        RelatedCache {
            fdb: self.fdb,
            path: Path::related::<E, T>(),
            _e: PhantomData,
        }
    }

    /// The related class of `E` through the generic foreign key
    /// (`type_col`, `id_col`) to `T` (declared with
    /// [`crate::CacheMeta::generic_get`]).
    pub fn generic<T: EntityTrait>(
        &self,
        type_col: E::Column,
        id_col: E::Column,
    ) -> RelatedCache<'a, E, T> {
        RelatedCache {
            fdb: self.fdb,
            path: Path::generic::<E, T>(&type_col, &id_col),
            _e: PhantomData,
        }
    }

    /// The related classes of `E` along `link` (declared with
    /// [`crate::CacheMeta::linked_get`] / [`crate::CacheMeta::linked_filter`]).
    pub fn linked<L>(&self, link: L) -> RelatedCache<'a, E, L::ToEntity>
    where
        L: Linked<FromEntity = E>,
    {
        RelatedCache {
            fdb: self.fdb,
            path: Path::linked(&link),
            _e: PhantomData,
        }
    }
}

/// Cached lookups of the rows of `T` related to rows of `E`, along one
/// relation path.
pub struct RelatedCache<'a, E: EntityTrait, T: EntityTrait> {
    fdb: &'a FlashDb,
    path: Result<Path, String>,
    _e: PhantomData<fn() -> (E, T)>,
}

impl<E: EntityTrait, T: EntityTrait> RelatedCache<'_, E, T>
where
    T::Model: CacheValue,
{
    fn class<V: CacheValue>(
        &self,
        kind: CacheKind,
        lk: &Lookup<E>,
    ) -> Result<(Class<V>, Vec<FieldValue>), Error> {
        let fields = lk.field_names();
        let not_registered = || Error::CacheNotRegistered {
            model: model_name::<E>(),
            kind: match kind {
                CacheKind::Queryset => "related queryset",
                _ => "related instance",
            },
            fields: std::iter::once(format!("-> {}", model_name::<T>()))
                .chain(fields.iter().map(|f| (*f).to_owned()))
                .collect(),
        };
        let path = self.path.as_ref().map_err(|_| not_registered())?;
        let class = self
            .fdb
            .related
            .class::<V>(path, kind, &fields)
            .ok_or_else(not_registered)?;
        let values = lk.values_in(&class.spec().key_fields);
        Ok((class, values))
    }

    /// The related row; [`Error::NotFound`] when there is none (the
    /// absence is cached too).
    pub async fn get(&self, lk: Lookup<E>) -> Result<T::Model, Error> {
        self.get_or_none(lk.clone())
            .await?
            .ok_or_else(|| Error::NotFound {
                model: model_name::<T>(),
                key: format!(
                    "the relation from {} {}",
                    model_name::<E>(),
                    super::lookups::lookup_text(&lk)
                ),
            })
    }

    /// The related row, or `None`.
    pub async fn get_or_none(&self, lk: Lookup<E>) -> Result<Option<T::Model>, Error> {
        self.get_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::get_or_none`], also telling hit or miss.
    pub async fn get_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Option<T::Model>, Outcome), Error> {
        let (class, values) = self.class(CacheKind::Instance, &lk)?;
        self.fdb.flash.lookup(&class, &values).await
    }

    /// The related rows (each once, in primary-key order).
    pub async fn filter(&self, lk: Lookup<E>) -> Result<Vec<T::Model>, Error> {
        self.filter_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::filter`], also telling hit or miss.
    pub async fn filter_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Vec<T::Model>, Outcome), Error> {
        let (class, values) = self.class(CacheKind::Queryset, &lk)?;
        self.fdb.flash.lookup(&class, &values).await
    }

    /// A lazy related-instance lookup, for a batch or a request scope.
    pub fn get_query(&self, lk: &Lookup<E>) -> Result<Query<Option<T::Model>>, Error> {
        let (class, values) = self.class(CacheKind::Instance, lk)?;
        Ok(Query::new(&class, values))
    }

    /// A lazy related-queryset lookup, for a batch or a request scope.
    pub fn filter_query(&self, lk: &Lookup<E>) -> Result<Query<Vec<T::Model>>, Error> {
        let (class, values) = self.class(CacheKind::Queryset, lk)?;
        Ok(Query::new(&class, values))
    }

    /// The cache key of a related-instance lookup.
    pub fn cache_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        let (class, values) = self.class::<Option<T::Model>>(CacheKind::Instance, lk)?;
        self.fdb.flash.key_of(&class, &values)
    }

    /// The cache key of a related-queryset lookup.
    pub fn filter_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        let (class, values) = self.class::<Vec<T::Model>>(CacheKind::Queryset, lk)?;
        self.fdb.flash.key_of(&class, &values)
    }
}
