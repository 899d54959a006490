//! # flash-test-kit
//!
//! What flash's tests, its CLI and its examples share; not published, used as a
//! dev-dependency (the `flash` CLI uses it for the demo's models).
//!
//! Layout:
//! - [`entities`]: the seed's SeaORM models (user, event, participation) and
//!   the relations chapter's (ticket, checkin, tag, user_tag, comment);
//! - [`schema`]: their tables (create, drop, empty) and the demo's namespace;
//! - [`declarations`]: the demo's cache declarations ([`declare`]) and its
//!   user-defined classes ([`EventsInCity`], [`ParticipationCount`],
//!   [`ParticipatedEventIds`]);
//! - [`conformance`]: the backend conformance suite every backend runs;
//! - [`hooked`]: [`Hooked`], a backend that forwards to another with hooks
//!   (call counts, injected errors and delays, overridden limits).

pub mod conformance;
pub mod declarations;
pub mod entities;
pub mod hooked;
pub mod schema;

pub use declarations::{
    declare, declare_with_relations, DemoClasses, EventsInCity, ParticipatedEventIds,
    ParticipationCount,
};
pub use hooked::{Call, Hooked, Op};
pub use schema::DEMO_NAMESPACE;

/// A backend read as owned byte vectors, for assertions that compare it
/// with literals (`Backend::get_many` answers `Bytes`).
pub fn owned(values: Vec<Option<flash_core::Bytes>>) -> Vec<Option<Vec<u8>>> {
    values.into_iter().map(|v| v.map(Vec::from)).collect()
}
