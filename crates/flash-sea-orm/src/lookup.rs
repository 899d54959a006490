//! A lookup: key-field columns with their values.

use crate::convert::to_field;
use flash_core::FieldValue;
use sea_orm::{EntityTrait, IdenStatic, Value};

/// Key fields and values of one lookup, built with [`by`]:
/// `by(event::Column::Slug, "rock").and(event::Column::City, "Oslo")`.
/// A foreign key is given by id (`by(participation::Column::UserId, 7)`).
#[derive(Clone, Debug)]
pub struct Lookup<E: EntityTrait> {
    pub(crate) pairs: Vec<(E::Column, Value)>,
}

/// Starts a lookup on one column.
pub fn by<E: EntityTrait>(col: E::Column, value: impl Into<Value>) -> Lookup<E> {
    Lookup {
        pairs: vec![(col, value.into())],
    }
}

impl<E: EntityTrait> Lookup<E> {
    pub fn and(mut self, col: E::Column, value: impl Into<Value>) -> Self {
        self.pairs.push((col, value.into()));
        self
    }

    /// Column names without allocating (`IdenStatic`): this is the hot path.
    pub(crate) fn field_names(&self) -> Vec<&str> {
        self.pairs.iter().map(|(c, _)| c.as_str()).collect()
    }

    /// The values in the order of `key_fields` (which hold the same names).
    pub(crate) fn values_in(&self, key_fields: &[String]) -> Vec<FieldValue> {
        key_fields
            .iter()
            .map(|f| {
                self.pairs
                    .iter()
                    .find(|(c, _)| c.as_str() == f)
                    .map_or(FieldValue::Null, |(_, v)| to_field(v))
            })
            .collect()
    }
}
