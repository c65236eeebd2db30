//! `kubectl ferrosync`: disaster recovery between clusters with kubectl alone.
//!
//! Each subcommand works across two kubeconfig contexts (the source site and the
//! destination site). The pure parts (manifests, the status table, exit codes) live in
//! their own modules and are unit-tested; the rest only talks to the two apiservers.
//!
//! Never print, log or put in an error a key: the key Secret's content is read only to be
//! written into the other cluster.

mod contexts;
mod failback;
mod failover;
mod manifests;
mod objects;
mod pairing;
mod replicate;
mod status;
mod sync;
mod wait;

use std::process::ExitCode;

use clap::{Args as ClapArgs, CommandFactory, Parser, Subcommand, ValueEnum};

pub use contexts::Site;
pub use manifests::{PAIR_LABEL, PairSpec};
pub use status::{PairRow, Side, rows};

/// Label on both objects of a pair (and on the key Secret's copy): the pair's name.
/// Annotations that `replicate` writes and `failover`/`failback` read.
pub mod keys {
    /// On the destination: the application's PVC name in the source cluster.
    pub const SOURCE_PVC: &str = "ferrosync.io/source-pvc";
    /// On both sides: the recovery point objective, a duration ("15m", "1h"), parsed by
    /// [`crate::api::recovery_point::parse`] here and in the controller.
    pub const RPO: &str = crate::api::recovery_point::ANNOTATION;
    /// On the destination: set by `failover`; a fenced destination never listens again.
    pub const FENCED: &str = "ferrosync.io/fenced";
    /// On the destination: the PVC `failover` promoted.
    pub const PROMOTED_PVC: &str = "ferrosync.io/promoted-pvc";
    /// The field manager of everything this tool applies.
    pub const FIELD_MANAGER: &str = "kubectl-ferrosync";
}

/// The command line of `kubectl-ferrosync`.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-ferrosync",
    bin_name = "kubectl ferrosync",
    version = crate::VERSION,
    about = "Replicate, fail over and fail back volumes between clusters with ferrosync",
    after_help = "Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 a cluster is unreachable, \
4 not found, 5 conflict (a name taken, a PVC in use, a vault pair its namespace is not granted), \
6 not ready or timed out, 7 the sync failed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the pair's two sides live.
#[derive(ClapArgs, Debug, Clone)]
pub struct Sites {
    /// The kubeconfig context of the source site (where the application's PVC lives).
    #[arg(long = "source-context", env = "FERROSYNC_SOURCE_CONTEXT")]
    pub source_context: Option<String>,
    /// The kubeconfig context of the destination site (where the copy lives).
    #[arg(
        long = "dest-context",
        alias = "destination-context",
        env = "FERROSYNC_DEST_CONTEXT"
    )]
    pub dest_context: Option<String>,
    /// The namespace in the source site (default: the context's namespace, else "default").
    #[arg(long = "source-namespace")]
    pub source_namespace: Option<String>,
    /// The namespace in the destination site (default: the source namespace).
    #[arg(long = "dest-namespace", alias = "destination-namespace")]
    pub dest_namespace: Option<String>,
}

/// Output formats of `status` and `replicate --dry-run`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set up a pair: a ReplicationDestination in the destination site, the key copied to
    /// the source site (or, with --psk-pair, taken from the vault by both sites'
    /// controllers), and a ReplicationSource there. Idempotent.
    Replicate(Box<replicate::Args>),
    /// Both sides of every pair, with the recovery point's age.
    Status(status::Args),
    /// Trigger one sync now.
    Sync(sync::SyncArgs),
    /// Pause a pair (both sides that are reachable).
    Pause(sync::PauseArgs),
    /// Resume a paused pair.
    Resume(sync::PauseArgs),
    /// Promote the copy: fence the destination and make its data a usable PVC.
    Failover(failover::Args),
    /// After a failover, replicate the promoted volume back, sending only what changed.
    #[command(alias = "reverse")]
    Failback(failback::Args),
    /// Print shell completions.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Everything that can go wrong, each mapped to a documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(
        "the {role} cluster (context {context}) is unreachable: {detail}. Check the context with `kubectl --context {context} get ns`"
    )]
    Unreachable {
        role: &'static str,
        context: String,
        detail: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    SyncFailed(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Output(String),
}

impl Error {
    /// The process exit code (documented in `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Unreachable { .. } => 3,
            Error::NotFound(_) => 4,
            Error::Conflict(_) => 5,
            Error::NotReady(_) => 6,
            Error::SyncFailed(_) => 7,
            Error::Kubeconfig(_) | Error::Api { .. } | Error::Output(_) => 1,
        }
    }
}

/// Whether to colour output: never when `NO_COLOR` is set (any value) or stdout is no
/// terminal.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Runs a parsed command line; the binary only maps the result to an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Replicate(args) => replicate::run(*args).await,
        Command::Status(args) => status::run(args).await,
        Command::Sync(args) => sync::sync(args).await,
        Command::Pause(args) => sync::set_paused(args, true).await,
        Command::Resume(args) => sync::set_paused(args, false).await,
        Command::Failover(args) => failover::run(args).await,
        Command::Failback(args) => failback::run(args).await,
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "kubectl-ferrosync", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn replicate_refuses_an_rpo_the_controller_would_flag() {
        let parse = |rpo: &str| {
            Cli::try_parse_from([
                "kubectl-ferrosync",
                "replicate",
                "db",
                "--pvc",
                "d",
                "--rpo",
                rpo,
            ])
        };
        let err = parse("15").expect_err("no unit");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("15m, 1h or 90s"), "{err}");
        let Ok(Cli {
            command: Command::Replicate(args),
        }) = parse(" 15m")
        else {
            panic!("a valid objective");
        };
        assert_eq!(args.rpo.as_deref(), Some("15m"));
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let codes = [
            Error::Usage(String::new()).exit_code(),
            Error::Unreachable {
                role: "source",
                context: "c".into(),
                detail: String::new(),
            }
            .exit_code(),
            Error::NotFound(String::new()).exit_code(),
            Error::Conflict(String::new()).exit_code(),
            Error::NotReady(String::new()).exit_code(),
            Error::SyncFailed(String::new()).exit_code(),
        ];
        let mut sorted = codes.to_vec();
        sorted.dedup();
        assert_eq!(sorted, vec![2, 3, 4, 5, 6, 7]);
    }
}
