//! Captured values back to key-field values.
//!
//! The triggers record key columns as JSON, in each database's own text form
//! (PostgreSQL writes `true` and `"2024-01-02T03:04:05"`, MySQL `1` and
//! `"2024-01-02 03:04:05.000000"`, binary columns arrive as hex). A lookup
//! builds its key from the SeaORM value ([`crate::to_field`]). For the drain
//! to invalidate the key a lookup filled, the two must give the same
//! [`FieldValue`]: so each column is decoded by its SeaORM column type into
//! the form `to_field` gives.

use flash_core::FieldValue;
use sea_orm::prelude::{ChronoDateTime, ChronoDateTimeWithTimeZone, Uuid};
use sea_orm::sea_query::ColumnType;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// How a captured column is decoded, from its SeaORM column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Bool,
    Float,
    Uuid,
    Bytes,
    /// A date and time without zone (`ChronoDateTime`).
    DateTime,
    /// A date and time with a zone or in UTC (RFC 3339 in keys).
    DateTimeTz,
    /// Text, and anything whose JSON text is its key text (dates, times).
    Text,
}

impl Kind {
    /// The kind of a column of type `ty`.
    pub(crate) fn of(ty: &ColumnType) -> Kind {
        use ColumnType as T;
        match ty {
            T::TinyInteger
            | T::SmallInteger
            | T::Integer
            | T::BigInteger
            | T::TinyUnsigned
            | T::SmallUnsigned
            | T::Unsigned
            | T::BigUnsigned => Kind::Int,
            T::Boolean => Kind::Bool,
            T::Float | T::Double => Kind::Float,
            T::Uuid => Kind::Uuid,
            T::Binary(_) | T::VarBinary(_) | T::Blob | T::Bit(_) | T::VarBit(_) => Kind::Bytes,
            T::DateTime | T::Timestamp => Kind::DateTime,
            T::TimestampWithTimeZone => Kind::DateTimeTz,
            _ => Kind::Text,
        }
    }

    /// The key-field value of a captured JSON value.
    pub(crate) fn decode(self, v: &Json) -> FieldValue {
        match (self, v) {
            (_, Json::Null) => FieldValue::Null,
            (Kind::Int, Json::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => FieldValue::Int(i),
                (None, Some(u)) => FieldValue::UInt(u),
                _ => FieldValue::Str(n.to_string()),
            },
            (Kind::Bool, Json::Bool(b)) => FieldValue::Bool(*b),
            (Kind::Bool, Json::Number(n)) => FieldValue::Bool(n.as_i64() != Some(0)),
            (Kind::Float, Json::Number(n)) => match n.as_f64() {
                Some(f) => FieldValue::Str(f.to_string()),
                None => FieldValue::Str(n.to_string()),
            },
            (Kind::Uuid, Json::String(s)) => {
                let parsed = match from_hex(s) {
                    Some(b) if b.len() == 16 => Uuid::from_slice(&b).ok(),
                    _ => Uuid::parse_str(s).ok(),
                };
                match parsed {
                    Some(u) => FieldValue::Str(u.hyphenated().to_string()),
                    None => FieldValue::Str(s.clone()),
                }
            }
            (Kind::Bytes, Json::String(s)) => match from_hex(s.strip_prefix("\\x").unwrap_or(s)) {
                Some(b) => FieldValue::Bytes(b),
                None => FieldValue::Bytes(s.clone().into_bytes()),
            },
            (Kind::DateTime, Json::String(s)) => {
                match s.replacen(' ', "T", 1).parse::<ChronoDateTime>() {
                    Ok(d) => FieldValue::Str(d.to_string()),
                    Err(_) => FieldValue::Str(s.clone()),
                }
            }
            (Kind::DateTimeTz, Json::String(s)) => {
                let t = s.replacen(' ', "T", 1);
                if let Ok(d) = ChronoDateTimeWithTimeZone::parse_from_rfc3339(&t) {
                    FieldValue::Str(d.to_rfc3339())
                } else if let Ok(d) = t.parse::<ChronoDateTime>() {
                    // MySQL's TIMESTAMP has no zone: flash stores it as UTC.
                    FieldValue::Str(d.and_utc().to_rfc3339())
                } else {
                    FieldValue::Str(s.clone())
                }
            }
            (_, Json::String(s)) => FieldValue::Str(s.clone()),
            (_, Json::Bool(b)) => FieldValue::Bool(*b),
            (_, other) => FieldValue::Str(other.to_string()),
        }
    }
}

/// Bytes of a hex string (either case), or `None` when it is not one.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// How to read the captured rows of one table: its model (flash's name for
/// it) and its captured columns in recorded order.
#[derive(Clone, Debug)]
pub(crate) struct TableDecoder {
    pub(crate) model: String,
    pub(crate) columns: Vec<(String, Kind)>,
}

