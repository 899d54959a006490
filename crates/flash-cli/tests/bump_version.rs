//! `flash bump-version` against a running process: the process sees the bump
//! once it reloads its versions. On DATABASE_URL (a SQLite file by default: the
//! command connects on its own).

use flash_sea_orm::Registrar;
use std::time::Duration;

fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id(), rand::random::<u32>())
}

#[tokio::test]
async fn bump_version_command_is_seen_by_a_running_process() {
    if !flash::config::database_url().starts_with("postgres")
        && !flash::config::database_url().starts_with("mysql")
    {
        // The command connects on its own; an in-memory SQLite database is
        // private to this process, so run it against a file.
        let dir = std::env::temp_dir().join(unique("flash_cli") + ".db");
        let url = format!("sqlite://{}?mode=rwc", dir.display());
        return bump_via_cli(&url).await;
    }
    bump_via_cli(&flash::config::database_url()).await;
}

/// The handle the command's own would be: the demo's namespace of `url`.
async fn demo_db(url: &str) -> sea_orm::DatabaseConnection {
    if url.starts_with("postgres") || url.starts_with("mysql") {
        flash::config::connect_namespace(url, flash_test_kit::DEMO_NAMESPACE, true, 4)
            .await
            .unwrap()
    } else {
        flash::config::connect_database(url).await.unwrap()
    }
}

async fn bump_via_cli(url: &str) {
    let db = demo_db(url).await;
    flash_test_kit::schema::create_tables(&db).await.unwrap();
    let mut reg = Registrar::new(db);
    flash_test_kit::declare(&mut reg, Duration::from_secs(60)).unwrap();
    let fdb = reg.build().await.unwrap();
    let before = fdb.flash().dynamic_version("event_by_slug");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flash"))
        .args(["bump-version", "--model", "event"])
        .env("DATABASE_URL", url)
        .env("FLASH_CACHE_URL", "memory://")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("event_by_slug"));
    fdb.flash().reload_versions().await.unwrap();
    assert_eq!(fdb.flash().dynamic_version("event_by_slug"), before + 1);
}
