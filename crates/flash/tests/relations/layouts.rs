//! Related entries carry the layout fingerprint of the rows they hold (the
//! path's last table, not its first): two deploys whose `event` differs
//! share one cache and never read each other's related entries.

use super::common::event_v2;
use super::setup::*;
use flash_core::{Backend, Outcome};
use flash_sea_orm::{by, CacheMeta, FlashDb, Registrar};
use flash_test_kit::entities::{event, ticket};
use sea_orm::entity::prelude::*;
use std::sync::Arc;

/// The ticket's event in the other deploy: the same tables and columns, so
/// the same class names and keys.
impl Related<event_v2::Entity> for ticket::Entity {
    fn to() -> RelationDef {
        ticket::Entity::belongs_to(event_v2::Entity)
            .from(ticket::Column::EventId)
            .to(event_v2::Column::Id)
            .into()
    }
}

/// The other deploy: on `fdb`'s database and cache, under its prefix.
async fn other_deploy(fdb: &FlashDb, backend: Arc<dyn Backend>, prefix: String) -> FlashDb {
    let mut reg = Registrar::new(fdb.db().clone())
        .capture(false)
        .configure(|b| b.backend_arc(backend).prefix(prefix));
    reg.entity(CacheMeta::<event_v2::Entity>::new().get_key([event_v2::Column::Id]))
        .unwrap();
    reg.entity(
        CacheMeta::<ticket::Entity>::new()
            .get_key([ticket::Column::Id])
            .related_get::<event_v2::Entity>([ticket::Column::Id])
            .related_filter::<event_v2::Entity>([ticket::Column::HolderId])
            .select_related::<event_v2::Entity>(),
    )
    .unwrap();
    reg.build().await.expect("the other deploy")
}

fn rejected(fdb: &FlashDb) -> u64 {
    fdb.flash().stats().snapshot().rejected_entries
}

#[tokio::test]
async fn two_layouts_of_a_related_table_never_read_each_others_related_entries() {
    let (fdb, cache) = handle_draining(super::common::quiet_drain()).await;
    let rock = event(&fdb, "rock").await;
    let ann = user(&fdb, "ann").await;
    let t = ticket(&fdb, rock.id, ann.id).await;
    fdb.apply_captured().await.unwrap();
    assert_ne!(rock.slug, rock.title, "swapped strings would show");
    let (one, list) = (
        by(ticket::Column::Id, t.id),
        by(ticket::Column::HolderId, ann.id),
    );
    let tickets = fdb.cache::<ticket::Entity>();
    let rel = tickets.related::<event::Entity>();
    let key = rel.cache_key(&one).unwrap();
    let prefix = key[..key.find("i__default__").expect("an instance key")].to_owned();
    let backend: Arc<dyn Backend> = cache;
    let other = other_deploy(&fdb, backend, prefix).await;
    let other_tickets = other.cache::<ticket::Entity>();
    let rel2 = other_tickets.related::<event_v2::Entity>();
    assert_eq!(rel2.cache_key(&one).unwrap(), key, "one key");
    assert_eq!(
        rel2.filter_key(&list).unwrap(),
        rel.filter_key(&list).unwrap(),
        "one list key"
    );
    let v2 = |e: &event_v2::Model| (e.slug.clone(), e.title.clone());
    let expected = (rock.slug.clone(), rock.title.clone());

    for round in 0..2 {
        // This deploy fills; the other reads a miss, counted, and its own rows.
        assert_eq!(rel.get(one.clone()).await.unwrap(), rock);
        assert_eq!(
            rel.filter(list.clone()).await.unwrap(),
            std::slice::from_ref(&rock)
        );
        fdb.flash().settled().await;
        let before = rejected(&other);
        let (row, o) = rel2.get_with_outcome(one.clone()).await.unwrap();
        assert_eq!(
            (row.as_ref().map(v2), o),
            (Some(expected.clone()), Outcome::Miss),
            "round {round}: related instance"
        );
        let (rows, o) = rel2.filter_with_outcome(list.clone()).await.unwrap();
        assert_eq!(
            (rows.iter().map(v2).collect::<Vec<_>>(), o),
            (vec![expected.clone()], Outcome::Miss),
            "round {round}: related list"
        );
        assert!(rejected(&other) >= before + 2, "round {round}: counted");
        other.flash().settled().await;
        // And the other way round.
        let (row, o) = rel.get_with_outcome(one.clone()).await.unwrap();
        assert_eq!(
            (row, o),
            (Some(rock.clone()), Outcome::Miss),
            "round {round}"
        );
        let (rows, o) = rel.filter_with_outcome(list.clone()).await.unwrap();
        assert_eq!(
            (rows, o),
            (vec![rock.clone()], Outcome::Miss),
            "round {round}"
        );
        fdb.flash().settled().await;
    }

    // select_related's embedded row is read under the event's own key, with
    // the event's layout: each deploy gets its own decoding of it.
    let (row, ev) = tickets
        .select_related::<event::Entity>()
        .get(one.clone())
        .await
        .unwrap();
    assert_eq!((row, ev), (t.clone(), Some(rock.clone())));
    fdb.flash().settled().await;
    let (row, ev) = other_tickets
        .select_related::<event_v2::Entity>()
        .get(one.clone())
        .await
        .unwrap();
    assert_eq!((row, ev.as_ref().map(v2)), (t, Some(expected)));
}
