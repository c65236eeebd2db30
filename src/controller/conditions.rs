//! The `Synchronizing` condition, in `metav1.Condition` style, and time conversions.
//!
//! Pure: the caller passes `now` and the object's generation.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The only condition type, as in the reference.
pub const SYNCHRONIZING: &str = "Synchronizing";

/// Why the object is (not) synchronizing: the reasons of REFERENCE.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An iteration is running.
    SyncInProgress,
    /// Waiting for the next scheduled time.
    WaitingForSchedule,
    /// Waiting for a new `trigger.manual` value.
    WaitingForManual,
    /// Paused by `spec.paused` (ferrosync's own reason; the reference shows none).
    Paused,
    /// Waiting for something that is expected to appear by itself: a PVC, a key another
    /// cluster has not stored yet (ferrosync's own reason, so alerts on Error stay quiet).
    Waiting,
    /// Temporary objects are being removed.
    CleaningUp,
    /// Something is wrong; the message says what.
    Error,
    /// The spec is valid for VolSync but asks for what ferrosync does not implement
    /// (ferrosync's own reason); the message says what to change.
    Unsupported,
}

impl Reason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SyncInProgress => "SyncInProgress",
            Reason::WaitingForSchedule => "WaitingForSchedule",
            Reason::WaitingForManual => "WaitingForManual",
            Reason::Paused => "Paused",
            Reason::Waiting => "Waiting",
            Reason::CleaningUp => "CleaningUp",
            Reason::Error => "Error",
            Reason::Unsupported => "Unsupported",
        }
    }

    /// The reference's default message for the reason.
    pub fn default_message(self) -> &'static str {
        match self {
            Reason::SyncInProgress => "Synchronization in-progress",
            Reason::WaitingForSchedule => "Waiting for next scheduled synchronization",
            Reason::WaitingForManual => "Waiting for manual trigger",
            Reason::Paused => "Paused: spec.paused is true",
            Reason::Waiting => "Waiting",
            Reason::CleaningUp => "Cleaning up",
            Reason::Error => "Error",
            Reason::Unsupported => "Not supported by ferrosync",
        }
    }
}

/// Sets the Synchronizing condition, keeping `lastTransitionTime` when the status did not
/// change, so that `kubectl describe` shows how long the object has been in its state.
pub fn set_synchronizing(
    conditions: &mut Vec<Condition>,
    reason: Reason,
    message: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if reason == Reason::SyncInProgress {
        "True"
    } else {
        "False"
    };
    let message = message.unwrap_or_else(|| reason.default_message().to_string());
    let previous = conditions.iter().position(|c| c.type_ == SYNCHRONIZING);
    let transition = match previous.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: SYNCHRONIZING.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// The current Synchronizing condition, if any.
pub fn synchronizing(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == SYNCHRONIZING)
}

/// What [`flag`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChange {
    None,
    /// The condition appeared, or its message changed.
    Set(String),
    /// The condition is gone.
    Cleared,
}

/// A condition of ferrosync's own beside `Synchronizing`, present (status True) only while
/// something is wrong: set with `message`, or removed when it is `None`. `kubectl describe`
/// lists it; tools that know only `Synchronizing` ignore it. `lastTransitionTime` moves
/// only when the condition appears, and an object without conditions keeps none.
pub fn flag(
    conditions: &mut Option<Vec<Condition>>,
    type_: &str,
    reason: &str,
    message: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> FlagChange {
    let at = conditions
        .as_ref()
        .and_then(|list| list.iter().position(|c| c.type_ == type_));
    match (message, at) {
        (None, None) => FlagChange::None,
        (None, Some(i)) => {
            let emptied = conditions.as_mut().is_some_and(|list| {
                list.remove(i);
                list.is_empty()
            });
            if emptied {
                *conditions = None;
            }
            FlagChange::Cleared
        }
        (Some(message), _) => {
            let list = conditions.get_or_insert_with(Vec::new);
            let old = at.map(|i| &list[i]);
            let change = if old.is_some_and(|c| c.message == message && c.reason == reason) {
                FlagChange::None
            } else {
                FlagChange::Set(message.clone())
            };
            let condition = Condition {
                type_: type_.into(),
                status: "True".into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: old.map_or(Time(now), |c| c.last_transition_time.clone()),
            };
            match at {
                Some(i) => list[i] = condition,
                None => list.push(condition),
            }
            change
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        set_synchronizing(
            &mut conds,
            Reason::WaitingForSchedule,
            None,
            Some(1),
            at(100),
        );
        set_synchronizing(&mut conds, Reason::WaitingForManual, None, Some(2), at(200));
        assert_eq!(conds.len(), 1);
        assert_eq!(
            conds[0].last_transition_time,
            Time(at(100)),
            "False → False keeps the time"
        );
        assert_eq!(conds[0].observed_generation, Some(2));
        set_synchronizing(&mut conds, Reason::SyncInProgress, None, Some(2), at(300));
        assert_eq!(
            (
                conds[0].status.as_str(),
                conds[0].last_transition_time.clone()
            ),
            ("True", Time(at(300)))
        );
        assert_eq!(conds[0].message, "Synchronization in-progress");
    }
}
