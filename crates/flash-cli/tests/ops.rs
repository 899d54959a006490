//! The operator commands against a database and cache prepared by a test
//! application (its own entity, not the demo's): `flash bump-version`,
//! `invalidate`, `inspect` and `stats` as a separate process, and the same
//! commands mounted in an application with its entities (`flash_cli::ops`).
//!
//! The database is a SQLite file (the command connects on its own); the
//! cache is FLASH_CACHE_URL when it is a server, else FLASH_TEST_REDIS_URL
//! (a process of its own cannot see this one's in-process store).

use flash_cli::ops::{run, KeyArgs, OpsCommand, Target};
use flash_core::Outcome;
use flash_sea_orm::{by, CacheMeta, FlashDb, Registrar};
use sea_orm::{ConnectionTrait, Schema, Set};
use std::sync::Arc;

mod gadget {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "ops_gadget")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: String,
        pub owner: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id(), rand::random::<u32>())
}

fn server_cache() -> Option<String> {
    let url = flash::config::cache_url();
    if !url.starts_with("memory") {
        return Some(url);
    }
    match std::env::var("FLASH_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var_os("FLASH_REQUIRE_SERVERS").is_some() => {
            panic!("FLASH_REQUIRE_SERVERS is set but no cache server URL is given")
        }
        _ => None,
    }
}

struct App {
    db_url: String,
    cache_url: String,
    prefix: String,
    fdb: FlashDb,
}

async fn app() -> Option<App> {
    let cache_url = server_cache()?;
    let path = std::env::temp_dir().join(unique("flash_cli") + ".db");
    let db_url = format!("sqlite://{}?mode=rwc", path.display());
    let db = flash::config::connect_database(&db_url).await.unwrap();
    let backend = db.get_database_backend();
    db.execute(backend.build(&Schema::new(backend).create_table_from_entity(gadget::Entity)))
        .await
        .unwrap();
    let prefix = unique("ops") + ":";
    let cache = flash::config::cache_backend(&cache_url).await.unwrap();
    let mut reg = Registrar::new(db)
        .capture(false)
        .configure(|b| b.backend_arc(cache).prefix(prefix.clone()));
    reg.entity(
        CacheMeta::<gadget::Entity>::new()
            .get_key([gadget::Column::Id])
            .filter_key([gadget::Column::Owner]),
    )
    .unwrap();
    let fdb = reg.build().await.unwrap();
    fdb.insert(gadget::ActiveModel {
        id: Set(1),
        name: Set("widget".into()),
        owner: Set(7),
    })
    .await
    .unwrap();
    Some(App {
        db_url,
        cache_url,
        prefix,
        fdb,
    })
}

fn flash(app: &App, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flash"))
        .args(args)
        .env("DATABASE_URL", &app.db_url)
        .env("FLASH_CACHE_URL", &app.cache_url)
        .env("FLASH_PREFIX", &app.prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flash {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn outcome(app: &App) -> Outcome {
    app.fdb
        .cache::<gadget::Entity>()
        .get_with_outcome(by(gadget::Column::Id, 1))
        .await
        .unwrap()
        .1
}

#[tokio::test]
async fn the_commands_work_on_an_application_of_their_own() {
    let Some(app) = app().await else {
        eprintln!("skipped: no cache server (set FLASH_TEST_REDIS_URL)");
        return;
    };
    assert_eq!(outcome(&app).await, Outcome::Miss);
    assert_eq!(outcome(&app).await, Outcome::Hit);

    // inspect: a sealed value of the class, its layout the catalog's.
    let shown = flash(
        &app,
        &["inspect", "--class", "ops_gadget_by_id", "--value", "1"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["state"], "value", "{shown}");
    assert_eq!(v["class"], "ops_gadget_by_id");
    assert_eq!(v["model"], "ops_gadget");
    assert_eq!(v["seal"], "ok");
    assert_eq!(v["layout_matches"], true);
    assert!(
        v["size"].as_u64().unwrap() > 16 && v["age_ms"].as_u64().is_some(),
        "{shown}"
    );
    // A raw key names the same entry.
    let key = v["key"].as_str().unwrap().to_owned();
    let raw: serde_json::Value =
        serde_json::from_str(&flash(&app, &["inspect", "--raw-key", &key])).unwrap();
    assert_eq!(
        (raw["state"].clone(), raw["class"].clone()),
        (v["state"].clone(), v["class"].clone())
    );

    // invalidate: the application's next lookup misses.
    let said = flash(
        &app,
        &["invalidate", "--class", "ops_gadget_by_id", "--value", "1"],
    );
    assert!(said.contains(&key), "{said}");
    let marker: serde_json::Value =
        serde_json::from_str(&flash(&app, &["inspect", "--raw-key", &key])).unwrap();
    assert_eq!(marker["state"], "stale marker");
    assert_eq!(outcome(&app).await, Outcome::Miss);
    assert_eq!(outcome(&app).await, Outcome::Hit);
    flash(&app, &["invalidate", "--raw-key", &key]);
    assert_eq!(outcome(&app).await, Outcome::Miss);

    // bump-version: every class of the model, from the catalog.
    let before = app.fdb.flash().dynamic_version("ops_gadget_by_id");
    let said = flash(&app, &["bump-version", "--model", "ops_gadget"]);
    assert!(
        said.contains("ops_gadget_by_id") && said.contains("ops_gadget_list_by_owner"),
        "{said}"
    );
    app.fdb.flash().reload_versions().await.unwrap();
    assert_eq!(
        app.fdb.flash().dynamic_version("ops_gadget_by_id"),
        before + 1
    );
    assert_eq!(
        outcome(&app).await,
        Outcome::Miss,
        "old values are stale after a bump"
    );

    // stats: the catalog and the versions.
    let stats = flash(&app, &["stats"]);
    assert!(
        stats.contains("ops_gadget_list_by_owner\tops_gadget\tqueryset\towner\t0\t1"),
        "{stats}"
    );

    // A model the catalog does not know is an error, not a silent no-op.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flash"))
        .args(["bump-version", "--model", "nope"])
        .env("DATABASE_URL", &app.db_url)
        .env("FLASH_CACHE_URL", &app.cache_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}

#[tokio::test]
async fn mounted_in_an_application_inspect_shows_the_row() {
    let Some(app) = app().await else {
        return;
    };
    outcome(&app).await;
    let db = flash::config::connect_database(&app.db_url).await.unwrap();
    let target =
        Target::new(db, Arc::clone(app.fdb.flash().backend())).with_model::<gadget::Entity>();
    let mut out = Vec::new();
    let args = KeyArgs {
        class: Some("ops_gadget_by_id".into()),
        values: vec!["1".into()],
        raw_key: None,
        prefix: app.prefix.clone(),
        db_alias: "default".into(),
    };
    run(OpsCommand::Inspect(args), &target, &mut out)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["value"],
        serde_json::json!({"id": 1, "name": "widget", "owner": 7}),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
