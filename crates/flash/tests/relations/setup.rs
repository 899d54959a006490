//! What every test of the relations chapter shares: the declarations, a
//! handle on a fresh namespace, rows.

use super::common::{fresh_db, unique};
use flash::config::{cache_backend, cache_url};
use flash_core::{Backend, FlashEvent, Outcome};
use flash_sea_orm::capture::DrainSettings;
use flash_sea_orm::{by, CacheMeta, FlashDb, Registrar};
use flash_test_kit::entities::{checkin, comment, event, tag, ticket, user, user_tag};
use flash_test_kit::{schema, Hooked};
use sea_orm::Set;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The declarations of the relations chapter.
pub(crate) fn declare(reg: &mut Registrar) {
    reg.entity(
        CacheMeta::<event::Entity>::new()
            .get_key([event::Column::Id])
            .related_filter::<ticket::Entity>([event::Column::Slug]), // one to many
    )
    .unwrap();
    reg.entity(
        CacheMeta::<user::Entity>::new()
            .get_key([user::Column::Id])
            .related_filter::<tag::Entity>([user::Column::Id]),
    )
    .unwrap();
    // The other side of the junction: the users by a tag (the junction as a key).
    reg.entity(CacheMeta::<tag::Entity>::new().related_filter::<user::Entity>([tag::Column::Id]))
        .unwrap();
    reg.entity(CacheMeta::<user_tag::Entity>::new()).unwrap();
    reg.entity(
        CacheMeta::<ticket::Entity>::new()
            .get_key([ticket::Column::Id])
            .related_get::<event::Entity>([ticket::Column::Id])
            .related_filter::<event::Entity>([ticket::Column::HolderId])
            .select_related::<event::Entity>()
            .select_related::<user::Entity>(),
    )
    .unwrap();
    reg.entity(
        CacheMeta::<comment::Entity>::new()
            .filter_key([comment::Column::TargetType, comment::Column::TargetId])
            .generic_get::<event::Entity>(
                comment::Column::TargetType,
                comment::Column::TargetId,
                [comment::Column::Id],
            ),
    )
    .unwrap();
    reg.entity(
        CacheMeta::<checkin::Entity>::new()
            .linked_get(checkin::TicketEvent, [checkin::Column::Id])
            .linked_filter(checkin::TicketEvent, [checkin::Column::Gate]),
    )
    .unwrap();
}

/// A handle on a fresh namespace with the demo and relation tables.
pub(crate) async fn handle() -> FlashDb {
    handle_draining(DrainSettings::default()).await.0
}

/// A handle whose drain runs only when the test applies the captured
/// changes: for tests that count hits and misses (a write's captured record
/// invalidates its keys a second time when drained).
pub(crate) async fn quiet_handle() -> FlashDb {
    handle_draining(super::common::quiet_drain()).await.0
}

/// A handle and its cache, counting calls.
pub(crate) async fn handle_draining(
    drain: DrainSettings,
) -> (FlashDb, Arc<Hooked<Arc<dyn Backend>>>) {
    handle_with(drain, true).await
}

pub(crate) async fn handle_with(
    drain: DrainSettings,
    capture: bool,
) -> (FlashDb, Arc<Hooked<Arc<dyn Backend>>>) {
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    schema::create_relation_tables(&db).await.expect("tables");
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let backend = Arc::new(Hooked::new(backend).name("counting"));
    let prefix = unique("rel") + ":";
    let b2 = backend.clone();
    let mut reg = Registrar::new(db)
        .configure(|b| b.backend_arc(b2).prefix(prefix))
        .capture(capture)
        .drain_settings(drain);
    declare(&mut reg);
    (reg.build().await.expect("build"), backend)
}

