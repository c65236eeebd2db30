//! `ferrosync-mover`: the data mover alone, for the mover image. It takes the same command
//! line as `ferrosync mover …` (the image installs it as `/usr/local/bin/ferrosync`, the
//! path mover Jobs run), but links neither the controller, its Kubernetes client nor the
//! policy engine (wasmtime): only the mover module is referenced, so the linker drops the
//! rest, and the image carries a fraction of the full binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrosync::mover;

#[derive(Parser)]
#[command(name = "ferrosync", version = ferrosync::VERSION, about = "The ferrosync data mover (rsync over TLS-PSK)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a data mover inside a mover Job.
    #[command(subcommand)]
    Mover(mover::Command),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Mover(cmd) => mover::run(cmd).await,
        Command::Version => {
            println!(
                "ferrosync-mover {} (commit {}, built {})",
                ferrosync::VERSION,
                ferrosync::GIT_COMMIT,
                ferrosync::BUILD_DATE
            );
            ExitCode::SUCCESS
        }
    }
}
