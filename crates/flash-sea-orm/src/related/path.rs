//! Relation paths: the hops SeaORM's `Related` / `Linked` declare, as table
//! and column names, and the two queries made along them: the fetch (the
//! rows at the end of the path from the rows at its start matching key
//! fields) and the reverse query (the rows at the start of the path whose
//! path passes through changed rows).

use crate::convert::{column_name as col_name, model_name, to_value};
use flash_core::FieldValue;
use sea_orm::sea_query::{Alias, Condition, Expr, JoinType, TableRef, Value};
use sea_orm::{
    EntityTrait, Iterable, PrimaryKeyToColumn, QueryOrder, QueryTrait, RelationDef, Select,
};

/// One hop: rows of `from_tbl` reach the rows of `to_tbl` whose `to_col`
/// equals their `from_col`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Hop {
    pub(crate) from_tbl: String,
    pub(crate) from_col: String,
    pub(crate) to_tbl: String,
    pub(crate) to_col: String,
    /// A generic foreign key's type column of `from_tbl` and the value that
    /// names `to_tbl`: only rows with that value take the hop.
    pub(crate) kind: Option<(String, String)>,
}

impl Hop {
    /// The condition on `from_tbl` (as `at`) that the hop's generic type
    /// column names `to_tbl` (always true for a plain foreign key).
    fn kind_condition(&self, at: Alias) -> Condition {
        match &self.kind {
            Some((col, value)) => {
                Condition::all().add(Expr::col((at, Alias::new(col))).eq(value.as_str()))
            }
            None => Condition::all(),
        }
    }
}

/// A relation path of one or more hops: tables `T0 .. Tn`, hop `i` from
/// `Ti` to `Ti+1`. Its value identifies a related class (with its kind and
/// key fields).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Path(pub(crate) Vec<Hop>);

fn table_name(t: &TableRef) -> Result<String, String> {
    match t {
        TableRef::Table(i)
        | TableRef::SchemaTable(_, i)
        | TableRef::DatabaseSchemaTable(_, _, i)
        | TableRef::TableAlias(i, _)
        | TableRef::SchemaTableAlias(_, i, _)
        | TableRef::DatabaseSchemaTableAlias(_, _, i, _) => Ok(i.to_string()),
        other => Err(format!("a relation to {other:?} is not a table")),
    }
}

fn column_name(i: &sea_orm::Identity) -> Result<String, String> {
    match i {
        sea_orm::Identity::Unary(c) => Ok(c.to_string()),
        other => Err(format!(
            "relations on composite keys ({other:?}) are not supported"
        )),
    }
}

/// The alias of table `Ti` in the queries (a table may occur twice).
fn alias(i: usize) -> Alias {
    Alias::new(format!("flash_r{i}"))
}

impl Path {
    /// The path of SeaORM relation definitions, in order from the start.
    /// A custom join condition or a composite key is an error, and so is a
    /// hop that does not start where the previous one ended.
    pub(crate) fn from_defs(defs: Vec<RelationDef>) -> Result<Path, String> {
        let mut hops = Vec::with_capacity(defs.len());
        for d in defs {
            if d.on_condition.is_some() {
                return Err("relations with a custom join condition are not supported".into());
            }
            let hop = Hop {
                from_tbl: table_name(&d.from_tbl)?,
                from_col: column_name(&d.from_col)?,
                to_tbl: table_name(&d.to_tbl)?,
                to_col: column_name(&d.to_col)?,
                kind: None,
            };
            if let Some(prev) = hops.last() {
                let prev: &Hop = prev;
                if prev.to_tbl != hop.from_tbl {
                    return Err(format!(
                        "the path breaks: a hop ends at {} and the next starts at {}",
                        prev.to_tbl, hop.from_tbl
                    ));
                }
            }
            hops.push(hop);
        }
        if hops.is_empty() {
            return Err("an empty relation path".into());
        }
        Ok(Path(hops))
    }

    /// The path of `Related<T>` on `E` (its `via` hop first, if any).
    pub(crate) fn related<E, T>() -> Result<Path, String>
    where
        E: EntityTrait + sea_orm::Related<T>,
        T: EntityTrait,
    {
        let mut defs: Vec<RelationDef> = <E as sea_orm::Related<T>>::via().into_iter().collect();
        defs.push(<E as sea_orm::Related<T>>::to());
        Self::checked::<E, T>(Path::from_defs(defs)?)
    }

