//! The benchmark's output: Markdown tables, ready for BENCHMARKS.md.

use comfy_table::{Table, presets::ASCII_MARKDOWN};

use crate::audit::Breakdown;

/// A Markdown table with `header`.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(ASCII_MARKDOWN).set_header(header.to_vec());
    table
}

/// `breakdown` row by row, each count also divided by `per` (with `per_label` as its
/// column's name, e.g. "per pair").
pub fn breakdown(breakdown: &Breakdown, per: f64, per_label: &str) -> Table {
    let mut t = table(&["verb", "resource", "requests", per_label, "of which failed"]);
    for (key, count) in breakdown.rows() {
        t.add_row(vec![
            key.verb.clone(),
            key.resource.clone(),
            count.requests.to_string(),
            format!("{:.2}", count.requests as f64 / per),
            count.failed.to_string(),
        ]);
    }
    t.add_row(vec![
        "all".to_string(),
        String::new(),
        breakdown.total().to_string(),
        format!("{:.2}", breakdown.total() as f64 / per),
        breakdown
            .by_key
            .values()
            .map(|c| c.failed)
            .sum::<u64>()
            .to_string(),
    ]);
    t
}

/// What was measured, as the benchmark script describes the build.
pub fn build() -> String {
    std::env::var("FERROSYNC_SCALE_BUILD").unwrap_or_else(|_| "unknown build".into())
}
