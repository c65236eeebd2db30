//! The controller's Prometheus metrics.
//!
//! The `volsync_*` families keep the reference's names and labels exactly, so existing
//! alerts and dashboards work unchanged; ferrosync's own families are `ferrosync_*`.
//! Series of deleted objects are removed by [`Metrics::forget`].

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::summary::{LabelPairs, SummaryFamily};

/// The name of VolSync's sync-duration summary.
pub const SYNC_DURATION: &str = "volsync_sync_duration_seconds";

/// VolSync's objectives for [`SYNC_DURATION`].
pub const SYNC_DURATION_QUANTILES: &[f64] = &[0.5, 0.9, 0.99];

/// VolSync's window for [`SYNC_DURATION`]'s quantiles.
pub const SYNC_DURATION_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The labels of the reference's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// The object's name.
    pub obj_name: String,
    /// The object's namespace.
    pub obj_namespace: String,
    /// `source` or `destination`.
    pub role: String,
    /// Always `rsync-tls`.
    pub method: String,
}

impl ObjectLabels {
    /// Labels of an rsync-TLS object.
    pub fn new(namespace: &str, name: &str, role: &str) -> Self {
        Self {
            obj_name: name.into(),
            obj_namespace: namespace.into(),
            role: role.into(),
            method: "rsync-tls".into(),
        }
    }
}

impl LabelPairs for ObjectLabels {
    fn label_pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("obj_name", &self.obj_name),
            ("obj_namespace", &self.obj_namespace),
            ("role", &self.role),
            ("method", &self.method),
        ]
    }
}

/// Labels of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// ReplicationSource or ReplicationDestination.
    pub kind: String,
    /// The error's reason.
    pub reason: String,
}

/// All metric families of the controller.
#[derive(Clone)]
pub struct Metrics {
    missed_intervals: Family<ObjectLabels, Counter>,
    out_of_sync: Family<ObjectLabels, Gauge>,
    sync_duration: SummaryFamily<ObjectLabels>,
    sync_duration_histogram: Family<ObjectLabels, Histogram>,
    bytes: Family<ObjectLabels, Counter>,
    interval: Family<ObjectLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    last_sync: Family<ObjectLabels, Gauge>,
    objective: Family<ObjectLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconciles: Family<ErrorLabels, Counter>,
    known: Arc<Mutex<HashSet<ObjectLabels>>>,
}

fn duration_histogram() -> Histogram {
    // 1 s to ~9 h: syncs range from seconds to hours.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 16,
    ))
}

/// Seconds between the next two fire times of cron `expr` after `now`.
fn schedule_interval(expr: &str, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let schedule = crate::controller::schedule::Schedule::parse(expr).ok()?;
    let first = schedule.next_after(now)?;
    let second = schedule.next_after(first)?;
    Some((second - first).as_seconds_f64())
}

