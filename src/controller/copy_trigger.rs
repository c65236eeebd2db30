//! The copy-trigger handshake on a source PVC, as VolSync has it, for copyMethod Clone
//! and Snapshot: with `volsync.backube/use-copy-trigger` on the PVC, each iteration waits
//! before making its point-in-time copy until the user sets `volsync.backube/copy-trigger`
//! to a value other than `volsync.backube/latest-copy-trigger`, so the application can be
//! quiesced; `volsync.backube/latest-copy-status` tells the user where it stands
//! (WaitingForTrigger, InProgress, Completed), and after 10 minutes of waiting the wait is
//! reported in `latestMoverStatus` and an Event, while it goes on waiting.
//!
//! [`gate`] and [`after_copy`] are pure; [`Handshake`] applies them to the PVC during a
//! pass, with the Events and the timeout report.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{api::core::v1::PersistentVolumeClaim, jiff::Timestamp};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{conditions::Reason, context::Context, error::Error, progress::Progress};
use crate::api::{MoverResult, MoverStatus, SyncStatus};

/// Set by the user: the PVC takes part in the handshake (unless "false" or "no").
pub const USE_COPY_TRIGGER: &str = "volsync.backube/use-copy-trigger";
/// Set by the user to a new value to let the copy be made.
pub const COPY_TRIGGER: &str = "volsync.backube/copy-trigger";
/// Set by the controller: the trigger value of the last completed copy.
pub const LATEST_COPY_TRIGGER: &str = "volsync.backube/latest-copy-trigger";
/// Set by the controller: WaitingForTrigger, InProgress or Completed.
pub const LATEST_COPY_STATUS: &str = "volsync.backube/latest-copy-status";
/// Set by the controller while waiting: since when (RFC 3339).
pub const WAITING_SINCE: &str = "volsync.backube/latest-copy-trigger-waiting-since";
/// ferrosync's own mark: the iteration whose copy the trigger released, so a pass of the
/// same iteration does not wait again.
pub const TRIGGERED_ITERATION: &str = "ferrosync.io/copy-trigger-iteration";
/// How long a wait lasts before it is reported (it goes on after that).
pub const TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// `latest-copy-status` values.
pub const WAITING: &str = "WaitingForTrigger";
/// See [`WAITING`].
pub const IN_PROGRESS: &str = "InProgress";
/// See [`WAITING`].
pub const COMPLETED: &str = "Completed";

/// Annotation changes: a value to set, or `None` to remove.
pub type Changes = BTreeMap<&'static str, Option<String>>;

/// What the handshake says about making the copy now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Make (or keep making) the copy; apply `changes` first.
    Proceed(Changes),
    /// Do not make it yet; apply `changes`. `overdue` is set once the wait has passed
    /// [`TIMEOUT`], with how long it has lasted.
    Wait {
        /// Annotation changes.
        changes: Changes,
        /// How long the wait has lasted, once past the timeout.
        overdue: Option<Duration>,
    },
}

/// Whether the PVC asks for copy triggers.
pub fn uses_copy_trigger(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(USE_COPY_TRIGGER)
        .is_some_and(|v| !v.eq_ignore_ascii_case("false") && !v.eq_ignore_ascii_case("no"))
}

