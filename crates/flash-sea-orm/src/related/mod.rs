//! Related classes: the row (or rows) reached through a relation path from
//! the rows of an entity matching key fields (the original's
//! `RelatedInstanceCache` / `RelatedQuerysetCache`), declared with
//! [`crate::CacheMeta::related_get`] and its siblings, typed by the
//! `Related` / `Linked` relations the entities declare.
//!
//! A related class is a class of the path's first table (`T0`) keyed by its
//! fields, so a write to a `T0` row invalidates it as any class of `T0`.
//! A write to a row of a later table `Tk` invalidates the keys of the `T0`
//! rows whose path passes through it: found by a *reverse query* that joins
//! `T0 .. Tk-1` and filters on the column hop `k - 1` joins on, with the
//! changed row's value of the other side (its old and new values). That
//! query runs after the write committed (a `T0` row committed before it is
//! found; one committed after invalidates its own key), for writes through
//! [`crate::FlashDb`] and in the capture drain alike. When `k = 1` and the
//! class is keyed by exactly the column hop 0 joins on (the junction of a
//! many-to-many list keyed by the owner's id), the key is the changed row's
//! value itself: no query.
//!
//! - `path`: [`Path`], the hops, the fetch and the reverse query.
//! - this file: the declaration carried by `CacheMeta`, the fetch, and
//!   [`Index`], what a handle knows of its related classes.

pub(crate) mod path;

use crate::convert::{value_of_type, ModelRecord};
use async_trait::async_trait;
use flash_core::{
    CacheKind, CacheValue, Class, ClassSpec, Fetch, FieldValue, Flash, FlashBuilder, Invalidation,
    KeySet, Record, RegistryError, SourceError,
};
use futures::future::BoxFuture;
pub(crate) use path::Path;
use sea_orm::sea_query::{ColumnType, Value};
use sea_orm::{DatabaseConnection, DbErr, EntityTrait, Iterable, ModelTrait, PrimaryKeyToColumn};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

/// The reverse query of one entity: the key-field values of the rows of
/// `E` found by `Path::reverse(k, values)`.
type ReverseFn = fn(
    DatabaseConnection,
    Arc<Path>,
    usize,
    Vec<Value>,
    Vec<String>,
) -> BoxFuture<'static, Result<Vec<Vec<FieldValue>>, DbErr>>;

/// Registers the class of a declaration on the builder; instantiated per
/// (start, end) entity pair where the declaration is typed.
type RegisterFn<E> = fn(
    &mut FlashBuilder,
    DatabaseConnection,
    ClassSpec,
    Vec<<E as EntityTrait>::Column>,
    Arc<Path>,
) -> Result<Arc<dyn Any + Send + Sync>, RegistryError>;

/// One related class as `CacheMeta` declares it.
pub(crate) struct Decl<E: EntityTrait> {
    pub(crate) cols: Vec<E::Column>,
    pub(crate) kind: CacheKind,
    /// The path, or why the relation cannot be cached (a start-up error).
    pub(crate) path: Result<Path, String>,
    pub(crate) register: RegisterFn<E>,
    pub(crate) reverse: ReverseFn,
    /// The layout (fingerprint parts) of the rows the class returns (those of the
    /// path's last table, not of `E`): an entry filled by code where that
    /// table has another layout is a miss.
    pub(crate) layout: Vec<String>,
}

impl<E: EntityTrait> std::fmt::Debug for Decl<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decl")
            .field("cols", &self.cols)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .finish()
    }
}

impl<E: EntityTrait> Decl<E> {
    /// A declaration of the rows of `T` at the end of `path`.
    pub(crate) fn new<T>(cols: Vec<E::Column>, kind: CacheKind, path: Result<Path, String>) -> Self
    where
        E::Model: Sync,
        T: EntityTrait,
        T::Model: CacheValue,
    {
        Decl {
            cols,
            kind,
            path,
            register: register::<E, T>,
            reverse: reverse::<E>,
            layout: crate::meta::layout_of::<T>(),
        }
    }

    /// The class name: the path's tables, `_list` for a queryset, the key
    /// fields (`checkin_ticket_event_by_id`, `user_user_tag_tag_list_by_id`).
    pub(crate) fn name(&self, path: &Path, fields: &[String]) -> String {
        let tables: Vec<&str> = path.tables().collect();
        let infix = match self.kind {
            CacheKind::Queryset => "_list",
            _ => "",
        };
        format!("{}{infix}_by_{}", tables.join("_"), fields.join("_")).replace("__", "_")
    }
}

