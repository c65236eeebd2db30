//! Where a pass left the object: the Synchronizing reason, its message and the requeue
//! (`decide::settle` turns it into the condition).

use std::time::Duration;

use super::conditions::Reason;

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
