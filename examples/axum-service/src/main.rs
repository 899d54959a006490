//! The example service on `DATABASE_URL` and `FLASH_CACHE_URL`, listening on
//! `LISTEN` (default 127.0.0.1:3000).

use flash::config::{cache_backend, cache_url, connect_database, database_url};
use flash_example_axum::{flash_db, metrics_handle, router, AppState};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let metrics = metrics_handle();
    let db = connect_database(&database_url()).await?;
    flash_test_kit::schema::create_tables(&db).await?; // your migrations
    let fdb = flash_db(db, cache_backend(&cache_url()).await?, "example:".into()).await?;
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    axum::serve(listener, router(AppState { fdb, metrics })).await?;
    Ok(())
}
