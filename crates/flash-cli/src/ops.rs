//! Operator commands for any application's database and cache, without its
//! code: `bump-version`, `invalidate`, `inspect` and `stats`. They read the
//! catalog of classes every start-up of the application records
//! ([`flash_sea_orm::catalog`]) and the dynamic versions beside it.
//!
//! The `flash` command runs them on `DATABASE_URL` and `FLASH_CACHE_URL`. An
//! application mounts them in its own binary with [`OpsCommand`] (a clap
//! subcommand) and [`run`].
//!
//! `inspect` shows a value decoded as JSON: with the model's type when the
//! application mounted the commands with it ([`Target::with_model`]), else
//! from the column layout the catalog records ([`crate::decode`]), once the
//! fingerprint of that layout is checked against the entry's.

use crate::decode::decode;
use clap::Subcommand;
use flash_core::codec::{decode_entry, Decoded, Entry, EntryRef};
use flash_core::key::{build_key, stale_key};
use flash_core::seal::{fingerprint, Sealer};
use flash_core::{
    Backend, BackendError, CacheKind, FieldValue, Flash, Invalidation, KeySet, VersionStore,
};
use flash_sea_orm::catalog::{self, CatalogEntry};
use flash_sea_orm::{model_name, SqlVersionStore};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Statement};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

/// The operator commands.
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Bumps the dynamic version of every cache class of a model (after a schema change).
    BumpVersion {
        /// The model's table name, e.g. `event`.
        #[arg(long)]
        model: String,
    },
    /// Invalidates one key: a class and its key values, or a raw key.
    Invalidate(KeyArgs),
    /// Shows what one key holds: value or marker, lease, class, versions, age, size, checks.
    Inspect(KeyArgs),
    /// The classes of the catalog with their versions, and the pending capture and outbox rows.
    Stats,
}

/// Which key a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The class (as `flash stats` lists it).
    #[arg(long, required_unless_present = "raw_key", conflicts_with = "raw_key")]
    pub class: Option<String>,
    /// A key value, in the class's key-field order (repeat for several fields).
    #[arg(long = "value")]
    pub values: Vec<String>,
    /// A cache key, as is.
    #[arg(long)]
    pub raw_key: Option<String>,
    /// The application's key prefix (`FlashBuilder::prefix`).
    #[arg(long, env = "FLASH_PREFIX", default_value = "flash:")]
    pub prefix: String,
    /// The database alias of the class's model (`FlashBuilder::db_alias`).
    #[arg(long, default_value = "default")]
    pub db_alias: String,
}

/// What an operator command may fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    #[error("model {0:?} has no classes in {table} (has the application started with this version of flash?)", table = catalog::CLASSES_TABLE)]
    UnknownModel(String),
    #[error("class {0:?} is not in {table}", table = catalog::CLASSES_TABLE)]
    UnknownClass(String),
    #[error("class {class} takes {expected} key values ({fields}), got {got}")]
    Arity {
        class: String,
        expected: usize,
        fields: String,
        got: usize,
    },
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("cache: {0}")]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Flash(#[from] flash_core::Error),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

type Decoder = Box<dyn Fn(CacheKind, &[u8]) -> Option<serde_json::Value> + Send + Sync>;

/// An application's database and cache, and what is known of its types.
pub struct Target {
    db: DatabaseConnection,
    backend: Arc<dyn Backend>,
    secret: Option<Vec<u8>>,
    /// Per model, how to decode its classes' payloads.
    decoders: HashMap<String, Decoder>,
}

impl Target {
    /// The database (holding the catalog and the versions) and the cache.
    pub fn new(db: DatabaseConnection, backend: Arc<dyn Backend>) -> Self {
        Target {
            db,
            backend,
            secret: None,
            decoders: HashMap::new(),
        }
    }

    /// The application's entry secret (`FlashBuilder::entry_secret`), to
    /// check seals.
    pub fn secret(mut self, secret: Option<Vec<u8>>) -> Self {
        self.secret = secret;
        self
    }

    /// Teaches `inspect` to decode the values of `E`'s classes (rows, lists
    /// of rows, flags) into JSON.
    pub fn with_model<E>(mut self) -> Self
    where
        E: EntityTrait,
        E::Model: Serialize + DeserializeOwned,
    {
        fn json<T: Serialize + DeserializeOwned>(p: &[u8]) -> Option<serde_json::Value> {
            serde_json::to_value(flash_core::codec::decode_payload::<T>(p)?).ok()
        }
        let decode: Decoder = Box::new(|kind, p| match kind {
            CacheKind::Instance => json::<Option<E::Model>>(p),
            CacheKind::Queryset => json::<Vec<E::Model>>(p),
            CacheKind::Exists => json::<bool>(p),
        });
        self.decoders.insert(model_name::<E>(), decode);
        self
    }
}

async fn class_of(t: &Target, name: &str) -> Result<CatalogEntry, OpsError> {
    catalog::load(&t.db)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| OpsError::UnknownClass(name.to_owned()))
}

