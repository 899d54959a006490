//! Start-up: declarations of every entity and custom class, on one builder.

use crate::capture::{self, CaptureSpec, Drain, DrainSettings, Kind, TableDecoder};
use crate::convert::{column_name, model_name, to_value};
use crate::dialect;
use crate::meta::CacheMeta;
use crate::outbox::{resolver, Outbox, OutboxSettings, Resolver};
use crate::related::{Index, Pending, PendingEmbed};
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
use std::collections::{BTreeSet, HashMap};
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
    capture: bool,
    install_capture: bool,
    prune_capture: bool,
    drain_settings: DrainSettings,
    /// The entities declared, in order: what capture covers.
    tables: Vec<TableInfo>,
    /// Per model, the key fields of every class declared on it, and the
    /// columns related classes join on (capture records them).
    key_fields: HashMap<String, BTreeSet<String>>,
    /// The related classes registered, indexed at build.
    related: Vec<Pending>,
    /// The `select_related` declarations, checked at build.
    embeds: Vec<PendingEmbed>,
}

/// What capture needs of one declared entity.
struct TableInfo {
    table: String,
    pk: Vec<String>,
    columns: Vec<(String, Kind)>,
    /// The SQL type of every column (to bind the values of reverse queries).
    types: HashMap<String, sea_orm::sea_query::ColumnType>,
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
            capture: true,
            install_capture: true,
            prune_capture: false,
            drain_settings: DrainSettings::default(),
            tables: Vec::new(),
            key_fields: HashMap::new(),
            related: Vec::new(),
            embeds: Vec::new(),
        }
    }

    /// Turns the capture of every write on or off (default: on). With it,
    /// triggers on every declared entity's table record the key values of
    /// each written row, whoever writes it (raw SQL, plain SeaORM, other
    /// services, cascades), and a drain in every process invalidates them
    /// (see [`crate::capture`]). Without it, only writes through
    /// [`FlashDb`]'s methods invalidate.
    pub fn capture(mut self, on: bool) -> Self {
        self.capture = on;
        self
    }

    /// Whether [`Self::build`] installs (or updates) the capture triggers
    /// (default: yes). Turn it off when migrations install them: paste the
    /// text of [`Self::capture_ddl`] into one. The drain runs either way.
    pub fn install_capture(mut self, on: bool) -> Self {
        self.install_capture = on;
        self
    }

    /// Whether [`Self::build`] also removes the capture triggers of tables
    /// that these declarations do not cache (default: no, so that services
    /// with different declarations can share a database; turn it on in the
    /// one service, or migration, that owns the whole schema).
    pub fn prune_capture(mut self, on: bool) -> Self {
        self.prune_capture = on;
        self
    }

    /// How the drain of captured changes runs.
    pub fn drain_settings(mut self, s: DrainSettings) -> Self {
        self.drain_settings = s;
        self
    }

    /// The capture DDL of the declarations so far, for a migration file: the
    /// changes table and each table's triggers (see [`capture::ddl`]; on
    /// MySQL, [`capture::install`] also adds triggers for `ON DELETE CASCADE`
    /// parents, which this text does not have).
    pub fn capture_ddl(&self) -> Result<Vec<String>, Error> {
        let backend = sea_orm::ConnectionTrait::get_database_backend(&self.db);
        let mut out = capture::changes_table_ddl(backend);
        for spec in self.capture_specs()? {
            out.extend(capture::ddl(backend, &spec));
        }
        Ok(out)
    }

    /// One capture spec per declared entity: its primary key and every
    /// column a class of it is keyed on.
    fn capture_specs(&self) -> Result<Vec<CaptureSpec>, Error> {
        let empty = BTreeSet::new();
        self.tables
            .iter()
            .map(|t| {
                let keyed = self.key_fields.get(&t.table).unwrap_or(&empty);
                let cols = t
                    .columns
                    .iter()
                    .map(|(c, _)| c)
                    .filter(|c| keyed.contains(*c));
                CaptureSpec::new(&t.table, &t.pk, cols)
                    .map_err(|e| Error::Source(SourceError::new(e)))
            })
            .collect()
    }

    /// Turns the durable invalidation outbox on or off. Default: off when
    /// capture is on (the changes table is the durable record); otherwise on
    /// for PostgreSQL and MySQL, off for SQLite (one process, one file).
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
        let specs = meta.specs()?;
        let pk: Vec<String> = E::PrimaryKey::iter()
            .map(|p| column_name(&p.into_column()))
            .collect();
        self.builder.model(ModelInfo {
            name: model.clone(),
            pk: pk.clone(),
        })?;
        self.tables.push(TableInfo {
            table: model.clone(),
            pk,
            columns: E::Column::iter()
                .map(|c| (column_name(&c), Kind::of(c.def().get_column_type())))
                .collect(),
            types: E::Column::iter()
                .map(|c| (column_name(&c), c.def().get_column_type().clone()))
                .collect(),
        });
        for (spec, cols) in specs {
            self.key_fields
                .entry(model.clone())
                .or_default()
                .extend(spec.key_fields.iter().cloned());
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
        for (spec, decl, path) in meta.related_specs()? {
            self.key_fields
                .entry(model.clone())
                .or_default()
                .extend(spec.key_fields.iter().cloned());
            for hop in &path.0 {
                self.key_fields
                    .entry(hop.to_tbl.clone())
                    .or_default()
                    .insert(hop.to_col.clone());
            }
            let path = Arc::new(path);
            let handle = (decl.register)(
                &mut self.builder,
                self.db.clone(),
                spec.clone(),
                decl.cols.clone(),
                path.clone(),
            )?;
            self.related.push(Pending {
                handle,
                spec,
                path,
                reverse: decl.reverse,
            });
        }
        for (path, check) in &meta.embeds {
            let path = path.clone().map_err(|reason| RegistryError::InvalidClass {
                class: format!("{model} (select_related)"),
                reason,
            })?;
            self.embeds.push(PendingEmbed {
                path,
                check: *check,
            });
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
        self.key_fields
            .entry(spec.model.clone())
            .or_default()
            .extend(spec.key_fields.iter().cloned());
        self.builder.register(
            spec,
            CustomFetch {
                cache: Arc::new(cache),
                db: self.db.clone(),
            },
        )
    }

    /// Checks the declarations, creates the versions table, loads versions,
    /// records the classes in the catalog ([`crate::catalog`]).
    pub async fn build(self) -> Result<FlashDb, Error> {
        SqlVersionStore::new(self.db.clone())
            .create_table()
            .await
            .map_err(SourceError::new)?;
        let backend = sea_orm::ConnectionTrait::get_database_backend(&self.db);
        let specs = match self.capture {
            true => self.capture_specs()?,
            false => Vec::new(),
        };
        let types = self
            .tables
            .iter()
            .map(|t| (t.table.clone(), t.types.clone()))
            .collect();
        let mut related = Index::build(self.related, &types)?;
        // Declarations are checked before anything is installed.
        let flash = self.builder.build().await?;
        related.add_embeds(&flash, self.embeds)?;
        let related = Arc::new(related);
        // The catalog, for operators' tools (the `flash` command).
        crate::catalog::create_table(&self.db)
            .await
            .map_err(SourceError::new)?;
        let entries: Vec<_> = flash
            .classes()
            .map(crate::catalog::CatalogEntry::of)
            .collect();
        crate::catalog::record(&self.db, &entries)
            .await
            .map_err(SourceError::new)?;
        if self.capture && self.install_capture {
            let report = match self.prune_capture {
                true => capture::install(&self.db, &specs).await,
                false => capture::install_keeping_others(&self.db, &specs).await,
            }
            .map_err(SourceError::new)?;
            if report.changed() {
                tracing::info!(?report, "capture triggers installed");
            }
        }
        let outbox = self
            .outbox
            .unwrap_or(!self.capture && dialect::outbox_by_default(backend));
        let mut fdb = FlashDb::new(flash.clone(), self.db.clone()).with_related(related.clone());
        if self.capture {
            let decoders = self
                .tables
                .iter()
                .zip(&specs)
                .map(|(t, spec)| {
                    let kind = |c: &String| {
                        t.columns
                            .iter()
                            .find(|(n, _)| n == c)
                            .map_or(Kind::Text, |(_, k)| *k)
                    };
                    let decoder = TableDecoder {
                        model: t.table.clone(),
                        columns: spec
                            .columns()
                            .iter()
                            .map(|c| (c.clone(), kind(c)))
                            .collect(),
                    };
                    (t.table.clone(), decoder)
                })
                .collect();
            let conn = capture::drain_connection(&self.db, &self.drain_settings)
                .await
                .map_err(SourceError::new)?;
            fdb = fdb.with_capture(Drain::start(
                conn,
                flash.clone(),
                decoders,
                related.clone(),
                self.drain_settings,
            ));
        }
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
            related,
        )))
    }
}
