//! `flash bench`: flash against the database and the raw cache client, in one run.

/// Options of `flash bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A small, CI-sized run (seconds, not minutes).
    #[arg(long)]
    pub quick: bool,
}

/// Runs the benchmarks and prints the table.
pub async fn run(_args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err("not written yet".into())
}
