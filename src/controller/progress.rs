//! Turning a pass's result into the Synchronizing condition, an Event and a requeue.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp,
};

use super::{
    conditions::{Reason, set_synchronizing, synchronizing},
    context::Context,
    error::Error,
};

/// Where a pass left the object.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The condition reason.
    pub reason: Reason,
    /// The condition message, when the reason's default does not say enough.
    pub message: Option<String>,
    /// When to look again.
    pub requeue: Duration,
}

impl Progress {
    /// Progress with the reason's default message.
    pub fn new(reason: Reason, requeue: Duration) -> Self {
        Self {
            reason,
            message: None,
            requeue,
        }
    }

    /// The same, with a specific message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// Records the pass in `conditions` and returns when to requeue. API errors go back to
/// the caller for backoff, except a 422 (an object the apiserver refuses), which cannot
/// clear by retrying; other errors become the Error (or Waiting) condition, with an Event
/// when the message is new (so a stuck object does not flood the cluster).
pub async fn settle(
    ctx: &Context,
    object: &ObjectReference,
    conditions: &mut Option<Vec<Condition>>,
    result: Result<Progress, Error>,
    generation: Option<i64>,
    now: Timestamp,
) -> Result<Duration, Error> {
    let conditions = conditions.get_or_insert_with(Vec::new);
    let key = format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name.as_deref().unwrap_or_default()
    );
    let progress = match result {
        Ok(progress) => {
            ctx.reset_backoff(&key);
            progress
        }
        // The apiserver refused an object derived from this one: retrying the same request
        // cannot help, so say so at once rather than back off silently.
        Err(Error::Kube(kube::Error::Api(status))) if status.code == 422 => {
            let message = format!(
                "the API server refused an object ferrosync derives from this one: {}",
                status.message
            );
            if synchronizing(conditions).is_none_or(|c| c.message != message) {
                ctx.event(object, true, "Refused", message.clone()).await;
            }
            Progress::new(Reason::Error, ctx.config.requeue.idle).with_message(message)
        }
        Err(Error::Kube(err)) => return Err(Error::Kube(err)),
        Err(err) => {
            let message = err.to_string();
            // A wait is news, not a fault: a Normal Event and the Waiting reason, so that
            // alerts on reason=Error fire only for what needs a person.
            let waiting = matches!(err, Error::NotReady(_));
            if synchronizing(conditions).is_none_or(|c| c.message != message) {
                ctx.event(object, !waiting, err.reason(), message.clone())
                    .await;
            }
            // Per object, doubling with jitter: a thousand objects waiting for the same
            // thing neither poll in step nor keep the apiserver busy.
            let requeue = if err.is_permanent() {
                ctx.config.requeue.idle
            } else {
                ctx.backoff(&key)
            };
            let reason = match err {
                Error::NotReady(_) => Reason::Waiting,
                Error::Unsupported(_) => Reason::Unsupported,
                _ => Reason::Error,
            };
            Progress::new(reason, requeue).with_message(message)
        }
    };
    set_synchronizing(
        conditions,
        progress.reason,
        progress.message,
        generation,
        now,
    );
    Ok(progress.requeue)
}
