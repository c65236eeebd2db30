//! The bridge between the pure trigger machine and a reconcile pass: it feeds the machine
//! the object's status, writes the new times back, and turns the decision into the
//! Synchronizing condition and a requeue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    conditions::Reason,
    error::Error,
    progress::Progress,
    trigger::{self, Action, Decision, Input, SyncTimes},
};
use crate::{
    api::{SyncStatus, Trigger},
    config::RequeueConfig,
};

/// What the trigger machine needs to know about a pass.
#[derive(Clone, Copy, Debug)]
pub struct Pass<'a> {
    /// `spec.trigger`.
    pub trigger: Option<&'a Trigger>,
    /// `spec.paused`.
    pub paused: bool,
    /// The time of this pass.
    pub now: Timestamp,
}

/// Whether an iteration is under way: it started and has not succeeded (a success clears
/// `lastSyncStartTime`; a failure keeps it, so its retry is known as one).
pub fn in_progress(sync: &SyncStatus) -> bool {
    sync.last_sync_start_time.is_some()
}

/// The identity of the current iteration, stamped on its temporary objects.
pub fn iteration_id(sync: &SyncStatus) -> String {
    sync.last_sync_start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// Decides this pass and writes the machine's times into `sync`.
pub fn decide(pass: Pass<'_>, sync: &mut SyncStatus) -> Result<Decision, Error> {
    run(pass, sync, trigger::decide)
}

/// Records a successful iteration and decides what follows.
pub fn succeeded(pass: Pass<'_>, sync: &mut SyncStatus) -> Result<Decision, Error> {
    run(pass, sync, trigger::iteration_succeeded)
}

/// Records a failed attempt and decides the retry.
pub fn failed(pass: Pass<'_>, sync: &mut SyncStatus) -> Result<Decision, Error> {
    run(pass, sync, trigger::iteration_failed)
}

fn run(
    pass: Pass<'_>,
    sync: &mut SyncStatus,
    machine: impl Fn(&Input<'_>) -> Decision,
) -> Result<Decision, Error> {
    let times = SyncTimes::from_status(sync);
    let decision = machine(&Input {
        trigger: pass.trigger,
        paused: pass.paused,
        status: &times,
        in_progress: in_progress(sync),
        now: to_chrono(pass.now),
    });
    decision
        .status
        .write_to(sync)
        .map_err(|e| Error::Invalid(format!("status times: {e}")))?;
    whole_seconds(sync);
    Ok(decision)
}

/// Status times hold whole seconds. Truncate now, so a pass and the next (which reads
/// them back) agree on an iteration's identity, and keep a new start strictly after the
/// last completion, so two quick iterations never share one.
fn whole_seconds(sync: &mut SyncStatus) {
    let trunc = |t: &mut Option<Time>| {
        if let Some(Time(ts)) = t {
            *ts = Timestamp::from_second(ts.as_second()).unwrap_or(*ts);
        }
    };
    trunc(&mut sync.last_sync_time);
    trunc(&mut sync.last_sync_start_time);
    trunc(&mut sync.next_sync_time);
    if let (Some(Time(start)), Some(Time(done))) =
        (&mut sync.last_sync_start_time, &sync.last_sync_time)
        && *start <= *done
    {
        *start = *done + k8s_openapi::jiff::SignedDuration::from_secs(1);
    }
}

/// Whether the decision runs (or keeps running) a mover in this pass.
pub fn runs_mover(decision: &Decision) -> bool {
    matches!(decision.action, Action::Start | Action::Continue)
}

/// The condition and requeue for a decision that does not run a mover now.
pub fn idle_progress(decision: &Decision, requeue: &RequeueConfig, now: Timestamp) -> Progress {
    let reason = match decision.condition.reason {
        // Not synchronizing because of spec.paused: say so in the reason, not only the
        // message, so `kubectl get` shows it.
        _ if decision.action == (Action::Paused { in_progress: false }) => Reason::Paused,
        trigger::Reason::SyncInProgress => Reason::SyncInProgress,
        trigger::Reason::WaitingForSchedule => Reason::WaitingForSchedule,
        trigger::Reason::WaitingForManual => Reason::WaitingForManual,
        trigger::Reason::Error => Reason::Error,
    };
    let after = match decision.action {
        Action::Start | Action::Continue => Duration::from_millis(10),
        Action::WaitUntil(at) => {
            (at - to_chrono(now)).to_std().unwrap_or_default() + Duration::from_millis(100)
        }
        Action::WaitForManual | Action::Paused { .. } | Action::WaitForSpecChange => requeue.idle,
    };
    Progress::new(reason, after).with_message(decision.condition.message.clone())
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: i32) -> Timestamp {
        Timestamp::new(secs, nanos).expect("valid")
    }

    fn pass(now: Timestamp) -> Pass<'static> {
        Pass {
            trigger: None,
            paused: false,
            now,
        }
    }

    #[test]
    fn quick_iterations_never_share_an_identity() {
        let mut sync = SyncStatus::default();
        let first = decide(pass(at(100, 100_000_000)), &mut sync).expect("decides");
        assert_eq!(first.action, Action::Start);
        let id1 = iteration_id(&sync);
        // Round trip through the API: whole seconds.
        let mut sync: SyncStatus =
            serde_json::from_value(serde_json::to_value(&sync).expect("ser")).expect("de");
        assert_eq!(
            iteration_id(&sync),
            id1,
            "identity survives the status round trip"
        );
        assert_eq!(
            decide(pass(at(100, 300_000_000)), &mut sync)
                .expect("decides")
                .action,
            Action::Continue
        );
        // Success and the next start in the same second.
        let next = succeeded(pass(at(100, 600_000_000)), &mut sync).expect("decides");
        assert_eq!(
            next.action,
            Action::Start,
            "continuous mode starts again at once"
        );
        assert!(in_progress(&sync));
        assert_ne!(iteration_id(&sync), id1);
        assert!(
            sync.last_sync_start_time.as_ref().map(|t| t.0)
                > sync.last_sync_time.as_ref().map(|t| t.0)
        );
    }

    #[test]
    fn a_paused_object_shows_the_paused_reason() {
        let trigger = Trigger {
            schedule: None,
            manual: Some("once".into()),
        };
        let mut sync = SyncStatus::default();
        let p = Pass {
            trigger: Some(&trigger),
            paused: true,
            now: at(0, 0),
        };
        let d = decide(p, &mut sync).expect("decides");
        assert_eq!(d.action, Action::Paused { in_progress: false });
        let defaults = crate::config::Config::load(None).expect("defaults").requeue;
        let progress = idle_progress(&d, &defaults, at(0, 0));
        assert_eq!(progress.reason, Reason::Paused);
        assert!(
            progress
                .message
                .as_deref()
                .is_some_and(|m| m.contains("paused"))
        );
    }

    #[test]
    fn waiting_for_a_schedule_requeues_at_the_next_time() {
        let trigger = Trigger {
            schedule: Some("*/5 * * * *".into()),
            manual: None,
        };
        let p = |now| Pass {
            trigger: Some(&trigger),
            paused: false,
            now,
        };
        let mut sync = SyncStatus::default();
        decide(p(at(0, 0)), &mut sync).expect("first sync");
        let done = succeeded(p(at(10, 0)), &mut sync).expect("done");
        assert!(matches!(done.action, Action::WaitUntil(_)));
        let progress = idle_progress(
            &done,
            &crate::config::Config::load(None).expect("defaults").requeue,
            at(10, 0),
        );
        assert_eq!(progress.reason, Reason::WaitingForSchedule);
        assert_eq!(
            progress.requeue,
            Duration::from_secs(290) + Duration::from_millis(100)
        );
    }
}
