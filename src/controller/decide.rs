//! The pipeline's decide step: pure functions of the spec (trigger, paused), the status
//! and `now`. It feeds the trigger machine the object's status, writes the new times back,
//! and turns its decision into the Synchronizing condition and a requeue.
//!
//! It must never do I/O or read the clock: the pass passes `now`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
    jiff::Timestamp,
};

pub use super::conditions::Reason;
use super::{
    conditions::{set_synchronizing, synchronizing},
    error::Error,
    mover_run::{JobMeta, JobState, MoverReport},
    progress::Progress,
    retry,
    trigger::{self, Action, Decision, Input, SyncTimes},
};
use crate::mover::summary::Progress as MoverProgress;
use crate::{
    api::{SyncProgress, SyncStatus, Trigger},
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
    // Not synchronizing because of spec.paused: say so in the reason, not only the
    // message, so `kubectl get` shows it.
    let reason = if decision.action == (Action::Paused { in_progress: false }) {
        Reason::Paused
    } else {
        decision.condition.reason
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

/// The one time conversion: the trigger machine's own (which handles times before 1970).
fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    trigger::from_k8s(&Time(t))
}

/// An Event the plan records on the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// A Warning (or a Normal) Event.
    pub warning: bool,
    /// Its reason.
    pub reason: &'static str,
    /// Its note.
    pub note: String,
}

impl PlannedEvent {
    fn normal(reason: &'static str, note: String) -> Self {
        Self {
            warning: false,
            reason,
            note,
        }
    }
    fn warning(reason: &'static str, note: String) -> Self {
        Self {
            warning: true,
            reason,
            note,
        }
    }
}

/// What the pipeline observed of this iteration's mover Job (`iteration::observe`).
#[derive(Clone, Debug, PartialEq)]
pub struct MoverSnapshot {
    /// The Job's name.
    pub job: String,
    /// Where the Job stands.
    pub state: JobState,
    /// Why its pods have not started, once the start timeout passed.
    pub start_problem: Option<String>,
    /// The mover's latest progress line, when it was read in this pass.
    pub progress: Option<MoverProgress>,
    /// What the Job would depend on now (generation and key version), read when a Job is
    /// to be created or a failed one judged.
    pub depends_on_now: Option<String>,
    /// Consecutive failed Jobs of this object so far.
    pub failures: u32,
}

/// The fixed rules of the mover decision, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct MoverRules {
    /// The backoff of permanent failures.
    pub backoff: retry::Backoff,
    /// `requeue.poll`: how soon a running mover is looked at again.
    pub poll: Duration,
    /// `requeue.idle`: the longest wait.
    pub idle: Duration,
    /// `requeue.error_min`: how soon a failed mover's retry is looked at.
    pub retry: Duration,
}

/// What to do with the mover Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobAct {
    /// Leave it.
    Keep,
    /// Create it, labelled with the failures before it and what it depends on.
    Create {
        /// Its [`retry::FAILURES`] label.
        failures_before: u32,
        /// Its [`retry::DEPENDS_ON`] annotation.
        depends_on: String,
    },
    /// Delete it (and, through garbage collection, its pods).
    Delete,
}

/// The mover part of a pass's plan.
#[derive(Clone, Debug, PartialEq)]
pub struct MoverPlan {
    /// The Job.
    pub job: JobAct,
    /// Events to record.
    pub events: Vec<PlannedEvent>,
    /// The new count of consecutive failures, when it changes.
    pub failures: Option<u32>,
    /// Where the iteration stands.
    pub outcome: Outcome,
}

/// What happened to the iteration in this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The mover Job is created now.
    Started,
    /// The mover is still running.
    Running,
    /// The mover completed: the data is in place. Publish it, then record the iteration.
    Succeeded(MoverReport),
    /// The mover failed after its retries; its Job goes and the trigger machine decided
    /// the retry.
    Failed(Decision),
    /// The mover needs a person: it failed permanently and its next Job waits for the
    /// backoff (or a change), or its pods cannot start. The pass reports this progress.
    Blocked(Progress),
}