impl Metrics {
    /// Registers every family in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            missed_intervals: Family::default(),
            out_of_sync: Family::default(),
            sync_duration: SummaryFamily::new(
                SYNC_DURATION,
                "Duration of the synchronization interval in seconds",
                SYNC_DURATION_QUANTILES,
                SYNC_DURATION_WINDOW,
            ),
            sync_duration_histogram: Family::new_with_constructor(duration_histogram),
            bytes: Family::default(),
            interval: Family::default(),
            last_sync: Family::default(),
            objective: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Family::default(),
            known: Arc::default(),
        };
        registry.register(
            "volsync_missed_intervals",
            "The number of times a synchronization failed to complete before the next scheduled start",
            metrics.missed_intervals.clone(),
        );
        registry.register(
            "volsync_volume_out_of_sync",
            "Set to 1 if the volume is not properly synchronized",
            metrics.out_of_sync.clone(),
        );
        // volsync_sync_duration_seconds is a summary, which prometheus-client cannot
        // register: it is written by `summaries()` into the same exposition.
        registry.register(
            "ferrosync_sync_duration_seconds",
            "Duration of the synchronization interval in seconds, as a histogram (aggregatable across objects and replicas)",
            metrics.sync_duration_histogram.clone(),
        );
        registry.register(
            "ferrosync_bytes_transferred",
            "Bytes the movers sent, from their summaries",
            metrics.bytes.clone(),
        );
        registry.register(
            "ferrosync_sync_interval_seconds",
            "Seconds between the schedule's next two start times (only objects with a schedule), to compare sync durations with",
            metrics.interval.clone(),
        );
        // Timestamps, not ages: `time() - ...` keeps growing in Prometheus when the
        // controller (or its whole site) stops, so an alert on it still fires.
        registry.register(
            "ferrosync_last_sync_timestamp_seconds",
            "Unix time of the object's status.lastSyncTime (only objects that completed a sync)",
            metrics.last_sync.clone(),
        );
        registry.register(
            "ferrosync_recovery_point_objective_seconds",
            "The object's ferrosync.io/recovery-point-objective annotation in seconds (only objects with a valid one)",
            metrics.objective.clone(),
        );
        registry.register(
            "ferrosync_reconcile_errors",
            "Reconcile errors by kind and reason",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "ferrosync_reconciles",
            "Reconcile passes by kind",
            metrics.reconciles.clone(),
        );
        metrics
    }

    fn track(&self, labels: &ObjectLabels) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels.clone());
    }

    /// The families prometheus-client cannot encode, for [`super::Exposition`].
    pub fn summaries(&self) -> Vec<SummaryFamily<ObjectLabels>> {
        vec![self.sync_duration.clone()]
    }

    /// A pass over an object: its out-of-sync state and whether it missed an interval.
    pub fn observe_pass(&self, labels: &ObjectLabels, out_of_sync: bool, missed_interval: bool) {
        self.track(labels);
        self.out_of_sync
            .get_or_create(labels)
            .set(i64::from(out_of_sync));
        // Touch the counter so the series exists (at 0) before the first miss.
        let missed = self.missed_intervals.get_or_create(labels);
        if missed_interval {
            missed.inc();
        }
    }

    /// The object's `spec.trigger.schedule` as of `now`: its interval, or no series for
    /// manual, continuous and invalid schedules.
    pub fn observe_schedule(
        &self,
        labels: &ObjectLabels,
        schedule: Option<&str>,
        now: k8s_openapi::jiff::Timestamp,
    ) {
        let now = chrono::DateTime::from_timestamp(now.as_second(), 0).unwrap_or_default();
        match schedule.and_then(|expr| schedule_interval(expr, now)) {
            Some(seconds) => {
                self.track(labels);
                self.interval.get_or_create(labels).set(seconds);
            }
            None => {
                self.interval.remove(labels);
            }
        }
    }

    /// The object's recovery point as of this pass: its `status.lastSyncTime` and its
    /// valid recovery point objective. Either absent removes its series, so an annotation
    /// removed (or made invalid) resolves the alert instead of leaving a stale objective.
    pub fn observe_recovery_point(
        &self,
        labels: &ObjectLabels,
        last_sync: Option<k8s_openapi::jiff::Timestamp>,
        objective: Option<Duration>,
    ) {
        match last_sync {
            Some(at) => {
                self.track(labels);
                self.last_sync.get_or_create(labels).set(at.as_second());
            }
            None => {
                self.last_sync.remove(labels);
            }
        }
        match objective {
            Some(objective) => {
                self.track(labels);
                self.objective
                    .get_or_create(labels)
                    .set(objective.as_secs_f64());
            }
            None => {
                self.objective.remove(labels);
            }
        }
    }

    /// A completed iteration.
    pub fn observe_sync(&self, labels: &ObjectLabels, seconds: f64, bytes: u64) {
        self.track(labels);
        self.sync_duration.observe(labels, seconds);
        self.sync_duration_histogram
            .get_or_create(labels)
            .observe(seconds);
        self.bytes.get_or_create(labels).inc_by(bytes);
    }

    /// A reconcile pass of `kind`, and its error reason if it failed.
    pub fn observe_reconcile(&self, kind: &str, error: Option<&str>) {
        let labels = |reason: &str| ErrorLabels {
            kind: kind.into(),
            reason: reason.into(),
        };
        self.reconciles.get_or_create(&labels("")).inc();
        if let Some(reason) = error {
            self.reconcile_errors.get_or_create(&labels(reason)).inc();
        }
    }

    /// Removes every series of objects that are not in `alive`, so alerts on deleted
    /// objects resolve instead of firing forever.
    pub fn forget(&self, alive: &HashSet<ObjectLabels>) -> usize {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<ObjectLabels> = known.difference(alive).cloned().collect();
        for labels in &gone {
            self.missed_intervals.remove(labels);
            self.out_of_sync.remove(labels);
            self.sync_duration.remove(labels);
            self.sync_duration_histogram.remove(labels);
            self.bytes.remove(labels);
            self.interval.remove(labels);
            self.last_sync.remove(labels);
            self.objective.remove(labels);
            known.remove(labels);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Exposition;

    #[test]
    fn reference_names_types_and_labels_are_kept_and_deleted_objects_forgotten() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let exposition = Exposition::new(registry, metrics.clone());
        let a = ObjectLabels::new("ns", "a", "source");
        let b = ObjectLabels::new("ns", "b", "destination");
        metrics.observe_pass(&a, true, true);
        metrics.observe_pass(&b, false, false);
        metrics.observe_sync(&b, 3.0, 1024);
        let text = exposition.encode().expect("encodes");
        assert!(
            text.contains(r#"volsync_missed_intervals_total{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"volsync_volume_out_of_sync{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 1"#));
        assert!(text.contains("# TYPE volsync_sync_duration_seconds summary\n"));
        for q in ["0.5", "0.9", "0.99"] {
            assert!(
                text.contains(&format!(r#"volsync_sync_duration_seconds{{obj_name="b",obj_namespace="ns",role="destination",method="rsync-tls",quantile="{q}"}} "#)),
                "{text}"
            );
        }
        assert!(text.contains(r#"volsync_sync_duration_seconds_count{obj_name="b",obj_namespace="ns",role="destination",method="rsync-tls"} 1"#));
        assert!(text.contains("# TYPE ferrosync_sync_duration_seconds histogram\n"));
        assert!(text.contains("ferrosync_bytes_transferred_total{obj_name=\"b\",obj_namespace=\"ns\",role=\"destination\",method=\"rsync-tls\"} 1024"));
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with EOF: {text}"
        );

        let now = k8s_openapi::jiff::Timestamp::now();
        metrics.observe_schedule(&a, Some("*/5 * * * *"), now);
        metrics.observe_schedule(&b, Some("0 3 * * *"), now);
        let text = exposition.encode().expect("encodes");
        assert!(text.contains(r#"ferrosync_sync_interval_seconds{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 300.0"#), "{text}");
        assert!(text.contains(r#"ferrosync_sync_interval_seconds{obj_name="b",obj_namespace="ns",role="destination",method="rsync-tls"} 86400.0"#), "{text}");
        metrics.observe_schedule(&b, None, now);
        let text = exposition.encode().expect("encodes");
        assert!(
            !text.contains(r#"ferrosync_sync_interval_seconds{obj_name="b""#),
            "{text}"
        );

        // The recovery point: a timestamp and the objective, each gone when it is.
        let synced = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("valid");
        metrics.observe_recovery_point(&a, Some(synced), Some(Duration::from_secs(900)));
        metrics.observe_recovery_point(&b, Some(synced), None);
        let text = exposition.encode().expect("encodes");
        assert!(
            text.contains("# TYPE ferrosync_last_sync_timestamp_seconds gauge\n"),
            "{text}"
        );
        assert!(text.contains(r#"ferrosync_last_sync_timestamp_seconds{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 1700000000"#), "{text}");
        assert!(text.contains(r#"ferrosync_last_sync_timestamp_seconds{obj_name="b",obj_namespace="ns",role="destination",method="rsync-tls"} 1700000000"#), "{text}");
        assert!(
            text.contains("# TYPE ferrosync_recovery_point_objective_seconds gauge\n"),
            "{text}"
        );
        assert!(text.contains(r#"ferrosync_recovery_point_objective_seconds{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 900.0"#), "{text}");
        assert!(
            !text.contains(r#"ferrosync_recovery_point_objective_seconds{obj_name="b""#),
            "{text}"
        );
        // The annotation removed: only the objective goes.
        metrics.observe_recovery_point(&a, Some(synced), None);
        let text = exposition.encode().expect("encodes");
        assert!(
            !text.contains(r#"ferrosync_recovery_point_objective_seconds{obj_name="a""#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrosync_last_sync_timestamp_seconds{obj_name="a""#),
            "{text}"
        );
        metrics.observe_recovery_point(&a, Some(synced), Some(Duration::from_secs(60)));

        assert_eq!(metrics.forget(&HashSet::from([b.clone()])), 1);
        let text = exposition.encode().expect("encodes");
        assert!(!text.contains("obj_name=\"a\""), "{text}");
        assert!(text.contains("obj_name=\"b\""));
    }
}
