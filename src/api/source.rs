//! The ReplicationSource kind: the side that pushes data from a PVC.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AccessMode, CopyMethod, MoverOptions, SyncStatus, Trigger, quantity_schema};

/// ReplicationSource defines the source of a replicated volume: which PVC to copy, when,
/// and where to send it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "volsync.backube",
    version = "v1alpha1",
    kind = "ReplicationSource",
    // `kubectl explain replicationsource` shows this, instead of kube-derive's boilerplate.
    doc = "A ReplicationSource replicates one PersistentVolumeClaim to a ReplicationDestination, on a schedule, by hand or continuously: spec says which volume, when and where to; status reports the last and next synchronization.",
    namespaced,
    status = "ReplicationSourceStatus",
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.sourcePVC"}"#,
    printcolumn = r#"{"name":"Last sync","type":"string","format":"date-time","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.lastSyncDuration"}"#,
    printcolumn = r#"{"name":"Next sync","type":"string","format":"date-time","jsonPath":".status.nextSyncTime"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.conditions[?(@.type==\"Synchronizing\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.rsyncTLS) || has(self.sourcePVC)", "message": "spec.sourcePVC is required: name the PVC to replicate", "fieldPath": ".sourcePVC", "reason": "FieldValueRequired"}
]))]
pub struct ReplicationSourceSpec {
    /// sourcePVC is the name of the PersistentVolumeClaim, in this namespace, to replicate.
    #[serde(rename = "sourcePVC", default, skip_serializing_if = "Option::is_none")]
    pub source_pvc: Option<String>,
    /// trigger determines when iterations run. Without one, the source syncs continuously,
    /// one iteration after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// paused stops new iterations (and new mover Pods) while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// rsyncTLS configures replication with rsync through a TLS-PSK tunnel (stunnel).
    /// It is the only replication method ferrosync supports.
    #[serde(rename = "rsyncTLS", default, skip_serializing_if = "Option::is_none")]
    pub rsync_tls: Option<ReplicationSourceRsyncTLSSpec>,
}

/// How the source copies its PVC and reaches the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.address) && size(self.address) > 0", "message": "spec.rsyncTLS.address is required: set it to the destination's status.rsyncTLS.address", "fieldPath": ".address", "reason": "FieldValueRequired"},
    {"rule": "!has(self.port) || (self.port >= 1 && self.port <= 65535)", "message": "spec.rsyncTLS.port must be between 1 and 65535", "fieldPath": ".port"}
]))]
pub struct ReplicationSourceRsyncTLSSpec {
    /// copyMethod is how the point-in-time (PiT) copy of the source PVC is made: Clone (a
    /// PVC cloned from the source), Snapshot (a VolumeSnapshot restored to a PVC), or
    /// Direct/None (the source PVC itself, no PiT copy). When unset, the copy-method policy
    /// decides; the built-in default is Clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<CopyMethod>,
    /// capacity overrides the size of the PiT copy. Defaults to the snapshot's restoreSize,
    /// then the source PVC's capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub capacity: Option<Quantity>,
    /// storageClassName overrides the StorageClass of the PiT copy. Defaults to the source
    /// PVC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// accessModes override the access modes of the PiT copy. Defaults to the source PVC's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub access_modes: Option<Vec<AccessMode>>,
    /// volumeSnapshotClassName is the VolumeSnapshotClass used by copyMethod Snapshot.
    /// Defaults to the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    /// keySecret is the name of a Secret holding the pre-shared key in its psk.txt field,
    /// as "<identity>:<at least 32 hex digits>". It must match the destination's key. When
    /// unset, the PSK policy provides one and status.rsyncTLS.keySecret names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// address is the destination's host name or IP, from its status.rsyncTLS.address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// port is the destination's TCP port. Defaults to 8000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Options for the mover Pod.
    #[serde(flatten)]
    pub mover: MoverOptions,
}

/// The observed state of a ReplicationSource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSourceStatus {
    /// Timing, trigger bookkeeping, mover result and conditions.
    #[serde(flatten)]
    pub sync: SyncStatus,
    /// rsyncTLS holds what the source publishes about its rsync-TLS connection.
    #[serde(rename = "rsyncTLS", default, skip_serializing_if = "Option::is_none")]
    pub rsync_tls: Option<ReplicationSourceRsyncTLSStatus>,
}

/// What the source publishes about its rsync-TLS connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSourceRsyncTLSStatus {
    /// keySecret names the Secret holding the key, set only when ferrosync provided the key
    /// (spec.rsyncTLS.keySecret was unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
}

/// Labels are a plain map in this API.
pub type Labels = BTreeMap<String, String>;
