//! The ReplicationDestination kind: the side that listens and receives data.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::TypedLocalObjectReference, apimachinery::pkg::api::resource::Quantity,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    AccessMode, CopyMethod, MoverOptions, SyncStatus, Trigger, field_docs_only, quantity_schema,
};

/// ReplicationDestination defines the receiving side of a replicated volume: the volume
/// that receives the data, how each received image is kept, and the endpoint the source
/// connects to.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "volsync.backube",
    version = "v1alpha1",
    kind = "ReplicationDestination",
    // `kubectl explain replicationdestination` shows this, instead of kube-derive's boilerplate.
    doc = "A ReplicationDestination receives a replicated volume from a ReplicationSource: spec says where the data lands, how each received image is kept and how the source reaches it; status publishes the address, the key Secret and the latest image.",
    namespaced,
    status = "ReplicationDestinationStatus",
    printcolumn = r#"{"name":"Last sync","type":"string","format":"date-time","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.lastSyncDuration"}"#,
    printcolumn = r#"{"name":"Next sync","type":"string","format":"date-time","jsonPath":".status.nextSyncTime"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronizing\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationSpec {
    /// trigger determines when the destination opens a new listener. Without one, a new
    /// listener opens right after each iteration ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// paused stops new iterations (and new mover Pods) while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// rsyncTLS configures replication with rsync through a TLS-PSK tunnel (stunnel).
    /// It is the only replication method ferrosync supports.
    #[serde(rename = "rsyncTLS", default, skip_serializing_if = "Option::is_none")]
    pub rsync_tls: Option<ReplicationDestinationRsyncTLSSpec>,
}

/// The kind of Service that exposes the destination's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_docs_only)]
pub enum ServiceType {
    /// An address on the cluster network; suits clusters whose networks are bridged.
    ClusterIP,
    /// An externally reachable address from the cluster's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The spelling used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Whether the destination volume is a filesystem or a raw block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_docs_only)]
pub enum VolumeMode {
    /// A mounted filesystem (the default).
    Filesystem,
    /// A raw block device. Accepted by the schema but not yet supported: the controller
    /// reports it as an error.
    Block,
}

/// How the destination receives and keeps data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.destinationPVC) || has(self.capacity)", "message": "spec.rsyncTLS.capacity is required when spec.rsyncTLS.destinationPVC is not set", "fieldPath": ".capacity", "reason": "FieldValueRequired"},
    {"rule": "has(self.destinationPVC) || has(self.accessModes)", "message": "spec.rsyncTLS.accessModes is required when spec.rsyncTLS.destinationPVC is not set", "fieldPath": ".accessModes", "reason": "FieldValueRequired"},
    {"rule": "!has(self.copyMethod) || self.copyMethod != 'Clone'", "message": "spec.rsyncTLS.copyMethod of a ReplicationDestination must be Direct, None or Snapshot", "fieldPath": ".copyMethod", "reason": "FieldValueInvalid"},
    {"rule": "!(has(self.cleanupTempPVC) && self.cleanupTempPVC) || (has(self.copyMethod) && self.copyMethod == 'Snapshot' && !has(self.destinationPVC))", "message": "spec.rsyncTLS.cleanupTempPVC requires copyMethod Snapshot and no destinationPVC: otherwise the only copy of the data would be deleted", "fieldPath": ".cleanupTempPVC"}
]))]
pub struct ReplicationDestinationRsyncTLSSpec {
    /// copyMethod is how each received image is kept: Snapshot takes a VolumeSnapshot of
    /// the destination volume after every successful iteration and publishes it as
    /// status.latestImage; Direct (or its deprecated synonym None) publishes the volume
    /// itself. Defaults to Direct. Clone is not valid on a destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<CopyMethod>,
    /// capacity is the size of the destination volume ferrosync provisions. Required unless
    /// destinationPVC is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub capacity: Option<Quantity>,
    /// accessModes of the destination volume ferrosync provisions. Required unless
    /// destinationPVC is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub access_modes: Option<Vec<AccessMode>>,
    /// storageClassName of the destination volume ferrosync provisions. Defaults to the
    /// cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// volumeSnapshotClassName is the VolumeSnapshotClass used by copyMethod Snapshot.
    /// Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// destinationPVC names an existing PVC to receive the data, used as-is and never
    /// deleted. When set, capacity and accessModes are not needed.
    #[serde(
        rename = "destinationPVC",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_pvc: Option<String>,
    /// cleanupTempPVC, when true, deletes the provisioned destination PVC once each
    /// iteration's snapshot is ready, and provisions it again for the next iteration.
    /// Needs copyMethod Snapshot and no destinationPVC. Defaults to false.
    #[serde(
        rename = "cleanupTempPVC",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cleanup_temp_pvc: Option<bool>,
    /// volumeMode of the destination volume: Filesystem (the default) or Block. Block is not
    /// supported yet and is reported as an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<VolumeMode>,
    /// keySecret is the name of a Secret holding the pre-shared key in its psk.txt field,
    /// as "<identity>:<at least 32 hex digits>". When unset, the PSK policy provides one
    /// (by default a freshly generated key) and status.rsyncTLS.keySecret names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// serviceType is the type of the Service that exposes the listener: ClusterIP or
    /// LoadBalancer. When unset, the service-type policy decides; the built-in default is
    /// ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// serviceAnnotations are put on the Service, for example to configure a cloud load
    /// balancer. They take precedence over annotations a policy plugin suggests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Options for the mover Pod.
    #[serde(flatten)]
    pub mover: MoverOptions,
}

/// The observed state of a ReplicationDestination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationStatus {
    /// Timing, trigger bookkeeping, mover result and conditions.
    #[serde(flatten)]
    pub sync: SyncStatus,
    /// latestImage references the newest complete copy of the data: a VolumeSnapshot
    /// (apiGroup snapshot.storage.k8s.io) with copyMethod Snapshot, or the PVC (apiGroup "")
    /// with Direct. It never points at a partial transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<TypedLocalObjectReference>,
    /// rsyncTLS holds the endpoint and key the source needs.
    #[serde(rename = "rsyncTLS", default, skip_serializing_if = "Option::is_none")]
    pub rsync_tls: Option<ReplicationDestinationRsyncTLSStatus>,
}

/// The endpoint and key a source needs to reach this destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationDestinationRsyncTLSStatus {
    /// address is where the source connects: the Service's ClusterIP, or its load
    /// balancer's hostname or IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// keySecret names the Secret holding the pre-shared key to copy to the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
}
