//! # flash
//!
//! A model cache framework for Rust services. Declare, per SeaORM entity, the
//! field tuples its rows are looked up by; flash serves those lookups from
//! memcached, Redis or an in-process store, falls back to the database on a
//! miss, and invalidates exactly the affected keys when data changes.
//!
//! This crate is the facade: it re-exports [`flash_core`] and
//! [`flash_sea_orm`], configures backends from URLs ([`config`]), and holds
//! the demo models and walkthrough ([`demo`]) used by the `flash` binary, the
//! tests and the benchmarks.

pub mod bench;
pub mod config;
pub mod demo;
pub mod stress;

pub use flash_core::{self as core, *};
pub use flash_sea_orm::{
    self as sea_orm_adapter, by, CacheMeta, Changes, CustomCache, FlashDb, FlashTxn, Lookup,
    ModelCache, Registrar,
};
