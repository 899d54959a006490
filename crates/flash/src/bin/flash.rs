//! The `flash` command: the demo, dynamic-version bumps, and more.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flash",
    version,
    about = "flash: a model cache framework for Rust services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The seed's walkthrough (users, events, participations) on DATABASE_URL and FLASH_CACHE_URL.
    Demo,
    /// Bumps the dynamic version of every cache class of a model (after a schema change).
    BumpVersion {
        /// The model's table name, e.g. `event`.
        #[arg(long)]
        model: String,
    },
    /// Benchmarks: flash against the database and the raw cache client.
    Bench(flash::bench::BenchArgs),
    /// The consistency stress test (several processes, writers, readers, faults).
    Stress(flash::stress::StressArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLASH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => flash::demo::run().await,
        Command::BumpVersion { model } => bump(&model).await,
        Command::Bench(args) => flash::bench::run(args).await,
        Command::Stress(args) => flash::stress::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bump(model: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (fdb, _) = flash::demo::setup(|b| b).await?;
    let classes = fdb.flash().bump_version_for_model(model).await?;
    for c in &classes {
        println!(
            "{c}: dynamic version now {}",
            fdb.flash().dynamic_version(c)
        );
    }
    Ok(())
}