/// The fetch of a related class.
struct RelatedFetch<E: EntityTrait> {
    db: DatabaseConnection,
    cols: Vec<E::Column>,
    path: Arc<Path>,
}

/// The row of a related instance: the first by primary key.
struct OneFetch<E: EntityTrait, T>(RelatedFetch<E>, PhantomData<fn() -> T>);

#[async_trait]
impl<E: EntityTrait, T: EntityTrait> Fetch<Option<T::Model>> for OneFetch<E, T>
where
    T::Model: CacheValue,
{
    async fn fetch(&self, key: &[FieldValue]) -> Result<Option<T::Model>, SourceError> {
        let f = &self.0;
        f.path
            .fetch::<E, T>(&f.cols, key)
            .one(&f.db)
            .await
            .map_err(SourceError::new)
    }
}

/// The rows of a related queryset: each row once (two rows of the start may
/// reach the same row), in primary-key order.
struct ListFetch<E: EntityTrait, T>(RelatedFetch<E>, PhantomData<fn() -> T>);

#[async_trait]
impl<E: EntityTrait, T: EntityTrait> Fetch<Vec<T::Model>> for ListFetch<E, T>
where
    T::Model: CacheValue,
{
    async fn fetch(&self, key: &[FieldValue]) -> Result<Vec<T::Model>, SourceError> {
        let f = &self.0;
        let mut rows = f
            .path
            .fetch::<E, T>(&f.cols, key)
            .all(&f.db)
            .await
            .map_err(SourceError::new)?;
        let pk = |m: &T::Model| -> Vec<Value> {
            T::PrimaryKey::iter()
                .map(|p| m.get(p.into_column()))
                .collect()
        };
        rows.dedup_by(|a, b| pk(a) == pk(b));
        Ok(rows)
    }
}

fn register<E, T>(
    builder: &mut FlashBuilder,
    db: DatabaseConnection,
    spec: ClassSpec,
    cols: Vec<E::Column>,
    path: Arc<Path>,
) -> Result<Arc<dyn Any + Send + Sync>, RegistryError>
where
    E: EntityTrait,
    T: EntityTrait,
    T::Model: CacheValue,
{
    let fetch = RelatedFetch::<E> { db, cols, path };
    Ok(match spec.kind {
        CacheKind::Queryset => Arc::new(
            builder.register::<Vec<T::Model>>(spec, ListFetch::<E, T>(fetch, PhantomData))?,
        ),
        _ => Arc::new(
            builder.register::<Option<T::Model>>(spec, OneFetch::<E, T>(fetch, PhantomData))?,
        ),
    })
}

fn reverse<E>(
    db: DatabaseConnection,
    path: Arc<Path>,
    k: usize,
    values: Vec<Value>,
    fields: Vec<String>,
) -> BoxFuture<'static, Result<Vec<Vec<FieldValue>>, DbErr>>
where
    E: EntityTrait,
    E::Model: Sync,
{
    Box::pin(async move {
        let rows = path.reverse::<E>(k, values).all(&db).await?;
        Ok(rows
            .iter()
            .filter_map(|m| {
                let r = ModelRecord(m);
                fields.iter().map(|f| r.field(f)).collect()
            })
            .collect())
    })
}

/// A related class that depends on the rows of one table of its path.
struct Dependent {
    spec: ClassSpec,
    path: Arc<Path>,
    /// The position of the table on the path (`1 ..= n`).
    k: usize,
    /// Its column that hop `k - 1` joins on: its values find the start rows.
    column: String,
    /// The type of the other side (hop `k - 1`'s `from_col`), to bind them.
    param: ColumnType,
    /// The key is the value itself (see the module documentation).
    direct: bool,
    reverse: ReverseFn,
}

/// The values of the joined-on column of changed rows, per dependent class:
/// what the reverse queries start from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Seeds(BTreeMap<usize, BTreeSet<FieldValue>>);

impl Seeds {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn extend(&mut self, other: Seeds) {
        for (i, v) in other.0 {
            self.0.entry(i).or_default().extend(v);
        }
    }
    /// Is every seed of `self` in `other`?
    pub(crate) fn is_subset(&self, other: &Seeds) -> bool {
        self.0
            .iter()
            .all(|(i, v)| other.0.get(i).is_some_and(|o| v.is_subset(o)))
    }
}

/// The seeds of one dependent class as an outbox row records them: by the
/// class's name and the table's position on its path, which stay the same
/// in every process running the same declarations (the index's numbering
/// need not).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SeedRecord {
    class: String,
    k: usize,
    values: Vec<FieldValue>,
}

