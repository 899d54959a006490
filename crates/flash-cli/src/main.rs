//! The `flash` command: the demo walkthrough, the operator commands
//! (`bump-version`, `invalidate`, `inspect`, `stats`: the library's
//! `flash_cli::ops`), the consistency stress test and the benchmarks, one
//! module each under `cmd/`.
//! `flash stress` runs its worker processes as `flash stress --worker <n>`
//! (this same executable).

mod cmd;

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
    /// Operator commands on DATABASE_URL and FLASH_CACHE_URL (any application).
    #[command(flatten)]
    Ops(flash_cli::ops::OpsCommand),
    /// Benchmarks: flash against the database and the raw cache client.
    Bench(cmd::bench::BenchArgs),
    /// The consistency stress test (several processes, writers, readers, faults).
    Stress(cmd::stress::StressArgs),
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
        Command::Demo => cmd::demo::run().await,
        Command::Ops(ops) => cmd::ops::run(ops).await,
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::Stress(args) => cmd::stress::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
