//! The seed's models (users, events, participations) and the relations
//! chapter's (tickets, check-ins, tags and their junction, comments).

/// A user.
pub mod user {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "user")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(unique)]
        pub username: String,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event, looked up by id and by slug.
pub mod event {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "event")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(unique)]
        pub slug: String,
        pub title: String,
        pub city: String,
        /// Bumped by every write of the stress test, so that a reader can tell
        /// an older state from a newer one.
        #[sea_orm(default_value = 0)]
        pub revision: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user's participation in an event.
pub mod participation {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "participation")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(indexed)]
        pub user_id: i32,
        #[sea_orm(indexed)]
        pub event_id: i32,
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    // Relations as `Related` only (not `Relation` variants): the tables keep
    // no foreign-key constraint, as the seed's demo schema has none.

    fn to_event() -> RelationDef {
        Entity::belongs_to(super::event::Entity)
            .from(Column::EventId)
            .to(super::event::Column::Id)
            .into()
    }

    /// The event of a participation.
    impl Related<super::event::Entity> for Entity {
        fn to() -> RelationDef {
            to_event()
        }
    }

    /// The user of a participation.
    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::user::Entity)
                .from(Column::UserId)
                .to(super::user::Column::Id)
                .into()
        }
    }

    /// The events of a user, through the participations (many-to-many).
    impl Related<super::event::Entity> for super::user::Entity {
        fn to() -> RelationDef {
            to_event()
        }
        fn via() -> Option<RelationDef> {
            let to_user: RelationDef = Entity::belongs_to(super::user::Entity)
                .from(Column::UserId)
                .to(super::user::Column::Id)
                .into();
            Some(to_user.rev())
        }
    }
}

// ---------------------------------------------------------------------------
// The relations chapter's models: tickets of events held by users, check-ins
// of tickets, tags of users through a junction table, and comments on any row
// (a generic foreign key). Relations are declared with `Related` / `Linked`
// only, not as `Relation` variants, so that the tables carry no foreign-key
// constraints (tests add the ones they need).

/// A ticket of an event, held by a user.
pub mod ticket {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "ticket")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(indexed)]
        pub event_id: i32,
        #[sea_orm(indexed)]
        pub holder_id: i32,
        pub code: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The event of a ticket.
    impl Related<super::event::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::event::Entity)
                .from(Column::EventId)
                .to(super::event::Column::Id)
                .into()
        }
    }

    /// The tickets of an event (the other direction: one to many).
    impl Related<Entity> for super::event::Entity {
        fn to() -> RelationDef {
            <Entity as Related<super::event::Entity>>::to().rev()
        }
    }

    /// The holder of a ticket.
    impl Related<super::user::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::user::Entity)
                .from(Column::HolderId)
                .to(super::user::Column::Id)
                .into()
        }
    }
}

/// A check-in of a ticket at a gate.
pub mod checkin {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "checkin")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(indexed)]
        pub ticket_id: i32,
        pub gate: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The ticket of a check-in.
    impl Related<super::ticket::Entity> for Entity {
        fn to() -> RelationDef {
            Entity::belongs_to(super::ticket::Entity)
                .from(Column::TicketId)
                .to(super::ticket::Column::Id)
                .into()
        }
    }

    /// Two hops: the event of a check-in's ticket.
    #[derive(Debug)]
    pub struct TicketEvent;

    impl Linked for TicketEvent {
        type FromEntity = Entity;
        type ToEntity = super::event::Entity;
        fn link(&self) -> Vec<RelationDef> {
            vec![
                <Entity as Related<super::ticket::Entity>>::to(),
                <super::ticket::Entity as Related<super::event::Entity>>::to(),
            ]
        }
    }
}

/// A tag.
pub mod tag {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The junction of users and tags (many-to-many).
pub mod user_tag {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "user_tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(indexed)]
        pub user_id: i32,
        #[sea_orm(indexed)]
        pub tag_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    pub(crate) fn to_user() -> RelationDef {
        Entity::belongs_to(super::user::Entity)
            .from(Column::UserId)
            .to(super::user::Column::Id)
            .into()
    }

    pub(crate) fn to_tag() -> RelationDef {
        Entity::belongs_to(super::tag::Entity)
            .from(Column::TagId)
            .to(super::tag::Column::Id)
            .into()
    }

    /// The tags of a user, through the junction.
    impl Related<super::tag::Entity> for super::user::Entity {
        fn to() -> RelationDef {
            to_tag()
        }
        fn via() -> Option<RelationDef> {
            Some(to_user().rev())
        }
    }

    /// The users of a tag, through the junction.
    impl Related<super::user::Entity> for super::tag::Entity {
        fn to() -> RelationDef {
            to_user()
        }
        fn via() -> Option<RelationDef> {
            Some(to_tag().rev())
        }
    }
}

/// A comment on any row: `target_type` names its table, `target_id` its id
/// (a generic foreign key).
pub mod comment {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "comment")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub target_type: String,
        #[sea_orm(indexed)]
        pub target_id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
