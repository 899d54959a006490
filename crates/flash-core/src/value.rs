//! Field values: what a key is made of, independent of any ORM.

use serde::{Deserialize, Serialize};

/// One key-field value. ORM adapters convert their column values into this; it is
/// what keys are built from and what invalidation compares.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FieldValue {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer (every signed width).
    Int(i64),
    /// An unsigned integer (every unsigned width).
    UInt(u64),
    /// Text; also dates, UUIDs and decimals in their canonical text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

macro_rules! from_int {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for FieldValue {
            fn from(v: $t) -> Self { FieldValue::$v(v.into()) }
        }
    )*};
}
from_int!(i8 => Int, i16 => Int, i32 => Int, i64 => Int, u8 => UInt, u16 => UInt, u32 => UInt, u64 => UInt, bool => Bool);

impl From<&str> for FieldValue {
    fn from(v: &str) -> Self {
        FieldValue::Str(v.to_owned())
    }
}
impl From<String> for FieldValue {
    fn from(v: String) -> Self {
        FieldValue::Str(v)
    }
}
impl From<&String> for FieldValue {
    fn from(v: &String) -> Self {
        FieldValue::Str(v.clone())
    }
}
impl From<Vec<u8>> for FieldValue {
    fn from(v: Vec<u8>) -> Self {
        FieldValue::Bytes(v)
    }
}
impl<T: Into<FieldValue>> From<Option<T>> for FieldValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(FieldValue::Null, Into::into)
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => f.write_str("NULL"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::UInt(i) => write!(f, "{i}"),
            FieldValue::Str(s) => write!(f, "{s:?}"),
            FieldValue::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

/// A row as invalidation sees it: field values by name.
pub trait Record: Send + Sync {
    /// The value of `field`, or `None` when the row has no such field.
    fn field(&self, field: &str) -> Option<FieldValue>;
}

impl Record for std::collections::BTreeMap<String, FieldValue> {
    fn field(&self, field: &str) -> Option<FieldValue> {
        self.get(field).cloned()
    }
}