/// The identity of a related class, as a lookup names it.
type ClassId = (Path, CacheKind, BTreeSet<String>);

/// What a handle knows of its related classes: their handles, for lookups,
/// and for every table on a path, the classes that depend on its rows; and
/// the relations instance lookups may embed (`select_related`), with the
/// foreign-key values last seen per key.
pub(crate) struct Index {
    classes: HashMap<ClassId, Arc<dyn Any + Send + Sync>>,
    deps: Vec<Dependent>,
    by_table: HashMap<String, Vec<usize>>,
    embeds: HashSet<Path>,
    /// Per instance key read with `select_related`, the foreign-key values
    /// of the row it held: the related keys are read in the same round trip
    /// as the row next time. Only a hint (checked against the row read);
    /// bounded, so a process reading many keys forgets the oldest.
    hints: moka::future::Cache<String, Arc<[FieldValue]>>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            classes: HashMap::new(),
            deps: Vec::new(),
            by_table: HashMap::new(),
            embeds: HashSet::new(),
            hints: moka::future::Cache::new(HINTS),
        }
    }
}

/// How many keys' foreign-key values a process remembers for
/// `select_related`.
const HINTS: u64 = 100_000;

/// Checks at start-up that the target of an embedded relation has the
/// instance class the embedding reads (on the column the relation joins).
pub(crate) type EmbedCheck = fn(&Flash, &Path) -> Result<(), flash_core::Error>;

/// A `select_related` declaration, checked at build.
pub(crate) struct PendingEmbed {
    pub(crate) path: Path,
    pub(crate) check: EmbedCheck,
}

/// The check of an embedding of `T`: its simple instance class on the
/// joined column.
pub(crate) fn embed_check<T>(flash: &Flash, path: &Path) -> Result<(), flash_core::Error>
where
    T: EntityTrait,
    T::Model: CacheValue,
{
    let hop = &path.0[0];
    flash
        .simple_class::<Option<T::Model>, _>(&hop.to_tbl, CacheKind::Instance, &[&hop.to_col])
        .map(|_| ())
}

/// A related class registered at declaration time, completed at build.
pub(crate) struct Pending {
    pub(crate) handle: Arc<dyn Any + Send + Sync>,
    pub(crate) spec: ClassSpec,
    pub(crate) path: Arc<Path>,
    pub(crate) reverse: ReverseFn,
}

impl Index {
    /// The index of `pending`; `types` gives the column types of every
    /// declared table. A table on a path that is not declared is an error:
    /// its writes would not be captured.
    pub(crate) fn build(
        pending: Vec<Pending>,
        types: &HashMap<String, HashMap<String, ColumnType>>,
    ) -> Result<Index, RegistryError> {
        let mut ix = Index::default();
        for p in pending {
            let fields: BTreeSet<String> = p.spec.key_fields.iter().cloned().collect();
            for (k, hop) in p.path.0.iter().enumerate().map(|(i, h)| (i + 1, h)) {
                let bad = |reason: String| RegistryError::InvalidClass {
                    class: p.spec.name.clone(),
                    reason,
                };
                if !types.contains_key(&hop.to_tbl) {
                    return Err(bad(format!(
                        "table {} on the relation path is not declared (declare \
                         CacheMeta::<its entity>::new() on the Registrar, so that its \
                         writes invalidate this class)",
                        hop.to_tbl
                    )));
                }
                let param = types
                    .get(&hop.from_tbl)
                    .and_then(|t| t.get(&hop.from_col))
                    .cloned()
                    .ok_or_else(|| bad(format!("no column {}.{}", hop.from_tbl, hop.from_col)))?;
                if !types[&hop.to_tbl].contains_key(&hop.to_col) {
                    return Err(bad(format!("no column {}.{}", hop.to_tbl, hop.to_col)));
                }
                ix.by_table
                    .entry(hop.to_tbl.clone())
                    .or_default()
                    .push(ix.deps.len());
                ix.deps.push(Dependent {
                    spec: p.spec.clone(),
                    path: p.path.clone(),
                    k,
                    column: hop.to_col.clone(),
                    param,
                    direct: k == 1
                        && hop.kind.is_none()
                        && p.spec.key_fields == [hop.from_col.clone()],
                    reverse: p.reverse,
                });
            }
            ix.classes
                .insert(((*p.path).clone(), p.spec.kind, fields), p.handle);
        }
        Ok(ix)
    }

