//! VolumeSnapshots (`snapshot.storage.k8s.io/v1`): a typed client-side view of the
//! external-snapshotter CRD, and the builders of the snapshots ferrosync takes.
//!
//! The CRD itself belongs to the snapshot controller; these types never generate it.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{Component, Owner, object_meta};

/// The desired state of a VolumeSnapshot.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "snapshot.storage.k8s.io",
    version = "v1",
    kind = "VolumeSnapshot",
    namespaced,
    status = "VolumeSnapshotStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    /// What to snapshot.
    pub source: VolumeSnapshotSource,
    /// The VolumeSnapshotClass; `None` means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
}

/// The source of a VolumeSnapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    /// A PVC in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_name: Option<String>,
    /// A pre-provisioned VolumeSnapshotContent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_content_name: Option<String>,
}

/// The observed state of a VolumeSnapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    /// The bound VolumeSnapshotContent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_volume_snapshot_content_name: Option<String>,
    /// Whether the snapshot can be restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// The minimum size of a volume restored from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<Quantity>,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<VolumeSnapshotError>,
}

/// An error the snapshotter reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotError {
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A snapshot of `pvc` named `name`. Temporary snapshots (the source's PiT copy) carry the
/// cleanup label; destination images do not, as they outlive the iteration.
pub fn snapshot(
    owner: &Owner,
    name: String,
    pvc: &str,
    class: Option<String>,
    temporary: bool,
) -> VolumeSnapshot {
    VolumeSnapshot {
        metadata: object_meta(owner, name, Component::PitCopy, temporary),
        spec: VolumeSnapshotSpec {
            source: VolumeSnapshotSource {
                persistent_volume_claim_name: Some(pvc.to_string()),
                volume_snapshot_content_name: None,
            },
            volume_snapshot_class_name: class,
        },
        status: None,
    }
}

/// Bound to content and ready to restore from: only then may it be published.
pub fn is_ready(snap: &VolumeSnapshot) -> bool {
    snap.status.as_ref().is_some_and(|s| {
        s.bound_volume_snapshot_content_name.is_some() && s.ready_to_use == Some(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fixtures::owner;

    #[test]
    fn ready_means_bound_and_ready_to_use() {
        let mut snap = snapshot(
            &owner("ReplicationDestination", "d"),
            "x".into(),
            "pvc",
            None,
            false,
        );
        assert!(!is_ready(&snap));
        snap.status = Some(VolumeSnapshotStatus {
            bound_volume_snapshot_content_name: Some("content".into()),
            ready_to_use: Some(false),
            ..Default::default()
        });
        assert!(
            !is_ready(&snap),
            "bound but not ready must not be published"
        );
        snap.status.as_mut().expect("status").ready_to_use = Some(true);
        assert!(is_ready(&snap));
    }
}
