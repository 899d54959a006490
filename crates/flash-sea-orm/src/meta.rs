//! `CacheMeta`: the per-entity declaration of what is cached.

use crate::convert::{column_name, model_name};
use crate::related::{embed_check, Decl, EmbedCheck, Path};
use flash_core::naming::derived_name;
use flash_core::{CacheKind, CacheValue, ClassSpec, Invalidation, RegistryError};
use sea_orm::{ColumnTrait, EntityTrait, Iterable, Linked, Related};
use std::time::Duration;

/// The layout of `E`'s rows, as the parts its fingerprint is hashed from: each column's name, type
/// and nullability in field order, what postcard's encoding of a row depends
/// on. Every class whose value is made of `E`'s rows carries it.
pub(crate) fn layout_of<E: EntityTrait>() -> Vec<String> {
    E::Column::iter()
        .map(|c| {
            let def = c.def();
            format!(
                "{}:{:?}:{}",
                column_name(&c),
                def.get_column_type(),
                def.is_null()
            )
        })
        .collect()
}

/// A related class's spec, its declaration and its path.
pub(crate) type RelatedSpec<'a, E> = (ClassSpec, &'a Decl<E>, Path);

/// What flash caches for one entity: instance caches by field tuples
/// ([`Self::get_key`]), queryset caches ([`Self::filter_key`]), existence
/// caches ([`Self::exists_key`]), cached foreign keys, and the settings shared
/// by these classes.
///
/// ```
/// # use sea_orm::entity::prelude::*;
/// # mod event {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
/// #     #[sea_orm(table_name = "event")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub slug: String, pub title: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use flash_sea_orm::{CacheMeta, durations::CACHE_TIME_DAY};
/// let meta = CacheMeta::<event::Entity>::new()
///     .get_key([event::Column::Id])
///     .get_key([event::Column::Slug])
///     .timeout(CACHE_TIME_DAY);
/// ```
#[derive(Debug)]
pub struct CacheMeta<E: EntityTrait> {
    pub(crate) get_keys: Vec<(Vec<E::Column>, Option<String>)>,
    pub(crate) filter_keys: Vec<(Vec<E::Column>, Option<String>)>,
    pub(crate) exists_keys: Vec<(Vec<E::Column>, Option<String>)>,
    /// The name [`Self::named`] gave the next key tuple.
    pending_name: Option<String>,
    pub(crate) cached_fks: Vec<(E::Column, String)>,
    pub(crate) related: Vec<Decl<E>>,
    pub(crate) embeds: Vec<(Result<Path, String>, EmbedCheck)>,
    timeout: Option<Duration>,
    version: Option<u32>,
    invalidation: Option<Invalidation>,
    allowtime: Option<Duration>,
    compress_above: Option<usize>,
}

impl<E: EntityTrait> Default for CacheMeta<E> {
    fn default() -> Self {
        CacheMeta {
            get_keys: Vec::new(),
            filter_keys: Vec::new(),
            exists_keys: Vec::new(),
            pending_name: None,
            cached_fks: Vec::new(),
            related: Vec::new(),
            embeds: Vec::new(),
            timeout: None,
            version: None,
            invalidation: None,
            allowtime: None,
            compress_above: None,
        }
    }
}

/// A class this declaration makes, and the columns of its key.
pub(crate) type ClassOf<E> = (ClassSpec, Vec<<E as EntityTrait>::Column>);

fn names<C: sea_orm::Iden>(cols: &[C]) -> Vec<String> {
    cols.iter().map(column_name).collect()
}

