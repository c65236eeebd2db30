//! Publishing what a destination received: the PVC itself (Direct), or a VolumeSnapshot
//! of it (Snapshot) once that snapshot is bound and ready — never before — followed by
//! pruning old images down to the retention count.

use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, TypedLocalObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};

use super::{apply::create_if_absent, context::Context, error::Error};
use crate::resources::{
    Owner,
    meta::{DO_NOT_DELETE, OWNER_UID},
    snapshot::{self, VolumeSnapshot},
};

/// Marks the snapshots that are destination images (as opposed to temporary copies).
pub const IMAGE_LABEL: &str = "ferrosync.io/image";
/// Annotation on a ReplicationDestination: how many images to keep (default 1).
pub const RETAIN_SNAPSHOTS: &str = "ferrosync.io/retain-snapshots";

/// Where publication stands.
#[derive(Clone, Debug, PartialEq)]
pub enum ImageState {
    /// This is the new latestImage.
    Published(TypedLocalObjectReference),
    /// Waiting for the snapshot; the string says why.
    Waiting(String),
}

/// The latestImage of a Direct destination.
pub fn pvc_image(pvc: &str) -> TypedLocalObjectReference {
    TypedLocalObjectReference {
        api_group: Some(String::new()),
        kind: "PersistentVolumeClaim".into(),
        name: pvc.into(),
    }
}

/// The name of an iteration's image: `<pvc>-<YYYYMMDDHHMMSS>` of the iteration's start,
/// so every pass of the same iteration names the same snapshot.
pub fn snapshot_name(pvc: &str, iteration_start: Timestamp) -> String {
    let stamp = k8s_openapi::jiff::fmt::strtime::format("%Y%m%d%H%M%S", iteration_start)
        .unwrap_or_default();
    format!("{pvc}-{stamp}")
}

/// Takes (or finds) the iteration's snapshot of `pvc` and reports whether it can be
/// published.
pub async fn snapshot_image(
    ctx: &Context,
    owner: &Owner,
    pvc: &str,
    class: Option<String>,
    iteration_start: Timestamp,
) -> Result<ImageState, Error> {
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = snapshot_name(pvc, iteration_start);
    let mut desired = snapshot::snapshot(owner, name.clone(), pvc, class, false);
    desired
        .labels_mut()
        .insert(IMAGE_LABEL.into(), "true".into());
    let (snap, _) = create_if_absent(&api, &desired).await?;
    if let Some(err) = snap
        .status
        .as_ref()
        .and_then(|s| s.error.as_ref())
        .and_then(|e| e.message.clone())
    {
        return Ok(ImageState::Waiting(format!(
            "VolumeSnapshot {name} failed: {err}"
        )));
    }
    if !snapshot::is_ready(&snap) {
        return Ok(ImageState::Waiting(format!(
            "VolumeSnapshot {name} is not bound and ready yet"
        )));
    }
    Ok(ImageState::Published(TypedLocalObjectReference {
        api_group: Some("snapshot.storage.k8s.io".into()),
        kind: "VolumeSnapshot".into(),
        name,
    }))
}

