//! A Prometheus *summary* over a sliding time window, which prometheus-client lacks.
//!
//! VolSync's `volsync_sync_duration_seconds` is a client_golang Summary with the objectives
//! 0.5, 0.9 and 0.99 over 24 hours; dashboards query it with `quantile="…"`, so ferrosync
//! must expose the same type. This module follows client_golang's design: `_sum` and
//! `_count` are cumulative over the process's life, the quantiles cover a sliding window
//! made of [`AGE_BUCKETS`] overlapping sketches. Every observation goes into all of them;
//! the oldest is queried and, every `window / AGE_BUCKETS`, cleared and made the newest, so
//! a quantile covers between 4/5 and all of the window.
//!
//! Each sketch is a DDSketch (crate `sketches-ddsketch`, the one metrics-rs uses): quantiles
//! within 1 % of the true value, memory bounded by the spread of the values (about 460
//! bins for durations from 1 s to 3 h) rather than by how often an object syncs. An exact
//! window would need every duration of the last 24 hours: unbounded for an object that
//! syncs back to back, and a cap on samples would shorten the window exactly when it
//! matters. client_golang's own summary is approximate too (ε-targeted quantiles).
//!
//! prometheus-client's encoder has no summary type, so a [`SummaryFamily`] writes its own
//! lines into the exposition (see [`super::Exposition`]).

use std::{
    collections::HashMap,
    fmt::{self, Write},
    hash::Hash,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// The sketches making up the window, as client_golang's default `AgeBuckets`.
pub const AGE_BUCKETS: u32 = 5;

/// Relative accuracy of each quantile (1 %).
const ACCURACY: f64 = 0.01;

/// At most this many bins per sketch; past it the lowest bins merge. 1 % steps from 1 ms
/// to more than a year fit.
const MAX_BINS: u32 = 2048;

/// Durations below this count as this (a sync never takes less than a millisecond).
const MIN_VALUE: f64 = 1e-3;

fn sketch() -> DDSketch {
    DDSketch::new(SketchConfig::new(ACCURACY, MAX_BINS, MIN_VALUE))
}

/// One summary: cumulative sum and count, windowed quantiles.
#[derive(Clone)]
pub struct WindowedSummary {
    window: Duration,
    ring: Vec<DDSketch>,
    /// The index of the oldest sketch, the one queried.
    head: usize,
    /// When the head sketch is cleared and becomes the newest.
    head_expires: Instant,
    sum: f64,
    count: u64,
}

/// What a scrape reports of one summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummarySnapshot {
    /// `(quantile, value)`; the value is NaN when the window holds no observation.
    pub quantiles: Vec<(f64, f64)>,
    /// Every observation's sum since start.
    pub sum: f64,
    /// Observations since start.
    pub count: u64,
}

impl WindowedSummary {
    /// An empty summary whose quantiles cover `window`, starting `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            ring: (0..AGE_BUCKETS).map(|_| sketch()).collect(),
            head: 0,
            head_expires: now + window / AGE_BUCKETS,
            sum: 0.0,
            count: 0,
        }
    }

    /// Clears the sketches that have aged out by `now`.
    fn rotate(&mut self, now: Instant) {
        let step = self.window / AGE_BUCKETS;
        let mut cleared = 0;
        while now >= self.head_expires {
            // After a full turn every sketch is empty; skip ahead instead of looping over
            // every missed step of a long idle time.
            if cleared < AGE_BUCKETS {
                self.ring[self.head] = sketch();
                self.head = (self.head + 1) % self.ring.len();
                cleared += 1;
            }
            self.head_expires += step;
        }
    }

    /// Records `value` at `now`. Negative and non-finite values are ignored (a duration
    /// cannot be either; they would poison the sum).
    pub fn observe(&mut self, value: f64, now: Instant) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        self.rotate(now);
        for sketch in &mut self.ring {
            sketch.add(value);
        }
        self.sum += value;
        self.count += 1;
    }

    /// The quantiles `objectives` of the window ending `now`, with the sum and count.
    pub fn snapshot(&mut self, objectives: &[f64], now: Instant) -> SummarySnapshot {
        self.rotate(now);
        let head = &self.ring[self.head];
        let quantiles = objectives
            .iter()
            .map(|&q| (q, nearest_rank(head, q)))
            .collect();
        SummarySnapshot {
            quantiles,
            sum: self.sum,
            count: self.count,
        }
    }
}

