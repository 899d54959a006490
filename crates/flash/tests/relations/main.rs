//! Related classes (the original's related instance and related queryset
//! caches): the rows reached through a `Related` / `Linked` path, one hop,
//! two hops and many-to-many through a junction table, following every
//! change on the path, by writes through flash and by writes from elsewhere
//! (capture), on DATABASE_URL and FLASH_CACHE_URL.

//!
//! Layout: `setup` (declarations, handles, rows), `paths` (related instances
//! and querysets, one and two hops, many-to-many, capture, requests,
//! start-up errors), `select` (`select_related`, also in a request),
//! `generic` (generic foreign keys), `layouts` (the layout fingerprint of
//! related entries), `outbox` (the related keys a dead writer left).

#[path = "../common/mod.rs"]
mod common;
mod generic;
mod layouts;
mod outbox;
mod paths;
mod select;
mod setup;