/// The key of `args` and its class, when known (given, or read from the key).
async fn key_of(t: &Target, args: &KeyArgs) -> Result<(String, Option<CatalogEntry>), OpsError> {
    if let Some(raw) = &args.raw_key {
        let name = raw
            .strip_prefix(&args.prefix)
            .and_then(|rest| rest.split("__").nth(2));
        let class = match name {
            Some(n) => catalog::load(&t.db)
                .await?
                .into_iter()
                .find(|c| c.name == n),
            None => None,
        };
        return Ok((raw.clone(), class));
    }
    let name = args.class.as_deref().unwrap_or_default();
    let class = class_of(t, name).await?;
    if class.key_fields.len() != args.values.len() {
        return Err(OpsError::Arity {
            class: class.name.clone(),
            expected: class.key_fields.len(),
            fields: class.key_fields.join(", "),
            got: args.values.len(),
        });
    }
    // Text and integers give the same key segment ("7" either way).
    let values: Vec<FieldValue> = args
        .values
        .iter()
        .map(|v| FieldValue::Str(v.clone()))
        .collect();
    let key = build_key(
        &args.prefix,
        class.kind.tag(),
        &args.db_alias,
        &class.name,
        &values,
        class.version,
    );
    Ok((key, Some(class)))
}

/// Runs one command; its report goes to `out`.
pub async fn run(cmd: OpsCommand, t: &Target, out: &mut impl Write) -> Result<(), OpsError> {
    match cmd {
        OpsCommand::BumpVersion { model } => bump(t, &model, out).await,
        OpsCommand::Invalidate(args) => invalidate(t, &args, out).await,
        OpsCommand::Inspect(args) => inspect(t, &args, out).await,
        OpsCommand::Stats => stats(t, out).await,
    }
}

async fn bump(t: &Target, model: &str, out: &mut impl Write) -> Result<(), OpsError> {
    let classes: Vec<(String, String)> = catalog::load(&t.db)
        .await?
        .into_iter()
        .filter(|c| c.model == model)
        .map(|c| (c.kind.tag().to_owned(), c.name))
        .collect();
    if classes.is_empty() {
        return Err(OpsError::UnknownModel(model.to_owned()));
    }
    let store = SqlVersionStore::new(t.db.clone());
    store
        .bump(&classes)
        .await
        .map_err(flash_core::Error::from)?;
    let versions = store.load().await.map_err(flash_core::Error::from)?;
    for (_, name) in &classes {
        writeln!(
            out,
            "{name}: dynamic version now {}",
            versions.get(name).copied().unwrap_or(0)
        )?;
    }
    Ok(())
}

async fn invalidate(t: &Target, args: &KeyArgs, out: &mut impl Write) -> Result<(), OpsError> {
    let (key, class) = key_of(t, args).await?;
    let mut keys = KeySet::default();
    // An OFF class's keys are not touched by writes; an operator's request is
    // still honoured, with the marker an UNSET class gets.
    match class.as_ref().map(|c| c.invalidation) {
        Some(Invalidation::Dynamic) => keys.dynamic.insert(key.clone()),
        _ => keys.unset.insert(key.clone()),
    };
    let flash = Flash::builder()
        .backend_arc(t.backend.clone())
        .prefix(args.prefix.clone())
        .build()
        .await?;
    let model = class.as_ref().map_or("(operator)", |c| c.model.as_str());
    flash.apply_invalidation(model, &keys).await?;
    writeln!(out, "invalidated {key}")?;
    Ok(())
}

