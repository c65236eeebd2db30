//! Reconcile errors, split by what they need: a change by the user (permanent) or time
//! (transient). Variant names double as Event reasons and metric labels.

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server failed or is unreachable; retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object (or something it references) is wrong and will stay wrong until a user
    /// changes it. Reported as the Error condition; not retried in a loop.
    #[error("{0}")]
    Invalid(String),
    /// The spec is valid (VolSync would serve it) but ferrosync does not implement it, such
    /// as volumeMode Block. Reported with the Unsupported reason; not retried in a loop.
    #[error("{0}")]
    Unsupported(String),
    /// Something the object depends on is not there yet; checked again shortly.
    #[error("{0}")]
    NotReady(String),
    /// A policy point configured to `fail` had a failing plugin; retried, since a reload
    /// or a transient cause (a deadline, an unreachable vault) may clear it.
    #[error("{0}")]
    Policy(String),
}

impl Error {
    /// The metric label / Event reason of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Invalid(_) => "InvalidSpec",
            Error::Unsupported(_) => "Unsupported",
            Error::NotReady(_) => "Waiting",
            Error::Policy(_) => "PolicyFailed",
        }
    }

    /// Whether only a user's change can clear it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Invalid(_) | Error::Unsupported(_))
    }
}