    /// The one-hop path of a generic foreign key of `E` to `T`: rows of `E`
    /// whose `type_col` holds `T`'s table name reach the row of `T` whose
    /// primary key (one column) equals their `id_col`.
    pub(crate) fn generic<E: EntityTrait, T: EntityTrait>(
        type_col: &E::Column,
        id_col: &E::Column,
    ) -> Result<Path, String> {
        let pk: Vec<_> = T::PrimaryKey::iter().map(|p| p.into_column()).collect();
        let [pk] = pk.as_slice() else {
            return Err("a generic foreign key points at a one-column primary key".into());
        };
        Ok(Path(vec![Hop {
            from_tbl: model_name::<E>(),
            from_col: col_name(id_col),
            to_tbl: model_name::<T>(),
            to_col: col_name(pk),
            kind: Some((col_name(type_col), model_name::<T>())),
        }]))
    }

    /// The path of a `Linked`.
    pub(crate) fn linked<L: sea_orm::Linked>(l: &L) -> Result<Path, String> {
        Self::checked::<L::FromEntity, L::ToEntity>(Path::from_defs(l.link())?)
    }

    fn checked<E: EntityTrait, T: EntityTrait>(p: Path) -> Result<Path, String> {
        let (start, end) = (model_name::<E>(), model_name::<T>());
        if p.start() != start || p.end() != end {
            return Err(format!(
                "the relation goes from {} to {}, not from {start} to {end}",
                p.start(),
                p.end()
            ));
        }
        Ok(p)
    }

    /// The table the path starts at (`T0`).
    pub(crate) fn start(&self) -> &str {
        &self.0[0].from_tbl
    }

    /// The table the path ends at (`Tn`).
    pub(crate) fn end(&self) -> &str {
        &self.0[self.0.len() - 1].to_tbl
    }

    /// The tables `T0 .. Tn`.
    pub(crate) fn tables(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.start()).chain(self.0.iter().map(|h| h.to_tbl.as_str()))
    }

    /// The rows of `T` at the end of the path from the rows of `E` whose
    /// `cols` equal `key`, ordered by `T`'s primary key.
    pub(crate) fn fetch<E: EntityTrait, T: EntityTrait>(
        &self,
        cols: &[E::Column],
        key: &[FieldValue],
    ) -> Select<T> {
        let n = self.0.len();
        let mut q = T::find();
        let end = Alias::new(self.end());
        for i in (0..n).rev() {
            let hop = &self.0[i];
            let on = match i + 1 == n {
                true => Expr::col((alias(i), Alias::new(&hop.from_col)))
                    .equals((end.clone(), Alias::new(&hop.to_col))),
                false => Expr::col((alias(i), Alias::new(&hop.from_col)))
                    .equals((alias(i + 1), Alias::new(&hop.to_col))),
            };
            let on = hop.kind_condition(alias(i)).add(on);
            QueryTrait::query(&mut q).join_as(
                JoinType::InnerJoin,
                Alias::new(&hop.from_tbl),
                alias(i),
                on,
            );
        }
        for (c, v) in cols.iter().zip(key) {
            let col = Expr::col((alias(0), *c));
            let cond = match v {
                FieldValue::Null => col.is_null(),
                v => col.eq(to_value(c, v)),
            };
            QueryTrait::query(&mut q).and_where(cond);
        }
        for p in T::PrimaryKey::iter() {
            q = q.order_by_asc(p.into_column());
        }
        q
    }

    /// The rows of `E` (the start) whose path passes through the rows of
    /// table `Tk` (`1 <= k <= n`) that the previous table's rows reach by
    /// `values`: those of hop `k - 1`'s `from_col` (bound as `values`).
    pub(crate) fn reverse<E: EntityTrait>(&self, k: usize, values: Vec<Value>) -> Select<E> {
        let mut q = E::find();
        let start = Alias::new(self.start());
        let at = |i: usize| match i {
            0 => start.clone(),
            i => alias(i),
        };
        for i in 1..k {
            let hop = &self.0[i - 1];
            let on = Expr::col((at(i - 1), Alias::new(&hop.from_col)))
                .equals((alias(i), Alias::new(&hop.to_col)));
            let on = hop.kind_condition(at(i - 1)).add(on);
            QueryTrait::query(&mut q).join_as(
                JoinType::InnerJoin,
                Alias::new(&hop.to_tbl),
                alias(i),
                on,
            );
        }
        let hop = &self.0[k - 1];
        QueryTrait::query(&mut q)
            .cond_where(hop.kind_condition(at(k - 1)))
            .and_where(Expr::col((at(k - 1), Alias::new(&hop.from_col))).is_in(values));
        q
    }
}