impl TableDecoder {
    /// The rows of one recorded value, as field maps: column by column
    /// (`{"c": [[a1, a2], [b1, b2]]}`, PostgreSQL's statement triggers), row
    /// by row (`[[a1, b1], [a2, b2]]`, MySQL's triggers, and PostgreSQL's and
    /// SQLite's before format 4) or one row (`[a1, b1]`, SQLite's row triggers).
    pub(crate) fn rows(
        &self,
        json: Option<&str>,
    ) -> Result<Vec<BTreeMap<String, FieldValue>>, String> {
        let Some(json) = json else {
            return Ok(Vec::new());
        };
        let width = self.columns.len();
        let rows: Vec<Vec<Json>> = match serde_json::from_str(json).map_err(|e| e.to_string())? {
            Recorded::Columns { c } => {
                if c.len() != width {
                    return Err(format!("{} columns recorded, {width} captured", c.len()));
                }
                let n = c.first().map_or(0, Vec::len);
                if c.iter().any(|col| col.len() != n) {
                    return Err("recorded columns of different lengths".into());
                }
                let mut cols: Vec<_> = c.into_iter().map(Vec::into_iter).collect();
                (0..n)
                    .map(|_| cols.iter_mut().filter_map(Iterator::next).collect())
                    .collect()
            }
            Recorded::Rows(rows) => rows,
            Recorded::Row(row) => vec![row],
        };
        rows.into_iter()
            .map(|row| {
                if row.len() != width {
                    return Err(format!("{} values for {width} captured columns", row.len(),));
                }
                Ok(self
                    .columns
                    .iter()
                    .zip(&row)
                    .map(|((name, kind), v)| (name.clone(), kind.decode(v)))
                    .collect())
            })
            .collect()
    }
}

/// The shapes of a recorded `old_keys`/`new_keys` value (tried in this
/// order: a row's values are scalars, never arrays).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Recorded {
    Columns { c: Vec<Vec<Json>> },
    Rows(Vec<Vec<Json>>),
    Row(Vec<Json>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_field;
    use sea_orm::Value;
    use serde_json::json;

    /// Each database's JSON form decodes to what `to_field` gives for the
    /// same SeaORM value: the key a lookup filled.
    #[test]
    fn captured_values_give_the_lookup_keys() {
        let dt: ChronoDateTime = "2024-01-02T03:04:05.123456".parse().unwrap();
        let cases: Vec<(Kind, Vec<Json>, Value)> = vec![
            (Kind::Int, vec![json!(42)], Value::Int(Some(42))),
            (
                Kind::Int,
                vec![json!(u64::MAX)],
                Value::BigUnsigned(Some(u64::MAX)),
            ),
            (
                Kind::Bool,
                vec![json!(true), json!(1)],
                Value::Bool(Some(true)),
            ),
            (
                Kind::Bool,
                vec![json!(false), json!(0)],
                Value::Bool(Some(false)),
            ),
            (Kind::Text, vec![json!("a'b\"𝄞")], Value::from("a'b\"𝄞")),
            (Kind::Text, vec![json!(null)], Value::String(None)),
            (
                Kind::Uuid,
                vec![
                    json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
                    json!("67E5504410B1426F9247BB680E5FE0C8"),
                ],
                Value::Uuid(Some(Box::new(
                    Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
                ))),
            ),
            (
                Kind::Bytes,
                vec![json!("00FF10"), json!("\\x00ff10")],
                Value::Bytes(Some(Box::new(vec![0, 255, 16]))),
            ),
            (
                Kind::DateTime,
                vec![
                    json!("2024-01-02T03:04:05.123456"),
                    json!("2024-01-02 03:04:05.123456"),
                ],
                Value::ChronoDateTime(Some(Box::new(dt))),
            ),
            (
                Kind::DateTimeTz,
                vec![
                    json!("2024-01-02T03:04:05.123456+00:00"),
                    json!("2024-01-02 03:04:05.123456"),
                ],
                Value::ChronoDateTimeUtc(Some(Box::new(dt.and_utc()))),
            ),
        ];
        for (kind, forms, value) in cases {
            for form in forms {
                assert_eq!(kind.decode(&form), to_field(&value), "{kind:?} {form}");
            }
        }
    }

    #[test]
    fn hex_is_strict() {
        assert_eq!(from_hex("0aFF"), Some(vec![10, 255]));
        assert_eq!(from_hex("0a F"), None);
        assert_eq!(from_hex("abc"), None);
    }

    fn decoder() -> TableDecoder {
        TableDecoder {
            model: "event".into(),
            columns: vec![("id".into(), Kind::Int), ("slug".into(), Kind::Text)],
        }
    }

    /// PostgreSQL's column-by-column record and the row-by-row one (MySQL,
    /// SQLite, PostgreSQL before format 4) give the same rows.
    #[test]
    fn both_recorded_shapes_give_the_same_rows() {
        let d = decoder();
        let by_columns = d
            .rows(Some(r#"{"c": [[1, 2, null], ["a", "b", "c"]]}"#))
            .unwrap();
        let by_rows = d
            .rows(Some(r#"[[1, "a"], [2, "b"], [null, "c"]]"#))
            .unwrap();
        assert_eq!(by_columns, by_rows);
        let one = d.rows(Some(r#"[2, "b"]"#)).unwrap();
        assert_eq!(one, vec![by_rows[1].clone()]);
        assert_eq!(by_columns.len(), 3);
        assert_eq!(by_columns[1]["id"], FieldValue::Int(2));
        assert_eq!(by_columns[1]["slug"], FieldValue::Str("b".into()));
        assert_eq!(by_columns[2]["id"], FieldValue::Null);
        assert!(d.rows(None).unwrap().is_empty());
    }

    /// A record that does not fit the table's captured columns is an error
    /// (the drain logs and drops it), never a panic or a wrong row.
    #[test]
    fn records_of_the_wrong_shape_are_errors() {
        let d = decoder();
        for bad in [
            r#"{"c": [[1, 2]]}"#,
            r#"{"c": [[1, 2], ["a"]]}"#,
            r#"[[1]]"#,
            r#"[1]"#,
            r#"[1, "a", 3]"#,
            r#"{"x": 1}"#,
            "not json",
        ] {
            assert!(d.rows(Some(bad)).is_err(), "{bad}");
        }
    }
}
