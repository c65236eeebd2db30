//! The psk world's `release`: one side of a pair is deleted and leaves it; the plugin
//! removes that side's membership from wherever it keeps keys, and the key with the last
//! member. The controller calls it from the finalizer it puts on the objects of a pair
//! (`controller::pair_release`).
//!
//! Unlike a decision, a release has no built-in answer to fall back on: a plugin that
//! fails, whatever its `on_failure`, is an error, and the caller keeps its finalizer and
//! asks again later. Its credential reaches only the authorised pair's targets and this
//! member's (`{pair}`, `{member}` in `[policy.credentials]`).

use serde::{Deserialize, Serialize};

use super::{
    bindings::wit,
    execute::point,
    guest_text,
    outcome::{Decided, DecidedBy, PolicyError},
    pairs::{self, AuthorisedPair},
    types::{DecisionPoint, Side},
    validate::{InvalidOutput, MAX_REASON_BYTES},
};
use crate::policy::PolicyEngine;

/// A side's membership of its pair: `<side>-<uid>`. Made by the host from the object's
/// uid, so it is unique across clusters and no tenant chooses it.
pub fn member_id(side: Side, uid: &str) -> Option<String> {
    let side = match side {
        Side::Source => "source",
        Side::Destination => "destination",
    };
    let id = format!("{side}-{uid}");
    (!uid.is_empty() && pairs::valid_name(&id)).then_some(id)
}

/// Input of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PskReleaseInput {
    pub side: Side,
    pub namespace: String,
    pub name: String,
    /// Set by the host from the authorised pair.
    pub pair: String,
    /// [`member_id`] of the object.
    pub member: String,
}

/// What a release did; each lets the finalizer go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseOutcome {
    /// Left; other members remain and the key stays.
    Left,
    /// The last member left; the key is deleted.
    Deleted,
    /// Nothing of the pair was stored.
    NoSuchPair,
}

impl ReleaseOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseOutcome::Left => "left",
            ReleaseOutcome::Deleted => "deleted",
            ReleaseOutcome::NoSuchPair => "no-such-pair",
        }
    }
}

/// A release's answer, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PskRelease {
    pub outcome: ReleaseOutcome,
    pub reason: String,
}

point! {
    /// The psk world's second export, run by the engine like a decision.
    PskReleasePoint {
        world: Psk,
        export: call_release,
        input: PskReleaseInput => wit::PskReleaseInput,
        decision: PskRelease => wit::PskRelease,
        to_wit: release_to_wit,
        validate: |out, _| validate_release(out),
        builtin: |_| nothing_stored(),
    }
}

/// The release's input as the psk world takes it.
fn release_to_wit(input: &PskReleaseInput, settings: &str) -> wit::PskReleaseInput {
    wit::PskReleaseInput {
        settings: settings.to_owned(),
        side: match input.side {
            Side::Source => wit::Side::Source,
            Side::Destination => wit::Side::Destination,
        },
        namespace: input.namespace.clone(),
        name: input.name.clone(),
        pair: input.pair.clone(),
        member: input.member.clone(),
    }
}

/// A plugin's release answer, its reason checked and cleaned as a decision's is.
pub(super) fn validate_release(out: wit::PskRelease) -> Result<PskRelease, InvalidOutput> {
    if out.reason.len() > MAX_REASON_BYTES {
        return Err(InvalidOutput::ReasonTooLong(out.reason.len()));
    }
    Ok(PskRelease {
        outcome: match out.outcome {
            wit::ReleaseOutcome::Left => ReleaseOutcome::Left,
            wit::ReleaseOutcome::Deleted => ReleaseOutcome::Deleted,
            wit::ReleaseOutcome::NoSuchPair => ReleaseOutcome::NoSuchPair,
        },
        reason: guest_text::clean(&out.reason),
    })
}

/// The built-in answer: without a psk plugin nothing was stored outside the cluster.
fn nothing_stored() -> PskRelease {
    PskRelease {
        outcome: ReleaseOutcome::NoSuchPair,
        reason: "built-in: keys are generated locally; nothing is stored elsewhere".into(),
    }
}

impl PolicyEngine {
    /// Releases `input`'s membership of `pair`: an error (the plugin failed, however its
    /// point is configured) means nothing is known to be released; ask again later.
    pub async fn psk_release(
        &self,
        pair: &AuthorisedPair,
        mut input: PskReleaseInput,
    ) -> Result<Decided<PskRelease>, PolicyError> {
        input.pair = pair.as_str().to_owned();
        let decided = self.release_with_scope(pair, &input).await?;
        match (&decided.provenance.decided_by, &decided.provenance.failure) {
            (DecidedBy::Fallback, Some(failure)) => Err(PolicyError::PluginFailed {
                point: DecisionPoint::Psk,
                plugin: decided.provenance.plugin.clone().unwrap_or_default(),
                failure: failure.clone(),
                provenance: Box::new(decided.provenance),
            }),
            _ => Ok(decided),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_one_path_segment_made_from_the_uid() {
        let uid = "3f2a9c1e-0b1d-4c5e-9f00-1234567890ab";
        assert_eq!(
            member_id(Side::Destination, uid).as_deref(),
            Some("destination-3f2a9c1e-0b1d-4c5e-9f00-1234567890ab")
        );
        assert_eq!(member_id(Side::Source, "../x"), None);
        assert_eq!(member_id(Side::Source, ""), None);
    }
}