async fn inspect(t: &Target, args: &KeyArgs, out: &mut impl Write) -> Result<(), OpsError> {
    let (key, class) = key_of(t, args).await?;
    let mut got = t
        .backend
        .get_many(&[key.clone(), stale_key(&key)])
        .await?
        .into_iter();
    let (bytes, marker) = (got.next().flatten(), got.next().flatten());
    let versions = SqlVersionStore::new(t.db.clone())
        .load()
        .await
        .map_err(flash_core::Error::from)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut report = serde_json::Map::new();
    report.insert("key".into(), key.clone().into());
    if let Some(c) = &class {
        report.insert("class".into(), c.name.clone().into());
        report.insert("model".into(), c.model.clone().into());
        report.insert("kind".into(), c.kind.label().into());
        report.insert("static_version".into(), c.version.into());
        report.insert(
            "current_dynamic_version".into(),
            versions.get(&c.name).copied().unwrap_or(0).into(),
        );
    }
    let Some(bytes) = bytes else {
        report.insert("state".into(), "absent".into());
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?;
        return Ok(());
    };
    report.insert("size".into(), bytes.len().into());
    let sealer = t.backend.shared().then(|| match &t.secret {
        Some(s) => Sealer::with_secret(s),
        None => Sealer::unkeyed(),
    });
    let (body, seal) = match &sealer {
        Some(s) if flash_core::codec::may_be_value(&bytes) => match s.open(&key, &bytes) {
            Ok(body) => (body, "ok"),
            Err(_) => (
                &bytes[..],
                "mismatch (another key's, corrupted, or another secret)",
            ),
        },
        _ => (&bytes[..], "none"),
    };
    report.insert("seal".into(), seal.into());
    match flash_core::codec::decode_entry_ref(body) {
        Some(EntryRef::Value {
            version,
            filled_ms,
            layout,
            compressed,
            payload,
        }) => {
            report.insert("state".into(), "value".into());
            report.insert("dynamic_version".into(), version.into());
            report.insert("age_ms".into(), now.saturating_sub(filled_ms).into());
            report.insert("compressed".into(), compressed.into());
            if let Some(c) = &class {
                report.insert("layout_matches".into(), (layout == c.layout).into());
                show_value(t, c, layout, compressed, payload, &mut report);
            }
        }
        _ => {
            let state = match decode_entry(body) {
                Decoded::Entry(Entry::Stale { at_ms, .. }) => {
                    report.insert("age_ms".into(), now.saturating_sub(at_ms).into());
                    "stale marker"
                }
                Decoded::Entry(Entry::Lease { at_ms, .. }) => {
                    report.insert("age_ms".into(), now.saturating_sub(at_ms).into());
                    "lease (a fill in progress)"
                }
                Decoded::Entry(Entry::Fresh { .. }) => "fresh marker",
                _ => "garbage (a miss for lookups)",
            };
            report.insert("state".into(), state.into());
        }
    }
    if let Some(m) = marker {
        let state = match decode_entry(&m) {
            Decoded::Entry(Entry::Fresh { .. }) => "fresh",
            _ => "stale",
        };
        report.insert("dynamic_marker".into(), state.into());
    }
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    )?;
    Ok(())
}

/// Puts the decoded value of `c`'s entry in `report` (`value`, and
/// `value_note` / `undecoded_hex` when it is not whole), or says why not.
fn show_value(
    t: &Target,
    c: &CatalogEntry,
    layout: u64,
    compressed: bool,
    payload: &[u8],
    report: &mut serde_json::Map<String, serde_json::Value>,
) {
    let mut note = |n: &str| report.insert("value_note".into(), n.into());
    let payload = match compressed {
        true => flash_core::codec::decompress(payload),
        false => Some(payload.to_vec()),
    };
    let Some(payload) = payload else {
        note("the payload does not decompress");
        return;
    };
    if let Some(d) = t.decoders.get(&c.model) {
        match d(c.kind, &payload) {
            Some(v) => report.insert("value".into(), v),
            None => note("the payload does not decode as the model's type"),
        };
        return;
    }
    if c.kind != CacheKind::Exists {
        if c.layout_parts.is_empty() {
            note(
                "the catalog records no column layout for this class (a custom or related class, \
                 or recorded by an older flash): not decoded",
            );
            return;
        }
        // The recorded description must be the layout the entry was filled with.
        if fingerprint(&c.layout_parts) != layout {
            note("the entry's layout fingerprint is not the recorded layout's: not decoded");
            return;
        }
    }
    let d = decode(c.kind, &c.layout_parts, &payload);
    report.insert("value".into(), d.value);
    if let Some(n) = d.note {
        report.insert("value_note".into(), n.into());
    }
    if let Some(h) = d.rest_hex {
        report.insert("undecoded_hex".into(), h.into());
    }
}

async fn count(db: &DatabaseConnection, table: &str) -> Option<i64> {
    let row = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .ok()??;
    row.try_get::<i64>("", "n").ok()
}

async fn stats(t: &Target, out: &mut impl Write) -> Result<(), OpsError> {
    let classes = catalog::load(&t.db).await?;
    let versions = SqlVersionStore::new(t.db.clone())
        .load()
        .await
        .map_err(flash_core::Error::from)?;
    writeln!(
        out,
        "class\tmodel\tkind\tkey fields\tstatic version\tdynamic version\tinvalidation"
    )?;
    for c in &classes {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{:?}",
            c.name,
            c.model,
            c.kind.label(),
            c.key_fields.join(","),
            c.version,
            versions.get(&c.name).copied().unwrap_or(0),
            c.invalidation
        )?;
    }
    for (what, table) in [
        (
            "captured changes pending",
            flash_sea_orm::capture::CHANGES_TABLE,
        ),
        ("outbox rows pending", flash_sea_orm::OUTBOX_TABLE),
    ] {
        match count(&t.db, table).await {
            Some(n) => writeln!(out, "{what}: {n}")?,
            None => writeln!(out, "{what}: (no {table} table)")?,
        }
    }
    Ok(())
}
