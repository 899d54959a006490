//! Between SeaORM values and flash's field values, and rows as records.

use flash_core::{FieldValue, Record};
use sea_orm::sea_query::{ColumnType, Value};
use sea_orm::{ColumnTrait, EntityTrait, Iden, ModelTrait};
use std::str::FromStr;

/// A SeaORM value as a key-field value. Dates, UUIDs and decimals become their
/// canonical text, so that a lookup and the row it finds give the same key.
pub fn to_field(v: &Value) -> FieldValue {
    fn opt<T>(o: &Option<T>, f: impl FnOnce(&T) -> FieldValue) -> FieldValue {
        o.as_ref().map_or(FieldValue::Null, f)
    }
    match v {
        Value::Bool(b) => opt(b, |b| FieldValue::Bool(*b)),
        Value::TinyInt(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::SmallInt(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::Int(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::BigInt(i) => opt(i, |i| FieldValue::Int(*i)),
        Value::TinyUnsigned(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::SmallUnsigned(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::Unsigned(i) => opt(i, |i| FieldValue::Int((*i).into())),
        Value::BigUnsigned(i) => opt(i, |i| {
            i64::try_from(*i).map_or(FieldValue::UInt(*i), FieldValue::Int)
        }),
        Value::Float(f) => opt(f, |f| FieldValue::Str(f.to_string())),
        Value::Double(f) => opt(f, |f| FieldValue::Str(f.to_string())),
        Value::String(s) => opt(s, |s| FieldValue::Str(s.to_string())),
        Value::Char(c) => opt(c, |c| FieldValue::Str(c.to_string())),
        Value::Bytes(b) => opt(b, |b| FieldValue::Bytes(b.to_vec())),
        Value::Uuid(u) => opt(u, |u| FieldValue::Str(u.hyphenated().to_string())),
        Value::Json(j) => opt(j, |j| FieldValue::Str(j.to_string())),
        Value::ChronoDate(d) => opt(d, |d| FieldValue::Str(d.to_string())),
        Value::ChronoTime(d) => opt(d, |d| FieldValue::Str(d.to_string())),
        Value::ChronoDateTime(d) => opt(d, |d| FieldValue::Str(d.to_string())),
        Value::ChronoDateTimeUtc(d) => opt(d, |d| FieldValue::Str(d.to_rfc3339())),
        Value::ChronoDateTimeLocal(d) => opt(d, |d| FieldValue::Str(d.to_rfc3339())),
        Value::ChronoDateTimeWithTimeZone(d) => opt(d, |d| FieldValue::Str(d.to_rfc3339())),
        #[allow(unreachable_patterns)]
        other => FieldValue::Str(format!("{other:?}")),
    }
}

/// A key-field value as the SeaORM value that compares equal with `col`.
pub fn to_value<C: ColumnTrait>(col: &C, v: &FieldValue) -> Value {
    value_of_type(col.def().get_column_type(), v)
}

/// A key-field value as the SeaORM value that compares equal with a column
/// of type `ty`.
pub(crate) fn value_of_type(ty: &ColumnType, v: &FieldValue) -> Value {
    let ty = ty.clone();
    match v {
        FieldValue::Null => Value::String(None),
        FieldValue::Bool(b) => Value::Bool(Some(*b)),
        FieldValue::Int(i) => match ty {
            ColumnType::TinyInteger => {
                i8::try_from(*i).map_or(Value::BigInt(Some(*i)), |x| Value::TinyInt(Some(x)))
            }
            ColumnType::SmallInteger => {
                i16::try_from(*i).map_or(Value::BigInt(Some(*i)), |x| Value::SmallInt(Some(x)))
            }
            ColumnType::Integer => {
                i32::try_from(*i).map_or(Value::BigInt(Some(*i)), |x| Value::Int(Some(x)))
            }
            ColumnType::Unsigned => {
                u32::try_from(*i).map_or(Value::BigInt(Some(*i)), |x| Value::Unsigned(Some(x)))
            }
            ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => {
                Value::String(Some(Box::new(i.to_string())))
            }
            _ => Value::BigInt(Some(*i)),
        },
        FieldValue::UInt(u) => Value::BigUnsigned(Some(*u)),
        FieldValue::Str(s) => match ty {
            ColumnType::Uuid => match sea_orm::prelude::Uuid::parse_str(s) {
                Ok(u) => Value::Uuid(Some(Box::new(u))),
                Err(_) => Value::String(Some(Box::new(s.clone()))),
            },
            _ => Value::String(Some(Box::new(s.clone()))),
        },
        FieldValue::Bytes(b) => Value::Bytes(Some(Box::new(b.clone()))),
    }
}

/// The name of a column as flash's key fields use it.
pub fn column_name<C: Iden>(c: &C) -> String {
    c.to_string()
}

/// The table name of an entity: flash's model name.
pub fn model_name<E: EntityTrait>() -> String {
    E::default().table_name().to_owned()
}

/// A SeaORM row seen as a [`Record`].
pub struct ModelRecord<'a, M>(pub &'a M);

impl<M: ModelTrait + Sync> Record for ModelRecord<'_, M> {
    fn field(&self, field: &str) -> Option<FieldValue> {
        let col = <<M::Entity as EntityTrait>::Column as FromStr>::from_str(field).ok()?;
        Some(to_field(&self.0.get(col)))
    }
}
