//! Taking over VolSync's rsync-TLS pairs in place.
//!
//! Names already match (`volsync-<name>-dst`, `volsync-rsync-tls-<name>`, the Service and
//! the Jobs), so ferrosync finds the destination's PVC, key and address where VolSync left
//! them, and the next sync is a delta. Two things need more:
//! - VolSync's own mover Job may still exist under the name ferrosync uses (a destination
//!   always has one waiting): it runs VolSync's image, so it is replaced, never awaited.
//! - VolSync's destination images carry VolSync's labels, not ferrosync's, so retention
//!   would never count them. They are adopted: given ferrosync's image labels, once.
//!
//! Adoption only adds labels; it never deletes, and never touches a snapshot labelled
//! `volsync.backube/do-not-delete` (VolSync gave those up) or one another object owns.

use k8s_openapi::api::{batch::v1::Job, core::v1::ObjectReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{context::Context, error::Error, image::IMAGE_LABEL};
use crate::resources::{
    Owner,
    meta::{DO_NOT_DELETE, MANAGED_BY, OWNER_UID},
    snapshot::VolumeSnapshot,
};

/// Whether ferrosync built this Job (VolSync's carry no `managed-by: ferrosync`).
pub fn is_ours(job: &Job) -> bool {
    job.labels()
        .get(MANAGED_BY)
        .is_some_and(|v| v == "ferrosync")
}

/// Whether `snap` is one of this destination's images that VolSync took: a snapshot of its
/// PVC, controlled by the destination, not yet labelled as a ferrosync image.
pub fn adoptable(snap: &VolumeSnapshot, owner_uid: &str, pvc: &str) -> bool {
    let controlled = snap
        .owner_references()
        .iter()
        .any(|r| r.uid == owner_uid && r.controller == Some(true));
    controlled
        && snap.meta().deletion_timestamp.is_none()
        && !snap.labels().contains_key(IMAGE_LABEL)
        && !snap.labels().contains_key(DO_NOT_DELETE)
        && snap.spec.source.persistent_volume_claim_name.as_deref() == Some(pvc)
}

/// Gives VolSync's images of `pvc` ferrosync's image labels, so that retention
/// (`ferrosync.io/retain-snapshots`) counts them with its own; returns their names.
pub async fn adopt_images(
    ctx: &Context,
    owner: &Owner,
    object: &ObjectReference,
    pvc: &str,
) -> Result<Vec<String>, Error> {
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let candidates = ctx.labelled_snapshots(&owner.namespace, &[]).await?;
    let mut adopted = Vec::new();
    for snap in candidates.iter().filter(|s| adoptable(s, &owner.uid, pvc)) {
        let labels = json!({"metadata": {"labels": {IMAGE_LABEL: "true", OWNER_UID: owner.uid}}});
        api.patch(
            &snap.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&labels),
        )
        .await?;
        adopted.push(snap.name_any());
    }
    if !adopted.is_empty() {
        adopted.sort();
        ctx.event(
            object,
            false,
            "VolumeSnapshotsAdopted",
            format!(
                "adopted VolSync's images {} of PVC {pvc}: retention now counts them",
                adopted.join(", ")
            ),
        )
        .await;
    }
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::resources::{meta::fixtures::owner, snapshot};

    fn volsync_image(owner_uid: &str, pvc: &str) -> VolumeSnapshot {
        let mut snap = snapshot::snapshot(
            &owner("ReplicationDestination", "d"),
            "volsync-d-dst-20260101000000".into(),
            pvc,
            None,
            false,
        );
        // As VolSync leaves it: its own labels and a controller reference, none of ours.
        snap.metadata.labels =
            Some([("volsync.backube/owned".to_string(), owner_uid.to_string())].into());
        snap.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "volsync.backube/v1alpha1".into(),
            kind: "ReplicationDestination".into(),
            name: "d".into(),
            uid: owner_uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        snap
    }

    #[test]
    fn only_this_destinations_volsync_images_are_adopted() {
        assert!(adoptable(
            &volsync_image("uid-d", "volsync-d-dst"),
            "uid-d",
            "volsync-d-dst"
        ));
        assert!(!adoptable(
            &volsync_image("uid-x", "volsync-d-dst"),
            "uid-d",
            "volsync-d-dst"
        ));
        assert!(!adoptable(
            &volsync_image("uid-d", "other"),
            "uid-d",
            "volsync-d-dst"
        ));
        let mut kept = volsync_image("uid-d", "volsync-d-dst");
        kept.labels_mut()
            .insert(DO_NOT_DELETE.into(), "true".into());
        assert!(!adoptable(&kept, "uid-d", "volsync-d-dst"));
        let mut ours = volsync_image("uid-d", "volsync-d-dst");
        ours.labels_mut().insert(IMAGE_LABEL.into(), "true".into());
        assert!(
            !adoptable(&ours, "uid-d", "volsync-d-dst"),
            "already an image"
        );
        let mut not_controller = volsync_image("uid-d", "volsync-d-dst");
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        assert!(!adoptable(&not_controller, "uid-d", "volsync-d-dst"));
    }

    #[test]
    fn jobs_without_ferrosyncs_label_are_foreign() {
        let mut job = Job::default();
        assert!(!is_ours(&job));
        job.labels_mut()
            .insert(MANAGED_BY.into(), "ferrosync".into());
        assert!(is_ours(&job));
    }
}