impl<E: EntityTrait> CacheMeta<E> {
    pub fn new() -> Self {
        Self::default()
    }
    /// Names the class of the next [`Self::get_key`], [`Self::filter_key`]
    /// or [`Self::exists_key`] instead of deriving its name (see
    /// [`flash_core::naming`]). A class name is part of every key of the
    /// class: 1 to 64 of `[A-Za-z0-9_]` without `__`, unique in the service.
    ///
    /// ```
    /// # use sea_orm::entity::prelude::*;
    /// # mod event {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    /// #     #[sea_orm(table_name = "event")]
    /// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub slug: String }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)] pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// let meta = flash_sea_orm::CacheMeta::<event::Entity>::new()
    ///     .named("EventOnSlug")
    ///     .get_key([event::Column::Slug]);
    /// ```
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.pending_name = Some(name.into());
        self
    }
    /// An instance cache: the row found by these columns (`Model.cache.get`).
    pub fn get_key(mut self, cols: impl IntoIterator<Item = E::Column>) -> Self {
        let name = self.pending_name.take();
        self.get_keys.push((cols.into_iter().collect(), name));
        self
    }
    /// A queryset cache: the rows matching these columns (`Model.cache.filter`).
    pub fn filter_key(mut self, cols: impl IntoIterator<Item = E::Column>) -> Self {
        let name = self.pending_name.take();
        self.filter_keys.push((cols.into_iter().collect(), name));
        self
    }
    /// An existence cache: whether any row matches these columns
    /// ([`crate::ModelCache::exists`]; the original's `QuerysetExistsCache`).
    pub fn exists_key(mut self, cols: impl IntoIterator<Item = E::Column>) -> Self {
        let name = self.pending_name.take();
        self.exists_keys.push((cols.into_iter().collect(), name));
        self
    }
    /// Reads the row `col` points at through `T`'s primary-key instance cache
    /// (see [`crate::FlashDb::follow`]). `T` must declare `get_key` on its primary key.
    pub fn cached_fk<T: EntityTrait>(mut self, col: E::Column) -> Self {
        self.cached_fks.push((col, model_name::<T>()));
        self
    }
    /// A related instance cache: the row of `T` that the row of `E` found by
    /// `cols` is related to, through `E`'s `Related<T>` (one hop, or two
    /// through a junction table with `via`). Read with
    /// `fdb.cache::<E>().related::<T>().get(..)`. Writes to `E` and to every
    /// table on the path invalidate it (see the README); every table on
    /// the path must be declared on the `Registrar`.
    pub fn related_get<T>(self, cols: impl IntoIterator<Item = E::Column>) -> Self
    where
        E: Related<T>,
        E::Model: Sync,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        self.related_decl::<T>(cols, CacheKind::Instance, Path::related::<E, T>())
    }
    /// A related queryset cache: the rows of `T` that the rows of `E`
    /// matching `cols` are related to (each once, by primary key), through
    /// `Related<T>`, for example the tags of a user through a junction
    /// table. Read with `fdb.cache::<E>().related::<T>().filter(..)`.
    pub fn related_filter<T>(self, cols: impl IntoIterator<Item = E::Column>) -> Self
    where
        E: Related<T>,
        E::Model: Sync,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        self.related_decl::<T>(cols, CacheKind::Queryset, Path::related::<E, T>())
    }
    /// Lets instance lookups of `E` embed the row of `T` its foreign key
    /// points at (`Related<T>`, one hop): `fdb.cache::<E>().select_related::<T>()`
    /// reads the row and the related row in one cache round trip, each under
    /// its own key. `T` must declare `get_key` on the column the relation
    /// joins (its primary key); checked at start-up.
    pub fn select_related<T>(mut self) -> Self
    where
        E: Related<T>,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let path = Path::related::<E, T>().and_then(|p| match p.0.len() {
            1 => Ok(p),
            _ => Err("select_related embeds a one-hop relation (a foreign key)".into()),
        });
        self.embeds.push((path, embed_check::<T>));
        self
    }
    /// A related instance cache through a generic foreign key (a type
    /// column and an id column of `E`): the row of `T` whose primary key is
    /// the id, for rows whose type column holds `T`'s table name (otherwise
    /// none). Read with `fdb.cache::<E>().generic::<T>(type_col, id_col).get(..)`.
    /// To look rows of `E` up *by* their generic key, declare
    /// `filter_key([type_col, id_col])` and use [`crate::by_object`].
    pub fn generic_get<T>(
        self,
        type_col: E::Column,
        id_col: E::Column,
        cols: impl IntoIterator<Item = E::Column>,
    ) -> Self
    where
        E::Model: Sync,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        let path = Path::generic::<E, T>(&type_col, &id_col);
        self.related_decl::<T>(cols, CacheKind::Instance, path)
    }
    /// [`Self::related_get`] along a SeaORM `Linked` path of any number of
    /// hops (`checkin -> ticket -> event`). Read with
    /// `fdb.cache::<E>().linked(link).get(..)`.
    pub fn linked_get<L>(self, link: L, cols: impl IntoIterator<Item = E::Column>) -> Self
    where
        E::Model: Sync,
        L: Linked<FromEntity = E>,
        <L::ToEntity as EntityTrait>::Model: CacheValue,
    {
        self.related_decl::<L::ToEntity>(cols, CacheKind::Instance, Path::linked(&link))
    }
    /// [`Self::related_filter`] along a SeaORM `Linked` path.
    pub fn linked_filter<L>(self, link: L, cols: impl IntoIterator<Item = E::Column>) -> Self
    where
        E::Model: Sync,
        L: Linked<FromEntity = E>,
        <L::ToEntity as EntityTrait>::Model: CacheValue,
    {
        self.related_decl::<L::ToEntity>(cols, CacheKind::Queryset, Path::linked(&link))
    }
    fn related_decl<T>(
        mut self,
        cols: impl IntoIterator<Item = E::Column>,
        kind: CacheKind,
        path: Result<Path, String>,
    ) -> Self
    where
        E::Model: Sync,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        self.related
            .push(Decl::new::<T>(cols.into_iter().collect(), kind, path));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    pub fn version(mut self, v: u32) -> Self {
        self.version = Some(v);
        self
    }
    pub fn invalidation(mut self, i: Invalidation) -> Self {
        self.invalidation = Some(i);
        self
    }
    pub fn allowtime(mut self, t: Duration) -> Self {
        self.allowtime = Some(t);
        self
    }
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// Merges two declarations of one entity (the original's manager class and
    /// nested `CacheMeta`): lists are concatenated, a key tuple or a setting
    /// given in both is an error.
    pub fn merge(mut self, other: CacheMeta<E>) -> Result<Self, RegistryError> {
        let model = model_name::<E>();
        for (mine, theirs, kind) in [
            (&mut self.get_keys, other.get_keys, "instance"),
            (&mut self.filter_keys, other.filter_keys, "queryset"),
            (&mut self.exists_keys, other.exists_keys, "exists"),
        ] {
            for t in theirs {
                let n = names(&t.0);
                if mine.iter().any(|m| names(&m.0) == n) {
                    return Err(RegistryError::DuplicateKeyTuple {
                        model: model.clone(),
                        kind,
                        fields: n,
                    });
                }
                mine.push(t);
            }
        }
        self.cached_fks.extend(other.cached_fks);
        self.related.extend(other.related);
        self.embeds.extend(other.embeds);
        // A dangling `named` in either is reported by `specs`.
        self.pending_name = self.pending_name.take().or(other.pending_name);
        fn one<T>(
            a: Option<T>,
            b: Option<T>,
            what: &str,
            model: &str,
        ) -> Result<Option<T>, RegistryError> {
            match (a, b) {
                (Some(_), Some(_)) => Err(RegistryError::InvalidClass {
                    class: model.to_owned(),
                    reason: format!("{what} is declared in both declarations"),
                }),
                (a, b) => Ok(a.or(b)),
            }
        }
        self.timeout = one(self.timeout, other.timeout, "timeout", &model)?;
        self.version = one(self.version, other.version, "version", &model)?;
        self.invalidation = one(
            self.invalidation,
            other.invalidation,
            "invalidation",
            &model,
        )?;
        self.allowtime = one(self.allowtime, other.allowtime, "allowtime", &model)?;
        self.compress_above = one(
            self.compress_above,
            other.compress_above,
            "compress_above",
            &model,
        )?;
        Ok(self)
    }

    /// The class specs this declaration makes, named by [`Self::named`] or
    /// else by [`flash_core::naming::derived_name`] (`event_by_slug`,
    /// `participation_list_by_user_id`, `event_by2_city_slug`). A
    /// [`Self::named`] not followed by a key tuple is an error.
    pub(crate) fn specs(&self) -> Result<Vec<ClassOf<E>>, RegistryError> {
        let model = model_name::<E>();
        if let Some(name) = &self.pending_name {
            return Err(RegistryError::InvalidClass {
                class: name.clone(),
                reason: format!("named on {model} but no key tuple follows the name"),
            });
        }
        // The model's layout: what postcard's encoding of a row depends on.
        let layout = layout_of::<E>();
        let mut out = Vec::new();
        let kinds = [
            (&self.get_keys, CacheKind::Instance),
            (&self.filter_keys, CacheKind::Queryset),
            (&self.exists_keys, CacheKind::Exists),
        ];
        for (tuples, kind) in kinds {
            for (cols, given) in tuples {
                let fields = names(cols);
                let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
                let name = match given {
                    Some(n) => n.clone(),
                    None => derived_name(&model, kind, &refs),
                };
                let spec = match kind {
                    CacheKind::Instance => ClassSpec::instance(&name, &model, &refs),
                    CacheKind::Queryset => ClassSpec::queryset(&name, &model, &refs),
                    CacheKind::Exists => ClassSpec::exists(&name, &model, &refs),
                }
                .simple(true)
                .layout_of(layout.clone());
                out.push((self.settings(spec), cols.clone()));
            }
        }
        Ok(out)
    }

    /// The declaration's settings on `spec`.
    fn settings(&self, spec: ClassSpec) -> ClassSpec {
        let mut spec = spec
            .version(self.version.unwrap_or(0))
            .invalidation(self.invalidation.unwrap_or_default());
        spec.timeout = self.timeout;
        spec.allowtime = self.allowtime;
        spec.compress_above = self.compress_above;
        spec
    }

    /// The related classes' specs (not simple: reached through
    /// `ModelCache::related` / `linked`), with their declarations; a path
    /// that cannot be cached is an error.
    pub(crate) fn related_specs(&self) -> Result<Vec<RelatedSpec<'_, E>>, RegistryError> {
        let model = model_name::<E>();
        self.related
            .iter()
            .map(|d| {
                let fields = names(&d.cols);
                let path = d
                    .path
                    .clone()
                    .map_err(|reason| RegistryError::InvalidClass {
                        class: format!("{model} (related, by {})", fields.join(", ")),
                        reason,
                    })?;
                let name = d.name(&path, &fields);
                let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
                let spec = match d.kind {
                    CacheKind::Queryset => ClassSpec::queryset(&name, &model, &refs),
                    _ => ClassSpec::instance(&name, &model, &refs),
                };
                // Its values are rows of the path's last table: their layout.
                Ok((self.settings(spec.layout_of(d.layout.clone())), d, path))
            })
            .collect()
    }
}
