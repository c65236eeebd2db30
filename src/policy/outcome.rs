//! What a decision returns besides the decision itself: its provenance (who decided, at
//! what cost, and whether a fallback was used and why), and the error of a failed
//! decision whose point is configured to `fail`.
//!
//! The controller turns these into Events and status. Nothing here may carry key
//! material: messages come from the host's classification, never from a decided key.

use std::{fmt, time::Duration};

use serde::Serialize;

use super::types::DecisionPoint;

/// Why a plugin decision was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum FailureKind {
    /// Ran out of fuel.
    OutOfFuel,
    /// Passed its wall-time deadline.
    Timeout,
    /// Tried to grow memory past its limit.
    MemoryLimit,
    /// Recursed past its stack: the host's wasm stack, or its own stack in linear memory.
    StackOverflow,
    /// Trapped or panicked.
    Trap,
    /// Used a capability it was not granted (secure random, timers).
    CapabilityDenied,
    /// Returned an error of its own.
    PluginError,
    /// Returned an output that failed validation.
    InvalidOutput,
    /// Its HTTP credentials could not be resolved.
    Credentials,
    /// The host could not run it (for example, its blocking task was cancelled).
    Internal,
}

impl FailureKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::OutOfFuel => "out-of-fuel",
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::Trap => "trap",
            FailureKind::CapabilityDenied => "capability-denied",
            FailureKind::PluginError => "plugin-error",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::Credentials => "credentials",
            FailureKind::Internal => "internal",
        }
    }

    /// The reason of the Event the controller records.
    pub fn event_reason(self) -> &'static str {
        match self {
            FailureKind::OutOfFuel => "PolicyPluginOutOfFuel",
            FailureKind::Timeout => "PolicyPluginTimeout",
            FailureKind::MemoryLimit => "PolicyPluginMemoryLimit",
            FailureKind::StackOverflow => "PolicyPluginStackOverflow",
            FailureKind::Trap => "PolicyPluginTrap",
            FailureKind::CapabilityDenied => "PolicyPluginCapabilityDenied",
            FailureKind::PluginError => "PolicyPluginError",
            FailureKind::InvalidOutput => "PolicyPluginInvalidOutput",
            FailureKind::Credentials => "PolicyPluginCredentials",
            FailureKind::Internal => "PolicyPluginInternalError",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed plugin decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened, for people.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    /// The built-in default: no plugin is configured.
    BuiltIn,
    /// The plugin, in a fresh sandbox.
    Plugin,
    /// The plugin's earlier decision for the same input and settings.
    Cache,
    /// The built-in default, because the plugin failed (see `fallback`).
    Fallback,
}

/// How a decision was made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub point: DecisionPoint,
    pub decided_by: DecidedBy,
    /// The plugin's name, if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The plugin's sha256, if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the plugin's decision was not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Fuel the plugin used (0 when it did not run).
    pub fuel_used: u64,
    /// Wall time of the plugin run, or of the cache lookup.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Capability requests the host refused (they are not failures by themselves).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<String>,
    /// The binding whose plugin answered (`default`: the cluster-wide default).
    pub binding: String,
    /// Bindings that also selected the object's namespace and lost to the fixed
    /// precedence (labels changed after load); empty normally.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overruled: Vec<String>,
    /// A shadow candidate's answer to the same decision, never acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<super::shadow::ShadowComparison>,
}

impl Provenance {
    /// One line for an Event message: who decided, and why a fallback happened.
    pub fn summary(&self) -> String {
        let mut who = match (&self.plugin, &self.sha256) {
            (Some(p), Some(d)) => format!("plugin {p} (sha256:{})", &d[..12.min(d.len())]),
            _ => "built-in default".into(),
        };
        if self.binding != super::scope::DEFAULT_BINDING && !self.binding.is_empty() {
            who.push_str(&format!(" of binding {}", self.binding));
        }
        match (&self.decided_by, &self.failure) {
            (DecidedBy::Fallback, Some(f)) => {
                format!(
                    "{} decision by the built-in default: {who} failed: {f}",
                    self.point
                )
            }
            (DecidedBy::Cache, _) => format!("{} decision by {who} (cached)", self.point),
            _ => format!("{} decision by {who}", self.point),
        }
    }
}

impl Provenance {
    /// Who answered, for `status.policy`'s `decidedBy`: the plugin's name (or
    /// `built-in`), followed by its binding unless it is the cluster-wide default.
    pub fn decided_by(&self) -> String {
        let who = self
            .plugin
            .clone()
            .filter(|_| self.decided_by != DecidedBy::Fallback)
            .unwrap_or_else(|| "built-in".into());
        if self.binding.is_empty() || self.binding == super::scope::DEFAULT_BINDING {
            who
        } else {
            format!("{who} (binding {})", self.binding)
        }
    }

    /// The warning to give when the namespace is selected by more than one binding.
    pub fn overruled_message(&self) -> Option<String> {
        (!self.overruled.is_empty()).then(|| {
            super::BindingOverlap {
                point: self.point,
                binding: self.binding.clone(),
                overruled: self.overruled.clone(),
            }
            .message()
        })
    }
}

/// The Kubernetes Event the controller records for a decision or a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyEvent {
    /// A Warning (a plugin failed) rather than Normal.
    pub warning: bool,
    /// The Event reason: `PolicyDecision`, or the failure's `PolicyPlugin...` reason.
    pub reason: &'static str,
    pub message: String,
}

impl Provenance {
    /// The Event for a decision whose own reason is `decision_reason`.
    pub fn event(&self, decision_reason: &str) -> PolicyEvent {
        let message = format!("{}: {decision_reason}", self.summary());
        match &self.failure {
            Some(f) => PolicyEvent {
                warning: true,
                reason: f.kind.event_reason(),
                message,
            },
            None => PolicyEvent {
                warning: false,
                reason: "PolicyDecision",
                message,
            },
        }
    }
}

/// A decision with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decided<D> {
    pub decision: D,
    pub provenance: Provenance,
}

/// A decision point configured to `fail` whose plugin failed: the reconcile reports an
/// Error condition with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy plugin {plugin} failed the {point} decision: {failure}")]
    PluginFailed {
        point: DecisionPoint,
        plugin: String,
        failure: Failure,
        provenance: Box<Provenance>,
    },
}

impl PolicyError {
    /// The failure's kind, for the Event reason and metric label.
    pub fn kind(&self) -> FailureKind {
        match self {
            PolicyError::PluginFailed { failure, .. } => failure.kind,
        }
    }

    /// The Warning Event to record with the Error condition.
    pub fn event(&self) -> PolicyEvent {
        PolicyEvent {
            warning: true,
            reason: self.kind().event_reason(),
            message: self.to_string(),
        }
    }
}
