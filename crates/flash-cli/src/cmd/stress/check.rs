//! Check (a): after the run, every entry in the cache equals the database.

use super::worker::slugs_up_to;
use super::{BoxError, USERS};
use flash_core::{Outcome, Query};
use flash_sea_orm::{by, FlashDb};
use flash_test_kit::entities::{event, participation, user};
use flash_test_kit::DemoClasses;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

pub struct Findings {
    pub checked: u64,
    pub stale: u64,
    pub examples: Vec<String>,
}

/// Reads one entry from the cache only: `Some` when a value is cached that
/// flash would serve as fresh.
async fn peek<T: flash_core::CacheValue>(fdb: &FlashDb, q: Query<T>) -> Option<T> {
    let mut b = fdb.flash().batch().cache_only();
    let h = b.add(q);
    match b.run().await.take_with_outcome(h) {
        Ok((v, Outcome::Hit)) => Some(v),
        _ => None,
    }
}

pub async fn final_state(
    fdb: &FlashDb,
    classes: &DemoClasses,
    db: &DatabaseConnection,
) -> Result<Findings, BoxError> {
    let mut f = Findings {
        checked: 0,
        stale: 0,
        examples: Vec::new(),
    };
    let note = |f: &mut Findings, ok: bool, what: String| {
        f.checked += 1;
        if !ok {
            f.stale += 1;
            f.examples.push(what);
        }
    };
    let events = fdb.cache::<event::Entity>();
    for e in event::Entity::find().all(db).await? {
        if let Some(cached) = peek(fdb, events.get_query(&by(event::Column::Id, e.id))?).await {
            note(
                &mut f,
                cached.as_ref() == Some(&e),
                format!("event {} by id: cached {cached:?}, database {e:?}", e.id),
            );
        }
        for s in slugs_up_to(e.id, e.revision) {
            if let Some(cached) =
                peek(fdb, events.get_query(&by(event::Column::Slug, s.clone()))?).await
            {
                let truth = event::Entity::find()
                    .filter(event::Column::Slug.eq(s.clone()))
                    .one(db)
                    .await?;
                note(
                    &mut f,
                    cached == truth,
                    format!("event by slug {s}: cached {cached:?}, database {truth:?}"),
                );
            }
        }
    }
    let parts = fdb.cache::<participation::Entity>();
    related(fdb, db, &mut f, &note).await?;
    for u in 1..=USERS {
        let mut truth = participation::Entity::find()
            .filter(participation::Column::UserId.eq(u))
            .all(db)
            .await?;
        truth.sort_by_key(|p| p.id);
        if let Some(mut cached) = peek(
            fdb,
            parts.filter_query(&by(participation::Column::UserId, u))?,
        )
        .await
        {
            cached.sort_by_key(|p| p.id);
            note(
                &mut f,
                cached == truth,
                format!(
                    "participations of user {u}: cached {} rows, database {}",
                    cached.len(),
                    truth.len()
                ),
            );
        }
        if let Some(n) = peek(
            fdb,
            Query::new(&classes.participation_count, vec![u.into()]),
        )
        .await
        {
            note(
                &mut f,
                n == truth.len() as u64,
                format!(
                    "participation count of user {u}: cached {n}, database {}",
                    truth.len()
                ),
            );
        }
        if let Some(mut ids) = peek(fdb, Query::new(&classes.event_ids, vec![u.into()])).await {
            ids.sort_unstable();
            let mut want: Vec<i32> = truth.iter().map(|p| p.event_id).collect();
            want.sort_unstable();
            note(
                &mut f,
                ids == want,
                format!("event ids of user {u}: cached {ids:?}, database {want:?}"),
            );
        }
    }
    Ok(f)
}

/// Check (a) on the related classes: the events of every user through the
/// participations, and the event of every participation (deleted ones
/// included: their cached absence must hold).
async fn related(
    fdb: &FlashDb,
    db: &DatabaseConnection,
    f: &mut Findings,
    note: &impl Fn(&mut Findings, bool, String),
) -> Result<(), BoxError> {
    let users = fdb.cache::<user::Entity>();
    let events = users.related::<event::Entity>();
    for u in 1..=USERS {
        if let Some(cached) = peek(fdb, events.filter_query(&by(user::Column::Id, u))?).await {
            let mut ids: Vec<i32> = participation::Entity::find()
                .filter(participation::Column::UserId.eq(u))
                .all(db)
                .await?
                .iter()
                .map(|p| p.event_id)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let truth = event::Entity::find()
                .filter(event::Column::Id.is_in(ids))
                .all(db)
                .await?;
            let mut truth = truth;
            truth.sort_by_key(|e| e.id);
            note(
                f,
                cached == truth,
                format!(
                    "events of user {u} (many-to-many): cached {} rows, database {}",
                    cached.len(),
                    truth.len()
                ),
            );
        }
    }
    let parts = fdb.cache::<participation::Entity>();
    let of = parts.related::<event::Entity>();
    let max = participation::Entity::find()
        .all(db)
        .await?
        .iter()
        .map(|p| p.id)
        .max()
        .unwrap_or(0);
    for p in 1..=max {
        if let Some(cached) = peek(fdb, of.get_query(&by(participation::Column::Id, p))?).await {
            let truth = match participation::Entity::find_by_id(p).one(db).await? {
                Some(row) => event::Entity::find_by_id(row.event_id).one(db).await?,
                None => None,
            };
            note(
                f,
                cached == truth,
                format!("event of participation {p}: cached {cached:?}, database {truth:?}"),
            );
        }
    }
    Ok(())
}