/// Deletes this destination's images beyond the newest `retain`, sparing the latest and
/// any labelled `volsync.backube/do-not-delete`.
pub async fn prune(
    ctx: &Context,
    owner: &Owner,
    latest: &str,
    retain: usize,
) -> Result<Vec<String>, Error> {
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let list = ctx
        .labelled_snapshots(
            &owner.namespace,
            &[(OWNER_UID, Some(&owner.uid)), (IMAGE_LABEL, Some("true"))],
        )
        .await?;
    let mut images: Vec<(String, Option<Time>, bool)> = list
        .iter()
        .filter(|s| s.meta().deletion_timestamp.is_none())
        .map(|s| {
            (
                s.name_any(),
                s.meta().creation_timestamp.clone(),
                s.labels().contains_key(DO_NOT_DELETE),
            )
        })
        .collect();
    // The cache may not show the image just taken yet: it is the newest.
    if !images.iter().any(|(name, ..)| name == latest) {
        images.push((latest.to_string(), Some(Time(Timestamp::now())), false));
    }
    let doomed = beyond_retention(&images, latest, retain);
    for name in &doomed {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(doomed)
}

/// The images (name, creation time, labelled do-not-delete) beyond the newest `retain`,
/// sparing the latest and the labelled ones. Pure.
pub fn beyond_retention(
    images: &[(String, Option<Time>, bool)],
    latest: &str,
    retain: usize,
) -> Vec<String> {
    let mut newest_first: Vec<&(String, Option<Time>, bool)> = images.iter().collect();
    // Adopted VolSync images may follow another naming, so creation time orders them;
    // names (ending in the iteration's timestamp) break ties.
    newest_first.sort_by_key(|(name, created, _)| {
        std::cmp::Reverse((created.as_ref().map(|t| t.0), name.clone()))
    });
    newest_first
        .into_iter()
        .skip(retain.max(1))
        .filter(|(name, _, keep)| name != latest && !keep)
        .map(|(name, ..)| name.clone())
        .collect()
}

/// Releases the images labelled `volsync.backube/do-not-delete` from this destination, as
/// VolSync does: their owner reference to it is removed, so deleting the destination no
/// longer deletes them. Returns the released snapshots.
pub async fn release_kept(ctx: &Context, owner: &Owner) -> Result<Vec<String>, Error> {
    let api: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    // From the cache, every pass: a patch made from a copy the cache has not updated yet
    // is refused (it is conditional on the version) and made again next pass.
    let list = ctx
        .labelled_snapshots(
            &owner.namespace,
            &[
                (OWNER_UID, Some(&owner.uid)),
                (IMAGE_LABEL, Some("true")),
                (DO_NOT_DELETE, None),
            ],
        )
        .await?;
    let mut released = Vec::new();
    for snap in list {
        let Some(patch) = without_owner(&snap, &owner.uid) else {
            continue;
        };
        match api
            .patch(
                &snap.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => released.push(snap.name_any()),
            // Deleted or changed meanwhile: the next pass looks again.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(released)
}

/// The merge patch that removes `uid`'s owner reference from `obj`, conditional on the
/// version read; `None` when it has none.
fn without_owner<K: Resource>(obj: &K, uid: &str) -> Option<serde_json::Value> {
    let refs = obj.meta().owner_references.as_deref().unwrap_or_default();
    if !refs.iter().any(|r| r.uid == uid) {
        return None;
    }
    let kept: Vec<_> = refs.iter().filter(|r| r.uid != uid).collect();
    Some(serde_json::json!({
        "metadata": {
            "resourceVersion": obj.meta().resource_version,
            "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { serde_json::json!(kept) },
        }
    }))
}

/// The retention count of a destination, from its annotation. A bad value keeps 1 and is
/// reported by the caller.
pub fn retention<K: Resource>(obj: &K) -> Result<usize, String> {
    match obj
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RETAIN_SNAPSHOTS))
    {
        None => Ok(1),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            format!("annotation {RETAIN_SNAPSHOTS}={v:?} must be a whole number of at least 1")
        }),
    }
}

/// Deletes the provisioned destination PVC (cleanupTempPVC), to be made anew next time.
pub async fn delete_temp_pvc(ctx: &Context, owner: &Owner, pvc: &str) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    match api.delete(pvc, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_follow_the_reference() {
        let t = Timestamp::from_second(1_669_728_474).expect("valid"); // 2022-11-29T13:27:54Z
        assert_eq!(
            snapshot_name("volsync-d-dst", t),
            "volsync-d-dst-20221129132754"
        );
    }

    #[test]
    fn releasing_removes_only_the_destinations_reference() {
        let snap: VolumeSnapshot = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "resourceVersion": "7", "ownerReferences": [
                {"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination", "name": "d", "uid": "u1", "controller": true},
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u2"},
            ]},
            "spec": {"source": {"persistentVolumeClaimName": "p"}},
        }))
        .expect("fixture");
        let patch = without_owner(&snap, "u1").expect("has the reference");
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        let refs = patch["metadata"]["ownerReferences"]
            .as_array()
            .expect("list");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["uid"], "u2");
        assert_eq!(without_owner(&snap, "other"), None);
        let only: VolumeSnapshot = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "ownerReferences": [
                {"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination", "name": "d", "uid": "u1"},
            ]},
            "spec": {"source": {"persistentVolumeClaimName": "p"}},
        }))
        .expect("fixture");
        assert!(
            without_owner(&only, "u1").expect("patch")["metadata"]["ownerReferences"].is_null()
        );
    }

    #[test]
    fn retention_parses_and_rejects() {
        use crate::api::ReplicationDestination;
        let mut rd = ReplicationDestination::new("d", Default::default());
        assert_eq!(retention(&rd), Ok(1));
        rd.annotations_mut()
            .insert(RETAIN_SNAPSHOTS.into(), "3".into());
        assert_eq!(retention(&rd), Ok(3));
        for bad in ["0", "-1", "many"] {
            rd.annotations_mut()
                .insert(RETAIN_SNAPSHOTS.into(), bad.into());
            assert!(retention(&rd).is_err(), "{bad}");
        }
    }
}
