//! The demo's declarations (the seed's `CacheMeta`s) and its user-defined
//! classes: what the `flash demo` walkthrough, the stress test, the benchmarks
//! and the integration tests all declare on a [`Registrar`].

use crate::entities::{event, participation, user};
use async_trait::async_trait;
use flash_core::durations::CACHE_TIME_DAY;
use flash_core::{Class, ClassSpec, FieldValue, Invalidation};
use flash_sea_orm::{CacheMeta, CustomCache, Registrar};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use std::time::Duration;

/// The event ids a user participates in (the seed's
/// `ParticipatedEventIdListCacheOnUser`, static version 2).
pub struct ParticipatedEventIds;

#[async_trait]
impl CustomCache for ParticipatedEventIds {
    type Output = Vec<i32>;
    fn spec(&self) -> ClassSpec {
        ClassSpec::queryset(
            "ParticipatedEventIdListCacheOnUser",
            "participation",
            &["user_id"],
        )
        .version(2)
    }
    async fn compute(
        &self,
        db: &DatabaseConnection,
        key: &[FieldValue],
    ) -> Result<Vec<i32>, DbErr> {
        let uid = match key.first() {
            Some(FieldValue::Int(i)) => *i,
            _ => return Ok(Vec::new()),
        };
        participation::Entity::find()
            .select_only()
            .column(participation::Column::EventId)
            .filter(participation::Column::UserId.eq(uid))
            .into_tuple::<i32>()
            .all(db)
            .await
    }
}

/// The number of a user's participations.
pub struct ParticipationCount;

#[async_trait]
impl CustomCache for ParticipationCount {
    type Output = u64;
    fn spec(&self) -> ClassSpec {
        ClassSpec::queryset("ParticipationCountOnUser", "participation", &["user_id"])
    }
    async fn compute(&self, db: &DatabaseConnection, key: &[FieldValue]) -> Result<u64, DbErr> {
        let uid = match key.first() {
            Some(FieldValue::Int(i)) => *i,
            _ => return Ok(0),
        };
        participation::Entity::find()
            .filter(participation::Column::UserId.eq(uid))
            .count(db)
            .await
    }
}

/// The number of events in a city: expensive and write-heavy, so DYNAMIC with
/// an allowtime (the seed's "Allowtime").
pub struct EventsInCity {
    pub allowtime: Duration,
}

#[async_trait]
impl CustomCache for EventsInCity {
    type Output = u64;
    fn spec(&self) -> ClassSpec {
        ClassSpec::queryset("EventCountOnCity", "event", &["city"])
            .invalidation(Invalidation::Dynamic)
            .allowtime(self.allowtime)
    }
    async fn compute(&self, db: &DatabaseConnection, key: &[FieldValue]) -> Result<u64, DbErr> {
        let city = match key.first() {
            Some(FieldValue::Str(s)) => s.clone(),
            _ => return Ok(0),
        };
        event::Entity::find()
            .filter(event::Column::City.eq(city))
            .count(db)
            .await
    }
}

/// The user-defined classes of the demo.
#[derive(Clone)]
pub struct DemoClasses {
    pub event_ids: Class<Vec<i32>>,
    pub participation_count: Class<u64>,
    pub events_in_city: Class<u64>,
}

/// Declares the demo's caches on `reg` (the seed's `CacheMeta`s).
pub fn declare(
    reg: &mut Registrar,
    allowtime: Duration,
) -> Result<DemoClasses, flash_core::RegistryError> {
    declare_demo(reg, allowtime, false)
}

/// [`declare`] plus the relations chapter's classes on the demo models (for
/// the stress test and the benchmarks): the events of a user through the
/// participations (`user_participation_event_list_by_id`, many-to-many),
/// the event of a participation (`participation_event_by_id`), and
/// participations by id, embedding their event and user (`select_related`).
pub fn declare_with_relations(
    reg: &mut Registrar,
    allowtime: Duration,
) -> Result<DemoClasses, flash_core::RegistryError> {
    declare_demo(reg, allowtime, true)
}

fn declare_demo(
    reg: &mut Registrar,
    allowtime: Duration,
    relations: bool,
) -> Result<DemoClasses, flash_core::RegistryError> {
    // Two declarations of one entity merge (the seed's manager + CacheMeta).
    let mut manager = CacheMeta::<user::Entity>::new().get_key([user::Column::Id]);
    if relations {
        manager = manager.related_filter::<event::Entity>([user::Column::Id]);
    }
    let cache_meta = CacheMeta::<user::Entity>::new()
        .get_key([user::Column::Username])
        .timeout(CACHE_TIME_DAY);
    reg.entity(manager.merge(cache_meta)?)?;
    reg.entity(
        CacheMeta::<event::Entity>::new()
            .get_key([event::Column::Id])
            .get_key([event::Column::Slug]),
    )?;
    let mut participations = CacheMeta::<participation::Entity>::new();
    if relations {
        participations = participations
            .get_key([participation::Column::Id])
            .related_get::<event::Entity>([participation::Column::Id])
            .select_related::<event::Entity>()
            .select_related::<user::Entity>();
    }
    reg.entity(
        participations
            .filter_key([participation::Column::UserId])
            .filter_key([participation::Column::EventId])
            .exists_key([participation::Column::EventId])
            .get_key([
                participation::Column::UserId,
                participation::Column::EventId,
            ])
            .cached_fk::<event::Entity>(participation::Column::EventId)
            .cached_fk::<user::Entity>(participation::Column::UserId),
    )?;
    Ok(DemoClasses {
        event_ids: reg.custom(ParticipatedEventIds)?,
        participation_count: reg.custom(ParticipationCount)?,
        events_in_city: reg.custom(EventsInCity { allowtime })?,
    })
}
