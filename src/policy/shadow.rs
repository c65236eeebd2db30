//! Shadow mode: a candidate plugin runs beside the active one for the same decisions,
//! and its answers are recorded, never acted on.
//!
//! A candidate gets no credentials and can write nothing: its HTTP grant is cut to
//! reading (GET and HEAD) without the injected credential, and its psk answer is reduced
//! to its kind before anything else sees it, so a key it returns is dropped unstored.

use serde::{Deserialize, Serialize};

use super::{config::PointConfig, types::DecisionPoint};

/// Candidate plugins for some decision points (`[policy.shadow]`, or a binding's
/// `shadow`). Each is configured like the active point: bundle, pin, ceiling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<PointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<PointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<PointConfig>,
}

impl ShadowConfig {
    /// Whether no candidate is configured.
    pub fn is_empty(&self) -> bool {
        self.copy_method.is_none() && self.service_type.is_none() && self.psk.is_none()
    }

    /// The candidate of `point`.
    pub fn point(&self, point: DecisionPoint) -> Option<&PointConfig> {
        match point {
            DecisionPoint::CopyMethod => self.copy_method.as_ref(),
            DecisionPoint::ServiceType => self.service_type.as_ref(),
            DecisionPoint::Psk => self.psk.as_ref(),
        }
    }
}

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
    time::SystemTime,
};

use super::types::{
    CopyMethodDecision, CopyMethodInput, PskAnswer, PskDecision, PskInput, ServiceTypeDecision,
    ServiceTypeInput,
};

/// Entries the shadow log keeps (the oldest go first).
pub const LOG_CAPACITY: usize = 256;
/// Objects remembered as having differed already (an Event each, once); past this the
/// memory is cleared and objects may be announced again.
pub const FIRST_DIFFERENCE_CAPACITY: usize = 4096;

/// What a decision comes down to when comparing a candidate with the active plugin: the
/// decided values, never the reason, and never key material.
pub trait Comparable {
    fn compared(&self) -> String;
}

impl Comparable for CopyMethodDecision {
    fn compared(&self) -> String {
        let mut s = format!("{:?}", self.method);
        if let Some(c) = &self.volume_snapshot_class {
            s.push_str(&format!(" volumeSnapshotClass={c}"));
        }
        if let Some(c) = &self.storage_class {
            s.push_str(&format!(" storageClass={c}"));
        }
        s
    }
}

impl Comparable for ServiceTypeDecision {
    fn compared(&self) -> String {
        let mut s = format!("{:?}", self.service_type);
        for (k, v) in &self.annotations {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }
}

impl Comparable for PskDecision {
    fn compared(&self) -> String {
        match self.answer {
            PskAnswer::UseKey(_) => "UseKey",
            PskAnswer::GenerateLocally => "GenerateLocally",
            PskAnswer::NotAvailableYet => "NotAvailableYet",
        }
        .into()
    }
}

/// The object a decision is for, to announce its first difference once.
pub trait ObjectOf {
    fn object(&self) -> (String, String);
}

impl ObjectOf for CopyMethodInput {
    fn object(&self) -> (String, String) {
        (self.pvc.namespace.clone(), self.pvc.name.clone())
    }
}

impl ObjectOf for ServiceTypeInput {
    fn object(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}

impl ObjectOf for PskInput {
    fn object(&self) -> (String, String) {
        let side = match self.side {
            super::types::Side::Source => "source",
            super::types::Side::Destination => "destination",
        };
        (self.namespace.clone(), format!("{}/{side}", self.name))
    }
}

/// How a candidate's answer compared with the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShadowOutcome {
    /// The same decided values.
    Agree,
    /// Different values.
    Differ,
    /// The candidate failed (it would have fallen back or failed the reconcile).
    Failed,
}

impl ShadowOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::Agree => "agree",
            ShadowOutcome::Differ => "differ",
            ShadowOutcome::Failed => "failed",
        }
    }
}

/// A candidate's answer next to the active one, attached to the active decision's
/// provenance (so the controller can announce a first difference).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowComparison {
    /// The candidate plugin's name.
    pub plugin: String,
    pub outcome: ShadowOutcome,
    /// The active decision's compared values.
    pub active: String,
    /// The candidate's, or its failure.
    pub candidate: String,
    /// Whether this is the first difference recorded for the object (announce it).
    pub first_difference: bool,
}

