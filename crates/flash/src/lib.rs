//! # flash
//!
//! A model cache framework for Rust services. Declare, per SeaORM entity, the
//! field tuples its rows are looked up by; flash serves those lookups from
//! memcached, Redis or an in-process store, falls back to the database on a
//! miss, and invalidates exactly the affected keys when data changes.
//!
//! This crate (package `flash-cache`, library `flash`) is the facade: one
//! dependency, with the database drivers and cache servers as features. It
//! re-exports, by name, what a service uses from [`flash_core`] (cache classes,
//! the [`Flash`] handle, backends, errors, outcomes) and from
//! [`flash_sea_orm`] ([`Registrar`], [`CacheMeta`], [`FlashDb`], lookups), and
//! configures databases and backends from URLs ([`config`]). The rest of the
//! core stays reachable as [`core`], the SeaORM adapter as [`sea_orm_adapter`].
//!
//! The `flash` command (demo, stress test, benchmarks) is the `flash-cli`
//! package; the models below come from `flash-test-kit`, a dev-dependency.
//!
//! # Layout
//!
//! - `config`: databases and cache backends from `DATABASE_URL` /
//!   `FLASH_CACHE_URL`-style URLs, with the resilient wrapper around servers.
//! - this file: the re-exports, and [`capture`] (the triggers that record
//!   writes from anywhere, and their DDL for migrations).
//!
//! Every feature of the manual, on SQLite and the in-process cache:
//!
//! ```
//! use flash_test_kit::entities::{event, participation, user}; // your SeaORM entities
//! use flash::{by, durations::CACHE_TIME_DAY, CacheMeta, Changes, Invalidation, Outcome, Registrar};
//! use sea_orm::{ColumnTrait, Condition, Set};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = flash::config::connect_database("sqlite::memory:").await?;
//! flash_test_kit::schema::create_tables(&db).await?; // your migrations
//!
//! // Declarations (the manual's CacheMeta), checked when built.
//! let mut reg = Registrar::new(db).configure(|b| b.prefix("doc:"));
//! reg.entity(CacheMeta::<user::Entity>::new().get_key([user::Column::Id]))?;
//! reg.entity(
//!     CacheMeta::<event::Entity>::new()
//!         .get_key([event::Column::Id])
//!         .get_key([event::Column::Slug])
//!         .timeout(CACHE_TIME_DAY) // Timeout
//!         .version(1),             // Static version (part of the key)
//! )?;
//! reg.entity(
//!     CacheMeta::<participation::Entity>::new()
//!         .filter_key([participation::Column::UserId])
//!         .cached_fk::<event::Entity>(participation::Column::EventId), // Cached foreign key
//! )?;
//! // A class of one's own (any serde value), DYNAMIC with an allowtime.
//! let in_city = reg.custom(flash_test_kit::EventsInCity { allowtime: std::time::Duration::from_secs(30) })?;
//! let fdb = reg.build().await?;
//!
//! // Writes through flash invalidate what they change.
//! let u = fdb.insert(user::ActiveModel { username: Set("ann".into()), name: Set("Ann".into()), ..Default::default() }).await?;
//! let e = fdb
//!     .insert(event::ActiveModel { slug: Set("rock".into()), title: Set("Rock".into()), city: Set("Oslo".into()), ..Default::default() })
//!     .await?;
//! let p = fdb
//!     .insert(participation::ActiveModel { user_id: Set(u.id), event_id: Set(e.id), role: Set("guest".into()), ..Default::default() })
//!     .await?;
//!
//! // Capture also records these writes; its drain re-applies them within
//! // milliseconds. Apply them now so that the outcomes below are exact.
//! fdb.apply_captured().await?;
//!
//! // Lookups: a miss fills, the next one hits.
//! let events = fdb.cache::<event::Entity>();
//! assert_eq!(events.get_with_outcome(by(event::Column::Slug, "rock")).await?.1, Outcome::Miss);
//! assert_eq!(events.get_with_outcome(by(event::Column::Slug, "rock")).await?.1, Outcome::Hit);
//! assert!(events.get(by(event::Column::Slug, "nope")).await.unwrap_err().is_not_found());
//! assert_eq!(events.cache_key(&by(event::Column::Id, e.id))?, format!("doc:i__default__event_by_id__{}__v1", e.id));
//! let mine = fdb.cache::<participation::Entity>().filter(by(participation::Column::UserId, u.id)).await?;
//! assert_eq!(mine, vec![p.clone()]);
//! assert_eq!(fdb.follow::<event::Entity, _>(&p).await?.map(|e| e.slug), Some("rock".into()));
//! assert_eq!(fdb.get(&in_city, &["Oslo".into()]).await?, 1);
//!
//! // Renaming a slug invalidates both slugs.
//! fdb.update(event::ActiveModel { id: Set(e.id), slug: Set("rock-oslo".into()), ..Default::default() }).await?;
//! assert!(events.get_or_none(by(event::Column::Slug, "rock")).await?.is_none());
//! assert_eq!(events.get(by(event::Column::Slug, "rock-oslo")).await?.id, e.id);
//!
//! // update_many / delete_many / transactions invalidate every affected row.
//! fdb.update_many::<event::Entity>(Condition::all().add(event::Column::City.eq("Oslo")), Changes::new().set(event::Column::Title, "Moved"))
//!     .await?;
//! assert_eq!(events.get(by(event::Column::Id, e.id)).await?.title, "Moved");
//! let id = e.id;
//! fdb.transaction(|tx| Box::pin(async move {
//!     tx.update(event::ActiveModel { id: Set(id), title: Set("In a transaction".into()), ..Default::default() }).await?;
//!     Ok(())
//! }))
//! .await?;
//! assert_eq!(events.get(by(event::Column::Id, e.id)).await?.title, "In a transaction");
//!
//! // A batch: several classes, one cache round trip.
//! let mut batch = fdb.flash().batch();
//! let hu = batch.add(fdb.cache::<user::Entity>().get_query(&by(user::Column::Id, u.id))?);
//! let he = batch.add(events.get_query(&by(event::Column::Id, e.id))?);
//! let mut res = batch.run().await;
//! assert_eq!(res.take(hu)?.map(|u| u.username), Some("ann".into()));
//! assert!(res.take(he)?.is_some());
//!
//! fdb.apply_captured().await?;
//! // Dynamic versions: after a schema change every old value is stale.
//! fdb.flash().bump_version_for_model("event").await?;
//! assert_eq!(events.get_with_outcome(by(event::Column::Id, e.id)).await?.1, Outcome::Miss);
//!
//! // Manual invalidation of whatever a filter matches.
//! fdb.invalidate_flash_cache::<event::Entity>(Condition::all().add(event::Column::Id.eq(e.id))).await?;
//! assert_eq!(events.get_with_outcome(by(event::Column::Id, e.id)).await?.1, Outcome::Miss);
//!
//! // The bypass switch: reads go to the database, the cache is left alone.
//! fdb.flash().set_bypass(true);
//! assert_eq!(events.get_with_outcome(by(event::Column::Id, e.id)).await?.1, Outcome::Bypass);
//! # let _ = Invalidation::Unset;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod options;