/// The handshake before the copy of `iteration` is made, from the PVC's annotations.
pub fn gate(annotations: &BTreeMap<String, String>, iteration: &str, now: Timestamp) -> Gate {
    let get = |k: &str| {
        annotations
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    if !uses_copy_trigger(annotations) || get(TRIGGERED_ITERATION) == Some(iteration) {
        return Gate::Proceed(Changes::new());
    }
    // Whole seconds, RFC 3339, as VolSync writes it.
    let stamp = || {
        Some(
            Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string(),
        )
    };
    if get(LATEST_COPY_STATUS) != Some(WAITING) {
        return Gate::Wait {
            changes: Changes::from([
                (LATEST_COPY_STATUS, Some(WAITING.into())),
                (WAITING_SINCE, stamp()),
            ]),
            overdue: None,
        };
    }
    if let Some(trigger) = get(COPY_TRIGGER)
        && get(LATEST_COPY_TRIGGER) != Some(trigger)
    {
        return Gate::Proceed(Changes::from([
            (LATEST_COPY_STATUS, Some(IN_PROGRESS.into())),
            (WAITING_SINCE, None),
            (TRIGGERED_ITERATION, Some(iteration.into())),
        ]));
    }
    let since = get(WAITING_SINCE).and_then(|s| s.parse::<Timestamp>().ok());
    let Some(since) = since else {
        return Gate::Wait {
            changes: Changes::from([(WAITING_SINCE, stamp())]),
            overdue: None,
        };
    };
    let waited = now.duration_since(since).unsigned_abs();
    Gate::Wait {
        changes: Changes::new(),
        overdue: (waited > TIMEOUT).then_some(waited),
    }
}

/// The changes once the copy of `iteration` is made: Completed, and the trigger value
/// that released it as the latest one. Nothing for a PVC outside the handshake, or when
/// already recorded.
pub fn after_copy(annotations: &BTreeMap<String, String>, iteration: &str) -> Changes {
    let get = |k: &str| annotations.get(k).map(String::as_str);
    if !uses_copy_trigger(annotations)
        || get(TRIGGERED_ITERATION) != Some(iteration)
        || get(LATEST_COPY_STATUS) != Some(IN_PROGRESS)
    {
        return Changes::new();
    }
    Changes::from([
        (LATEST_COPY_STATUS, Some(COMPLETED.into())),
        (
            LATEST_COPY_TRIGGER,
            Some(get(COPY_TRIGGER).unwrap_or_default().to_string()),
        ),
    ])
}

/// Writes annotation changes to the PVC with a merge patch of its annotations only (the
/// PVC is the user's: nothing else of it is touched).
/// Returns the stored PVC (`None` when there was nothing to write).
pub async fn patch(
    api: &Api<PersistentVolumeClaim>,
    pvc: &str,
    changes: &Changes,
) -> Result<Option<PersistentVolumeClaim>, Error> {
    if changes.is_empty() {
        return Ok(None);
    }
    let annotations: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    Ok(Some(
        api.patch(
            pvc,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": annotations}})),
        )
        .await?,
    ))
}

/// One pass's part in the handshake on the source PVC `pvc`, for iteration `iteration`.
pub struct Handshake<'a> {
    /// The reconcile context (for Events).
    pub ctx: &'a Context,
    /// The ReplicationSource, which the Events are about.
    pub object: &'a k8s_openapi::api::core::v1::ObjectReference,
    /// The PVCs of the source's namespace.
    pub pvcs: &'a Api<PersistentVolumeClaim>,
    /// The source PVC's name.
    pub pvc: &'a str,
    /// Its annotations, kept in step with what this pass writes.
    pub annotations: BTreeMap<String, String>,
    /// The iteration's identity.
    pub iteration: &'a str,
}

