//! The policy host: sandboxed WebAssembly plugins that make site-specific decisions.
//! Placeholder until the policy issue lands.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};

/// The `policy` section of the controller configuration. Placeholder: accepted as-is and
/// unused until policy plugins land.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// Free-form settings reserved for the policy host.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Policy tooling. Placeholder: built in a later issue.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder for a later issue: will run a bundle's golden tests.
    Test,
}

/// Runs a policy subcommand and returns its process exit code.
pub async fn run(_cmd: Command) -> ExitCode {
    eprintln!("ferrosync policy: not implemented yet (placeholder for a later issue)");
    ExitCode::from(2)
}
