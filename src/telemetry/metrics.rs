//! The controller's Prometheus metrics.
//!
//! The `volsync_*` families keep the reference's names and labels exactly, so existing
//! alerts and dashboards work unchanged; ferrosync's own families are `ferrosync_*`.
//! Series of deleted objects are removed by [`Metrics::forget`].

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

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
    sync_duration: Family<ObjectLabels, Histogram>,
    bytes: Family<ObjectLabels, Counter>,
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

impl Metrics {
    /// Registers every family in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            missed_intervals: Family::default(),
            out_of_sync: Family::default(),
            sync_duration: Family::new_with_constructor(duration_histogram),
            bytes: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Family::default(),
            known: Arc::default(),
        };
        registry.register(
            "volsync_missed_intervals",
            "The number of times a synchronization missed its interval",
            metrics.missed_intervals.clone(),
        );
        registry.register(
            "volsync_volume_out_of_sync",
            "Set to 1 if the volume is not properly synchronized",
            metrics.out_of_sync.clone(),
        );
        registry.register(
            "volsync_sync_duration_seconds",
            "Duration of the synchronization interval in seconds",
            metrics.sync_duration.clone(),
        );
        registry.register(
            "ferrosync_bytes_transferred",
            "Bytes the movers sent, from their summaries",
            metrics.bytes.clone(),
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

    /// A completed iteration.
    pub fn observe_sync(&self, labels: &ObjectLabels, seconds: f64, bytes: u64) {
        self.track(labels);
        self.sync_duration.get_or_create(labels).observe(seconds);
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
            self.bytes.remove(labels);
            known.remove(labels);
        }
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encodes");
        out
    }

    #[test]
    fn reference_names_and_labels_are_kept_and_deleted_objects_forgotten() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let a = ObjectLabels::new("ns", "a", "source");
        let b = ObjectLabels::new("ns", "b", "destination");
        metrics.observe_pass(&a, true, true);
        metrics.observe_pass(&b, false, false);
        metrics.observe_sync(&b, 3.0, 1024);
        let text = render(&registry);
        assert!(
            text.contains(r#"volsync_missed_intervals_total{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"volsync_volume_out_of_sync{obj_name="a",obj_namespace="ns",role="source",method="rsync-tls"} 1"#));
        assert!(text.contains("volsync_sync_duration_seconds_count{obj_name=\"b\""));
        assert!(text.contains("ferrosync_bytes_transferred_total{obj_name=\"b\",obj_namespace=\"ns\",role=\"destination\",method=\"rsync-tls\"} 1024"));

        assert_eq!(metrics.forget(&HashSet::from([b.clone()])), 1);
        let text = render(&registry);
        assert!(!text.contains("obj_name=\"a\""), "{text}");
        assert!(text.contains("obj_name=\"b\""));
    }
}
