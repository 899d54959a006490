//! Start-up: declarations of every entity and custom class, on one builder.

use crate::convert::{column_name, model_name, to_value};
use crate::dialect;
use crate::meta::CacheMeta;
use crate::outbox::{resolver, Outbox, OutboxSettings, Resolver};
use crate::versions::SqlVersionStore;
use crate::FlashDb;
use async_trait::async_trait;
use flash_core::{
    CacheValue, Class, ClassSpec, Error, Fetch, FieldValue, Flash, FlashBuilder, ModelInfo,
    RegistryError, SourceError,
};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, Iterable, PrimaryKeyToColumn, QueryFilter,
    QuerySelect,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A user-defined cache class: its declaration and how to compute its value
/// from the database (the original's `get_instance` / `get_result`). The value
/// may be any serde type: a row, a list of ids, a count, a flag.
#[async_trait]
pub trait CustomCache: Send + Sync + 'static {
    type Output: CacheValue;
    /// Name, model whose writes invalidate it, key fields, settings.
    fn spec(&self) -> ClassSpec;
    /// The value for `key` (values in the order of the spec's key fields).
    async fn compute(
        &self,
        db: &DatabaseConnection,
        key: &[FieldValue],
    ) -> Result<Self::Output, DbErr>;
}

struct CustomFetch<C> {
    cache: Arc<C>,
    db: DatabaseConnection,
}

#[async_trait]
impl<C: CustomCache> Fetch<C::Output> for CustomFetch<C> {
    async fn fetch(&self, key: &[FieldValue]) -> Result<C::Output, SourceError> {
        self.cache
            .compute(&self.db, key)
            .await
            .map_err(SourceError::new)
    }
}

/// The fetch of a simple class: `find().filter(col = value ...)`.
struct RowFetch<E: EntityTrait> {
    db: DatabaseConnection,
    cols: Vec<E::Column>,
    many: bool,
}

impl<E: EntityTrait> RowFetch<E> {
    fn select(&self, key: &[FieldValue]) -> sea_orm::Select<E> {
        let mut q = E::find();
        for (c, v) in self.cols.iter().zip(key) {
            q = if *v == FieldValue::Null {
                q.filter(c.is_null())
            } else {
                q.filter(c.eq(to_value(c, v)))
            };
        }
        q
    }
}

#[async_trait]
impl<E: EntityTrait> Fetch<Option<E::Model>> for RowFetch<E>
where
    E::Model: CacheValue,
{
    async fn fetch(&self, key: &[FieldValue]) -> Result<Option<E::Model>, SourceError> {
        self.select(key)
            .one(&self.db)
            .await
            .map_err(SourceError::new)
    }
}

struct ExistsFetch<E: EntityTrait>(RowFetch<E>);

#[async_trait]
impl<E: EntityTrait> Fetch<bool> for ExistsFetch<E> {
    async fn fetch(&self, key: &[FieldValue]) -> Result<bool, SourceError> {
        // `SELECT $1 ... LIMIT 1` (a bound BIGINT, the same type on every
        // database): no row is read or decoded.
        let row = self
            .0
            .select(key)
            .select_only()
            .expr(sea_orm::sea_query::Expr::val(1i64))
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.0.db)
            .await
            .map_err(SourceError::new)?;
        Ok(row.is_some())
    }
}

struct ListFetch<E: EntityTrait>(RowFetch<E>);

#[async_trait]
impl<E: EntityTrait> Fetch<Vec<E::Model>> for ListFetch<E>
where
    E::Model: CacheValue,
{
    async fn fetch(&self, key: &[FieldValue]) -> Result<Vec<E::Model>, SourceError> {
        debug_assert!(self.0.many);
        self.0
            .select(key)
            .all(&self.0.db)
            .await
            .map_err(SourceError::new)
    }
}

