//! A vault pair's key outlives neither of its sides: each side of a pair joins it in the
//! vault (the psk plugin records a member entry per side, [`release::member_id`]), and
//! when it is deleted it leaves; the last to leave deletes the key. The sides may be in
//! different clusters, so only the vault knows who is left.
//!
//! Leaving must survive a controller restart and an unreachable vault, so an object that
//! joins carries the finalizer [`FINALIZER`], put on before its first psk decision. On
//! deletion the psk plugin's `release` runs, with the credential reaching only the pair
//! the Namespace authorises and this object's own member entry (a tenant removes only its
//! own membership); the finalizer goes only once the release succeeded, or is known to
//! be impossible. While it fails, the Error condition and a Warning Event say why, and it
//! is retried with the object's backoff.
//!
//! Never a wedged namespace: the finalizer also goes, with a Warning Event naming what is
//! left behind, when
//! - the object is annotated [`ABANDON_ANNOTATION`]` = abandon`;
//! - `reconcile.pair_release_timeout` has passed since the deletion;
//! - no psk plugin tracks members any more, the pair annotation is gone, or the Namespace
//!   no longer authorises the pair (the host may not release it; nothing of it can be
//!   reached).

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{
    context::Context,
    error::Error,
    pipeline::{self, Replicated},
};
use crate::{
    api::ReplicationSource,
    policy::{
        self,
        pairs::{self, AuthorisedPair},
        release::{self, PskReleaseInput, ReleaseOutcome},
    },
    resources::Owner,
};

/// The finalizer of an object that joined its pair in the vault.
pub const FINALIZER: &str = "ferrosync.io/psk-pair-release";
/// Set to `abandon` on an object being deleted: let it go without releasing.
pub const ABANDON_ANNOTATION: &str = "ferrosync.io/psk-release";

/// Called by the pass before anything else: puts the finalizer on a side of a pair
/// before its first psk decision, and releases the side when it is deleted. `None`: the
/// pass goes on as usual; `Some`: the pass is over (the object is being deleted and
/// releasing, or gone; a failure is recorded in the condition and status here).
pub async fn guard<K: Replicated>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    status: &mut K::Status,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    let meta = obj.meta();
    let finalized = meta
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    let failed = match (meta.deletion_timestamp.is_some(), finalized) {
        (true, true) => match release_on_delete(ctx, obj, owner).await {
            Ok(()) => return Ok(Some(Action::await_change())),
            Err(e) => e,
        },
        (false, false) => match join(ctx, obj, owner).await {
            Ok(()) => return Ok(None),
            Err(e) => e,
        },
        _ => return Ok(None),
    };
    // Recorded as the pass would record it: the Error condition, an Event, backoff.
    let action = pipeline::record(ctx, obj, owner, Err(failed), status.clone(), now).await?;
    Ok(Some(action))
}

/// Puts the finalizer on an object that will join an authorised pair.
async fn join<K: Replicated>(ctx: &Context, obj: &K, owner: &Owner) -> Result<(), Error> {
    if !names_pair(obj) || !ctx.policy.tracks_pair_members() {
        return Ok(());
    }
    // Only an authorised pair is joined; an unauthorised one is refused by the key's
    // resolution, with its own condition.
    if !matches!(authorised(ctx, obj, &owner.namespace).await?, Ok(Some(_))) {
        return Ok(());
    }
    let mut finalizers = obj.meta().finalizers.clone().unwrap_or_default();
    finalizers.push(FINALIZER.to_owned());
    patch_finalizers(ctx, obj, owner, finalizers).await
}

/// Releases the deleted object's membership, or lets it go as documented above. `Ok`:
/// the finalizer is gone.
async fn release_on_delete<K: Replicated>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
) -> Result<(), Error> {
    let object = obj.object_ref(&());
    let annotations = obj.meta().annotations.clone().unwrap_or_default();
    let side = side_of::<K>();
    let member = release::member_id(side, &owner.uid).unwrap_or_default();

    if annotations.get(ABANDON_ANNOTATION).map(String::as_str) == Some("abandon") {
        skipped(
            ctx,
            &object,
            format!(
                "{ABANDON_ANNOTATION}: abandon: deleted without leaving its pair; member {member} \
             stays in the vault (and with it the pair's key) until removed by hand"
            ),
        )
        .await;
        return remove_finalizer(ctx, obj, owner).await;
    }
    if !ctx.policy.tracks_pair_members() {
        skipped(
            ctx,
            &object,
            "no psk plugin records pair members any more (policy.psk or its {member} \
             credential target was removed): nothing to release"
                .into(),
        )
        .await;
        return remove_finalizer(ctx, obj, owner).await;
    }
    let pair = match authorised(ctx, obj, &owner.namespace).await? {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            skipped(
                ctx,
                &object,
                format!(
                    "{} was removed: the pair cannot be named, so member {member} stays in the \
                 vault until removed by hand",
                    pairs::PAIR_ANNOTATION
                ),
            )
            .await;
            return remove_finalizer(ctx, obj, owner).await;
        }
        Err(e) => {
            skipped(
                ctx,
                &object,
                format!(
                    "{e}; the host may not release it, so member {member} stays in the vault \
                 until removed by hand"
                ),
            )
            .await;
            return remove_finalizer(ctx, obj, owner).await;
        }
    };
    let input = PskReleaseInput {
        side,
        namespace: owner.namespace.clone(),
        name: owner.name.clone(),
        pair: pair.as_str().to_owned(),
        member: member.clone(),
    };
    match ctx.policy.psk_release(&pair, input).await {
        Ok(done) => {
            let reason = match done.decision.outcome {
                ReleaseOutcome::Deleted => "PairKeyDeleted",
                ReleaseOutcome::Left | ReleaseOutcome::NoSuchPair => "PairLeft",
            };
            ctx.event(
                &object,
                false,
                reason,
                format!(
                    "pair {}: {} ({})",
                    pair.as_str(),
                    done.decision.outcome.as_str(),
                    done.decision.reason
                ),
            )
            .await;
            remove_finalizer(ctx, obj, owner).await
        }
        Err(e) => {
            let timeout = ctx.config.reconcile.pair_release_timeout;
            if timed_out(obj, timeout, Timestamp::now()) {
                skipped(
                    ctx,
                    &object,
                    format!(
                        "pair {}: the release kept failing for {} after deletion \
                     (reconcile.pair_release_timeout), last: {e}; member {member} stays in \
                     the vault until removed by hand",
                        pair.as_str(),
                        humantime::format_duration(timeout)
                    ),
                )
                .await;
                return remove_finalizer(ctx, obj, owner).await;
            }
            Err(Error::Policy(format!(
                "leaving pair {} failed: {e}. The finalizer {FINALIZER} stays and the release \
                 is retried with backoff, for at most {} after deletion \
                 (reconcile.pair_release_timeout); annotate {ABANDON_ANNOTATION}=abandon to \
                 let the object go now and leave its membership in the vault",
                pair.as_str(),
                humantime::format_duration(timeout)
            )))
        }
    }
}

