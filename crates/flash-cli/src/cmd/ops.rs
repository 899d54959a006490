//! The operator commands (`flash_cli::ops`) on `DATABASE_URL` and
//! `FLASH_CACHE_URL`, with the entry secret of `FLASH_ENTRY_SECRET`.

use flash::config::{cache_backend, cache_url, connect_database, database_url};
use flash_cli::ops::{run as run_ops, OpsCommand, Target};

/// Runs one operator command; its report goes to stdout.
pub async fn run(cmd: OpsCommand) -> Result<(), Box<dyn std::error::Error>> {
    let db = connect_database(&database_url()).await?;
    let backend = cache_backend(&cache_url()).await?;
    let secret = std::env::var("FLASH_ENTRY_SECRET")
        .ok()
        .map(String::into_bytes);
    let target = Target::new(db, backend).secret(secret);
    run_ops(cmd, &target, &mut std::io::stdout().lock()).await?;
    Ok(())
}
