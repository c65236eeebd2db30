//! The trigger state machine shared by ReplicationSource and ReplicationDestination: from
//! the trigger spec, `paused`, the sync status, whether an iteration runs and `now`, it
//! decides whether to start, keep, wait or stay paused, and returns the new status, the
//! Synchronizing condition and the missed-interval facts for metrics.
//!
//! It is pure: it must never do I/O, read the clock or touch Kubernetes objects beyond the
//! status conversions in `convert`. Callers pass `now`, so tests inject any instant.
//!
//! The semantics are the reference's: a new object syncs once at once; `manual` wins over
//! `schedule` and runs one iteration per new value; no trigger means continuous; `paused`
//! starts nothing. `nextSyncTime` is recomputed from `lastSyncTime` on every pass, so an
//! edited schedule takes effect at once instead of after the old next time.

use chrono::{DateTime, Utc};

use super::schedule::Schedule;
use crate::api::Trigger;

mod convert;

pub use convert::{format_duration, from_k8s, to_k8s};

/// Failures of this module. Their text is what the Error condition shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The schedule is valid but has no fire time after the last sync (past year 2100).
    #[error("schedule {schedule:?} never fires after {after}")]
    NoNextTime {
        schedule: String,
        after: DateTime<Utc>,
    },
    /// A time outside what Kubernetes can store (years 1-9999).
    #[error("time {0} is outside the range Kubernetes can store")]
    TimeOutOfRange(DateTime<Utc>),
}

/// The trigger-related status fields, as plain values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncTimes {
    /// When the last successful iteration finished.
    pub last_sync_time: Option<DateTime<Utc>>,
    /// When the running (or last failed) iteration started; cleared on success, as the
    /// reference does, so it is set exactly while an iteration is owed a success.
    pub last_sync_start_time: Option<DateTime<Utc>>,
    /// Go `metav1.Duration` text of the last successful iteration, e.g. `1m5.2s`.
    pub last_sync_duration: Option<String>,
    /// When the schedule next fires; `None` for manual and continuous triggers.
    pub next_sync_time: Option<DateTime<Utc>>,
    /// The `trigger.manual` value the last successful iteration satisfied.
    pub last_manual_sync: Option<String>,
}

/// Everything one decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub trigger: Option<&'a Trigger>,
    pub paused: bool,
    pub status: &'a SyncTimes,
    /// An iteration has started and not yet ended: `lastSyncStartTime` is set (the one
    /// definition, `decide::in_progress`).
    pub in_progress: bool,
    pub now: DateTime<Utc>,
}

/// What the reconciler does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a new iteration (or retry a failed one) now; the new status carries its start.
    Start,
    /// An iteration is running: keep driving it.
    Continue,
    /// Nothing to do until this time; requeue then.
    WaitUntil(DateTime<Utc>),
    /// Nothing to do until `trigger.manual` changes; no requeue needed.
    WaitForManual,
    /// `paused`: start nothing. A running iteration keeps its objects but runs no mover
    /// (the reference scales its Job to parallelism 0) until unpaused.
    Paused { in_progress: bool },
    /// The schedule is invalid: nothing until the spec changes.
    WaitForSpecChange,
}

impl Action {
    /// How long to wait before reconciling again, for `WaitUntil`; never negative.
    pub fn requeue_after(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        match self {
            Self::WaitUntil(at) => Some((*at - now).to_std().unwrap_or_default()),
            _ => None,
        }
    }
}

/// The reason of the `Synchronizing` condition: the one reason type of the controller
/// (the machine itself uses SyncInProgress, WaitingForSchedule, WaitingForManual, Error).
pub use super::conditions::Reason;

/// The `Synchronizing` condition to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub reason: Reason,
    pub message: String,
}

impl Condition {
    /// The condition's status: True only while synchronizing.
    pub fn is_true(&self) -> bool {
        self.reason == Reason::SyncInProgress
    }

    fn new(reason: Reason, paused: bool) -> Self {
        let message = match (reason, paused) {
            (Reason::SyncInProgress, false) => "Synchronization in-progress",
            (Reason::SyncInProgress, true) => {
                "Synchronization in-progress, paused: no mover runs until spec.paused is false"
            }
            (Reason::WaitingForManual, false) => "Waiting for manual trigger",
            (_, true) => "Paused: no synchronization starts until spec.paused is false",
            (_, false) => "Waiting for next scheduled synchronization",
        };
        Self {
            reason,
            message: message.to_owned(),
        }
    }
}

/// The outcome of one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// The full new value of the trigger status fields.
    pub status: SyncTimes,
    pub condition: Condition,
    /// For `volsync_volume_out_of_sync`: on a schedule, the last success is more than one
    /// period late (`next(next(lastSyncTime)) < now`). Recomputed every pass, so it clears
    /// after the next success (the reference's alert could stay stuck).
    pub out_of_sync: bool,
    /// For `volsync_missed_intervals_total`: add one. Set only on the `Start` of a new
    /// iteration that begins late, so retries and repeated passes do not count again.
    pub missed_interval: bool,
}

