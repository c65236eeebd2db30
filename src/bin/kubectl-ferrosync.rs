//! `kubectl-ferrosync`: the kubectl plugin. On `PATH`, `kubectl ferrosync …` runs it.
//! A thin shell over `ferrosync::kubectl`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    ferrosync::kubectl::run(ferrosync::kubectl::Cli::parse()).await
}
