//! The operator commands against a database and cache prepared by a test
//! application (its own entity, not the demo's): `flash bump-version`,
//! `invalidate`, `inspect` and `stats` as a separate process, and the same
//! commands mounted in an application with its entities (`flash_cli::ops`).
//!
//! The database is a namespace of its own in DATABASE_URL (PostgreSQL or
//! MySQL), else a SQLite file (the command connects on its own); the cache
//! is FLASH_CACHE_URL when it is a server, else FLASH_TEST_REDIS_URL (a
//! process of its own cannot see this one's in-process store).

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

/// A model with a column of each type the stand-alone `inspect` decodes.
mod thing {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
    #[sea_orm(table_name = "ops_thing")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub big: i64,
        pub small: i16,
        pub ratio: f64,
        pub part: f32,
        pub on: bool,
        pub label: String,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub note: Option<String>,
        pub count: Option<i32>,
        pub blob: Vec<u8>,
        pub at: DateTimeUtc,
        pub naive: DateTime,
        pub day: Date,
        pub uid: Uuid,
        pub group: i32,
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

/// A database of the test's own, and the URL the `flash` process reaches it by.
async fn database() -> (sea_orm::DatabaseConnection, String) {
    let url = flash::config::database_url();
    let ns = unique("flash_t_ops");
    if url.starts_with("postgres") || url.starts_with("mysql") {
        let db = flash::config::connect_namespace(&url, &ns, true, 4)
            .await
            .unwrap();
        let child = match url.starts_with("postgres") {
            true => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}options=-c%20search_path%3D{ns}")
            }
            false => format!("{}/{ns}", url.rsplit_once('/').unwrap().0),
        };
        return (db, child);
    }
    let path = std::env::temp_dir().join(ns + ".db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    (flash::config::connect_database(&url).await.unwrap(), url)
}

async fn app() -> Option<App> {
    let cache_url = server_cache()?;
    let (db, db_url) = database().await;
    let backend = db.get_database_backend();
    let schema = Schema::new(backend);
    for table in [
        schema.create_table_from_entity(gadget::Entity),
        schema.create_table_from_entity(thing::Entity),
    ] {
        db.execute(backend.build(&table)).await.unwrap();
    }
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
    reg.entity(
        CacheMeta::<thing::Entity>::new()
            .get_key([thing::Column::Id])
            .filter_key([thing::Column::Group]),
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
    // The fill lands in the background: inspect once it is stored.
    app.fdb.flash().settled().await;
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

fn a_thing(id: i32, note: Option<&str>) -> thing::ActiveModel {
    thing::ActiveModel {
        id: Set(id),
        big: Set(-(1 << 40) - i64::from(id)),
        small: Set(-300),
        ratio: Set(0.1 + f64::from(id)),
        part: Set(1.5),
        on: Set(id % 2 == 0),
        label: Set(format!("thing {id} «ünïcode»")),
        body: Set("a longer text\nwith a line break".into()),
        note: Set(note.map(str::to_owned)),
        count: Set(note.map(|_| -7)),
        blob: Set(vec![0, 1, 254, 255]),
        at: Set("2024-05-06T07:08:09.123456Z".parse().unwrap()),
        naive: Set("2024-05-06T07:08:09".parse().unwrap()),
        day: Set("2024-05-06".parse().unwrap()),
        uid: Set("67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap()),
        group: Set(3),
    }
}

/// `flash inspect` as a process of its own, with none of the application's
/// types: the value is decoded from the layout in the catalog, and equals the
/// model as serde_json shows it.
#[tokio::test]
async fn stand_alone_inspect_decodes_rows_and_lists_from_the_catalog() {
    let Some(app) = app().await else {
        eprintln!("skipped: no cache server (set FLASH_TEST_REDIS_URL)");
        return;
    };
    for (id, note) in [(1, Some("n")), (2, None)] {
        app.fdb.insert(a_thing(id, note)).await.unwrap();
    }
    let things = app.fdb.cache::<thing::Entity>();
    let one = things.get(by(thing::Column::Id, 1)).await.unwrap();
    let list = things.filter(by(thing::Column::Group, 3)).await.unwrap();
    assert_eq!(list.len(), 2);
    app.fdb.flash().settled().await;

    let shown = flash(
        &app,
        &["inspect", "--class", "ops_thing_by_id", "--value", "1"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["state"], "value", "{shown}");
    assert_eq!(v["layout_matches"], true);
    assert_eq!(v["value"], serde_json::to_value(&one).unwrap(), "{shown}");
    assert!(v.get("value_note").is_none(), "{shown}");

    let shown = flash(
        &app,
        &[
            "inspect",
            "--class",
            "ops_thing_list_by_group",
            "--value",
            "3",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["value"], serde_json::to_value(&list).unwrap(), "{shown}");

    // A row that is not there is cached as none, shown as null.
    things.get(by(thing::Column::Id, 99)).await.unwrap_err();
    app.fdb.flash().settled().await;
    let shown = flash(
        &app,
        &["inspect", "--class", "ops_thing_by_id", "--value", "99"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (&v["state"], &v["value"]),
        (&"value".into(), &serde_json::Value::Null),
        "{shown}"
    );
}

/// The catalog's layout is checked against the entry's before decoding: a
/// layout recorded by other code (another deploy's columns) is not used.
#[tokio::test]
async fn inspect_decodes_only_with_the_entrys_layout() {
    let Some(app) = app().await else {
        return;
    };
    app.fdb.insert(a_thing(1, None)).await.unwrap();
    let things = app.fdb.cache::<thing::Entity>();
    things.get(by(thing::Column::Id, 1)).await.unwrap();
    app.fdb.flash().settled().await;
    let db = flash::config::connect_database(&app.db_url).await.unwrap();
    let mut entries = flash_sea_orm::catalog::load(&db).await.unwrap();
    entries.retain(|e| e.name == "ops_thing_by_id");
    let mut other = entries.clone();
    other[0].layout_parts.swap(1, 2);
    other[0].layout = flash_core::seal::fingerprint(&other[0].layout_parts);
    flash_sea_orm::catalog::record(&db, &other).await.unwrap();
    let shown = flash(
        &app,
        &["inspect", "--class", "ops_thing_by_id", "--value", "1"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["state"], "value", "{shown}");
    assert_eq!(v["layout_matches"], false);
    assert!(v.get("value").is_none(), "{shown}");
    assert!(
        v["value_note"].as_str().unwrap().contains("fingerprint"),
        "{shown}"
    );
    // Restored, it decodes again.
    flash_sea_orm::catalog::record(&db, &entries).await.unwrap();
    let shown = flash(
        &app,
        &["inspect", "--class", "ops_thing_by_id", "--value", "1"],
    );
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["value"]["id"], 1, "{shown}");
}