    /// Checks the `select_related` declarations against the built handle
    /// and records them.
    pub(crate) fn add_embeds(
        &mut self,
        flash: &Flash,
        pending: Vec<PendingEmbed>,
    ) -> Result<(), flash_core::Error> {
        for p in pending {
            (p.check)(flash, &p.path)?;
            self.embeds.insert(p.path);
        }
        Ok(())
    }

    /// Is the embedding of `path` declared?
    pub(crate) fn embeds(&self, path: &Path) -> bool {
        self.embeds.contains(path)
    }

    /// The foreign-key values last seen under `key` (see `hints`).
    pub(crate) async fn hint(&self, key: &str) -> Option<Arc<[FieldValue]>> {
        self.hints.get(key).await
    }

    pub(crate) async fn remember(&self, key: String, values: Arc<[FieldValue]>) {
        self.hints.insert(key, values).await;
    }

    /// The class of `path`, `kind` and key `fields`.
    pub(crate) fn class<T: CacheValue>(
        &self,
        path: &Path,
        kind: CacheKind,
        fields: &[&str],
    ) -> Option<Class<T>> {
        let fields: BTreeSet<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        self.classes
            .get(&(path.clone(), kind, fields))?
            .downcast_ref::<Class<T>>()
            .cloned()
    }

    /// The columns of `table` that some related class joins on: a write
    /// that changes one must invalidate for its old value too.
    pub(crate) fn joined_columns(&self, table: &str) -> impl Iterator<Item = &str> {
        self.by_table
            .get(table)
            .into_iter()
            .flatten()
            .map(|&i| self.deps[i].column.as_str())
    }

    /// The seeds of changed `rows` of `table` (old and new versions).
    pub(crate) fn seeds(&self, table: &str, rows: &[&dyn Record]) -> Seeds {
        let mut seeds = Seeds::default();
        for &i in self.by_table.get(table).into_iter().flatten() {
            let d = &self.deps[i];
            if d.spec.invalidation == Invalidation::Off {
                continue;
            }
            let values: BTreeSet<FieldValue> = rows
                .iter()
                .filter_map(|r| r.field(&d.column))
                .filter(|v| *v != FieldValue::Null)
                .collect();
            if !values.is_empty() {
                seeds.0.entry(i).or_default().extend(values);
            }
        }
        seeds
    }

    /// The seeds as an outbox row records them (see [`SeedRecord`]).
    pub(crate) fn records(&self, seeds: &Seeds) -> Vec<SeedRecord> {
        seeds
            .0
            .iter()
            .map(|(&i, values)| SeedRecord {
                class: self.deps[i].spec.name.clone(),
                k: self.deps[i].k,
                values: values.iter().cloned().collect(),
            })
            .collect()
    }

    /// The seeds an outbox row recorded; those of a class this process does
    /// not declare are left out (its keys are not this process's to build).
    pub(crate) fn seeds_of(&self, records: &[SeedRecord]) -> Seeds {
        let mut seeds = Seeds::default();
        for r in records {
            let found = self
                .deps
                .iter()
                .position(|d| d.spec.name == r.class && d.k == r.k);
            match found {
                Some(i) => seeds
                    .0
                    .entry(i)
                    .or_default()
                    .extend(r.values.iter().cloned()),
                None => tracing::warn!(
                    class = r.class,
                    "outbox row names an undeclared related class"
                ),
            }
        }
        seeds
    }

    /// The keys of the related classes the seeds reach (reverse queries on
    /// `db`, which must see the writes committed).
    pub(crate) async fn resolve(
        &self,
        flash: &Flash,
        db: &DatabaseConnection,
        seeds: &Seeds,
    ) -> Result<KeySet, DbErr> {
        let mut keys = KeySet::default();
        for (&i, values) in &seeds.0 {
            let d = &self.deps[i];
            let found: Vec<Vec<FieldValue>> = match d.direct {
                true => values.iter().map(|v| vec![v.clone()]).collect(),
                false => {
                    let mut all = Vec::new();
                    let values: Vec<&FieldValue> = values.iter().collect();
                    for chunk in values.chunks(500) {
                        let bound = chunk.iter().map(|v| value_of_type(&d.param, v)).collect();
                        all.extend(
                            (d.reverse)(
                                db.clone(),
                                d.path.clone(),
                                d.k,
                                bound,
                                d.spec.key_fields.clone(),
                            )
                            .await?,
                        );
                    }
                    all
                }
            };
            for key in found {
                let Ok(key) = flash.spec_key(&d.spec, &key) else {
                    continue;
                };
                match d.spec.invalidation {
                    Invalidation::Dynamic => keys.dynamic.insert(key),
                    _ => keys.unset.insert(key),
                };
            }
        }
        Ok(keys)
    }
}
