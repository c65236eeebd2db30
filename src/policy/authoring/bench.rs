//! `ferrosync policy bench`: a bundle's decision latency over its own test cases.
//!
//! Each case is decided through the engine `policy test` uses (decision cache off, HTTP
//! replayed), so every decision instantiates the component in a fresh sandbox, as the
//! controller does:
//! - warm: the component compiled and type-checked once, then `iterations` decisions;
//! - cold: a freshly built engine's first decision of the case (`cold` times), its first
//!   instantiation; the loading before it (compilation, world check) is reported apart.
//!
//! A fixed number of iterations, so runs compare; a report, never a pass/fail timing.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::policy::golden::{self, GoldenError, LoadedBundle};

/// How many decisions to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Warm decisions per case.
    pub iterations: usize,
    /// Fresh engines per case, for the cold decision.
    pub cold: usize,
}

/// Why a bundle could not be benchmarked.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] GoldenError),
    #[error("{0}: the test table has no cases to time")]
    NoCases(std::path::PathBuf),
    #[error("--iterations and --cold must be at least 1")]
    NoIterations,
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Nearest-rank percentiles of the samples.
    pub fn of(samples: &mut [Duration]) -> Latency {
        samples.sort_unstable();
        let at = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1e6
        };
        Latency {
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// One case's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CaseBench {
    pub name: String,
    /// Fuel of the last warm decision (the same every time for a pure plugin).
    pub fuel: u64,
    /// Whether the plugin decided (as opposed to failing, as some cases expect).
    pub decided: bool,
    pub warm: Latency,
    pub cold: Latency,
}

/// A bundle's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BundleBench {
    pub bundle: std::path::PathBuf,
    pub plugin: String,
    pub sha256: String,
    pub iterations: usize,
    pub cold_runs: usize,
    /// Loading the bundle: reading, compiling, checking its world.
    pub load: Latency,
    pub cases: Vec<CaseBench>,
}

/// Decides `case` once on `loaded`; the wall time of the whole call, its fuel, and
/// whether it decided.
async fn decide_once(loaded: &LoadedBundle, case: &golden::GoldenCase) -> (Duration, u64, bool) {
    loaded.replay.load(&case.http);
    let started = Instant::now();
    let outcome =
        golden::eval_json(&loaded.engine, loaded.bundle.decision, case.input.clone()).await;
    let took = started.elapsed();
    match outcome {
        Ok(Ok(d)) => (took, d.provenance.fuel_used, true),
        Ok(Err(crate::policy::PolicyError::PluginFailed { provenance, .. })) => {
            (took, provenance.fuel_used, false)
        }
        Err(_) => (took, 0, false),
    }
}

/// Times every case of the bundle in `dir`.
pub async fn bench(dir: &Path, options: BenchOptions) -> Result<BundleBench, BenchError> {
    if options.iterations == 0 || options.cold == 0 {
        return Err(BenchError::NoIterations);
    }
    let started = Instant::now();
    let warm_engine = golden::load_bundle(dir).await?;
    let mut load = vec![started.elapsed()];
    let cases = warm_engine.table.cases.clone();
    if cases.is_empty() {
        return Err(BenchError::NoCases(dir.into()));
    }
    let mut cold: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..options.cold {
        for (i, case) in cases.iter().enumerate() {
            let started = Instant::now();
            let fresh = golden::load_bundle(dir).await?;
            load.push(started.elapsed());
            cold[i].push(decide_once(&fresh, case).await.0);
        }
    }
    let mut out = Vec::new();
    for (case, mut cold) in cases.iter().zip(cold) {
        // One untimed decision first: the warm figures exclude the first instantiation.
        let (_, mut fuel, mut decided) = decide_once(&warm_engine, case).await;
        let mut warm = Vec::with_capacity(options.iterations);
        for _ in 0..options.iterations {
            let (took, f, d) = decide_once(&warm_engine, case).await;
            warm.push(took);
            (fuel, decided) = (f, d);
        }
        out.push(CaseBench {
            name: case.name.clone(),
            fuel,
            decided,
            warm: Latency::of(&mut warm),
            cold: Latency::of(&mut cold),
        });
    }
    Ok(BundleBench {
        bundle: dir.into(),
        plugin: warm_engine.plugin.clone(),
        sha256: warm_engine.sha256.clone(),
        iterations: options.iterations,
        cold_runs: options.cold,
        load: Latency::of(&mut load),
        cases: out,
    })
}

fn micros(us: f64) -> String {
    format!("{:.1?}", Duration::from_nanos((us * 1e3) as u64))
}

/// The table report.
pub fn render(b: &BundleBench) -> String {
    use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .force_no_tty()
        .set_header(vec![
            "case", "outcome", "fuel", "warm p50", "warm p99", "cold p50", "cold p99",
        ]);
    for c in &b.cases {
        table.add_row(vec![
            c.name.clone(),
            if c.decided { "decided" } else { "error" }.into(),
            c.fuel.to_string(),
            micros(c.warm.p50_us),
            micros(c.warm.p99_us),
            micros(c.cold.p50_us),
            micros(c.cold.p99_us),
        ]);
    }
    for col in 2..7 {
        if let Some(column) = table.column_mut(col) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!(
        "{}: plugin {} sha256:{}\n{table}\nwarm: {} decisions per case after one untimed; \
         cold: the first decision of {} freshly loaded engine(s) per case.\n\
         loading (read, compile, world check): p50 {}, max {}\n",
        b.bundle.display(),
        b.plugin,
        &b.sha256[..16.min(b.sha256.len())],
        b.iterations,
        b.cold_runs,
        micros(b.load.p50_us),
        micros(b.load.max_us),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::of(&mut samples);
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (50.0, 99.0, 100.0));
        let mut one = vec![Duration::from_micros(7)];
        let l = Latency::of(&mut one);
        assert_eq!((l.p50_us, l.p99_us), (7.0, 7.0));
    }
}
