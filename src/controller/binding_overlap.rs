//! The `PolicyBindingOverlap` condition: a namespace that more than one policy binding
//! selects, because its labels changed after the configuration was loaded.
//!
//! Loading refuses every overlap the configuration shows; a namespace listed by one
//! binding that later gains the labels of another's selector is decided by the fixed
//! precedence (see `policy::scope`). That is legal but almost certainly not meant, so the
//! affected objects carry a condition while it lasts (ferrosync's own type beside
//! VolSync's `Synchronizing`, which `kubectl describe` lists and tools that know only
//! `Synchronizing` ignore), a Warning Event when it appears, and a Normal one when the
//! labels or the bindings change so that it is gone, which also removes the condition.

use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp,
};

use super::context::Context;
use crate::{
    policy::{BindingOverlap, DecisionPoint},
    resources::Side,
};

/// The condition's type.
pub const CONDITION: &str = "PolicyBindingOverlap";
/// Its reason while present.
pub const REASON: &str = "DecidedByPrecedence";

/// The decision point whose bundle is chosen by namespace for a side (psk goes by pair
/// name, which cannot overlap).
pub fn point(side: Side) -> DecisionPoint {
    match side {
        Side::Source => DecisionPoint::CopyMethod,
        Side::Destination => DecisionPoint::ServiceType,
    }
}

pub use super::conditions::FlagChange as Change;

/// Sets the condition for `overlap`, or removes it. Pure; `lastTransitionTime` moves
/// only when the condition appears.
pub fn apply(
    conditions: &mut Option<Vec<Condition>>,
    overlap: Option<&BindingOverlap>,
    generation: Option<i64>,
    now: Timestamp,
) -> Change {
    super::conditions::flag(
        conditions,
        CONDITION,
        REASON,
        overlap.map(BindingOverlap::message),
        generation,
        now,
    )
}

/// Looks at the object's namespace now, updates the condition and announces a change.
/// A namespace whose labels cannot be read yet leaves the condition as it is.
pub async fn check(
    ctx: &Context,
    object: &ObjectReference,
    side: Side,
    conditions: &mut Option<Vec<Condition>>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let point = point(side);
    let namespace = object.namespace.as_deref().unwrap_or_default();
    let overlap = match ctx.policy.binding_overlap(point, namespace).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(%e, "binding overlap not checked");
            return;
        }
    };
    match apply(conditions, overlap.as_ref(), generation, now) {
        Change::None => {}
        Change::Set(message) => {
            ctx.event_for(object, true, CONDITION, point.as_str(), message)
                .await;
        }
        Change::Cleared => {
            ctx.event_for(
                object,
                false,
                "PolicyBindingOverlapResolved",
                point.as_str(),
                format!("exactly one binding selects the namespace for the {point} decision again"),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn overlap(overruled: &[&str]) -> BindingOverlap {
        BindingOverlap {
            point: DecisionPoint::CopyMethod,
            binding: "listed".into(),
            overruled: overruled.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn set_while_it_lasts_then_removed_leaving_synchronizing_alone() {
        let sync = Condition {
            type_: "Synchronizing".into(),
            status: "False".into(),
            reason: "WaitingForManual".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: Time(at(1)),
        };
        let mut conds = Some(vec![sync.clone()]);
        assert_eq!(apply(&mut conds, None, Some(1), at(5)), Change::None);
        let change = apply(&mut conds, Some(&overlap(&["labelled"])), Some(1), at(10));
        let Change::Set(message) = change else {
            panic!("{change:?}")
        };
        assert!(message.contains("binding listed by name and by binding(s) labelled"));
        let list = conds.as_ref().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], sync);
        assert_eq!(
            (list[1].status.as_str(), list[1].reason.as_str()),
            ("True", REASON)
        );
        // Unchanged: no news, and the transition time stays.
        assert_eq!(
            apply(&mut conds, Some(&overlap(&["labelled"])), Some(2), at(20)),
            Change::None
        );
        assert_eq!(
            conds.as_ref().unwrap()[1].last_transition_time,
            Time(at(10))
        );
        assert_eq!(conds.as_ref().unwrap()[1].observed_generation, Some(2));
        // Another binding joins: news, same transition.
        assert!(matches!(
            apply(
                &mut conds,
                Some(&overlap(&["labelled", "more"])),
                Some(2),
                at(30)
            ),
            Change::Set(_)
        ));
        assert_eq!(
            conds.as_ref().unwrap()[1].last_transition_time,
            Time(at(10))
        );
        assert_eq!(apply(&mut conds, None, Some(2), at(40)), Change::Cleared);
        assert_eq!(conds, Some(vec![sync]));
        // Nothing left: no empty list written, and none made.
        let mut none = None;
        assert_eq!(apply(&mut none, None, None, at(1)), Change::None);
        assert_eq!(none, None);
        let mut only = None;
        apply(&mut only, Some(&overlap(&["x"])), None, at(1));
        apply(&mut only, None, None, at(2));
        assert_eq!(only, None);
    }
}
