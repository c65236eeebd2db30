//! The authoring subcommands of `ferrosync policy` (flattened into `policy::cli`).
//! Exit codes as for the other policy commands: 0 ok, 1 a finding (a component the host
//! would refuse), 2 unusable input.

use std::{path::PathBuf, process::ExitCode};

use super::{bench, inspect, pin, scaffold};
use crate::policy::types::DecisionPoint;

/// Authoring tools.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new plugin crate and its bundle into DIR (which must not exist or be
    /// empty): the crate builds with `cargo build --target wasm32-wasip2 --release` and
    /// the bundle passes its own `policy test` once pinned.
    New {
        /// The decision point the plugin serves.
        decision: DecisionPoint,
        /// Where to write it (any directory; it needs no ferrosync checkout).
        dir: PathBuf,
        /// The crate's and plugin's name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Copy a built component into a bundle and write its sha256 into policy.toml.
    Pin {
        /// The bundle directory.
        bundle: PathBuf,
        /// The component cargo built (default: re-pin the component already in the
        /// bundle).
        #[arg(long)]
        wasm: Option<PathBuf>,
    },
    /// Show a component's world, imports, exports, size and digest, and for a bundle its
    /// pin, limits and grants.
    Inspect {
        /// A component (.wasm) or a bundle directory.
        target: PathBuf,
        /// `text` or `json`.
        #[arg(long, short = 'o', default_value = "text")]
        output: super::super::cli::Output,
    },
    /// Time a bundle's decisions over its test cases: warm and cold, p50 and p99.
    Bench {
        /// The bundle directory.
        bundle: PathBuf,
        /// Warm decisions per case.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Freshly loaded engines per case, for the cold decision.
        #[arg(long, default_value_t = 3)]
        cold: usize,
        /// `text` or `json`.
        #[arg(long, short = 'o', default_value = "text")]
        output: super::super::cli::Output,
    },
}

/// Runs an authoring subcommand.
pub async fn run(cmd: Command) -> ExitCode {
    use super::super::cli::Output;
    match cmd {
        Command::New {
            decision,
            dir,
            name,
        } => new(decision, dir, name.as_deref()),
        Command::Pin { bundle, wasm } => match pin::pin(&bundle, wasm.as_deref()) {
            Ok(p) => {
                println!(
                    "{}: sha256 {} ({} bytes){}",
                    p.component.display(),
                    p.sha256,
                    p.size,
                    if p.previous == p.sha256 {
                        ", unchanged"
                    } else {
                        ""
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Inspect { target, output } => match inspect::inspect(&target) {
            Ok(i) => {
                match output {
                    Output::Json => {
                        println!("{}", serde_json::to_string_pretty(&i).unwrap_or_default())
                    }
                    Output::Text => print!("{}", inspect::render(&i)),
                }
                let loadable = i.fits
                    && !i.worlds.is_empty()
                    && i.bundle
                        .as_ref()
                        .is_none_or(|b| b.pin_matches && b.world_matches);
                if loadable {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => fail(e),
        },
        Command::Bench {
            bundle,
            iterations,
            cold,
            output,
        } => match bench::bench(&bundle, bench::BenchOptions { iterations, cold }).await {
            Ok(b) => {
                match output {
                    Output::Json => {
                        println!("{}", serde_json::to_string_pretty(&b).unwrap_or_default())
                    }
                    Output::Text => print!("{}", bench::render(&b)),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

fn new(decision: DecisionPoint, dir: PathBuf, name: Option<&str>) -> ExitCode {
    let s = match scaffold::write(decision, &dir, name) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| s.dir.join("target"), PathBuf::from);
    println!(
        "wrote a {} plugin {:?} in {}: the crate in {}/, its bundle in {}/",
        s.point,
        s.name,
        s.dir.display(),
        scaffold::PLUGIN_DIR,
        scaffold::BUNDLE_DIR
    );
    println!("build it, and pin the component into the bundle:");
    println!(
        "  (cd {} && cargo build --target wasm32-wasip2 --release) && ferrosync policy pin {} --wasm {}",
        s.dir.display(),
        s.bundle().display(),
        s.component(&target).display()
    );
    println!("then run its golden tests:");
    println!("  ferrosync policy test {}", s.bundle().display());
    ExitCode::SUCCESS
}
