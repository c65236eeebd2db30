//! The ReplicationDestination volume populator, as VolSync has it: a PVC whose
//! `dataSourceRef` names a ReplicationDestination (apiGroup volsync.backube) is filled
//! with the destination's latest image. A prime PVC is restored from the latest
//! VolumeSnapshot (marked do-not-delete so retention keeps it meanwhile); once it is
//! bound, its volume is handed to the user's PVC (the PV's claimRef is pointed at it and
//! annotated `volsync.backube/populated-from`), the real PV binder binds it, and the prime
//! goes. Until the destination has a snapshot image, the PVC stays Pending.

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::instrument;

use super::{context::Context, error::Error};
use crate::{
    api::ReplicationDestination,
    resources::{
        meta::DO_NOT_DELETE,
        populator::{POPULATED_FROM, SELECTED_NODE, destination_of, prime, prime_name},
        snapshot::VolumeSnapshot,
    },
};

/// Reconciles one PVC (any PVC; only those naming a ReplicationDestination are acted on).
#[instrument(skip_all, fields(namespace = pvc.namespace().unwrap_or_default(), name = pvc.name_any()))]
pub async fn reconcile(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let Some(rd_name) = destination_of(&pvc) else {
        return Ok(Action::await_change());
    };
    let (Some(ns), Some(uid)) = (pvc.namespace(), pvc.uid()) else {
        return Ok(Action::await_change());
    };
    let poll = Action::requeue(ctx.config.requeue.poll);
    let object = pvc.object_ref(&());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let prime_pvc = pvcs.get_opt(&prime_name(&uid)).await?;
    let bound_to_user = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());

    if bound_to_user {
        // Done, or being finished: the prime goes once the binder has taken its volume.
        let Some(prime_pvc) = prime_pvc else {
            return Ok(Action::await_change());
        };
        let lost = prime_pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost");
        if !lost {
            return Ok(poll);
        }
        if prime_pvc.meta().deletion_timestamp.is_none() {
            pvcs.delete(&prime_pvc.name_any(), &DeleteParams::background())
                .await?;
            ctx.event(
                &object,
                false,
                "VolSyncPopulatorFinished",
                "Populator finished".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    let Some(selected_node) = selected_node(&ctx, &pvc).await? else {
        // WaitForFirstConsumer: populated when a consumer has chosen the node.
        return Ok(Action::requeue(ctx.config.requeue.idle));
    };
    let prime_pvc = match prime_pvc {
        Some(p) => p,
        None => {
            let rds: Api<ReplicationDestination> = Api::namespaced(ctx.client.clone(), &ns);
            let Some(rd) = rds.get_opt(rd_name).await? else {
                let note = format!(
                    "Unable to populate volume: ReplicationDestination {rd_name} not found"
                );
                ctx.event(&object, true, "VolSyncPopulatorError", note)
                    .await;
                return Ok(Action::requeue(ctx.config.requeue.idle));
            };
            let Some(image) = rd.status.and_then(|s| s.latest_image) else {
                // Not an error: the PVC waits for the first replication, as documented.
                return Ok(poll);
            };
            if image.kind != "VolumeSnapshot" {
                let note = format!(
                    "Unable to populate volume: the latestImage of ReplicationDestination {rd_name} is not a VolumeSnapshot (its copyMethod must be Snapshot)"
                );
                ctx.event(&object, true, "VolSyncPopulatorError", note)
                    .await;
                return Ok(Action::requeue(ctx.config.requeue.idle));
            }
            // Retention must not delete the snapshot while the prime is restored from it.
            let snaps: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
            snaps
                .patch(
                    &image.name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {"labels": {DO_NOT_DELETE: "true"}}})),
                )
                .await?;
            let node = selected_node.as_deref().filter(|n| !n.is_empty());
            let created = match pvcs
                .create(&PostParams::default(), &prime(&pvc, &image.name, node))
                .await
            {
                Ok(p) => p,
                Err(kube::Error::Api(s)) if s.code == 409 => pvcs.get(&prime_name(&uid)).await?,
                Err(err) => return Err(err.into()),
            };
            ctx.event(
                &object,
                false,
                "VolSyncPopulatorPVCCreated",
                format!("Populator pvc created from snapshot {}", image.name),
            )
            .await;
            created
        }
    };
    let Some(pv_name) = prime_pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
    else {
        return Ok(poll);
    };
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let Some(pv) = pvs.get_opt(&pv_name).await? else {
        return Ok(poll);
    };
    let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let ours = claim.is_some_and(|c| {
        c.name.as_deref() == pvc.metadata.name.as_deref()
            && c.namespace.as_deref() == Some(ns.as_str())
            && c.uid.as_deref() == Some(uid.as_str())
    });
    if !ours {
        let source = prime_pvc
            .spec
            .as_ref()
            .and_then(|s| s.data_source_ref.as_ref())
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": {POPULATED_FROM: format!("{ns}/{source}")}},
            "spec": {"claimRef": {
                "namespace": ns, "name": pvc.name_any(), "uid": uid,
                "resourceVersion": pvc.resource_version(),
            }},
        });
        pvs.patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // The binder now binds the user's PVC, which brings it back here to finish.
    Ok(poll)
}

/// The node a WaitForFirstConsumer claim was scheduled to: `Some(Some(node))`, or
/// `Some(None)` for an Immediate class (no node needed), or `None` while it waits.
async fn selected_node(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
) -> Result<Option<Option<String>>, Error> {
    let Some(class) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) else {
        return Ok(Some(None));
    };
    let classes = Api::<StorageClass>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    let wait_for_consumer = classes
        .items
        .iter()
        .find(|c| c.name_any() == class)
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    if !wait_for_consumer {
        return Ok(Some(None));
    }
    Ok(pvc.annotations().get(SELECTED_NODE).cloned().map(Some))
}