pub(crate) async fn event(fdb: &FlashDb, slug: &str) -> event::Model {
    fdb.insert(event::ActiveModel {
        slug: Set(slug.into()),
        title: Set(format!("Title of {slug}")),
        city: Set("Oslo".into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub(crate) async fn ticket(fdb: &FlashDb, event_id: i32, holder_id: i32) -> ticket::Model {
    fdb.insert(ticket::ActiveModel {
        event_id: Set(event_id),
        holder_id: Set(holder_id),
        code: Set(unique("c")),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub(crate) async fn user(fdb: &FlashDb, name: &str) -> user::Model {
    fdb.insert(user::ActiveModel {
        username: Set(name.into()),
        name: Set(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub(crate) async fn tag(fdb: &FlashDb, name: &str) -> tag::Model {
    fdb.insert(tag::ActiveModel {
        name: Set(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

pub(crate) async fn link(fdb: &FlashDb, u: i32, t: i32) -> user_tag::Model {
    fdb.insert(user_tag::ActiveModel {
        user_id: Set(u),
        tag_id: Set(t),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Moves ticket `id` to event `event_id`, through flash.
pub(crate) async fn move_ticket(fdb: &FlashDb, id: i32, event_id: i32) {
    fdb.update(ticket::ActiveModel {
        id: Set(id),
        event_id: Set(event_id),
        ..Default::default()
    })
    .await
    .unwrap();
}

pub(crate) async fn checkin(fdb: &FlashDb, ticket_id: i32, gate: &str) -> checkin::Model {
    fdb.insert(checkin::ActiveModel {
        ticket_id: Set(ticket_id),
        gate: Set(gate.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The tag names of user `id`, through the related queryset.
pub(crate) async fn tags_of(fdb: &FlashDb, id: i32) -> Vec<String> {
    let users = fdb.cache::<user::Entity>();
    let rows = users
        .related::<tag::Entity>()
        .filter(by(user::Column::Id, id))
        .await
        .unwrap();
    rows.into_iter().map(|t| t.name).collect()
}

/// The event of ticket `id`, through the related instance.
pub(crate) async fn event_of(fdb: &FlashDb, id: i32) -> event::Model {
    let tickets = fdb.cache::<ticket::Entity>();
    tickets
        .related::<event::Entity>()
        .get(by(ticket::Column::Id, id))
        .await
        .unwrap()
}

/// A handle on the cache itself (no counting wrapper: the in-process store
/// answers without waiting, as in production), its drain quiet, each
/// lookup's class and outcome recorded.
pub(crate) async fn handle_observed(seen: Arc<Mutex<Vec<(String, Outcome)>>>) -> FlashDb {
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    schema::create_tables(&db).await.expect("tables");
    schema::create_relation_tables(&db).await.expect("tables");
    let backend = cache_backend(&cache_url())
        .await
        .unwrap_or_else(|e| panic!("cache backend {} unreachable: {e}", cache_url()));
    let prefix = unique("rel") + ":";
    let mut reg = Registrar::new(db)
        .configure(|b| {
            b.backend_arc(backend).prefix(prefix).observer(move |e| {
                if let FlashEvent::Lookup { class, outcome, .. } = e {
                    seen.lock().unwrap().push(((*class).to_owned(), *outcome));
                }
            })
        })
        .drain_settings(super::common::quiet_drain());
    declare(&mut reg);
    reg.build().await.expect("build")
}

/// What `Registrar::build` says of the declarations `declare` makes on a
/// fresh database (a start-up error is expected).
pub(crate) async fn build_error(declare: impl FnOnce(&mut Registrar)) -> flash_core::Error {
    let db = fresh_db(Arc::new(AtomicU64::new(0))).await;
    let mut reg = Registrar::new(db);
    declare(&mut reg);
    reg.build().await.expect_err("a start-up error")
}

pub(crate) async fn retitle(fdb: &FlashDb, e: &event::Model, title: &str) {
    fdb.update(event::ActiveModel {
        id: Set(e.id),
        title: Set(title.into()),
        ..Default::default()
    })
    .await
    .unwrap();
}

pub(crate) fn titles(rows: &[event::Model]) -> Vec<&str> {
    rows.iter().map(|e| e.title.as_str()).collect()
}

pub(crate) fn names(rows: &[tag::Model]) -> Vec<&str> {
    rows.iter().map(|t| t.name.as_str()).collect()
}

/// Polls `f` until it returns true; false after 5 s.
pub(crate) async fn eventually<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("not seen within 5 s");
}
