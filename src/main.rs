//! The `ferrosync` command line: a thin shell over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrosync::{api, controller, mover, policy};

#[derive(Parser)]
#[command(name = "ferrosync", version = ferrosync::VERSION, about = "Volume replication with rsync over TLS-PSK, with site policy in WebAssembly plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: reconciles ReplicationSources and ReplicationDestinations.
    Controller(controller::Args),
    /// Print the CustomResourceDefinitions as YAML.
    Crd(api::CrdArgs),
    /// Run a data mover inside a mover Job.
    #[command(subcommand)]
    Mover(mover::Command),
    /// Test, check and evaluate policy plugins and bundles.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Controller(args) => match controller::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ferrosync controller: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Crd(args) => match api::write_crds(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ferrosync crd: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Mover(cmd) => mover::run(cmd).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Version => {
            println!(
                "ferrosync {} (commit {}, built {})",
                ferrosync::VERSION,
                ferrosync::GIT_COMMIT,
                ferrosync::BUILD_DATE
            );
            ExitCode::SUCCESS
        }
    }
}
