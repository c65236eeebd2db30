//! The three policy decisions as a reconcile makes them: gather the plugin's input from
//! the caches (`caches`), ask the engine, and record who decided what (an Event when it changes,
//! and `status.policy`, which `kubectl describe` shows).

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use kube::{Resource, ResourceExt};

use super::{context::Context, error::Error};
use crate::{
    api::{CopyMethod, PolicyDecision, ServiceType},
    policy::{
        CopyMethodDecision, CopyMethodInput, Decided, DecidedBy, PolicyError, Provenance,
        PskDecision, PskInput, PvcInfo, ServiceTypeDecision, ServiceTypeInput, Side,
        StorageClassInfo, pairs::AuthorisedPair, release,
    },
};

/// The copy method for a source PVC.
pub async fn copy_method(
    ctx: &Context,
    requested: Option<CopyMethod>,
    source: &PersistentVolumeClaim,
    clone_failure: Option<String>,
) -> Result<Decided<CopyMethodDecision>, Error> {
    let spec = source.spec.clone().unwrap_or_default();
    let classes = ctx.caches.storage_classes();
    let class = spec
        .storage_class_name
        .as_deref()
        .and_then(|name| classes.iter().find(|c| c.name_any() == name));
    let provisioner = class.map(|c| c.provisioner.clone());
    let input = CopyMethodInput {
        pvc: PvcInfo::of(source),
        storage_class: class.map(|c| StorageClassInfo::of(c)),
        requested,
        snapshot_classes: snapshot_classes_for(ctx, provisioner.as_deref()),
        storage_classes: classes.iter().map(|c| c.name_any()).collect(),
        clone_failure,
    };
    ctx.policy.copy_method(&input).await.map_err(policy_failed)
}

/// The Service type and annotations for a destination.
pub async fn service_type<K: Resource>(
    ctx: &Context,
    obj: &K,
    requested: Option<ServiceType>,
) -> Result<Decided<ServiceTypeDecision>, Error> {
    let input = ServiceTypeInput {
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        labels: obj.meta().labels.clone().unwrap_or_default(),
        requested,
        topology: ctx.topology.get(&ctx.client).await?,
    };
    ctx.policy.service_type(&input).await.map_err(policy_failed)
}

/// The key for an object without keySecret: asked while its Secret does not exist, and
/// at each iteration's start for a pair's key; `pair` is the pair the host authorised.
pub async fn psk<K: Resource>(
    ctx: &Context,
    obj: &K,
    side: Side,
    key_secret_name: &str,
    key_secret_exists: bool,
    pair: Option<&AuthorisedPair>,
) -> Result<Decided<PskDecision>, Error> {
    let input = PskInput {
        side,
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        labels: obj.meta().labels.clone().unwrap_or_default(),
        annotations: obj.meta().annotations.clone().unwrap_or_default(),
        key_secret_name: key_secret_name.to_string(),
        key_secret_exists,
        // A pair's side joins it only where the operator lets the plugin record members;
        // it then carries a finalizer that releases the membership (`pair_release`).
        member: pair
            .filter(|_| ctx.policy.tracks_pair_members())
            .and_then(|_| release::member_id(side, obj.meta().uid.as_deref().unwrap_or_default()))
            .unwrap_or_default(),
    };
    ctx.policy
        .psk_for_pair(&input, pair)
        .await
        .map_err(policy_failed)
}

/// Records a decision in `status.policy`, replacing the point's previous entry, and emits
/// an Event when the decision or its maker changed.
pub async fn record(
    ctx: &Context,
    object: &ObjectReference,
    policy: &mut Option<Vec<PolicyDecision>>,
    provenance: &Provenance,
    value: String,
    reason: &str,
) {
    let entry = PolicyDecision {
        decision: provenance.point.to_string(),
        value,
        decided_by: provenance.decided_by(),
        reason: reason.to_string(),
        fallback: (provenance.decided_by == DecidedBy::Fallback).then_some(true),
    };
    let entries = policy.get_or_insert_with(Vec::new);
    let previous = entries.iter().position(|e| e.decision == entry.decision);
    let changed = previous.is_none_or(|i| {
        let old = &entries[i];
        (old.value.as_str(), old.decided_by.as_str(), old.fallback)
            != (
                entry.value.as_str(),
                entry.decided_by.as_str(),
                entry.fallback,
            )
    });
    if changed {
        let warning = provenance.failure.is_some();
        let reason_tag = if warning {
            "PolicyFallback"
        } else {
            "PolicyDecision"
        };
        ctx.event_for(
            object,
            warning,
            reason_tag,
            provenance.point.as_str(),
            format!("{}: {} ({reason})", provenance.summary(), entry.value),
        )
        .await;
    }
    match previous {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    scope_and_shadow_events(ctx, object, provenance).await;
}

/// A shadow candidate's first different answer for this object (Normal: nothing
/// changed). Bindings overruled by precedence are the `PolicyBindingOverlap` condition's,
/// with its Events (`binding_overlap`), checked on every pass.
async fn scope_and_shadow_events(ctx: &Context, object: &ObjectReference, p: &Provenance) {
    if let Some(shadow) = p.shadow.as_ref().filter(|s| s.first_difference) {
        ctx.event_for(
            object,
            false,
            "PolicyShadowDifference",
            p.point.as_str(),
            shadow.message(&p.binding),
        )
        .await;
    }
}

/// VolumeSnapshotClasses whose driver is `provisioner`, by name.
fn snapshot_classes_for(ctx: &Context, provisioner: Option<&str>) -> Vec<String> {
    let Some(provisioner) = provisioner else {
        return Vec::new();
    };
    let mut names: Vec<(bool, String)> = ctx
        .caches
        .snapshot_classes()
        .iter()
        .filter(|c| c.data.get("driver").and_then(|d| d.as_str()) == Some(provisioner))
        .map(|c| {
            let default = c
                .annotations()
                .get("snapshot.storage.kubernetes.io/is-default-class")
                .map(String::as_str)
                == Some("true");
            (!default, c.name_any())
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

fn policy_failed(err: PolicyError) -> Error {
    Error::Policy(err.to_string())
}