/// Decides what to do with the mover from what was observed. Writes the progress, the
/// mover status and (on a failure) the retry's times into `sync`.
pub fn mover(
    seen: &MoverSnapshot,
    sync: &mut SyncStatus,
    pass: Pass<'_>,
    rules: MoverRules,
) -> Result<MoverPlan, Error> {
    let name = &seen.job;
    let keep = |outcome, events| MoverPlan {
        job: JobAct::Keep,
        events,
        failures: None,
        outcome,
    };
    Ok(match &seen.state {
        JobState::Absent => MoverPlan {
            job: JobAct::Create {
                failures_before: seen.failures,
                depends_on: seen.depends_on_now.clone().unwrap_or_default(),
            },
            events: vec![PlannedEvent::normal(
                "TransferStarted",
                format!("mover Job {name} started"),
            )],
            failures: None,
            outcome: Outcome::Started,
        },
        JobState::Running(_) => {
            if let Some(problem) = &seen.start_problem {
                let message = format!("mover Job {name}: {problem}");
                let events = once(sync, "MoverNotStarted", &message);
                return Ok(keep(
                    Outcome::Blocked(
                        Progress::new(Reason::Error, rules.poll).with_message(message),
                    ),
                    events,
                ));
            }
            if let Some(p) = &seen.progress {
                sync.progress = Some(SyncProgress {
                    bytes_transferred: count(p.bytes),
                    bytes_per_second: count(p.rate),
                    observed_at: Some(Time(pass.now)),
                });
            }
            keep(Outcome::Running, Vec::new())
        }
        JobState::Foreign => MoverPlan {
            job: JobAct::Delete,
            events: vec![PlannedEvent::normal(
                "ForeignJobReplaced",
                format!(
                    "Job {name} was not made by ferrosync (VolSync's, from before the takeover); deleted it to start ferrosync's mover"
                ),
            )],
            failures: None,
            outcome: Outcome::Running,
        },
        JobState::Succeeded(report) => keep(Outcome::Succeeded(report.clone()), Vec::new()),
        JobState::Failed(report, meta) => failed_mover(seen, report, meta, sync, pass, rules)?,
    })
}

fn failed_mover(
    seen: &MoverSnapshot,
    report: &MoverReport,
    meta: &JobMeta,
    sync: &mut SyncStatus,
    pass: Pass<'_>,
    rules: MoverRules,
) -> Result<MoverPlan, Error> {
    let name = &seen.job;
    let why = report
        .status
        .logs
        .clone()
        .unwrap_or_else(|| "no details from the mover".into());
    let kind = retry::Kind::of(report.summary.as_ref());
    let failure = retry::Failed {
        kind,
        at: meta.failed_at.unwrap_or(pass.now),
        failures_before: meta.failures_before,
        depended_on: meta.depended_on.clone(),
    };
    sync.progress = None;
    sync.latest_mover_status = Some(report.status.clone());
    let deps = seen.depends_on_now.as_deref().unwrap_or_default();
    Ok(
        match retry::decide(&failure, deps, rules.backoff, pass.now) {
            retry::Retry::At(at) => {
                let message = format!(
                    "mover Job {name} failed ({}): {}; the next attempt starts at {at}, or as soon as the spec or the key Secret changes",
                    kind_name(kind),
                    kind.advice()
                );
                let events = once(sync, "TransferFailed", &message)
                    .into_iter()
                    .map(|mut e| {
                        e.note = format!("{message}. The mover said: {why}");
                        e
                    })
                    .collect();
                let wait = at.duration_since(pass.now).unsigned_abs();
                let requeue = wait.min(rules.idle) + Duration::from_millis(100);
                MoverPlan {
                    job: JobAct::Keep,
                    events,
                    failures: None,
                    outcome: Outcome::Blocked(
                        Progress::new(Reason::Error, requeue).with_message(message),
                    ),
                }
            }
            retry::Retry::Now(because) => {
                let note = if report.auth_failure() {
                    format!(
                        "mover Job {name} failed: authentication failed (the keys of source and destination differ): {why}; retrying: {because}"
                    )
                } else {
                    format!("mover Job {name} failed after its retries: {why}; retrying: {because}")
                };
                MoverPlan {
                    job: JobAct::Delete,
                    events: vec![PlannedEvent::warning("TransferFailed", note)],
                    failures: Some(meta.failures_before.saturating_add(1)),
                    outcome: Outcome::Failed(failed(pass, sync)?),
                }
            }
        },
    )
}