pub use flash_core as core;
pub use flash_sea_orm as sea_orm_adapter;

// The core: declaring classes, the handle, what lookups answer, backends.
pub use flash_core::{
    durations, Backend, BackendError, Batch, BatchMode, BatchResults, CacheKind, CacheValue, Class,
    ClassSpec, Error, Fetch, FetchFn, FieldValue, Flash, FlashBuilder, FlashEvent, Handle,
    Invalidation, MemoryBackend, NearBus, NearConfig, NearStats, NoVersionStore, Outcome, Query,
    Record, RegistryError, Scope, Settings, SourceError, Stats, StatsSnapshot, VersionStore,
};

/// The timeout and circuit breaker [`config::cache_backend`] puts around a
/// cache server.
pub use flash_core::resilient::ResilientBackend;

// The SeaORM adapter: declarations per entity, lookups, invalidating writes.
pub use flash_sea_orm::{
    by, by_object, CacheMeta, Changes, CustomCache, FlashDb, FlashTxn, Lookup, ModelCache,
    OutboxSettings, PgBus, Registrar, RelatedCache, Request, RequestCache, SelectRelated,
};
// Capture of every write: the triggers, their DDL, the drain's settings.
pub use flash_sea_orm::capture::{self, DrainSettings};

// Cache servers, one feature each (or by URL: [`config::cache_backend`]).
#[cfg(feature = "memcache")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcache")))]
pub use flash_memcache::MemcacheBackend;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use flash_redis::{RedisBackend, RedisBus, RedisClusterBackend};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
