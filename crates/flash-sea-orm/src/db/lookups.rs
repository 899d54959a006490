//! Cached reads: [`FlashDb::cache`] gives the [`ModelCache`] of an entity,
//! whose lookups go through the classes its [`crate::CacheMeta`] declared;
//! [`FlashDb::get`] and [`FlashDb::follow`] read user-defined classes and
//! cached foreign keys.

use super::FlashDb;
use crate::convert::{column_name, model_name, to_field, ModelRecord};
use crate::lookup::Lookup;
use flash_core::{CacheKind, CacheValue, Class, Error, FieldValue, Outcome, Query, Record};
use sea_orm::{EntityTrait, IdenStatic, ModelTrait};
use std::any::Any;
use std::marker::PhantomData;
use std::sync::OnceLock;

impl FlashDb {
    /// The cached lookups of entity `E` (the original's `Model.cache`).
    pub fn cache<E: EntityTrait>(&self) -> ModelCache<'_, E>
    where
        E::Model: CacheValue,
    {
        ModelCache {
            fdb: self,
            first: OnceLock::new(),
            _e: PhantomData,
        }
    }

    /// A user-defined class's value (see [`crate::CustomCache`]).
    pub async fn get<T: CacheValue>(
        &self,
        class: &Class<T>,
        key: &[FieldValue],
    ) -> Result<T, Error> {
        self.flash.get(class, key).await
    }

    /// The row `row`'s cached foreign key points at, read through `T`'s
    /// primary-key cache (for example the event of a participation).
    pub async fn follow<T, M>(&self, row: &M) -> Result<Option<T::Model>, Error>
    where
        T: EntityTrait,
        T::Model: CacheValue,
        M: ModelTrait + Sync,
    {
        let model = model_name::<M::Entity>();
        let target = model_name::<T>();
        let not_registered = || Error::CacheNotRegistered {
            model: model.clone(),
            kind: "cached foreign key",
            fields: vec![target.clone()],
        };
        let fk = self
            .flash
            .cached_foreign_keys()
            .iter()
            .find(|f| f.model == model && f.target == target)
            .ok_or_else(not_registered)?;
        let value = ModelRecord(row)
            .field(&fk.field)
            .ok_or_else(not_registered)?;
        if value == FieldValue::Null {
            return Ok(None);
        }
        let pk = self
            .flash
            .model(&target)
            .map(|m| m.pk.clone())
            .unwrap_or_default();
        let class =
            self.flash
                .simple_class::<Option<T::Model>, _>(&target, CacheKind::Instance, &pk)?;
        self.flash.get(&class, &[value]).await
    }
}

/// The error of a `get` that found no row.
pub(crate) fn not_found<E: EntityTrait>(lk: &Lookup<E>) -> Error {
    Error::NotFound {
        model: model_name::<E>(),
        key: lookup_text(lk),
    }
}