/// A Warning Event, once per distinct message: the condition already showing it means it
/// was reported.
fn once(sync: &SyncStatus, reason: &'static str, message: &str) -> Vec<PlannedEvent> {
    let shown =
        synchronizing(sync.conditions.as_deref().unwrap_or_default()).map(|c| c.message.as_str());
    if shown == Some(message) {
        Vec::new()
    } else {
        vec![PlannedEvent::warning(reason, message.to_string())]
    }
}

fn kind_name(kind: retry::Kind) -> String {
    match kind {
        retry::Kind::Permanent(class) | retry::Kind::Transient(class) => {
            format!("{class:?}, exit {}", class.exit_code())
        }
        retry::Kind::Unknown => "no summary".into(),
    }
}

fn count(n: u64) -> Option<i64> {
    Some(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The pass's progress for a mover outcome other than a finished transfer (`Err`); a debug
/// mover never reaches publication (see `mover_pod` for its own progress).
pub fn mover_progress(outcome: Outcome, rules: MoverRules) -> Result<MoverReport, Progress> {
    Err(match outcome {
        Outcome::Started | Outcome::Running => Progress::new(Reason::SyncInProgress, rules.poll),
        Outcome::Blocked(progress) => progress,
        Outcome::Failed(_) => Progress::new(Reason::Error, rules.retry)
            .with_message("the mover failed; retrying (see latestMoverStatus)"),
        Outcome::Succeeded(mover) => return Ok(mover),
    })
}

/// Turns a pass's result into the Synchronizing condition (written into `conditions`),
/// the requeue and the Event to record. API errors go back to the caller for backoff,
/// except a 422 (an object the apiserver refuses), which cannot clear by retrying; other
/// errors become the Error (or Waiting) condition, with an Event when the message is new
/// (so a stuck object does not flood the cluster). `backoff` gives the object's next
/// transient-failure delay; it is asked only for a transient failure.
pub fn settle(
    result: Result<Progress, Error>,
    conditions: &mut Option<Vec<Condition>>,
    generation: Option<i64>,
    now: Timestamp,
    idle: Duration,
    backoff: impl FnOnce() -> Duration,
) -> Result<(Duration, Option<PlannedEvent>), Error> {
    let conditions = conditions.get_or_insert_with(Vec::new);
    let is_new = |message: &str| synchronizing(conditions).is_none_or(|c| c.message != message);
    let (progress, event) = match result {
        Ok(progress) => (progress, None),
        // The apiserver refused an object derived from this one: retrying the same request
        // cannot help, so say so at once rather than back off silently.
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 422 => {
            let message = format!(
                "the API server refused an object ferrosync derives from this one: {}",
                status.message
            );
            let event = is_new(&message).then(|| PlannedEvent::warning("Refused", message.clone()));
            (
                Progress::new(Reason::Error, idle).with_message(message),
                event,
            )
        }
        Err(Error::Kube(err)) => return Err(Error::Kube(err)),
        Err(err) => {
            let message = err.to_string();
            // A wait is news, not a fault: a Normal Event and the Waiting reason, so that
            // alerts on reason=Error fire only for what needs a person.
            let waiting = matches!(err, Error::NotReady(_));
            let event = is_new(&message).then(|| PlannedEvent {
                warning: !waiting,
                reason: err.reason(),
                note: message.clone(),
            });
            // Per object, doubling with jitter: a thousand objects waiting for the same
            // thing neither poll in step nor keep the apiserver busy.
            let requeue = if err.is_permanent() { idle } else { backoff() };
            let reason = match err {
                Error::NotReady(_) => Reason::Waiting,
                Error::Unsupported(_) => Reason::Unsupported,
                _ => Reason::Error,
            };
            (Progress::new(reason, requeue).with_message(message), event)
        }
    };
    set_synchronizing(
        conditions,
        progress.reason,
        progress.message,
        generation,
        now,
    );
    Ok((progress.requeue, event))
}

/// Whether a pass should leave the object alone: it is being deleted. Its Jobs, copies
/// and Services go with it (owner references); starting anything now would only race the
/// garbage collector and the finalizers that release its key.
pub fn leave_alone(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

#[cfg(test)]
mod fixtures;

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
