//! The description of what to capture of one table ([`CaptureSpec`], plus the
//! MySQL-only [`CascadeCapture`]s), and what is derived from it alone: the
//! version hash and the trigger names. Pure: no SQL runs here.

use super::{FORMAT_VERSION, TRIGGER_PREFIX};
use sea_orm::{DatabaseBackend, DbErr};
use std::collections::BTreeSet;

/// What to capture of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    table: String,
    primary_key: Vec<String>,
    columns: Vec<String>,
    hex: BTreeSet<String>,
    schema: Option<String>,
    cascades: Vec<CascadeCapture>,
}

/// A foreign key of `child` (`columns`) referencing `parent` (`references`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub child: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub references: Vec<String>,
}

/// MySQL/MariaDB only: rows changed by foreign key actions fire no trigger
/// there, so a `BEFORE DELETE` trigger on the table at the top of `path`
/// records the rows that the delete is about to reach: the rows of the
/// last table of `path` (`path[0].parent` is the spec's table, each next
/// hop's parent is the previous hop's child), their `columns` (that table's
/// captured columns, `hex` ones as hex) as `old_keys`. Every hop is
/// `ON DELETE CASCADE`, except that the last may be `ON DELETE SET NULL`
/// (`set_null`): those rows stay, with the last hop's columns set to NULL,
/// which is recorded as their `new_keys`.
///
/// With `on_update`, the action is the foreign key's `ON UPDATE` one
/// (`path` is then one hop): a `BEFORE UPDATE` trigger on the parent records,
/// when a referenced column changes, the child rows that reference the old
/// values, before (`old_keys`) and after the action (`new_keys`: the
/// foreign-key columns set to the new values, or to NULL with `set_null`).
/// [`install`](super::install) finds these from `information_schema` itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CascadeCapture {
    pub path: Vec<ForeignKey>,
    pub columns: Vec<String>,
    pub hex: Vec<String>,
    pub set_null: bool,
    pub on_update: bool,
}

impl CascadeCapture {
    /// The table whose rows are recorded.
    pub fn table(&self) -> &str {
        self.path
            .last()
            .map(|f| f.child.as_str())
            .unwrap_or_default()
    }
}

