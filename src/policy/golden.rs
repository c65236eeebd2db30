//! Golden test tables of policy bundles: each case is an input and the expected decision
//! (or error), run through the very same [`PolicyEngine`] the controller uses, with HTTP
//! answered from the case's recorded exchanges.
//!
//! Used by `ferrosync policy test` and the plugin test tier. It must never touch the
//! network or a cluster: credentials and responses are replayed.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    config::{CredentialRef, EngineConfig, PointConfig, PolicyConfig},
    credentials::{CredentialError, CredentialPolicy, CredentialSource},
    engine::{EngineOptions, PolicyEngine},
    http::{Exchange, ReplayTransport},
    outcome::{Decided, PolicyError},
    pairs,
    plugin::{BundleFile, LoadError},
    types::{DecisionPoint, PskInput},
};
use crate::policy::FailureMode;

/// A bundle's test table (`tests.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenTable {
    pub cases: Vec<GoldenCase>,
}

/// One case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    pub name: String,
    /// The decision point's input, in its JSON form (without settings).
    pub input: Value,
    /// HTTP exchanges the plugin is expected to make, in order, with their responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<Exchange>,
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Expect {
    /// These fields of the decision's JSON form; `reason` matches as a substring.
    Decision(Value),
    /// The plugin fails, with a message containing this text.
    Error(String),
}

/// Why a bundle could not be tested at all.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: {message}")]
    Table { path: PathBuf, message: String },
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub passed: bool,
    /// What differed, or the decision's summary when it passed.
    pub detail: String,
    pub fuel_used: u64,
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
}

/// The result of a bundle's table.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub bundle: PathBuf,
    pub point: DecisionPoint,
    pub plugin: String,
    pub sha256: String,
    pub cases: Vec<CaseReport>,
}

impl BundleReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }
    pub fn all_passed(&self) -> bool {
        self.passed() == self.cases.len()
    }
}

/// Any credential resolves to a placeholder: replayed exchanges need no real token.
struct ReplayCredentials;

impl CredentialSource for ReplayCredentials {
    fn resolve<'a>(
        &'a self,
        _: &'a CredentialRef,
    ) -> BoxFuture<'a, Result<String, CredentialError>> {
        Box::pin(async { Ok("replay-token".to_owned()) })
    }
}