impl Handshake<'_> {
    /// Before the copy: `Some(progress)` while the copy must wait for the user's trigger,
    /// `None` when it may be made. A wait past [`TIMEOUT`] is reported in
    /// `latestMoverStatus` and a Warning Event, and goes on.
    pub async fn before_copy(
        &mut self,
        now: Timestamp,
        sync: &mut SyncStatus,
    ) -> Result<Option<Progress>, Error> {
        let (changes, wait) = match gate(&self.annotations, self.iteration, now) {
            Gate::Proceed(changes) => (changes, None),
            Gate::Wait { changes, overdue } => (changes, Some(overdue)),
        };
        self.write(&changes).await?;
        let pvc = self.pvc;
        let Some(overdue) = wait else {
            if !changes.is_empty() {
                let trigger = self
                    .annotations
                    .get(COPY_TRIGGER)
                    .cloned()
                    .unwrap_or_default();
                let note = format!("copy-trigger {trigger:?} on PVC {pvc}: making the copy");
                self.ctx
                    .event(self.object, false, "CopyTriggered", note)
                    .await;
            }
            return Ok(None);
        };
        if changes.contains_key(LATEST_COPY_STATUS) {
            let note = format!(
                "waiting for annotation {COPY_TRIGGER} on PVC {pvc} to be set to a new value before copying it"
            );
            self.ctx
                .event(self.object, false, "WaitingForCopyTrigger", note)
                .await;
        }
        let mut message =
            format!("waiting for a new {COPY_TRIGGER} on PVC {pvc} before making its copy");
        if overdue.is_some() {
            // The same words on every pass, so the Event is not repeated each time.
            message = format!(
                "timed out after {} {message}; still waiting",
                humantime::format_duration(TIMEOUT)
            );
            self.ctx
                .event(self.object, true, "CopyTriggerTimeout", message.clone())
                .await;
            sync.latest_mover_status = Some(MoverStatus {
                result: Some(MoverResult::Failed.into()),
                logs: Some(message.clone()),
            });
        }
        Ok(Some(
            Progress::new(Reason::SyncInProgress, self.ctx.config.requeue.poll)
                .with_message(message),
        ))
    }

    /// After the copy is made: Completed, and the trigger that released it as the latest.
    pub async fn copy_made(&mut self) -> Result<(), Error> {
        let done = after_copy(&self.annotations, self.iteration);
        if done.is_empty() {
            return Ok(());
        }
        self.write(&done).await?;
        let note = format!(
            "the copy of PVC {} is made; the application may resume",
            self.pvc
        );
        self.ctx
            .event(self.object, false, "CopyCompleted", note)
            .await;
        Ok(())
    }

    async fn write(&mut self, changes: &Changes) -> Result<(), Error> {
        // The next pass reads the PVC from the cache: it must not see it before this write.
        if let Some(stored) = patch(self.pvcs, self.pvc, changes).await? {
            let meta = &stored.metadata;
            self.ctx.own_writes.remember(
                meta.uid.as_deref().unwrap_or_default(),
                meta.resource_version.as_deref(),
            );
        }
        for (k, v) in changes {
            match v {
                Some(v) => self.annotations.insert(k.to_string(), v.clone()),
                None => self.annotations.remove(*k),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid")
    }

    fn apply(a: &mut BTreeMap<String, String>, changes: &Changes) {
        for (k, v) in changes {
            match v {
                Some(v) => a.insert(k.to_string(), v.clone()),
                None => a.remove(*k),
            };
        }
    }

    #[test]
    fn without_the_annotation_nothing_waits() {
        assert_eq!(gate(&ann(&[]), "it1", at(0)), Gate::Proceed(Changes::new()));
        let off = ann(&[(USE_COPY_TRIGGER, "False")]);
        assert_eq!(gate(&off, "it1", at(0)), Gate::Proceed(Changes::new()));
        assert!(after_copy(&off, "it1").is_empty());
    }

    #[test]
    fn the_whole_handshake_over_two_iterations() {
        let mut a = ann(&[(USE_COPY_TRIGGER, "")]);
        // Iteration 1: wait, with a timestamp.
        let Gate::Wait { changes, overdue } = gate(&a, "it1", at(0)) else {
            panic!("waits")
        };
        assert_eq!(overdue, None);
        assert_eq!(changes[LATEST_COPY_STATUS].as_deref(), Some(WAITING));
        assert_eq!(changes[WAITING_SINCE], Some(at(0).to_string()));
        apply(&mut a, &changes);
        // Still waiting, nothing to write, not overdue yet.
        assert_eq!(
            gate(&a, "it1", at(60)),
            Gate::Wait {
                changes: Changes::new(),
                overdue: None
            }
        );
        // The user triggers: InProgress, the timestamp goes.
        a.insert(COPY_TRIGGER.into(), "trigger-1".into());
        let Gate::Proceed(changes) = gate(&a, "it1", at(70)) else {
            panic!("proceeds")
        };
        assert_eq!(changes[LATEST_COPY_STATUS].as_deref(), Some(IN_PROGRESS));
        assert_eq!(changes[WAITING_SINCE], None);
        apply(&mut a, &changes);
        assert!(!a.contains_key(WAITING_SINCE));
        // A later pass of the same iteration does not wait again.
        assert_eq!(gate(&a, "it1", at(80)), Gate::Proceed(Changes::new()));
        // The copy is made: Completed, latest = the trigger.
        let done = after_copy(&a, "it1");
        apply(&mut a, &done);
        assert_eq!(a[LATEST_COPY_STATUS], COMPLETED);
        assert_eq!(a[LATEST_COPY_TRIGGER], "trigger-1");
        assert!(after_copy(&a, "it1").is_empty(), "recorded once");
        // Iteration 2 waits again, and the old trigger value does not release it.
        let Gate::Wait { changes, .. } = gate(&a, "it2", at(100)) else {
            panic!("waits")
        };
        apply(&mut a, &changes);
        assert!(matches!(gate(&a, "it2", at(110)), Gate::Wait { .. }));
        a.insert(COPY_TRIGGER.into(), "trigger-2".into());
        assert!(matches!(gate(&a, "it2", at(120)), Gate::Proceed(_)));
    }

    #[test]
    fn a_wait_past_ten_minutes_is_overdue_and_goes_on() {
        let a = ann(&[
            (USE_COPY_TRIGGER, "true"),
            (LATEST_COPY_STATUS, WAITING),
            (WAITING_SINCE, &at(0).to_string()),
        ]);
        assert_eq!(
            gate(&a, "it", at(600)),
            Gate::Wait {
                changes: Changes::new(),
                overdue: None
            }
        );
        assert_eq!(
            gate(&a, "it", at(601)),
            Gate::Wait {
                changes: Changes::new(),
                overdue: Some(Duration::from_secs(601))
            }
        );
        // A missing or unreadable timestamp is restarted, not treated as overdue.
        let mut b = a.clone();
        b.insert(WAITING_SINCE.into(), "yesterday".into());
        let Gate::Wait { changes, overdue } = gate(&b, "it", at(5)) else {
            panic!("waits")
        };
        assert_eq!(
            (changes[WAITING_SINCE].clone(), overdue),
            (Some(at(5).to_string()), None)
        );
    }
}