/// `col=value, ...` of a lookup, for messages.
pub(crate) fn lookup_text<E: EntityTrait>(lk: &Lookup<E>) -> String {
    lk.pairs
        .iter()
        .map(|(c, v)| format!("{}={}", column_name(c), to_field(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cached lookups of one entity, by its declared field tuples.
pub struct ModelCache<'a, E: EntityTrait> {
    pub(super) fdb: &'a FlashDb,
    /// The class of this handle's first one-field lookup, kept: a handle
    /// used again (a page's, a service's) finds it without hashing the
    /// table name in the registry.
    pub(super) first: OnceLock<FieldClass<'a>>,
    pub(super) _e: PhantomData<E>,
}

/// A class found for a one-field lookup of some kind (see [`ModelCache`]).
pub(super) struct FieldClass<'a> {
    kind: CacheKind,
    field: Box<str>,
    class: &'a (dyn Any + Send + Sync),
}

impl<'a, E: EntityTrait> ModelCache<'a, E>
where
    E::Model: CacheValue,
{
    /// The class `lk` reads (the one declared on its fields, of `kind`) and
    /// the lookup's values in the order of the class's key fields.
    pub(super) fn class<T: CacheValue>(
        &self,
        kind: CacheKind,
        lk: &Lookup<E>,
    ) -> Result<(Class<T>, Vec<FieldValue>), Error> {
        let (class, values) = self.class_ref::<T>(kind, lk)?;
        Ok((class.clone(), values))
    }

    /// [`Self::class`] borrowed from the registry (a query clones it once).
    fn class_ref<T: CacheValue>(
        &self,
        kind: CacheKind,
        lk: &Lookup<E>,
    ) -> Result<(&Class<T>, Vec<FieldValue>), Error> {
        // One field (most lookups): its name without a list, its class
        // kept by the handle.
        let class = match lk.pairs.as_slice() {
            [(c, _)] => self.field_class::<T>(kind, c.as_str())?,
            _ => {
                let entity = E::default();
                let fields = lk.field_names();
                let flash = &self.fdb.flash;
                flash.simple_class_ref::<T, _>(entity.table_name(), kind, &fields)?
            }
        };
        let values = lk.values_in(&class.spec().key_fields);
        Ok((class, values))
    }

    /// The class of a one-field lookup on `field`: the one kept by this
    /// handle when it is the same, else found in the registry (and kept if
    /// none is yet).
    fn field_class<T: CacheValue>(
        &self,
        kind: CacheKind,
        field: &str,
    ) -> Result<&'a Class<T>, Error> {
        if let Some(f) = self.first.get() {
            if f.kind == kind && *f.field == *field {
                if let Some(class) = f.class.downcast_ref::<Class<T>>() {
                    return Ok(class);
                }
            }
        }
        let fdb: &'a FlashDb = self.fdb;
        let entity = E::default();
        let class = fdb
            .flash
            .simple_class_ref::<T, _>(entity.table_name(), kind, &[field])?;
        let _ = self.first.set(FieldClass {
            kind,
            field: field.into(),
            class,
        });
        Ok(class)
    }

    /// A lookup of the class `lk` reads. The usual one-field lookup borrows
    /// its class from the registry and keeps its value on the stack: no
    /// allocation and no reference count on a hit's path.
    pub(super) async fn lookup<T: CacheValue>(
        &self,
        kind: CacheKind,
        lk: &Lookup<E>,
    ) -> Result<(T, Outcome), Error> {
        let flash = &self.fdb.flash;
        if let [(c, v)] = lk.pairs.as_slice() {
            let class = self.field_class::<T>(kind, c.as_str())?;
            return flash.lookup(class, &[to_field(v)]).await;
        }
        let (class, values) = self.class_ref::<T>(kind, lk)?;
        flash.lookup(class, &values).await
    }

    /// [`Self::lookup`]'s hit read without waiting, among a page's
    /// ([`flash_core::PageReads::hit`]); `None`: the lookup is to be made.
    pub(super) fn hit_in<'p, T: CacheValue>(
        &'p self,
        page: &mut flash_core::PageReads<'p>,
        kind: CacheKind,
        lk: &Lookup<E>,
    ) -> Option<T> {
        if let [(c, v)] = lk.pairs.as_slice() {
            let class = self.field_class::<T>(kind, c.as_str()).ok()?;
            return page.hit(class, &[to_field(v)]);
        }
        let (class, values) = self.class_ref::<T>(kind, lk).ok()?;
        page.hit(class, &values)
    }

    fn query<T: CacheValue>(&self, kind: CacheKind, lk: &Lookup<E>) -> Result<Query<T>, Error> {
        let (class, values) = self.class_ref::<T>(kind, lk)?;
        Ok(Query::new(class, values))
    }

    fn key<T: CacheValue>(&self, kind: CacheKind, lk: &Lookup<E>) -> Result<String, Error> {
        let (class, values) = self.class_ref::<T>(kind, lk)?;
        self.fdb.flash.key_of(class, &values)
    }

    /// The row found by `lk`; [`Error::NotFound`] when there is none (the
    /// absence is cached too).
    pub async fn get(&self, lk: Lookup<E>) -> Result<E::Model, Error> {
        // By reference: a copy of the lookup for the error would cost every hit.
        let (row, _) = self
            .lookup::<Option<E::Model>>(CacheKind::Instance, &lk)
            .await?;
        row.ok_or_else(|| not_found(&lk))
    }

    /// The row found by `lk`, or `None`.
    pub async fn get_or_none(&self, lk: Lookup<E>) -> Result<Option<E::Model>, Error> {
        self.get_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::get_or_none`], also telling hit or miss.
    pub async fn get_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Option<E::Model>, Outcome), Error> {
        self.lookup(CacheKind::Instance, &lk).await
    }

    /// The rows matching `lk`.
    pub async fn filter(&self, lk: Lookup<E>) -> Result<Vec<E::Model>, Error> {
        self.filter_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::filter`], also telling hit or miss.
    pub async fn filter_with_outcome(
        &self,
        lk: Lookup<E>,
    ) -> Result<(Vec<E::Model>, Outcome), Error> {
        self.lookup(CacheKind::Queryset, &lk).await
    }

    /// Whether any row matches `lk` (declared with [`crate::CacheMeta::exists_key`]).
    pub async fn exists(&self, lk: Lookup<E>) -> Result<bool, Error> {
        self.exists_with_outcome(lk).await.map(|(r, _)| r)
    }

    /// Like [`Self::exists`], also telling hit or miss.
    pub async fn exists_with_outcome(&self, lk: Lookup<E>) -> Result<(bool, Outcome), Error> {
        self.lookup(CacheKind::Exists, &lk).await
    }

    /// A lazy existence lookup, for a [`flash_core::Batch`].
    pub fn exists_query(&self, lk: &Lookup<E>) -> Result<Query<bool>, Error> {
        self.query(CacheKind::Exists, lk)
    }

    /// The cache key (the string stored in the cache server) of an instance
    /// lookup: for inspecting the cache or invalidating one entry by hand.
    /// (Declaring a lookup is [`crate::CacheMeta::get_key`].)
    pub fn cache_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        self.key::<Option<E::Model>>(CacheKind::Instance, lk)
    }

    /// The cache key of a filter lookup.
    pub fn filter_key(&self, lk: &Lookup<E>) -> Result<String, Error> {
        self.key::<Vec<E::Model>>(CacheKind::Queryset, lk)
    }

    /// A lazy instance lookup, for a [`flash_core::Batch`].
    pub fn get_query(&self, lk: &Lookup<E>) -> Result<Query<Option<E::Model>>, Error> {
        self.query(CacheKind::Instance, lk)
    }

    /// A lazy filter lookup, for a [`flash_core::Batch`].
    pub fn filter_query(&self, lk: &Lookup<E>) -> Result<Query<Vec<E::Model>>, Error> {
        self.query(CacheKind::Queryset, lk)
    }
}
