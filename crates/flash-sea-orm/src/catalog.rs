//! The catalog of cache classes, kept beside the dynamic versions in the
//! database: `flash_cache_classes`, one row per class, written by every
//! [`crate::Registrar::build`]. It is what lets an operator's tool (the
//! `flash` command) bump a model's versions, build a class's keys and read
//! its entries without the application's code.

use crate::dialect;
use flash_core::{CacheKind, ClassSpec, Invalidation};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement, Value};

/// The table of the catalog.
pub const CLASSES_TABLE: &str = "flash_cache_classes";

/// What the catalog records of one class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The class's name (part of its keys).
    pub name: String,
    /// The model whose writes invalidate it.
    pub model: String,
    /// Its kind.
    pub kind: CacheKind,
    /// Its key fields, in key order.
    pub key_fields: Vec<String>,
    /// Its static version (part of its keys).
    pub version: u32,
    /// How writes reach its keys.
    pub invalidation: Invalidation,
    /// The fingerprint of its value layout.
    pub layout: u64,
    /// What the fingerprint was derived from (for a model's classes:
    /// `column:Type:nullable` per column, in field order): enough to decode
    /// its values without the model's type. Empty for classes whose layout
    /// is not described (custom and related classes), and in rows recorded
    /// before flash kept it.
    pub layout_parts: Vec<String>,
}

impl CatalogEntry {
    /// The entry of a declared class.
    pub fn of(spec: &ClassSpec) -> Self {
        CatalogEntry {
            name: spec.name.clone(),
            model: spec.model.clone(),
            kind: spec.kind,
            key_fields: spec.key_fields.clone(),
            version: spec.version,
            invalidation: spec.invalidation,
            layout: spec.layout,
            layout_parts: spec.layout_parts.clone(),
        }
    }
}

fn kind_from(tag: &str) -> Option<CacheKind> {
    [CacheKind::Instance, CacheKind::Queryset, CacheKind::Exists]
        .into_iter()
        .find(|k| k.tag() == tag)
}

fn invalidation_label(i: Invalidation) -> &'static str {
    match i {
        Invalidation::Off => "off",
        Invalidation::Unset => "unset",
        Invalidation::Dynamic => "dynamic",
    }
}

fn invalidation_from(s: &str) -> Option<Invalidation> {
    [
        Invalidation::Off,
        Invalidation::Unset,
        Invalidation::Dynamic,
    ]
    .into_iter()
    .find(|i| invalidation_label(*i) == s)
}

/// Creates the table if missing, and its `layout_parts` column in a table
/// created by an earlier flash.
pub async fn create_table(db: &DatabaseConnection) -> Result<(), DbErr> {
    let text = dialect::id_and_text_types(db.get_database_backend()).1;
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {CLASSES_TABLE} (cache_name VARCHAR(128) NOT NULL PRIMARY KEY, \
         model VARCHAR(128) NOT NULL, cache_type VARCHAR(16) NOT NULL, key_fields VARCHAR(2048) NOT NULL, \
         static_version BIGINT NOT NULL, invalidation VARCHAR(16) NOT NULL, layout BIGINT NOT NULL, \
         layout_parts {text})"
    );
    db.execute_unprepared(&sql).await?;
    let probe = format!("SELECT layout_parts FROM {CLASSES_TABLE} WHERE 1 = 0");
    if db.execute_unprepared(&probe).await.is_err() {
        let add = format!("ALTER TABLE {CLASSES_TABLE} ADD COLUMN layout_parts {text}");
        // Another process starting at the same moment may have added it.
        if let Err(err) = db.execute_unprepared(&add).await {
            db.execute_unprepared(&probe).await.map_err(|_| err)?;
        }
    }
    Ok(())
}

/// One part per line: a part (a column's name and its type's `Debug` form)
/// holds no line break.
fn parts_text(parts: &[String]) -> Option<String> {
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Records `entries`, replacing the rows of the same names (the newest
/// start-up's declaration wins).
pub async fn record(db: &DatabaseConnection, entries: &[CatalogEntry]) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let delete = format!(
        "DELETE FROM {CLASSES_TABLE} WHERE cache_name = {}",
        dialect::placeholder(backend, 1)
    );
    let insert = format!(
        "INSERT INTO {CLASSES_TABLE} (cache_name, model, cache_type, key_fields, static_version, invalidation, layout, layout_parts) \
         VALUES ({})",
        dialect::placeholders(backend, 1, 8)
    );
    for e in entries {
        db.execute(Statement::from_sql_and_values(
            backend,
            &delete,
            [Value::from(e.name.clone())],
        ))
        .await?;
        let row = Statement::from_sql_and_values(
            backend,
            &insert,
            [
                Value::from(e.name.clone()),
                Value::from(e.model.clone()),
                Value::from(e.kind.tag()),
                Value::from(e.key_fields.join(",")),
                Value::from(i64::from(e.version)),
                Value::from(invalidation_label(e.invalidation)),
                // Stored as the same 64 bits, signed.
                Value::from(e.layout as i64),
                Value::from(parts_text(&e.layout_parts)),
            ],
        );
        // Another process starting at the same moment may have inserted the
        // same row between our delete and insert: theirs will do.
        if let Err(err) = db.execute(row).await {
            tracing::debug!(class = %e.name, error = %err, "catalog row kept from another start-up");
        }
    }
    Ok(())
}

/// Every recorded class, by name.
pub async fn load(db: &DatabaseConnection) -> Result<Vec<CatalogEntry>, DbErr> {
    let backend = db.get_database_backend();
    let rows = db
        .query_all(Statement::from_string(
            backend,
            format!(
                "SELECT cache_name, model, cache_type, key_fields, static_version, invalidation, layout, layout_parts \
                 FROM {CLASSES_TABLE} ORDER BY cache_name"
            ),
        ))
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let tag: String = r.try_get("", "cache_type")?;
        let inv: String = r.try_get("", "invalidation")?;
        let fields: String = r.try_get("", "key_fields")?;
        let version: i64 = r.try_get("", "static_version")?;
        let layout: i64 = r.try_get("", "layout")?;
        let parts: Option<String> = r.try_get("", "layout_parts")?;
        let bad = |what: &str| DbErr::Custom(format!("{CLASSES_TABLE}: unknown {what}"));
        out.push(CatalogEntry {
            name: r.try_get("", "cache_name")?,
            model: r.try_get("", "model")?,
            kind: kind_from(&tag).ok_or_else(|| bad("cache_type"))?,
            key_fields: fields.split(',').map(str::to_owned).collect(),
            version: u32::try_from(version).map_err(|_| bad("static_version"))?,
            invalidation: invalidation_from(&inv).ok_or_else(|| bad("invalidation"))?,
            layout: layout as u64,
            layout_parts: parts
                .map(|p| p.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}