/// The Warning Event of an object let go without its release.
async fn skipped(ctx: &Context, object: &ObjectReference, note: String) {
    ctx.event(object, true, "PairReleaseSkipped", note).await;
}

/// Whether `timeout` has passed since `obj`'s deletion. Pure.
fn timed_out<K: Resource>(obj: &K, timeout: std::time::Duration, now: Timestamp) -> bool {
    let Some(deleted) = obj.meta().deletion_timestamp.as_ref() else {
        return false;
    };
    let Ok(timeout) = k8s_openapi::jiff::SignedDuration::try_from(timeout) else {
        return false;
    };
    deleted
        .0
        .checked_add(timeout)
        .is_ok_and(|deadline| now >= deadline)
}

async fn remove_finalizer<K: Replicated>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
) -> Result<(), Error> {
    let kept = obj
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    patch_finalizers(ctx, obj, owner, kept).await
}

/// Writes `finalizers` with a merge patch that carries the resourceVersion read, so the
/// apiserver applies it only to the object as read (409 otherwise): never another's
/// finalizer lost, and a patch never creates an object. A lost race is retried by the
/// next pass.
async fn patch_finalizers<K: Replicated>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let patch = json!({"metadata": {
        "resourceVersion": obj.meta().resource_version,
        "finalizers": finalizers,
    }});
    match api
        .patch(&owner.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Err(Error::NotReady(format!(
            "the object changed while its finalizer {FINALIZER} was updated; retrying"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn names_pair<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(pairs::PAIR_ANNOTATION))
}

/// The pair `obj` names as its Namespace authorises it (outer error: the API).
async fn authorised<K: Resource>(
    ctx: &Context,
    obj: &K,
    namespace: &str,
) -> Result<Result<Option<AuthorisedPair>, pairs::PairError>, Error> {
    let annotations: BTreeMap<String, String> = obj.meta().annotations.clone().unwrap_or_default();
    // From the Namespace metadata cache, as the key's own authorisation reads it.
    let ns_annotations = ctx.namespace_annotations(namespace)?;
    Ok(pairs::authorise(namespace, &annotations, &ns_annotations))
}

fn side_of<K: Replicated>() -> policy::Side {
    if K::KIND == ReplicationSource::KIND {
        policy::Side::Source
    } else {
        policy::Side::Destination
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::ReplicationDestination;

    fn deleted_at(seconds: i64) -> ReplicationDestination {
        let mut rd: ReplicationDestination = serde_json::from_value(json!({
            "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
            "metadata": {"name": "db", "namespace": "ns"}, "spec": {}
        }))
        .expect("rd");
        rd.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(seconds).unwrap()));
        rd
    }

    #[test]
    fn the_release_is_bounded_by_the_timeout_after_deletion() {
        let rd = deleted_at(1_000);
        let hour = Duration::from_secs(3600);
        assert!(!timed_out(
            &rd,
            hour,
            Timestamp::from_second(1_000 + 3599).unwrap()
        ));
        assert!(timed_out(
            &rd,
            hour,
            Timestamp::from_second(1_000 + 3600).unwrap()
        ));
        let mut alive = rd.clone();
        alive.metadata.deletion_timestamp = None;
        assert!(!timed_out(
            &alive,
            Duration::ZERO,
            Timestamp::from_second(9_999).unwrap()
        ));
    }

    #[test]
    fn each_kind_releases_as_its_side() {
        assert_eq!(side_of::<ReplicationSource>(), policy::Side::Source);
        assert_eq!(
            side_of::<ReplicationDestination>(),
            policy::Side::Destination
        );
    }
}
