//! The recovery point of every object for Prometheus: its last completed sync and, when
//! its `ferrosync.io/recovery-point-objective` annotation is set, the objective, so that
//! an alert compares the two (deploy/monitoring). The destination's pair is the one
//! alerted on: its site is where a failover happens, and its lastSyncTime is the data a
//! failover would promote.
//!
//! An invalid annotation is a mistake in a monitoring setting, not in the replication:
//! it never stops syncs (unlike the `ferrosync.io/rsync-*` annotations, which shape the
//! mover). It gets the `RecoveryPointObjectiveInvalid` condition while it lasts and a
//! Warning Event naming the annotation, worded like theirs; no objective is exported then,
//! so no alert compares against a value nobody meant.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp,
};

use super::{
    conditions::{FlagChange, flag},
    context::Context,
};
use crate::{
    api::recovery_point::{self, ANNOTATION},
    telemetry::ObjectLabels,
};

/// The condition's type, present only while the annotation is invalid.
pub const CONDITION: &str = "RecoveryPointObjectiveInvalid";
/// Its reason.
pub const REASON: &str = "InvalidAnnotation";

/// What an object's annotations say: the objective to export, and the condition's
/// message when the annotation is invalid. Pure.
pub fn read(annotations: &BTreeMap<String, String>) -> (Option<Duration>, Option<String>) {
    match recovery_point::of(annotations) {
        None => (None, None),
        Some(Ok(objective)) => (Some(objective), None),
        Some(Err(why)) => (
            None,
            Some(format!(
                "annotation {ANNOTATION}: {why}; fix or remove the annotation. Syncs go on; \
                 no recovery point objective is exported for alerts until then"
            )),
        ),
    }
}

/// What one pass observes of an object.
pub struct Observed<'a> {
    pub object: &'a ObjectReference,
    pub labels: &'a ObjectLabels,
    pub annotations: &'a BTreeMap<String, String>,
    /// `status.lastSyncTime` after this pass.
    pub last_sync: Option<Timestamp>,
    pub generation: Option<i64>,
    pub now: Timestamp,
}

/// Exports the object's recovery point, updates the condition and announces a change.
pub async fn check(ctx: &Context, seen: Observed<'_>, conditions: &mut Option<Vec<Condition>>) {
    let (objective, invalid) = read(seen.annotations);
    ctx.metrics
        .observe_recovery_point(seen.labels, seen.last_sync, objective);
    match flag(
        conditions,
        CONDITION,
        REASON,
        invalid,
        seen.generation,
        seen.now,
    ) {
        FlagChange::None => {}
        FlagChange::Set(message) => {
            ctx.event_for(
                seen.object,
                true,
                CONDITION,
                "RecoveryPointObjective",
                message,
            )
            .await;
        }
        FlagChange::Cleared => {
            ctx.event_for(
                seen.object,
                false,
                "RecoveryPointObjectiveAccepted",
                "RecoveryPointObjective",
                format!("annotation {ANNOTATION} is valid or gone: the objective exported follows it again"),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(value: Option<&str>) -> BTreeMap<String, String> {
        value
            .map(|v| BTreeMap::from([(ANNOTATION.to_string(), v.to_string())]))
            .unwrap_or_default()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn a_valid_annotation_is_exported_and_an_invalid_one_explained() {
        assert_eq!(read(&annotations(None)), (None, None));
        assert_eq!(
            read(&annotations(Some("15m"))),
            (Some(Duration::from_secs(900)), None)
        );
        for bad in ["fifteen minutes", "0s", "9999d", &"1".repeat(200)] {
            let (objective, message) = read(&annotations(Some(bad)));
            assert_eq!(objective, None, "{bad:?}");
            let message = message.expect("a message");
            assert!(message.contains(ANNOTATION), "{message}");
            assert!(
                message.contains("fix or remove the annotation"),
                "{message}"
            );
            assert!(message.contains("Syncs go on"), "{message}");
        }
    }

    #[test]
    fn the_condition_lasts_as_long_as_the_annotation_is_invalid() {
        let mut conditions = None;
        let (_, message) = read(&annotations(Some("soon")));
        let change = flag(&mut conditions, CONDITION, REASON, message, Some(3), at(10));
        assert!(
            matches!(change, FlagChange::Set(ref m) if m.contains("\"soon\"")),
            "{change:?}"
        );
        let condition = &conditions.as_ref().expect("set")[0];
        assert_eq!(
            (condition.type_.as_str(), condition.status.as_str()),
            (CONDITION, "True")
        );
        assert_eq!(condition.reason, REASON);
        assert_eq!(condition.observed_generation, Some(3));
        // Fixed: the condition goes, leaving no empty list behind.
        let (objective, message) = read(&annotations(Some("1h")));
        assert_eq!(objective, Some(Duration::from_secs(3600)));
        assert_eq!(
            flag(&mut conditions, CONDITION, REASON, message, Some(4), at(20)),
            FlagChange::Cleared
        );
        assert_eq!(conditions, None);
    }
}
