//! Generic foreign keys: as key fields, and the class of their target.

use super::setup::*;
use flash_sea_orm::{by, by_object, FlashDb};
use flash_test_kit::entities::{comment, event};
use sea_orm::Set;

async fn comment(fdb: &FlashDb, target_type: &str, target_id: i32, body: &str) -> comment::Model {
    fdb.insert(comment::ActiveModel {
        target_type: Set(target_type.into()),
        target_id: Set(target_id),
        body: Set(body.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn generic_foreign_keys_as_key_fields_and_a_generic_class_following_its_target() {
    let fdb = handle().await;
    let rock = event(&fdb, "rock").await;
    let t = ticket(&fdb, rock.id, 1).await;
    let on_event = comment(&fdb, "event", rock.id, "great").await;
    // A ticket with the event's id: the type column tells them apart.
    let on_ticket = comment(&fdb, "ticket", rock.id, "lost it").await;
    assert_eq!(on_ticket.target_id, on_event.target_id);
    let comments = fdb.cache::<comment::Entity>();

    // Key fields: the comments of a row, looked up by the row itself.
    let of =
        |m: &event::Model| by_object(comment::Column::TargetType, comment::Column::TargetId, m);
    assert_eq!(
        comments.filter(of(&rock)).await.unwrap(),
        std::slice::from_ref(&on_event)
    );
    let more = comment(&fdb, "event", rock.id, "again").await;
    assert_eq!(
        comments.filter(of(&rock)).await.unwrap(),
        [on_event.clone(), more]
    );
    let of_ticket = by_object(comment::Column::TargetType, comment::Column::TargetId, &t);
    assert_eq!(
        comments.filter(of_ticket).await.unwrap(),
        std::slice::from_ref(&on_ticket)
    );

    // The generic related instance: the event a comment is on.
    let target =
        comments.generic::<event::Entity>(comment::Column::TargetType, comment::Column::TargetId);
    assert_eq!(
        target
            .get(by(comment::Column::Id, on_event.id))
            .await
            .unwrap(),
        rock
    );
    assert_eq!(
        target
            .get_or_none(by(comment::Column::Id, on_ticket.id))
            .await
            .unwrap(),
        None,
        "a comment on a ticket is on no event"
    );
    retitle(&fdb, &rock, "Rock!").await;
    assert_eq!(
        target
            .get(by(comment::Column::Id, on_event.id))
            .await
            .unwrap()
            .title,
        "Rock!"
    );
    // The comment moves to another type: it now points at no event.
    fdb.update(comment::ActiveModel {
        id: Set(on_event.id),
        target_type: Set("ticket".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        target
            .get_or_none(by(comment::Column::Id, on_event.id))
            .await
            .unwrap(),
        None
    );
}