/// Reads a bundle's test table.
pub fn read_table(path: &Path) -> Result<GoldenTable, GoldenError> {
    let table_err = |message: String| GoldenError::Table {
        path: path.into(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| table_err(e.to_string()))?;
    // With the path of the offending field (`cases[2].expect: ...`): serde_json alone
    // names only a line and column.
    let mut de = serde_json::Deserializer::from_str(&text);
    let table = serde_path_to_error::deserialize(&mut de).map_err(|e| table_err(e.to_string()))?;
    de.end().map_err(|e| table_err(e.to_string()))?;
    Ok(table)
}

/// A bundle loaded as its author wrote it, ready to decide its test cases: the engine
/// `policy test` and `policy bench` run, with HTTP replayed from the cases.
pub struct LoadedBundle {
    pub bundle: BundleFile,
    pub table: GoldenTable,
    pub engine: PolicyEngine,
    /// Load a case's `http` here before deciding it.
    pub replay: Arc<ReplayTransport>,
    pub plugin: String,
    pub sha256: String,
}

/// Loads the bundle in `dir` and its test table (compiling its component).
pub async fn load_bundle(dir: &Path) -> Result<LoadedBundle, GoldenError> {
    let bundle = BundleFile::read(dir)?;
    let table = read_table(&bundle.tests)?;
    // The bundle's author tests it as written: its own pin and grants are the ceiling.
    let point_cfg = PointConfig {
        // Failures must surface as failures, not as the built-in default.
        on_failure: FailureMode::Fail,
        ..PointConfig::bundle_as_written(dir)?
    };
    let mut config = PolicyConfig {
        engine: EngineConfig {
            // Every case runs the plugin, so each reports its own fuel and time.
            cache_entries: 0,
            max_concurrency: 1,
            // Cases are independent: one case's "not available yet" must not answer the
            // next case about the same replication.
            key_retry_min: Duration::ZERO,
            key_retry_max: Duration::ZERO,
            ..EngineConfig::default()
        },
        // The token is a placeholder and the transport a replay: nothing real is sent.
        credentials: CredentialPolicy::replay(),
        ..PolicyConfig::default()
    };
    match bundle.decision {
        DecisionPoint::CopyMethod => config.copy_method = Some(point_cfg),
        DecisionPoint::ServiceType => config.service_type = Some(point_cfg),
        DecisionPoint::Psk => config.psk = Some(point_cfg),
    }
    let replay = Arc::new(ReplayTransport::default());
    let engine = PolicyEngine::new(
        &config,
        EngineOptions {
            credentials: Arc::new(ReplayCredentials),
            transport: replay.clone(),
            ..EngineOptions::default()
        },
    )
    .await?;
    let info = engine
        .plugins()
        .into_iter()
        .next()
        .ok_or_else(|| GoldenError::Table {
            path: dir.into(),
            message: "bundle loaded no plugin".into(),
        })?;
    Ok(LoadedBundle {
        bundle,
        table,
        engine,
        replay,
        plugin: info.name,
        sha256: info.sha256,
    })
}

/// Runs every case of the bundle in `dir`.
pub async fn run_bundle(dir: &Path) -> Result<BundleReport, GoldenError> {
    let LoadedBundle {
        bundle,
        table,
        engine,
        replay,
        plugin,
        sha256,
    } = load_bundle(dir).await?;
    let mut cases = Vec::new();
    for case in &table.cases {
        replay.load(&case.http);
        let outcome = match eval_json(&engine, bundle.decision, case.input.clone()).await {
            Ok(x) => x,
            Err(message) => {
                cases.push(CaseReport {
                    name: case.name.clone(),
                    passed: false,
                    detail: format!("bad input: {message}"),
                    fuel_used: 0,
                    latency: Duration::ZERO,
                });
                continue;
            }
        };
        let (fuel_used, latency) = match &outcome {
            Ok(d) => (d.provenance.fuel_used, d.provenance.latency),
            Err(PolicyError::PluginFailed { provenance, .. }) => {
                (provenance.fuel_used, provenance.latency)
            }
        };
        let mut verdict = compare(&case.expect, &outcome);
        let left = replay.remaining();
        if verdict.is_ok() && left > 0 {
            verdict = Err(format!(
                "{left} recorded HTTP exchange(s) were never requested"
            ));
        }
        cases.push(CaseReport {
            name: case.name.clone(),
            passed: verdict.is_ok(),
            detail: verdict.unwrap_or_else(|e| e),
            fuel_used,
            latency,
        });
    }
    Ok(BundleReport {
        bundle: dir.into(),
        point: bundle.decision,
        plugin,
        sha256,
        cases,
    })
}

/// Decides for an input given as JSON; the decision comes back in its JSON form.
/// The outer error is a malformed input.
pub async fn eval_json(
    engine: &PolicyEngine,
    point: DecisionPoint,
    input: Value,
) -> Result<Result<Decided<Value>, PolicyError>, String> {
    fn to_json<D: Serialize>(
        r: Result<Decided<D>, PolicyError>,
    ) -> Result<Decided<Value>, PolicyError> {
        r.map(|d| Decided {
            decision: serde_json::to_value(&d.decision).unwrap_or(Value::Null),
            provenance: d.provenance,
        })
    }
    let bad = |e: serde_json::Error| e.to_string();
    Ok(match point {
        DecisionPoint::CopyMethod => to_json(
            engine
                .copy_method(&serde_json::from_value(input).map_err(bad)?)
                .await,
        ),
        DecisionPoint::ServiceType => to_json(
            engine
                .service_type(&serde_json::from_value(input).map_err(bad)?)
                .await,
        ),
        DecisionPoint::Psk => {
            let input: PskInput = serde_json::from_value(input).map_err(bad)?;
            // A what-if is the operator's own: the pair the input names counts as
            // authorised (the controller checks the Namespace's prefixes instead).
            let pair = input
                .annotations
                .get(pairs::PAIR_ANNOTATION)
                .and_then(|p| {
                    let granted = [(pairs::PREFIXES_ANNOTATION.to_owned(), p.clone())].into();
                    pairs::authorise(&input.namespace, &input.annotations, &granted).ok()
                })
                .flatten();
            to_json(engine.psk_for_pair(&input, pair.as_ref()).await)
        }
    })
}

fn compare(
    expect: &Expect,
    outcome: &Result<Decided<Value>, PolicyError>,
) -> Result<String, String> {
    match (expect, outcome) {
        (Expect::Decision(want), Ok(got)) => {
            subset(want, &got.decision, "decision")?;
            Ok(got.decision["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }
        (Expect::Decision(_), Err(e)) => Err(format!("expected a decision, got: {e}")),
        (Expect::Error(want), Err(e)) if e.to_string().contains(want.as_str()) => Ok(e.to_string()),
        (Expect::Error(want), Err(e)) => {
            Err(format!("expected an error containing {want:?}, got: {e}"))
        }
        (Expect::Error(want), Ok(got)) => Err(format!(
            "expected an error containing {want:?}, got decision {}",
            got.decision
        )),
    }
}

/// Every field of `want` is in `got` with the same value; `reason` is a substring match.
fn subset(want: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let here = format!("{path}.{k}");
                let gv = g
                    .get(k)
                    .ok_or_else(|| format!("{here}: missing, expected {wv}"))?;
                match (k.as_str(), wv, gv) {
                    ("reason", Value::String(ws), Value::String(gs)) => {
                        if !gs.contains(ws.as_str()) {
                            return Err(format!("{here}: {gs:?} does not contain {ws:?}"));
                        }
                    }
                    _ => subset(wv, gv, &here)?,
                }
            }
            Ok(())
        }
        (w, g) if w == g => Ok(()),
        (w, g) => Err(format!("{path}: expected {w}, got {g}")),
    }
}