impl ShadowComparison {
    /// The message of the Event announcing a first difference.
    pub fn message(&self, binding: &str) -> String {
        format!(
            "shadow plugin {} (binding {binding}) would decide {:?} where the active plugin decided {:?}; nothing was changed",
            self.plugin, self.candidate, self.active
        )
    }
}

/// One entry of the shadow log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRecord {
    #[serde(with = "humantime_serde")]
    pub at: SystemTime,
    pub binding: String,
    pub point: DecisionPoint,
    pub namespace: String,
    pub name: String,
    #[serde(flatten)]
    pub comparison: ShadowComparison,
}

/// The bounded log of candidates' answers that differed or failed, and which objects
/// have been announced.
#[derive(Default)]
pub struct ShadowLog {
    entries: Mutex<VecDeque<ShadowRecord>>,
    announced: Mutex<HashSet<(DecisionPoint, String, String)>>,
}

impl ShadowLog {
    /// Records a comparison; returns whether it is the object's first difference at
    /// this point. Agreements are counted (by the caller), not logged.
    pub fn record(&self, record: ShadowRecord) -> bool {
        if record.comparison.outcome == ShadowOutcome::Agree {
            return false;
        }
        let first = record.comparison.outcome == ShadowOutcome::Differ && {
            let mut seen = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= FIRST_DIFFERENCE_CAPACITY {
                seen.clear();
            }
            seen.insert((record.point, record.namespace.clone(), record.name.clone()))
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= LOG_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(record);
        first
    }

    /// The log, oldest first.
    pub fn entries(&self) -> Vec<ShadowRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Compares a candidate's answer (or failure) with the active decision.
pub fn compare<D: Comparable>(
    active: &D,
    candidate: Result<&D, String>,
) -> (ShadowOutcome, String) {
    match candidate {
        Ok(c) if c.compared() == active.compared() => (ShadowOutcome::Agree, c.compared()),
        Ok(c) => (ShadowOutcome::Differ, c.compared()),
        Err(why) => (ShadowOutcome::Failed, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CopyMethod;

    fn record(name: &str, outcome: ShadowOutcome) -> ShadowRecord {
        ShadowRecord {
            at: SystemTime::UNIX_EPOCH,
            binding: "b".into(),
            point: DecisionPoint::CopyMethod,
            namespace: "ns".into(),
            name: name.into(),
            comparison: ShadowComparison {
                plugin: "p".into(),
                outcome,
                active: "a".into(),
                candidate: "c".into(),
                first_difference: false,
            },
        }
    }

    #[test]
    fn first_difference_once_per_object_and_log_bounded() {
        let log = ShadowLog::default();
        assert!(!log.record(record("x", ShadowOutcome::Agree)));
        assert!(log.record(record("x", ShadowOutcome::Differ)));
        assert!(!log.record(record("x", ShadowOutcome::Differ)));
        assert!(log.record(record("y", ShadowOutcome::Differ)));
        assert!(!log.record(record("z", ShadowOutcome::Failed)));
        assert_eq!(log.entries().len(), 4);
        for i in 0..LOG_CAPACITY * 2 {
            log.record(record(&format!("o{i}"), ShadowOutcome::Differ));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), LOG_CAPACITY);
        assert_eq!(
            entries.last().unwrap().name,
            format!("o{}", LOG_CAPACITY * 2 - 1)
        );
    }

    #[test]
    fn comparison_ignores_reasons_and_keys() {
        let d = |m, r: &str| CopyMethodDecision {
            method: m,
            volume_snapshot_class: None,
            storage_class: None,
            reason: r.into(),
        };
        let a = d(CopyMethod::Clone, "one");
        assert_eq!(
            compare(&a, Ok(&d(CopyMethod::Clone, "two"))).0,
            ShadowOutcome::Agree
        );
        assert_eq!(
            compare(&a, Ok(&d(CopyMethod::Snapshot, "one"))).0,
            ShadowOutcome::Differ
        );
        assert_eq!(compare(&a, Err("boom".into())).0, ShadowOutcome::Failed);
        let key = crate::api::psk::Psk::new("id", &"ab".repeat(16)).unwrap();
        let k = PskDecision {
            answer: PskAnswer::UseKey(key),
            reason: String::new(),
        };
        assert_eq!(k.compared(), "UseKey");
    }
}