/// How the trigger spec asks for iterations.
enum Mode<'a> {
    Manual(&'a str),
    Scheduled(&'a str),
    Continuous,
}

impl<'a> Mode<'a> {
    fn of(trigger: Option<&'a Trigger>) -> Self {
        let manual = trigger
            .and_then(|t| t.manual.as_deref())
            .filter(|m| !m.is_empty());
        match (manual, trigger.and_then(|t| t.schedule.as_deref())) {
            (Some(manual), _) => Self::Manual(manual),
            (None, Some(schedule)) => Self::Scheduled(schedule),
            (None, None) => Self::Continuous,
        }
    }
}

/// Decides one reconcile pass.
pub fn decide(input: &Input<'_>) -> Decision {
    let Input {
        paused,
        in_progress,
        now,
        ..
    } = *input;
    let mut status = input.status.clone();
    let last = status.last_sync_time;
    // `due`: the trigger asks for an iteration now. A new object is always due.
    let mut due = last.is_none();
    let mut error = None;
    let mut late = false;
    let idle_reason = match Mode::of(input.trigger) {
        Mode::Manual(manual) => {
            status.next_sync_time = None;
            due |= status.last_manual_sync.as_deref() != Some(manual);
            Reason::WaitingForManual
        }
        Mode::Continuous => {
            status.next_sync_time = None;
            due = true;
            Reason::WaitingForSchedule
        }
        Mode::Scheduled(expr) => {
            status.next_sync_time = None;
            match (Schedule::parse(expr), last) {
                (Err(err), _) => error = Some(err.to_string()),
                // The first sync runs at once; its success sets the first next time.
                (Ok(_), None) => {}
                (Ok(schedule), Some(last)) => match schedule.next_after(last) {
                    Some(next) => {
                        status.next_sync_time = Some(next);
                        due = now >= next;
                        late = schedule.next_after(next).is_some_and(|after| after < now);
                    }
                    None => {
                        error = Some(
                            Error::NoNextTime {
                                schedule: expr.to_owned(),
                                after: last,
                            }
                            .to_string(),
                        );
                    }
                },
            }
            Reason::WaitingForSchedule
        }
    };
    let decision = |status, action, condition| Decision {
        action,
        status,
        condition,
        out_of_sync: late,
        missed_interval: false,
    };
    if in_progress {
        // A running iteration finishes even if the schedule broke meanwhile: its data is
        // good, and the success pass reports the error.
        let action = if paused {
            Action::Paused { in_progress }
        } else {
            Action::Continue
        };
        return decision(
            status,
            action,
            Condition::new(Reason::SyncInProgress, paused),
        );
    }
    if let Some(message) = error {
        let action = if paused {
            Action::Paused { in_progress }
        } else {
            Action::WaitForSpecChange
        };
        return decision(
            status,
            action,
            Condition {
                reason: Reason::Error,
                message,
            },
        );
    }
    if paused {
        return decision(
            status,
            Action::Paused { in_progress },
            Condition::new(idle_reason, true),
        );
    }
    if due {
        // A start time left by a failed attempt means this start is a retry, not a new
        // interval, so it must not count as another missed one.
        let retry = status.last_sync_start_time.is_some();
        status.last_sync_start_time = Some(now);
        let mut d = decision(
            status,
            Action::Start,
            Condition::new(Reason::SyncInProgress, false),
        );
        d.missed_interval = late && !retry;
        return d;
    }
    match status.next_sync_time {
        Some(next) if idle_reason == Reason::WaitingForSchedule => decision(
            status,
            Action::WaitUntil(next),
            Condition::new(idle_reason, false),
        ),
        _ => decision(
            status,
            Action::WaitForManual,
            Condition::new(Reason::WaitingForManual, false),
        ),
    }
}

/// Ends an iteration successfully: sets lastSyncTime, lastSyncDuration, lastManualSync and
/// the next time, then decides what follows (with no trigger: the next iteration at once).
pub fn iteration_succeeded(input: &Input<'_>) -> Decision {
    let mut status = input.status.clone();
    status.last_sync_time = Some(input.now);
    if let Some(start) = status.last_sync_start_time.take() {
        status.last_sync_duration = Some(format_duration(input.now - start));
    }
    if let Mode::Manual(manual) = Mode::of(input.trigger) {
        status.last_manual_sync = Some(manual.to_owned());
    }
    decide(&Input {
        status: &status,
        in_progress: false,
        ..*input
    })
}

/// Ends an iteration that failed: lastSyncTime and nextSyncTime stay, so the trigger is
/// still satisfied and the decision retries (`Start`) after the reconciler's backoff.
pub fn iteration_failed(input: &Input<'_>) -> Decision {
    decide(&Input {
        in_progress: false,
        ..*input
    })
}

#[cfg(test)]
mod tests;
