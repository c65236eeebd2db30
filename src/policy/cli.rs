//! `ferrosync policy test|check|eval`: work with bundles and configurations without a
//! cluster, through the same engine the controller runs.
//!
//! Output is for people; exit codes are for scripts (0 ok, 1 a failed case or decision,
//! 2 unusable input). It must never print key material unless asked to evaluate a key.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use super::{
    config::{PointConfig, PolicyConfig},
    credentials::StaticCredentials,
    engine::{EngineOptions, PolicyEngine},
    golden,
    report::{self, BundleOutcome},
    types::DecisionPoint,
};

/// Policy tooling.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a bundle's golden test table (no cluster, HTTP replayed from the table).
    Test {
        /// Bundle directories (each holds policy.toml); all are run and reported, even
        /// after one that cannot be loaded.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// `text`, `json` or `junit` (JUnit XML, for CI).
        #[arg(long, short = 'o', default_value = "text")]
        output: TestOutput,
    },
    /// Validate a controller configuration's policy section: files, pins, compilation
    /// and WIT worlds.
    Check {
        /// The configuration file (merged over the defaults and FERROSYNC_* variables).
        config: PathBuf,
    },
    /// Decide once for an input (JSON), and print the decision with its provenance.
    Eval {
        /// The decision point.
        decision: DecisionPoint,
        /// The input as JSON, as in a golden table's `input`; `-` reads standard input.
        input: PathBuf,
        /// Use this bundle (default: the configuration's plugin for the decision).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Use this controller configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A credential for HTTP grants: SECRET/KEY=VALUE (repeatable).
        #[arg(long = "credential", value_name = "SECRET/KEY=VALUE")]
        credentials: Vec<String>,
    },
    /// Show where a candidate configuration would decide differently from the active
    /// one over a running cluster's sources (copy method) and destinations (Service type).
    /// Reads the cluster with the current kubeconfig; writes nothing.
    Diff {
        /// The active controller configuration.
        #[arg(long)]
        config: PathBuf,
        /// The candidate configuration (for example with a new bundle or binding).
        #[arg(long)]
        candidate: PathBuf,
        /// Only this namespace (default: all).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// `text` or `json`.
        #[arg(long, short = 'o', default_value = "text")]
        output: Output,
        /// List the decisions that agree too.
        #[arg(long)]
        all: bool,
    },
    /// Authoring: `new`, `pin`, `inspect`, `bench`.
    #[command(flatten)]
    Authoring(super::authoring::Command),
    /// Push a bundle directory to an OCI registry as a policy bundle artifact; prints the
    /// pinned reference (`<registry>/<repo>@sha256:…`) to name in the configuration.
    Push(super::oci::cli::PushArgs),
    /// Pull a bundle from an OCI registry into a directory, verifying every digest and
    /// the component's pin; prints the pinned reference.
    Pull(super::oci::cli::PullArgs),
}

/// Output formats of `policy test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestOutput {
    Text,
    Json,
    Junit,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Runs a policy subcommand and returns its process exit code.
pub async fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Test { bundles, output } => test(&bundles, output).await,
        Command::Check { config } => check(&config).await,
        Command::Eval {
            decision,
            input,
            bundle,
            config,
            credentials,
        } => eval(decision, &input, bundle, config, &credentials).await,
        Command::Diff {
            config,
            candidate,
            namespace,
            output,
            all,
        } => diff(&config, &candidate, namespace.as_deref(), output, all).await,
        Command::Authoring(cmd) => super::authoring::run(cmd).await,
        Command::Push(args) => super::oci::cli::push(args).await,
        Command::Pull(args) => super::oci::cli::pull(args).await,
    }
}

