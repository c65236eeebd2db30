//! The ReplicationDestination volume populator's objects: recognising a PVC whose
//! dataSourceRef names a ReplicationDestination, and the temporary "prime" PVC restored
//! from the destination's latest snapshot, whose volume is then handed to the user's PVC
//! (the flow of Kubernetes' lib-volume-populator, with VolSync's names).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedObjectReference},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};

use super::meta::{MANAGED_BY, OWNER_UID};

/// The label on a prime PVC naming the PVC it populates.
pub const PRIME_FOR: &str = "volsync.backube/populator-pvc-for";
/// The annotation on a populated volume naming the snapshot it came from
/// (`<namespace>/<snapshot>`).
pub const POPULATED_FROM: &str = "volsync.backube/populated-from";
/// The scheduler's pick of a node for a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The ReplicationDestination a PVC asks to be populated from, if any.
pub fn destination_of(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let r = pvc.spec.as_ref()?.data_source_ref.as_ref()?;
    (r.api_group.as_deref() == Some(crate::api::GROUP)
        && r.kind == "ReplicationDestination"
        && !r.name.is_empty()
        && r.namespace
            .as_deref()
            .is_none_or(|ns| Some(ns) == pvc.metadata.namespace.as_deref()))
    .then_some(r.name.as_str())
}

/// The prime PVC's name for the PVC with uid `uid`.
pub fn prime_name(uid: &str) -> String {
    format!("vs-prime-{uid}")
}

/// The prime PVC for `pvc`: its size, modes, class and mode, restored from VolumeSnapshot
/// `snapshot`, owned by `pvc` (so it goes with it), with the selected node of a
/// WaitForFirstConsumer claim.
pub fn prime(
    pvc: &PersistentVolumeClaim,
    snapshot: &str,
    selected_node: Option<&str>,
) -> PersistentVolumeClaim {
    let spec = pvc.spec.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let mut prime = PersistentVolumeClaim {
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            data_source_ref: Some(TypedObjectReference {
                api_group: Some("snapshot.storage.k8s.io".into()),
                kind: "VolumeSnapshot".into(),
                name: snapshot.into(),
                namespace: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    prime.metadata.name = Some(prime_name(&uid));
    prime.metadata.namespace = pvc.metadata.namespace.clone();
    prime.metadata.labels = Some(BTreeMap::from([
        (PRIME_FOR.to_string(), name.clone()),
        (MANAGED_BY.to_string(), "ferrosync".to_string()),
        (OWNER_UID.to_string(), uid.clone()),
    ]));
    prime.metadata.annotations =
        selected_node.map(|n| BTreeMap::from([(SELECTED_NODE.to_string(), n.to_string())]));
    prime.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    prime
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claim(data_source_ref: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "restored", "namespace": "ns", "uid": "u-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                     "resources": {"requests": {"storage": "2Gi"}},
                     "dataSourceRef": data_source_ref},
        }))
        .expect("pvc fixture")
    }

    #[test]
    fn only_a_replication_destination_of_volsync_is_ours() {
        let rd = claim(
            json!({"apiGroup": "volsync.backube", "kind": "ReplicationDestination", "name": "d"}),
        );
        assert_eq!(destination_of(&rd), Some("d"));
        for other in [
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "s"}),
            json!({"apiGroup": "example.com", "kind": "ReplicationDestination", "name": "d"}),
            json!({"apiGroup": "volsync.backube", "kind": "ReplicationDestination", "name": "d", "namespace": "other"}),
        ] {
            assert_eq!(destination_of(&claim(other.clone())), None, "{other}");
        }
    }

    #[test]
    fn the_prime_restores_the_snapshot_in_the_claims_shape_and_belongs_to_it() {
        let pvc = claim(
            json!({"apiGroup": "volsync.backube", "kind": "ReplicationDestination", "name": "d"}),
        );
        let p = prime(&pvc, "volsync-d-dst-20260101000000", Some("node-a"));
        assert_eq!(p.metadata.name.as_deref(), Some("vs-prime-u-1"));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        let source = spec.data_source_ref.expect("source");
        assert_eq!(
            (source.kind.as_str(), source.name.as_str()),
            ("VolumeSnapshot", "volsync-d-dst-20260101000000")
        );
        assert_eq!(p.metadata.labels.expect("labels")[PRIME_FOR], "restored");
        assert_eq!(
            p.metadata.annotations.expect("annotations")[SELECTED_NODE],
            "node-a"
        );
        assert_eq!(p.metadata.owner_references.expect("owner")[0].uid, "u-1");
    }
}
