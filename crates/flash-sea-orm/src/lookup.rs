//! A lookup: key-field columns with their values.

use crate::convert::{model_name, to_field};
use flash_core::FieldValue;
use sea_orm::{EntityTrait, IdenStatic, Iterable, ModelTrait, PrimaryKeyToColumn, Value};

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

/// Starts a lookup on a generic foreign key: `type_col` holds the table name
/// of `target`'s entity and `id_col` its primary key (the first column of
/// a composite one), as the original's content type and object id.
pub fn by_object<E: EntityTrait, M: ModelTrait>(
    type_col: E::Column,
    id_col: E::Column,
    target: &M,
) -> Lookup<E> {
    Lookup { pairs: Vec::new() }.and_object(type_col, id_col, target)
}

impl<E: EntityTrait> Lookup<E> {
    pub fn and(mut self, col: E::Column, value: impl Into<Value>) -> Self {
        self.pairs.push((col, value.into()));
        self
    }

    /// Adds a generic foreign key's two columns (see [`by_object`]).
    pub fn and_object<M: ModelTrait>(
        mut self,
        type_col: E::Column,
        id_col: E::Column,
        target: &M,
    ) -> Self {
        let pk = <M::Entity as EntityTrait>::PrimaryKey::iter()
            .next()
            .map(|p| target.get(p.into_column()));
        self.pairs
            .push((type_col, Value::from(model_name::<M::Entity>())));
        self.pairs.push((id_col, pk.unwrap_or(Value::String(None))));
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