/// Collects the declarations of a service at start-up; [`Registrar::build`]
/// checks them and gives the [`FlashDb`] handle.
///
/// Dynamic versions are kept in the table `flash_cache_versions`, created by
/// `build` when missing.
pub struct Registrar {
    builder: FlashBuilder,
    db: DatabaseConnection,
    outbox: Option<bool>,
    outbox_settings: OutboxSettings,
    resolvers: HashMap<String, Resolver>,
}

impl Registrar {
    /// Declarations on `db`, with a default [`Flash::builder`] (configure it
    /// with [`Self::configure`]).
    pub fn new(db: DatabaseConnection) -> Self {
        let builder = Flash::builder().version_store(SqlVersionStore::new(db.clone()));
        Registrar {
            builder,
            db,
            outbox: None,
            outbox_settings: OutboxSettings::default(),
            resolvers: HashMap::new(),
        }
    }

    /// Turns the durable invalidation outbox on or off. Default: on for
    /// PostgreSQL and MySQL, off for SQLite (one process, one file).
    pub fn outbox(mut self, on: bool) -> Self {
        self.outbox = Some(on);
        self
    }

    /// How often and after what delay the outbox is drained.
    pub fn outbox_settings(mut self, s: OutboxSettings) -> Self {
        self.outbox_settings = s;
        self
    }

    /// Changes the settings of the underlying [`FlashBuilder`] (backend,
    /// prefix, timeouts, bypass, observer...).
    pub fn configure(mut self, f: impl FnOnce(FlashBuilder) -> FlashBuilder) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// Declares the caches of entity `E`.
    pub fn entity<E>(&mut self, meta: CacheMeta<E>) -> Result<&mut Self, RegistryError>
    where
        E: EntityTrait,
        E::Model: CacheValue,
    {
        let model = model_name::<E>();
        let pk = E::PrimaryKey::iter()
            .map(|p| column_name(&p.into_column()))
            .collect();
        self.builder.model(ModelInfo {
            name: model.clone(),
            pk,
        })?;
        for (spec, cols) in meta.specs() {
            let fetch = RowFetch::<E> {
                db: self.db.clone(),
                cols,
                many: spec.kind == flash_core::CacheKind::Queryset,
            };
            match spec.kind {
                flash_core::CacheKind::Instance => {
                    self.builder.register::<Option<E::Model>>(spec, fetch)?;
                }
                flash_core::CacheKind::Queryset => {
                    self.builder
                        .register::<Vec<E::Model>>(spec, ListFetch(fetch))?;
                }
                flash_core::CacheKind::Exists => {
                    self.builder.register::<bool>(spec, ExistsFetch(fetch))?;
                }
            }
        }
        self.resolvers.insert(model.clone(), resolver::<E>());
        for (col, target) in &meta.cached_fks {
            self.builder
                .cached_foreign_key(&model, &column_name(col), target);
        }
        Ok(self)
    }

    /// Registers a user-defined class; keep the returned handle to look it up.
    pub fn custom<C: CustomCache>(&mut self, cache: C) -> Result<Class<C::Output>, RegistryError> {
        let spec = cache.spec().simple(false);
        self.builder.register(
            spec,
            CustomFetch {
                cache: Arc::new(cache),
                db: self.db.clone(),
            },
        )
    }

    /// Checks the declarations, creates the versions table, loads versions.
    pub async fn build(self) -> Result<FlashDb, Error> {
        SqlVersionStore::new(self.db.clone())
            .create_table()
            .await
            .map_err(SourceError::new)?;
        let flash = self.builder.build().await?;
        let outbox = self.outbox.unwrap_or(dialect::outbox_by_default(
            sea_orm::ConnectionTrait::get_database_backend(&self.db),
        ));
        let fdb = FlashDb::new(flash.clone(), self.db.clone());
        if !outbox {
            return Ok(fdb);
        }
        crate::outbox::create_table(&self.db)
            .await
            .map_err(SourceError::new)?;
        Ok(fdb.with_outbox(Outbox::start(
            self.db,
            flash,
            self.outbox_settings,
            self.resolvers,
        )))
    }
}
