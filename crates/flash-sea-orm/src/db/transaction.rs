//! Transactions: [`FlashDb::transaction`] runs a closure in a database
//! transaction; the writes made through its [`FlashTxn`] collect their keys,
//! recorded in the outbox (when on) before the commit and invalidated after
//! it, or dropped with a rollback. Statements run through the [`FlashTxn`]'s
//! SeaORM [`ConnectionTrait`](sea_orm::ConnectionTrait) (`am.insert(&*tx)`)
//! are captured (see [`crate::capture`]); when one may have written, the
//! commit is followed by the capture settle, so that their invalidations too
//! are applied before [`FlashDb::transaction`] returns.

use super::statements::pk_condition;
use super::writes::Touched;
use super::{src, FlashDb};
use crate::convert::model_name;
use crate::Changes;
use flash_core::Error;
use futures::future::BoxFuture;
use sea_orm::sea_query::Condition;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, DatabaseTransaction, EntityTrait, IntoActiveModel,
    TransactionTrait,
};
use std::sync::atomic::{AtomicBool, Ordering};

impl FlashDb {
    /// Runs `f` in a database transaction; the invalidations of the writes made
    /// through the [`FlashTxn`] are applied after the commit, and not at all on
    /// rollback.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send,
        F: for<'t> FnOnce(&'t mut FlashTxn) -> BoxFuture<'t, Result<T, Error>> + Send,
    {
        let txn = self.db.begin().await.map_err(src)?;
        let mut ftx = FlashTxn {
            fdb: self.clone(),
            txn: Some(txn),
            keys: Vec::new(),
            wrote: AtomicBool::new(false),
        };
        let out = f(&mut ftx).await;
        let txn = ftx.txn.take().ok_or(Error::TransactionFinished)?;
        match out {
            Ok(v) => {
                let mut ids = Vec::with_capacity(ftx.keys.len());
                for (model, keys) in &ftx.keys {
                    ids.push(match &self.outbox {
                        Some(ob) => ob.record(&txn, model, keys).await.map_err(src)?,
                        None => None,
                    });
                }
                txn.commit().await.map_err(src)?;
                for ((model, keys), id) in ftx.keys.iter().zip(ids) {
                    self.finish(model, keys, id).await;
                }
                if ftx.wrote.load(Ordering::Relaxed) {
                    self.settle().await.map_err(src)?;
                }
                Ok(v)
            }
            Err(e) => {
                txn.rollback().await.map_err(src)?;
                Err(e)
            }
        }
    }
}

/// Writes inside [`FlashDb::transaction`]; their invalidations wait for the commit.
pub struct FlashTxn {
    fdb: FlashDb,
    txn: Option<DatabaseTransaction>,
    keys: Vec<(String, Touched)>,
    /// A statement that may write ran through the SeaORM connection traits:
    /// settle after the commit.
    wrote: AtomicBool,
}

impl FlashTxn {
    /// The transaction, for reads and writes that need no invalidation (its
    /// writes are captured and applied by the drain within its lag; for
    /// SeaORM writes invalidated before [`FlashDb::transaction`] returns, pass
    /// the `FlashTxn` itself: `am.insert(&*tx)`).
    pub fn conn(&self) -> &DatabaseTransaction {
        self.txn
            .as_ref()
            .expect("transaction is open while the closure runs")
    }
    pub(super) fn mark_write(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }
    fn record(&mut self, model: String, keys: Touched) {
        self.keys.push((model, keys));
    }
    pub async fn insert<A>(&mut self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let (m, keys) = self.fdb.insert_on(self.conn(), am).await?;
        self.record(model_name::<A::Entity>(), keys);
        Ok(m)
    }
    pub async fn update<A>(&mut self, am: A) -> Result<<A::Entity as EntityTrait>::Model, Error>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A> + Sync,
    {
        let (m, keys) = self.fdb.update_on(self.conn(), false, am).await?;
        self.record(model_name::<A::Entity>(), keys);
        Ok(m)
    }
    pub async fn update_many<E>(
        &mut self,
        cond: Condition,
        changes: Changes<E>,
    ) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, keys) = self
            .fdb
            .update_many_on(self.conn(), false, cond, changes)
            .await?;
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
    pub async fn delete_many<E>(&mut self, cond: Condition) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, keys) = self.fdb.delete_on::<E, _>(self.conn(), false, cond).await?;
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
    pub async fn delete<E>(&mut self, row: &E::Model) -> Result<u64, Error>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let (n, mut keys) = self
            .fdb
            .delete_on::<E, _>(self.conn(), false, pk_condition::<E>(row))
            .await?;
        keys.extend(self.fdb.keys_of(&[row]));
        self.record(model_name::<E>(), keys);
        Ok(n)
    }
}