impl CaptureSpec {
    /// Captures `key_columns` (the union of the key columns of every cache
    /// class of `table`) plus the primary key. The captured values are
    /// recorded in [`columns`](Self::columns) order: primary key first, then
    /// the other columns in the order given, without duplicates.
    pub fn new<P, K>(table: &str, primary_key: P, key_columns: K) -> Result<Self, DbErr>
    where
        P: IntoIterator,
        P::Item: AsRef<str>,
        K: IntoIterator,
        K::Item: AsRef<str>,
    {
        let primary_key: Vec<String> = primary_key
            .into_iter()
            .map(|c| c.as_ref().to_owned())
            .collect();
        if primary_key.is_empty() {
            return Err(DbErr::Custom(format!(
                "capture of {table}: a primary key is required"
            )));
        }
        let mut columns: Vec<String> = Vec::new();
        for c in primary_key
            .iter()
            .cloned()
            .chain(key_columns.into_iter().map(|c| c.as_ref().to_owned()))
        {
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        for name in std::iter::once(table).chain(columns.iter().map(String::as_str)) {
            check_identifier(name)?;
        }
        Ok(CaptureSpec {
            table: table.to_owned(),
            primary_key,
            columns,
            hex: BTreeSet::new(),
            schema: None,
            cascades: Vec::new(),
        })
    }

    /// A table that is not cached itself but whose deletes cascade to cached
    /// tables (MySQL): it gets the [`CascadeCapture`] triggers only.
    pub fn cascade_only(table: &str) -> Result<Self, DbErr> {
        check_identifier(table)?;
        Ok(CaptureSpec {
            table: table.to_owned(),
            primary_key: Vec::new(),
            columns: Vec::new(),
            hex: BTreeSet::new(),
            schema: None,
            cascades: Vec::new(),
        })
    }

    /// Adds captures of rows that deletes of this table cascade to (used on
    /// MySQL/MariaDB only; see [`CascadeCapture`]).
    pub fn with_cascades(mut self, cascades: impl IntoIterator<Item = CascadeCapture>) -> Self {
        for c in cascades {
            if !c.path.is_empty() && !self.cascades.contains(&c) {
                self.cascades.push(c);
            }
        }
        self.cascades.sort();
        self
    }

    pub fn cascades(&self) -> &[CascadeCapture] {
        &self.cascades
    }

    /// Does the table capture its own rows (not [`cascade_only`](Self::cascade_only))?
    pub fn captures_rows(&self) -> bool {
        !self.columns.is_empty()
    }

    /// Captures these columns as hexadecimal text (uppercase, no prefix)
    /// instead of their value: needed on MySQL/MariaDB for binary columns
    /// (`BINARY(16)` UUIDs...), which JSON cannot hold. [`install`](super::install) finds them
    /// itself on MySQL; SQLite hexes any BLOB value by itself; PostgreSQL
    /// renders `bytea` as `"\\x..."` text and needs none.
    pub fn with_hex<K>(mut self, columns: K) -> Self
    where
        K: IntoIterator,
        K::Item: AsRef<str>,
    {
        for c in columns {
            let c = c.as_ref();
            if self.columns.iter().any(|x| x == c) {
                self.hex.insert(c.to_owned());
            }
        }
        self
    }

    /// Qualifies the table, the changes table and the trigger function with a
    /// PostgreSQL schema (MySQL and SQLite ignore it). Without one the DDL is
    /// unqualified: it uses the `search_path` of the installing connection,
    /// and the trigger function finds `flash_changes` through the
    /// `search_path` of each *writing* connection. [`install`](super::install) qualifies with
    /// `current_schema()`. Not part of the version.
    pub fn in_schema(mut self, schema: &str) -> Result<Self, DbErr> {
        check_identifier(schema)?;
        self.schema = Some(schema.to_owned());
        Ok(self)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    /// The captured columns, in the order of the values of each recorded row.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The columns captured as hex text.
    pub fn hex_columns(&self) -> impl Iterator<Item = &str> {
        self.hex.iter().map(String::as_str)
    }

    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// `v<FORMAT_VERSION><8 hex digits>`: a hash of the format version, the
    /// table, its primary key, the captured columns and the hex columns. The
    /// suffix of every trigger name.
    pub fn version(&self) -> String {
        let mut h = Fnv::new();
        h.write(b"flash-capture");
        h.write(&FORMAT_VERSION.to_le_bytes());
        h.field(&self.table);
        for c in &self.primary_key {
            h.field(c);
        }
        h.write(b"|");
        for c in &self.columns {
            h.field(c);
        }
        h.write(b"|");
        for c in &self.hex {
            h.field(c);
        }
        for c in &self.cascades {
            if c.on_update {
                h.write(b"|on-update");
            }
            h.write(if c.set_null {
                b"|set-null".as_slice()
            } else {
                b"|cascade".as_slice()
            });
            for f in &c.path {
                h.field(&f.child);
                let arrow = ["->", f.parent.as_str()];
                let columns = f.columns.iter().map(String::as_str);
                for x in columns
                    .chain(arrow)
                    .chain(f.references.iter().map(String::as_str))
                {
                    h.field(x);
                }
            }
            h.write(b"|");
            let columns = c.columns.iter().map(String::as_str);
            for x in columns
                .chain(["hex"])
                .chain(c.hex.iter().map(String::as_str))
            {
                h.field(x);
            }
        }
        format!("v{FORMAT_VERSION}{:08x}", (h.0 >> 32) as u32 ^ h.0 as u32)
    }

    /// The names of the triggers [`ddl`](super::ddl) creates for `backend`.
    pub fn trigger_names(&self, backend: DatabaseBackend) -> Vec<String> {
        let mut out: Vec<String> = if self.captures_rows() {
            ["i", "u", "d"]
                .iter()
                .map(|ev| self.object_name(ev))
                .collect()
        } else {
            Vec::new()
        };
        if backend == DatabaseBackend::MySql {
            out.extend((0..self.cascades.len()).map(|i| self.object_name(&format!("c{i}"))));
        }
        if backend == DatabaseBackend::Postgres && self.captures_rows() {
            // The row-level trigger that flags a key change (see `postgres::install`).
            out.push(self.object_name("k"));
        }
        out
    }

    /// `flash_capture_<table>_<tag>_<version>`, the table part truncated so
    /// that the name fits in 63 bytes (PostgreSQL's limit; MySQL's is 64).
    pub(super) fn object_name(&self, tag: &str) -> String {
        let version = self.version();
        let room = 63 - TRIGGER_PREFIX.len() - tag.len() - version.len() - 2;
        let mut t = self.table.as_str();
        while t.len() > room {
            let mut end = room.min(t.len() - 1);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t = &t[..end];
        }
        format!("{TRIGGER_PREFIX}{t}_{tag}_{version}")
    }
}

pub(super) fn check_identifier(name: &str) -> Result<(), DbErr> {
    if name.is_empty()
        || name.contains('\0')
        || name.contains('\\')
        || name.contains("$flash$")
        || name.len() > 63
    {
        return Err(DbErr::Custom(format!(
            "capture: unsupported identifier {name:?} (empty, longer than 63 bytes, or holding NUL, a backslash or \"$flash$\")"
        )));
    }
    Ok(())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a, 64 bits: a hash that is the same in every build and process.
struct Fnv(u64);

/// [`Fnv`] of `bytes`, at compile time (the PostgreSQL install lock key).
pub(super) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

impl Fnv {
    fn new() -> Self {
        Fnv(FNV_OFFSET)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
    fn field(&mut self, s: &str) {
        self.write(&(s.len() as u64).to_le_bytes());
        self.write(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_orders_pk_first_and_dedups() {
        let s = CaptureSpec::new("event", ["id"], ["slug", "id", "city", "slug"]).unwrap();
        assert_eq!(s.columns(), ["id", "slug", "city"]);
        let v = s.version();
        assert_eq!(v.len(), 10);
        assert!(v.starts_with(&format!("v{}", super::super::FORMAT_VERSION)));
        let s2 = CaptureSpec::new("event", ["id"], ["slug"]).unwrap();
        assert_ne!(s2.version(), v);
        assert_eq!(
            s.clone().in_schema("x").unwrap().version(),
            v,
            "schema is not part of the version"
        );
    }

    #[test]
    fn long_names_fit() {
        let t = "é".repeat(31);
        let s = CaptureSpec::new(&t, ["id"], ["a"]).unwrap();
        for n in s.trigger_names(DatabaseBackend::Postgres) {
            assert!(n.len() <= 63, "{n}");
            assert!(n.ends_with(&s.version()));
        }
    }

    #[test]
    fn install_lock_key_is_fixed() {
        assert_eq!(
            super::super::PG_INSTALL_LOCK_KEY,
            -5_654_463_861_724_154_320
        );
    }

    #[test]
    fn bad_identifiers_refused() {
        assert!(CaptureSpec::new("a\\b", ["id"], ["x"]).is_err());
        assert!(CaptureSpec::new("t", Vec::<String>::new(), ["x"]).is_err());
    }
}
