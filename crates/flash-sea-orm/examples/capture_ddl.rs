//! Prints the capture DDL of a table, to paste into a migration:
//!
//! ```text
//! cargo run -p flash-sea-orm --example capture_ddl -- postgres event id slug,city
//! ```
//!
//! Arguments: backend (`postgres`, `mysql`, `sqlite`), table, primary-key
//! columns and key columns (comma-separated), optionally a PostgreSQL schema.

use flash_sea_orm::capture::{self, CaptureSpec};
use sea_orm::DatabaseBackend;

fn main() -> Result<(), sea_orm::DbErr> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let backend = match arg(0, "postgres").as_str() {
        "mysql" => DatabaseBackend::MySql,
        "sqlite" => DatabaseBackend::Sqlite,
        _ => DatabaseBackend::Postgres,
    };
    let (table, pk, keys) = (arg(1, "event"), arg(2, "id"), arg(3, "slug,city"));
    let mut spec = CaptureSpec::new(
        &table,
        pk.split(','),
        keys.split(',').filter(|k| !k.is_empty()),
    )?;
    if let Some(schema) = args.get(4) {
        spec = spec.in_schema(schema)?;
    }
    println!(
        "-- flash capture of {table} ({:?}), version {}",
        backend,
        spec.version()
    );
    println!(
        "-- captured columns, in recorded order: {}",
        spec.columns().join(", ")
    );
    println!("-- up:");
    for sql in capture::changes_table_ddl(backend)
        .iter()
        .chain(&capture::ddl(backend, &spec))
    {
        println!("{sql};");
    }
    println!("-- down:");
    for sql in capture::drop_ddl(backend, &spec) {
        println!("{sql};");
    }
    Ok(())
}
