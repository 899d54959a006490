//! What the capture triggers cost a write: the median of single-row UPDATEs
//! of a non-key column and of 1 000-row UPDATEs, on a table without capture
//! and on an identical one with capture installed, interleaved (so that drift
//! of the machine hits both), and their ratio.
//!
//! ```text
//! cargo run --release -p flash-sea-orm --example capture_cost -- [single-samples] [bulk-samples]
//! ```
//!
//! Databases: `FLASH_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/test),
//! `FLASH_TEST_MYSQL_URL` (default mysql://root@127.0.0.1:3306/test), and SQLite
//! in memory; an unreachable server is skipped. Set `CAPTURE_COST_ONLY=postgres`
//! (or `mysql`, `sqlite`) for one of them.

use flash_sea_orm::capture::{self, CaptureSpec};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    Statement, Value,
};
use std::time::{Duration, Instant};

const ROWS: i64 = 20_000;
const NS: &str = "flash_capture_cost";

#[tokio::main]
async fn main() -> Result<(), DbErr> {
    let mut args = std::env::args().skip(1);
    let single: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let bulk: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let only = std::env::var("CAPTURE_COST_ONLY").ok();
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);

    if want("postgres") {
        let url = std::env::var("FLASH_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match Database::connect(url.as_str()).await {
            Ok(admin) => {
                admin
                    .execute_unprepared(&format!(
                        "DROP SCHEMA IF EXISTS {NS} CASCADE; CREATE SCHEMA {NS}"
                    ))
                    .await?;
                for sync in ["on", "off"] {
                    let mut o = ConnectOptions::new(url.clone());
                    o.set_schema_search_path(NS.to_owned())
                        .max_connections(1)
                        .sqlx_logging(false);
                    let db = Database::connect(o).await?;
                    db.execute_unprepared(&format!("SET synchronous_commit = {sync}"))
                        .await?;
                    measure(
                        &db,
                        &format!("PostgreSQL, synchronous_commit={sync}"),
                        single,
                        bulk,
                    )
                    .await?;
                    db.close().await?;
                }
                admin
                    .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {NS} CASCADE"))
                    .await?;
            }
            Err(e) => eprintln!("PostgreSQL skipped: {e}"),
        }
    }
    if want("mysql") {
        let url = std::env::var("FLASH_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        match Database::connect(url.as_str()).await {
            Ok(admin) => {
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {NS}"))
                    .await?;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {NS} CHARACTER SET utf8mb4"))
                    .await?;
                let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
                let mut o = ConnectOptions::new(format!("{base}/{NS}"));
                o.max_connections(1).sqlx_logging(false);
                let db = Database::connect(o).await?;
                measure(&db, "MySQL/MariaDB", single, bulk).await?;
                db.close().await?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {NS}"))
                    .await?;
            }
            Err(e) => eprintln!("MySQL skipped: {e}"),
        }
    }
    if want("sqlite") {
        let mut o = ConnectOptions::new("sqlite::memory:");
        o.max_connections(1).min_connections(1).sqlx_logging(false);
        let db = Database::connect(o).await?;
        measure(&db, "SQLite in memory", single, bulk).await?;
    }
    Ok(())
}

async fn measure(
    db: &DatabaseConnection,
    label: &str,
    single: usize,
    bulk: usize,
) -> Result<(), DbErr> {
    let b = db.get_database_backend();
    for t in ["plain_t", "cap_t"] {
        db.execute_unprepared(&format!("DROP TABLE IF EXISTS {t}"))
            .await?;
        db.execute_unprepared(&format!(
            "CREATE TABLE {t} (id BIGINT NOT NULL PRIMARY KEY, slug VARCHAR(64) NOT NULL, \
             city VARCHAR(64) NOT NULL, n BIGINT NOT NULL)"
        ))
        .await?;
        for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(1000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| format!("({i}, 'slug-{i}', 'city-{}', 0)", i % 97))
                .collect();
            db.execute_unprepared(&format!(
                "INSERT INTO {t} (id, slug, city, n) VALUES {}",
                values.join(", ")
            ))
            .await?;
        }
    }
    capture::install(db, &[CaptureSpec::new("cap_t", ["id"], ["slug", "city"])?]).await?;
    if b == DatabaseBackend::Postgres {
        for t in ["plain_t", "cap_t"] {
            db.execute_unprepared(&format!("VACUUM ANALYZE {t}"))
                .await?;
        }
    }
    let p = |n: usize| {
        if b == DatabaseBackend::Postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    let one = |t: &str| format!("UPDATE {t} SET n = n + 1 WHERE id = {}", p(1));
    let many = |t: &str| {
        format!(
            "UPDATE {t} SET n = n + 1 WHERE id >= {} AND id < {}",
            p(1),
            p(2)
        )
    };
    let run = |sql: String, values: Vec<Value>| async move {
        let t0 = Instant::now();
        db.execute(Statement::from_sql_and_values(b, sql, values))
            .await?;
        Ok::<Duration, DbErr>(t0.elapsed())
    };

    // Warm-up (prepared statements, caches, the trigger function's plans).
    for i in 0..200i64 {
        let id = 1 + (i * 7919) % ROWS;
        run(one("plain_t"), vec![id.into()]).await?;
        run(one("cap_t"), vec![id.into()]).await?;
    }
    let (mut plain1, mut cap1) = (Vec::new(), Vec::new());
    for i in 0..single as i64 {
        let id = 1 + (i * 104_729) % ROWS;
        plain1.push(run(one("plain_t"), vec![id.into()]).await?);
        cap1.push(run(one("cap_t"), vec![id.into()]).await?);
    }
    clear(db).await?;
    for i in 0..5i64 {
        run(
            many("plain_t"),
            vec![(i * 1000 + 1).into(), (i * 1000 + 1001).into()],
        )
        .await?;
        run(
            many("cap_t"),
            vec![(i * 1000 + 1).into(), (i * 1000 + 1001).into()],
        )
        .await?;
    }
    let (mut plain_k, mut cap_k) = (Vec::new(), Vec::new());
    for i in 0..bulk as i64 {
        let lo = 1 + (i * 1000) % (ROWS - 1000);
        let v = || vec![Value::from(lo), Value::from(lo + 1000)];
        plain_k.push(run(many("plain_t"), v()).await?);
        cap_k.push(run(many("cap_t"), v()).await?);
        if i % 20 == 19 {
            clear(db).await?;
        }
    }
    let (p1, c1, pk, ck) = (
        median(&mut plain1),
        median(&mut cap1),
        median(&mut plain_k),
        median(&mut cap_k),
    );
    println!("{label}:");
    println!(
        "  single-row UPDATE  plain {:>9.1} µs  captured {:>9.1} µs  ratio {:.2}  ({single} samples)",
        us(p1),
        us(c1),
        us(c1) / us(p1)
    );
    println!(
        "  1000-row UPDATE    plain {:>9.1} µs  captured {:>9.1} µs  ratio {:.2}  ({bulk} samples)",
        us(pk),
        us(ck),
        us(ck) / us(pk)
    );
    clear(db).await?;
    Ok(())
}

async fn clear(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared("DELETE FROM flash_changes").await?;
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
