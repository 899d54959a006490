//! Class names: derived names that never collide, long ones shortened, a
//! class named by the service, and a true duplicate naming both declarations.

mod common;

use common::*;
use flash_core::{naming::MAX_CLASS_NAME_LEN, ClassSpec, Outcome, RegistryError};
use flash_sea_orm::{by, CacheMeta, Registrar};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Schema, Set};

/// A table whose columns `user`, `id` and `user_id` join alike.
mod grant {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "naming_grant")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub pk: i32,
        pub user: i32,
        pub id: i32,
        pub user_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A 35-character table name with a two-column key.
mod long {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "naming_participation_history_record")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub organisation_id: i32,
        pub created_day: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

async fn db_with_tables() -> DatabaseConnection {
    let db = fresh_db(Default::default()).await;
    let backend = db.get_database_backend();
    let schema = Schema::new(backend);
    db.execute(backend.build(&schema.create_table_from_entity(grant::Entity)))
        .await
        .unwrap();
    db.execute(backend.build(&schema.create_table_from_entity(long::Entity)))
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn columns_that_join_alike_and_long_names_register_and_serve() {
    let db = db_with_tables().await;
    assert_eq!(
        "naming_participation_history_record".len(),
        35,
        "the issue's case"
    );
    let mut reg = Registrar::new(db.clone())
        .capture(false)
        .configure(|b| b.prefix(unique("names:")));
    reg.entity(
        CacheMeta::<grant::Entity>::new()
            .get_key([grant::Column::UserId])
            .get_key([grant::Column::User, grant::Column::Id]),
    )
    .expect("user_id and (user, id) are two classes");
    reg.entity(
        CacheMeta::<long::Entity>::new()
            .filter_key([long::Column::OrganisationId, long::Column::CreatedDay]),
    )
    .expect("a long derived name is shortened, not refused");
    let fdb = reg.build().await.unwrap();
    let names: Vec<String> = fdb.flash().classes().map(|s| s.name.clone()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        names.iter().all(|n| n.len() <= MAX_CLASS_NAME_LEN),
        "{names:?}"
    );
    assert!(names.contains(&"naming_grant_by_user_id".to_string()));

    grant::Entity::insert(grant::ActiveModel {
        pk: Set(1),
        user: Set(7),
        id: Set(8),
        user_id: Set(9),
    })
    .exec(&db)
    .await
    .unwrap();
    let grants = fdb.cache::<grant::Entity>();
    for _ in 0..2 {
        assert_eq!(
            grants.get(by(grant::Column::UserId, 9)).await.unwrap().pk,
            1
        );
    }
    let key = by(grant::Column::User, 7).and(grant::Column::Id, 8);
    assert_eq!(grants.get(key.clone()).await.unwrap().pk, 1);
    assert_eq!(grants.get_with_outcome(key).await.unwrap().1, Outcome::Hit);
    let lookup = by(long::Column::OrganisationId, 1).and(long::Column::CreatedDay, 2);
    let rows = fdb.cache::<long::Entity>();
    assert!(rows.filter(lookup.clone()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_class_can_be_named_and_a_true_duplicate_names_both() {
    let db = db_with_tables().await;
    let mut reg = Registrar::new(db.clone())
        .capture(false)
        .configure(|b| b.prefix(unique("names:")));
    reg.entity(
        CacheMeta::<grant::Entity>::new()
            .named("GrantOnUser")
            .get_key([grant::Column::User]),
    )
    .unwrap();
    let err = reg
        .custom(TitleBySlug(ClassSpec::queryset(
            "GrantOnUser",
            "naming_grant",
            &["user_id"],
        )))
        .unwrap_err();
    match &err {
        RegistryError::DuplicateClass {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "GrantOnUser");
            assert_eq!(first, "instance cache on naming_grant by (user)");
            assert_eq!(second, "custom queryset cache on naming_grant by (user_id)");
        }
        other => panic!("expected DuplicateClass, got {other:?}"),
    }
    assert!(err.to_string().contains("by (user)") && err.to_string().contains("by (user_id)"));
    // A name given without a key tuple after it is a mistake, not ignored.
    let mut reg = Registrar::new(db.clone()).capture(false);
    assert!(matches!(
        reg.entity(
            CacheMeta::<grant::Entity>::new()
                .get_key([grant::Column::User])
                .named("Dangling")
        ),
        Err(RegistryError::InvalidClass { .. })
    ));
    // A given name over the limit is refused (given names are never rewritten).
    let mut reg = Registrar::new(db.clone()).capture(false);
    assert!(matches!(
        reg.entity(
            CacheMeta::<grant::Entity>::new()
                .named("x".repeat(MAX_CLASS_NAME_LEN + 1))
                .get_key([grant::Column::User])
        ),
        Err(RegistryError::InvalidName { .. })
    ));
    let mut reg = Registrar::new(db)
        .capture(false)
        .configure(|b| b.prefix(unique("names:")));
    reg.entity(
        CacheMeta::<grant::Entity>::new()
            .named("GrantOnUser")
            .get_key([grant::Column::User]),
    )
    .unwrap();
    let fdb = reg.build().await.unwrap();
    let key = fdb
        .cache::<grant::Entity>()
        .cache_key(&by(grant::Column::User, 3))
        .unwrap();
    assert!(key.contains("__GrantOnUser__3__"), "{key}");
}