/// The `q` quantile of `sketch` by nearest rank (the `ceil(q·n)`-th smallest value), as
/// client_golang's summary reports it: with few observations 0.9 and 0.99 are the slowest
/// sync, as in VolSync's documented example. DDSketch itself answers rank `floor(q·(n-1))`
/// (the second smallest of three for 0.9), so `q` is translated to that convention. NaN
/// when the sketch is empty.
fn nearest_rank(sketch: &DDSketch, q: f64) -> f64 {
    let n = sketch.count();
    if n == 0 {
        return f64::NAN;
    }
    let q = if n == 1 {
        q
    } else {
        // 0-based nearest rank, then the DDSketch quantile whose floor lands on it (the
        // half step keeps float error from falling one rank short).
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        ((rank as f64 + 0.5) / (n - 1) as f64).min(1.0)
    };
    sketch.quantile(q).ok().flatten().unwrap_or(f64::NAN)
}

/// Labels written as `name="value"` pairs, in this order.
pub trait LabelPairs {
    /// The pairs.
    fn label_pairs(&self) -> Vec<(&'static str, &str)>;
}

/// A family of [`WindowedSummary`] by label set. Clones share the same series.
#[derive(Clone)]
pub struct SummaryFamily<L> {
    name: &'static str,
    help: &'static str,
    objectives: &'static [f64],
    window: Duration,
    series: Arc<Mutex<HashMap<L, WindowedSummary>>>,
}

impl<L: LabelPairs + Clone + Eq + Hash> SummaryFamily<L> {
    /// A family named `name` (no suffix) reporting `objectives` over `window`.
    pub fn new(
        name: &'static str,
        help: &'static str,
        objectives: &'static [f64],
        window: Duration,
    ) -> Self {
        Self {
            name,
            help,
            objectives,
            window,
            series: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<L, WindowedSummary>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `value` for `labels` now.
    pub fn observe(&self, labels: &L, value: f64) {
        self.observe_at(labels, value, Instant::now());
    }

    /// Records `value` for `labels` at `now`.
    pub fn observe_at(&self, labels: &L, value: f64, now: Instant) {
        let window = self.window;
        self.lock()
            .entry(labels.clone())
            .or_insert_with(|| WindowedSummary::new(window, now))
            .observe(value, now);
    }

    /// Drops the series of `labels`.
    pub fn remove(&self, labels: &L) {
        self.lock().remove(labels);
    }

    /// Writes the family in the text exposition format (Prometheus and OpenMetrics agree
    /// on summaries): `# HELP`, `# TYPE … summary`, then per series one line per
    /// quantile, `_sum` and `_count`. Nothing without series, as prometheus-client does
    /// for its own families.
    pub fn encode(&self, out: &mut String) -> fmt::Result {
        self.encode_at(out, Instant::now())
    }

    /// [`Self::encode`] as of `now`.
    pub fn encode_at(&self, out: &mut String, now: Instant) -> fmt::Result {
        let mut series = self.lock();
        if series.is_empty() {
            return Ok(());
        }
        let name = self.name;
        writeln!(out, "# HELP {name} {}", self.help)?;
        writeln!(out, "# TYPE {name} summary")?;
        // A stable order, so consecutive scrapes diff cleanly.
        let mut entries: Vec<(String, SummarySnapshot)> = series
            .iter_mut()
            .map(|(labels, summary)| {
                (
                    format_labels(&labels.label_pairs()),
                    summary.snapshot(self.objectives, now),
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (labels, snap) in entries {
            for (q, v) in snap.quantiles {
                writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {}", number(v))?;
            }
            writeln!(out, "{name}_sum{{{labels}}} {}", number(snap.sum))?;
            writeln!(out, "{name}_count{{{labels}}} {}", snap.count)?;
        }
        Ok(())
    }
}

/// `a="x",b="y"` with label values escaped as the exposition formats require.
fn format_labels(pairs: &[(&'static str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('\n', r"\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A sample value as the formats spell it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const OBJECTIVES: &[f64] = &[0.5, 0.9, 0.99];

    #[derive(Clone, PartialEq, Eq, Hash)]
    struct L(&'static str);
    impl LabelPairs for L {
        fn label_pairs(&self) -> Vec<(&'static str, &str)> {
            vec![("obj_name", self.0)]
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * ACCURACY * 1.01
    }

    #[test]
    fn quantiles_are_within_the_sketch_accuracy() {
        let start = Instant::now();
        let mut s = WindowedSummary::new(DAY, start);
        // 1..=1000 s, shuffled order does not matter to a sketch.
        for v in (1..=1000).rev() {
            s.observe(f64::from(v), start);
        }
        let snap = s.snapshot(OBJECTIVES, start);
        assert_eq!(snap.count, 1000);
        assert_eq!(snap.sum, 500_500.0);
        for ((q, v), expected) in snap.quantiles.iter().zip([500.0, 900.0, 990.0]) {
            assert!(close(*v, expected), "quantile {q}: {v} vs {expected}");
        }
    }

    #[test]
    fn the_window_forgets_old_observations_but_sum_and_count_stay_cumulative() {
        let start = Instant::now();
        let mut s = WindowedSummary::new(DAY, start);
        s.observe(1000.0, start);
        // Still inside the window 23 hours later: the slow sync dominates.
        s.observe(10.0, start + Duration::from_secs(23 * 3600));
        let snap = s.snapshot(&[0.99], start + Duration::from_secs(23 * 3600));
        assert!(close(snap.quantiles[0].1, 1000.0), "{snap:?}");
        // 25 hours after the slow one it is gone; the recent one remains.
        let later = start + Duration::from_secs(25 * 3600);
        let snap = s.snapshot(&[0.5, 0.99], later);
        assert!(close(snap.quantiles[0].1, 10.0), "{snap:?}");
        assert!(close(snap.quantiles[1].1, 10.0), "{snap:?}");
        assert_eq!((snap.sum, snap.count), (1010.0, 2));
        // After a quiet window the quantiles are NaN, as client_golang reports them.
        let snap = s.snapshot(&[0.5], later + 2 * DAY);
        assert!(snap.quantiles[0].1.is_nan());
        assert_eq!(snap.count, 2);
    }

    #[test]
    fn a_long_idle_time_does_not_spin() {
        let start = Instant::now();
        let mut s = WindowedSummary::new(Duration::from_secs(5), start);
        s.observe(1.0, start);
        // A million steps later: rotates at most one full turn.
        let snap = s.snapshot(&[0.5], start + Duration::from_secs(1_000_000));
        assert!(snap.quantiles[0].1.is_nan());
        s.observe(2.0, start + Duration::from_secs(1_000_000));
        let snap = s.snapshot(&[0.5], start + Duration::from_secs(1_000_000));
        assert!(close(snap.quantiles[0].1, 2.0));
    }

    #[test]
    fn few_observations_give_nearest_rank_quantiles_as_client_golang() {
        let start = Instant::now();
        let mut s = WindowedSummary::new(DAY, start);
        // VolSync's documented example: three syncs; 0.5 is the middle one, 0.9 and 0.99
        // the slowest.
        for v in [11.5, 9.8, 12.0] {
            s.observe(v, start);
        }
        let snap = s.snapshot(OBJECTIVES, start);
        assert!(close(snap.quantiles[0].1, 11.5), "{snap:?}");
        assert!(close(snap.quantiles[1].1, 12.0), "{snap:?}");
        assert!(close(snap.quantiles[2].1, 12.0), "{snap:?}");
        // One observation is every quantile.
        let mut one = WindowedSummary::new(DAY, start);
        one.observe(3.0, start);
        let snap = one.snapshot(OBJECTIVES, start);
        assert!(
            snap.quantiles.iter().all(|(_, v)| close(*v, 3.0)),
            "{snap:?}"
        );
    }

    #[test]
    fn impossible_values_are_ignored() {
        let start = Instant::now();
        let mut s = WindowedSummary::new(DAY, start);
        s.observe(f64::NAN, start);
        s.observe(-1.0, start);
        s.observe(f64::INFINITY, start);
        assert_eq!(s.snapshot(&[0.5], start).count, 0);
    }

    #[test]
    fn the_family_encodes_the_summary_type_quantiles_sum_and_count() {
        let family = SummaryFamily::new("x_seconds", "Some help", OBJECTIVES, DAY);
        let mut out = String::new();
        family.encode(&mut out).unwrap();
        assert_eq!(out, "", "no series, no lines");
        let now = Instant::now();
        family.observe_at(&L("b\"q"), 2.0, now);
        family.observe_at(&L("a"), 4.0, now);
        family.encode_at(&mut out, now).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds Some help");
        assert_eq!(lines[1], "# TYPE x_seconds summary");
        assert!(lines[2].starts_with(r#"x_seconds{obj_name="a",quantile="0.5"} "#));
        assert_eq!(lines[5], r#"x_seconds_sum{obj_name="a"} 4.0"#);
        assert_eq!(lines[6], r#"x_seconds_count{obj_name="a"} 1"#);
        assert!(lines[7].starts_with(r#"x_seconds{obj_name="b\"q",quantile="0.5"} "#));
        family.remove(&L("a"));
        let mut out = String::new();
        family.encode_at(&mut out, now).unwrap();
        assert!(!out.contains(r#"obj_name="a""#), "{out}");
    }
}
