//! The [`FlashDb`] handle a service keeps: construction, accessors and the
//! outbox controls. Its methods are grouped by what they do, one file each:
//!
//! - `lookups`: cached reads ([`FlashDb::cache`] and [`ModelCache`]).
//! - `writes`: inserts, updates and deletes that invalidate what they change.
//! - `own_update`: the update that records its own change (PostgreSQL with
//!   capture) instead of leaving it to the triggers.
//! - `transaction`: [`FlashDb::transaction`] and [`FlashTxn`], writes whose
//!   invalidations wait for the commit.
//! - `connection`: SeaORM's `ConnectionTrait`, `TransactionTrait` and
//!   `StreamTrait` on [`FlashDb`] (writes settle the captured changes before
//!   they return), `ConnectionTrait` and `TransactionTrait` on [`FlashTxn`].
//!
//! The fields stay private to this module and its children.

mod connection;
mod lookups;
mod own_update;
mod related;
mod select;
mod statements;
mod transaction;
mod writes;

pub(crate) use lookups::not_found;
pub use lookups::ModelCache;
pub use related::RelatedCache;
pub use select::SelectRelated;
pub use transaction::FlashTxn;
pub use writes::Changes;
pub(crate) use writes::Touched;

use crate::capture::Drain;
use crate::outbox::Outbox;
use crate::related::Index;
use flash_core::{Error, Flash, SourceError};
use sea_orm::DatabaseConnection;
use std::sync::Arc;

fn src(e: sea_orm::DbErr) -> Error {
    Error::Source(SourceError::new(e))
}

/// The handle a service keeps: a [`Flash`] and the database it caches.
/// Cloning is cheap (reference counts).
#[derive(Clone)]
pub struct FlashDb {
    flash: Flash,
    db: DatabaseConnection,
    /// The durable outbox, when on; shared by clones, its drain task stops
    /// with the last of them.
    outbox: Option<Arc<Outbox>>,
    /// The drain of captured changes, when capture is on; shared by clones,
    /// its task stops with the last of them.
    capture: Option<Arc<Drain>>,
    /// The related classes: their handles, and which tables' writes
    /// invalidate them by reverse queries.
    related: Arc<Index>,
}

impl std::fmt::Debug for FlashDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlashDb")
            .field("flash", &self.flash)
            .field("outbox", &self.outbox.is_some())
            .field("capture", &self.capture.is_some())
            .finish()
    }
}

impl FlashDb {
    /// A handle without the durable outbox (see [`crate::Registrar`] for one with it).
    pub fn new(flash: Flash, db: DatabaseConnection) -> Self {
        FlashDb {
            flash,
            db,
            outbox: None,
            capture: None,
            related: Arc::default(),
        }
    }

    pub(crate) fn with_related(mut self, related: Arc<Index>) -> Self {
        self.related = related;
        self
    }

    pub(crate) fn with_capture(mut self, drain: Arc<Drain>) -> Self {
        self.capture = Some(drain);
        self
    }

    /// Is the capture of every write on (see [`crate::Registrar::capture`])?
    pub fn has_capture(&self) -> bool {
        self.capture.is_some()
    }

    /// Applies every captured change visible now (writes from anywhere that
    /// committed before this call), instead of waiting for the drain task.
    /// Returns the number of changes applied. Writes through this handle's
    /// SeaORM connection traits (`am.update(&fdb)`, `fdb.execute(..)`,
    /// `TransactionTrait::transaction(&fdb, ..)`) call it before they
    /// return; call it yourself after committing a transaction of
    /// `TransactionTrait::begin` to read your writes at once.
    pub async fn apply_captured(&self) -> Result<usize, Error> {
        match &self.capture {
            Some(d) => d.apply_visible().await.map_err(src),
            None => Ok(0),
        }
    }

    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Is the durable outbox on?
    pub fn has_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// Deletes the outbox rows this handle applied (the background task does
    /// it in batches; call this before a process exits).
    pub async fn flush_outbox(&self) -> Result<(), Error> {
        match &self.outbox {
            Some(o) => o.flush().await.map_err(src),
            None => Ok(()),
        }
    }

    /// Re-applies every invalidation left in the outbox now (instead of
    /// waiting for the background task). Returns the number of rows applied.
    pub async fn drain_outbox(&self) -> Result<usize, Error> {
        match &self.outbox {
            Some(o) => o.drain(true).await.map_err(src),
            None => Ok(0),
        }
    }

    /// The core handle: settings, stats, bypass, user-defined classes.
    pub fn flash(&self) -> &Flash {
        &self.flash
    }

    /// The database connection. With capture on, writes made through it
    /// directly are invalidated by the drain, within its lag (see the
    /// README); writes through the handle's methods, and SeaORM writes
    /// through the handle itself (`am.insert(&fdb)`: `FlashDb` implements
    /// SeaORM's `ConnectionTrait`), are invalidated before they return.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}
