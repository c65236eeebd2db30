//! The data mover: `ferrosync mover destination|source`, run inside the mover Job.
//! Placeholder until the mover issue lands.

use std::process::ExitCode;

/// Data-mover roles. Placeholder: the mover is built in a later issue.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder for a later issue: will run the destination side (stunnel server + rsync daemon).
    Destination,
    /// Placeholder for a later issue: will run the source side (stunnel client + rsync push).
    Source,
}

/// Runs a mover role and returns its process exit code.
pub async fn run(_cmd: Command) -> ExitCode {
    eprintln!("ferrosync mover: not implemented yet (placeholder for a later issue)");
    ExitCode::from(2)
}
