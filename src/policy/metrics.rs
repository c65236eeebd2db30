//! Prometheus metrics of the policy host, registered into the controller's registry.
//!
//! Labels are bounded: decision point, plugin name (from configuration), and fixed
//! outcome or failure-kind words. Never a label from plugin output.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of one decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub point: String,
    pub plugin: String,
    /// `plugin`, `cached`, `builtin`, `fallback` or `failed`.
    pub outcome: String,
}

/// Labels of one plugin failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub point: String,
    pub plugin: String,
    /// A [`super::FailureKind`] label.
    pub kind: String,
}

/// Labels of a plugin's runs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub point: String,
    pub plugin: String,
}

/// Labels of a shadow candidate's comparison.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub point: String,
    pub binding: String,
    pub plugin: String,
    /// `agree`, `differ` or `failed`.
    pub outcome: String,
}

/// Labels of a reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `failed`.
    pub result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The policy host's metrics. Clones share the same series.
#[derive(Clone)]
pub struct PolicyMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub latency: HistogramFamily<PluginLabels>,
    pub fuel: HistogramFamily<PluginLabels>,
    pub reloads: Family<ReloadLabels, Counter>,
    /// Shadow candidates' answers compared with the active ones.
    pub shadow: Family<ShadowLabels, Counter>,
    /// 1 while the last reload was refused (the previous set keeps serving), else 0.
    pub reload_refused: Gauge,
}

fn latency_histogram() -> Histogram {
    // 10 µs to ~5 s.
    Histogram::new(exponential_buckets(1e-5, 4.0, 10))
}

fn fuel_histogram() -> Histogram {
    // 10k to ~2.6G units.
    Histogram::new(exponential_buckets(1e4, 4.0, 10))
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        PolicyMetrics {
            decisions: Family::default(),
            failures: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            fuel: Family::new_with_constructor(fuel_histogram),
            reloads: Family::default(),
            shadow: Family::default(),
            reload_refused: Gauge::default(),
        }
    }
}

impl PolicyMetrics {
    /// Registers every series under the `ferrosync_policy_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrosync_policy_decisions",
            "Policy decisions by decision point, plugin and outcome",
            self.decisions.clone(),
        );
        registry.register(
            "ferrosync_policy_failures",
            "Policy plugin failures (trap, timeout, limit, invalid output, ...) by kind",
            self.failures.clone(),
        );
        registry.register(
            "ferrosync_policy_decision_duration_seconds",
            "Wall time of plugin decisions, instantiation included",
            self.latency.clone(),
        );
        registry.register(
            "ferrosync_policy_fuel_used",
            "Wasm fuel used by plugin decisions",
            self.fuel.clone(),
        );
        registry.register(
            "ferrosync_policy_shadow_decisions",
            "Shadow candidates' decisions by decision point, binding, plugin and outcome (agree, differ, failed); never acted on",
            self.shadow.clone(),
        );
        registry.register(
            "ferrosync_policy_reloads",
            "Reloads of the plugin set by result",
            self.reloads.clone(),
        );
        registry.register(
            "ferrosync_policy_reload_refused",
            "1 while the newest bundles or plugin files are refused (pin, ceiling, compilation, world) and the previous set keeps serving",
            self.reload_refused.clone(),
        );
    }
}
