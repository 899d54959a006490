//! `flash bump-version --model <table>`: bumps the dynamic version of every
//! cache class of a model (after a schema change), in the demo's database and
//! cache (`DATABASE_URL`, `FLASH_CACHE_URL`). Running processes see the new
//! version within their refresh interval.

/// Bumps `model` and prints each class's new dynamic version.
pub async fn run(model: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (fdb, _) = super::demo::setup(|b| b).await?;
    let classes = fdb.flash().bump_version_for_model(model).await?;
    for c in &classes {
        println!(
            "{c}: dynamic version now {}",
            fdb.flash().dynamic_version(c)
        );
    }
    Ok(())
}
