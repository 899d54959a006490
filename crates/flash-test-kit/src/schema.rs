//! Tables of the demo models, created from the entities, and where the demo
//! keeps them on a server database.

use crate::entities::{checkin, comment, event, participation, tag, ticket, user, user_tag};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, Schema};

/// Where the demo keeps its tables on a server database: a schema
/// (PostgreSQL) or database (MySQL) of its own, so that it never touches a
/// table of the same name elsewhere.
pub const DEMO_NAMESPACE: &str = "flash_demo";

async fn create<E: EntityTrait>(db: &DatabaseConnection, e: E) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut stmt = Schema::new(backend).create_table_from_entity(e);
    db.execute(backend.build(stmt.if_not_exists())).await?;
    Ok(())
}

/// Drops the demo tables (a table left by an older version of the demo
/// may lack a column).
pub async fn drop_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for t in ["participation", "event", "user"] {
        let stmt = sea_orm::sea_query::Table::drop()
            .table(sea_orm::sea_query::Alias::new(t))
            .if_exists()
            .to_owned();
        db.execute(backend.build(&stmt)).await?;
    }
    Ok(())
}

/// Creates the `user`, `event` and `participation` tables if missing.
pub async fn create_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
    create(db, user::Entity).await?;
    create(db, event::Entity).await?;
    create(db, participation::Entity).await?;
    Ok(())
}

/// Empties the demo tables.
pub async fn clear(db: &DatabaseConnection) -> Result<(), DbErr> {
    participation::Entity::delete_many().exec(db).await?;
    event::Entity::delete_many().exec(db).await?;
    user::Entity::delete_many().exec(db).await?;
    Ok(())
}

/// The relations chapter's tables: `ticket`, `checkin`, `tag`, `user_tag`
/// and `comment`, created if missing (no foreign-key constraints).
pub async fn create_relation_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
    create(db, ticket::Entity).await?;
    create(db, checkin::Entity).await?;
    create(db, tag::Entity).await?;
    create(db, user_tag::Entity).await?;
    create(db, comment::Entity).await?;
    Ok(())
}

/// Empties the relations chapter's tables.
pub async fn clear_relations(db: &DatabaseConnection) -> Result<(), DbErr> {
    checkin::Entity::delete_many().exec(db).await?;
    ticket::Entity::delete_many().exec(db).await?;
    user_tag::Entity::delete_many().exec(db).await?;
    tag::Entity::delete_many().exec(db).await?;
    comment::Entity::delete_many().exec(db).await?;
    Ok(())
}