async fn diff(
    config: &Path,
    candidate: &Path,
    namespace: Option<&str>,
    output: Output,
    all: bool,
) -> ExitCode {
    let (active, candidate) = match (load_policy(config), load_policy(candidate)) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connecting to the cluster: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = match super::diff::diff(&client, &active, &candidate, namespace).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let differing = rows.iter().filter(|r| r.differs).count();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        Output::Text => {
            for r in rows.iter().filter(|r| all || r.differs) {
                println!(
                    "{} {} {}/{} {}: {} ({}) -> {} ({})",
                    if r.differs { "DIFF" } else { "same" },
                    r.point,
                    r.namespace,
                    r.name,
                    r.kind,
                    r.active,
                    r.active_by,
                    r.candidate,
                    r.candidate_by
                );
            }
            println!("{differing} of {} decisions would change", rows.len());
        }
    }
    if differing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn test(bundles: &[PathBuf], output: TestOutput) -> ExitCode {
    let mut outcomes = Vec::new();
    for dir in bundles {
        outcomes.push(match golden::run_bundle(dir).await {
            Ok(r) => BundleOutcome::Ran(r),
            Err(e) => BundleOutcome::Unusable {
                bundle: dir.clone(),
                error: e.to_string(),
            },
        });
    }
    match output {
        TestOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&outcomes).unwrap_or_default()
        ),
        TestOutput::Junit => print!("{}", report::junit(&outcomes)),
        TestOutput::Text => outcomes.iter().for_each(print_outcome),
    }
    if outcomes
        .iter()
        .any(|o| matches!(o, BundleOutcome::Unusable { .. }))
    {
        ExitCode::from(2)
    } else if outcomes.iter().all(BundleOutcome::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_outcome(outcome: &BundleOutcome) {
    let report = match outcome {
        BundleOutcome::Ran(r) => r,
        BundleOutcome::Unusable { bundle, error } => {
            println!("{}: cannot run: {error}", bundle.display());
            return;
        }
    };
    println!(
        "{}: {} plugin {} sha256:{}",
        report.bundle.display(),
        report.point,
        report.plugin,
        &report.sha256[..16]
    );
    let width = report.cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for case in &report.cases {
        println!(
            "  {} {:width$}  fuel {:>9}  time {:>9.1?}  {}",
            if case.passed { "ok  " } else { "FAIL" },
            case.name,
            case.fuel_used,
            case.latency,
            case.detail,
        );
    }
    println!("  {}/{} cases passed", report.passed(), report.cases.len());
}

fn load_policy(path: &Path) -> Result<PolicyConfig, String> {
    crate::config::Config::load(Some(path))
        .map(|c| c.policy)
        .map_err(|e| e.to_string())
}

async fn check(path: &Path) -> ExitCode {
    let policy = match load_policy(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match PolicyEngine::new(&policy, EngineOptions::default()).await {
        Ok(engine) => {
            let plugins = engine.plugins();
            for point in [
                DecisionPoint::CopyMethod,
                DecisionPoint::ServiceType,
                DecisionPoint::Psk,
            ] {
                match plugins.iter().find(|p| p.point == point) {
                    Some(p) => println!(
                        "{point}: plugin {} sha256:{} on_failure={:?}",
                        p.name, p.sha256, p.on_failure
                    ),
                    None => println!("{point}: built-in default"),
                }
            }
            println!("{}: policy configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

async fn eval(
    point: DecisionPoint,
    input: &Path,
    bundle: Option<PathBuf>,
    config: Option<PathBuf>,
    credentials: &[String],
) -> ExitCode {
    let mut policy = match &config {
        Some(path) => match load_policy(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => PolicyConfig::default(),
    };
    if let Some(dir) = bundle {
        // A what-if of the bundle as written: its own pin and grants.
        let point_cfg = match PointConfig::bundle_as_written(&dir) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        match point {
            DecisionPoint::CopyMethod => policy.copy_method = point_cfg,
            DecisionPoint::ServiceType => policy.service_type = point_cfg,
            DecisionPoint::Psk => policy.psk = point_cfg,
        }
    }
    let mut creds = StaticCredentials::new();
    for c in credentials {
        let parsed = c
            .split_once('=')
            .and_then(|(sk, v)| sk.split_once('/').map(|(s, k)| (s, k, v)));
        match parsed {
            Some((s, k, v)) => creds = creds.with(s, k, v),
            None => {
                eprintln!("--credential {c:?}: expected SECRET/KEY=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let text = if input == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(input)
    };
    let value: serde_json::Value = match text
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    let options = EngineOptions {
        credentials: Arc::new(creds),
        ..EngineOptions::default()
    };
    let engine = match PolicyEngine::new(&policy, options).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match golden::eval_json(&engine, point, value).await {
        Err(e) => {
            eprintln!("{}: not a valid {point} input: {e}", input.display());
            ExitCode::from(2)
        }
        Ok(Ok(decided)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&decided).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
