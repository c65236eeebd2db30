//! PersistentVolumeClaims: the destination volume and the source's point-in-time copy.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
        VolumeResourceRequirements,
    },
    apimachinery::pkg::api::resource::Quantity,
};

use super::{
    meta::{Component, Owner, object_meta},
    names,
};
use crate::api::{AccessMode, Spelling};

/// Size, modes and class of a PVC to create.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeShape {
    /// Requested capacity.
    pub capacity: Quantity,
    /// Access modes (at least one).
    pub access_modes: Vec<String>,
    /// StorageClass; `None` means the cluster default.
    pub storage_class: Option<String>,
    /// Filesystem or Block.
    pub volume_mode: Option<String>,
}

impl VolumeShape {
    /// The shape the user asked for, as API strings.
    pub fn new(
        capacity: Quantity,
        access_modes: &[Spelling<AccessMode>],
        storage_class: Option<String>,
    ) -> Self {
        Self {
            capacity,
            access_modes: access_modes
                .iter()
                .map(|m| m.as_str().to_string())
                .collect(),
            storage_class,
            volume_mode: None,
        }
    }
}

/// The PVC a destination provisions when no destinationPVC is given. It persists across
/// iterations, so it is not temporary.
pub fn destination_pvc(owner: &Owner, shape: &VolumeShape) -> PersistentVolumeClaim {
    pvc(
        object_meta(
            owner,
            names::destination_pvc(&owner.name),
            Component::PitCopy,
            false,
        ),
        shape,
        None,
    )
}

/// The source's temporary point-in-time copy: a clone of `source_pvc`, or a restore of
/// the VolumeSnapshot `snapshot`.
pub fn source_pit_pvc(
    owner: &Owner,
    shape: &VolumeShape,
    data_source: PitSource<'_>,
) -> PersistentVolumeClaim {
    let source = match data_source {
        PitSource::Clone(pvc) => TypedLocalObjectReference {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: pvc.into(),
        },
        PitSource::Snapshot(snap) => TypedLocalObjectReference {
            api_group: Some("snapshot.storage.k8s.io".into()),
            kind: "VolumeSnapshot".into(),
            name: snap.into(),
        },
    };
    pvc(
        object_meta(
            owner,
            names::source_pit(&owner.name),
            Component::PitCopy,
            true,
        ),
        shape,
        Some(source),
    )
}

/// Where a point-in-time copy's data comes from.
#[derive(Clone, Copy, Debug)]
pub enum PitSource<'a> {
    /// A clone of this PVC.
    Clone(&'a str),
    /// A restore of this VolumeSnapshot.
    Snapshot(&'a str),
}

fn pvc(
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    shape: &VolumeShape,
    data_source: Option<TypedLocalObjectReference>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(shape.access_modes.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    shape.capacity.clone(),
                )])),
                ..Default::default()
            }),
            storage_class_name: shape.storage_class.clone(),
            volume_mode: shape.volume_mode.clone(),
            data_source,
            ..Default::default()
        }),
        status: None,
    }
}

/// The requested capacity of an existing PVC.
pub fn requested_capacity(pvc: &PersistentVolumeClaim) -> Option<Quantity> {
    pvc.spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .cloned()
}

/// Whether a PVC is bound to a volume.
pub fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::{CLEANUP, fixtures::owner};

    fn shape() -> VolumeShape {
        VolumeShape::new(
            Quantity("10Gi".into()),
            &[AccessMode::ReadWriteOnce.into()],
            Some("my-sc".into()),
        )
    }

    #[test]
    fn destination_pvc_persists_and_is_not_temporary() {
        let pvc = destination_pvc(&owner("ReplicationDestination", "my-dest"), &shape());
        assert_eq!(pvc.metadata.name.as_deref(), Some("volsync-my-dest-dst"));
        assert!(!pvc.metadata.labels.expect("labels").contains_key(CLEANUP));
        let spec = pvc.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("my-sc"));
        assert_eq!(
            requested_capacity(&PersistentVolumeClaim {
                spec: Some(spec),
                ..Default::default()
            }),
            Some(Quantity("10Gi".into()))
        );
    }

    #[test]
    fn pit_copies_are_temporary_and_name_their_data_source() {
        let clone = source_pit_pvc(
            &owner("ReplicationSource", "s"),
            &shape(),
            PitSource::Clone("data"),
        );
        assert_eq!(clone.metadata.name.as_deref(), Some("volsync-s-src"));
        assert_eq!(
            clone.metadata.labels.as_ref().expect("labels")[CLEANUP],
            "uid-s"
        );
        let ds = clone.spec.expect("spec").data_source.expect("source");
        assert_eq!(
            (ds.kind.as_str(), ds.name.as_str(), ds.api_group),
            ("PersistentVolumeClaim", "data", None)
        );
        let restore = source_pit_pvc(
            &owner("ReplicationSource", "s"),
            &shape(),
            PitSource::Snapshot("volsync-s-src"),
        );
        let ds = restore.spec.expect("spec").data_source.expect("source");
        assert_eq!(ds.api_group.as_deref(), Some("snapshot.storage.k8s.io"));
    }
}
