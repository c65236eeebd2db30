//! `ferrosync policy ...`
use std::process::ExitCode;

/// Policy tooling.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder.
    Test,
}

/// Runs a policy subcommand and returns its process exit code.
pub async fn run(_cmd: Command) -> ExitCode {
    ExitCode::from(2)
}
