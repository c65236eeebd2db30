//! Types shared by ReplicationSource and ReplicationDestination: triggers, copy methods,
//! mover options and the status pieces both sides report.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, PodSecurityContext, ResourceRequirements, Toleration},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spelling::{Spelled, Spelling};

/// The pattern of `trigger.schedule`: VolSync's, quirks included, so that admission is
/// exactly as wide as VolSync's. Its two alternatives are anchored separately (the
/// descriptor only at the start, the five numeric fields only at the end), so the
/// apiserver admits strings such as `@hourly and more` that no cron parser accepts; the
/// controller reports those with the Error condition. Names of days and months (`MON`)
/// are not admitted.
pub const CRON_PATTERN: &str = r"^(@(annually|yearly|monthly|weekly|daily|hourly))|((((\d+,)*\d+|(\d+(\/|-)\d+)|\*(\/\d+)?)\s?){5})$";

/// ferrosync's stricter schedule pattern, checked by the ValidatingAdmissionPolicy in
/// `deploy/admission/` (warning by default): exactly five whitespace-separated fields, or
/// one descriptor, and nothing else.
pub const STRICT_CRON_PATTERN: &str = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*?,/-]+( +[0-9A-Za-z*?,/-]+){4})$";

/// The pattern of a Kubernetes resource.Quantity, as the apiserver's own types use it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// When a replication iteration runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// schedule is a cronspec (5 fields: minute hour day-of-month month day-of-week, or a
    /// descriptor such as @hourly or @daily) that starts an iteration at each matching time.
    /// Ignored while trigger.manual is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,
    /// manual requests exactly one iteration each time it is set to a new value. When it
    /// differs from status.lastManualSync an iteration runs; afterwards
    /// status.lastManualSync is set to this value. It takes precedence over schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<String>,
}

/// How a point-in-time copy of a volume is made (source) or kept (destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_docs_only)]
pub enum CopyMethod {
    /// Use the volume itself, with no point-in-time copy.
    Direct,
    /// Deprecated synonym for Direct.
    None,
    /// Clone the source PVC (source only).
    Clone,
    /// Take a VolumeSnapshot: on the source, restored to a temporary PVC for the transfer;
    /// on the destination, taken after each successful iteration.
    Snapshot,
}

impl CopyMethod {
    /// `None` is a deprecated synonym: everything downstream sees `Direct`.
    pub fn normalized(self) -> Self {
        match self {
            CopyMethod::None => CopyMethod::Direct,
            other => other,
        }
    }

    /// The spelling used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Direct => "Direct",
            CopyMethod::None => "None",
            CopyMethod::Clone => "Clone",
            CopyMethod::Snapshot => "Snapshot",
        }
    }
}

/// A PersistentVolumeClaim access mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = field_docs_only)]
pub enum AccessMode {
    /// Read-write by a single node.
    ReadWriteOnce,
    /// Read-only by many nodes.
    ReadOnlyMany,
    /// Read-write by many nodes.
    ReadWriteMany,
    /// Read-write by a single pod.
    ReadWriteOncePod,
}

impl Spelled for AccessMode {
    fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// Options for the data-mover Pod, shared by both sides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverOptions {
    /// moverSecurityContext is the PodSecurityContext of the mover Pod: its user, group,
    /// fsGroup and so on. Unprivileged movers must run with a non-zero UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_security_context: Option<PodSecurityContext>,
    /// moverServiceAccount is the name of an existing ServiceAccount, in the object's
    /// namespace, that the mover Pod runs as. By default a dedicated one is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_service_account: Option<String>,
    /// moverPodLabels are extra labels put on the mover Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_pod_labels: Option<BTreeMap<String, String>>,
    /// moverResources are the compute resource requests and limits of the mover container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_resources: Option<ResourceRequirements>,
    /// moverAffinity is the scheduling affinity of the mover Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_affinity: Option<Affinity>,
    /// moverTolerations let the mover Pod be scheduled on nodes with matching taints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_tolerations: Option<Vec<Toleration>>,
    /// moverVolumes are additional Secrets, PVCs (of this namespace) or NFS exports
    /// mounted in the mover Pod, each at /mnt/<mountPath>. For advanced users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_volumes: Option<Vec<super::mover_volumes::MoverVolume>>,
}

/// The outcome of the last mover run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoverResult {
    /// The mover completed the transfer.
    Successful,
    /// The mover failed (after its Job's retries).
    Failed,
}

impl Spelled for MoverResult {
    fn as_str(self) -> &'static str {
        match self {
            MoverResult::Successful => "Successful",
            MoverResult::Failed => "Failed",
        }
    }
}

/// What the last mover run reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverStatus {
    /// result is Successful or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Spelling<MoverResult>>,
    /// logs are the mover's final lines: the rsync statistics, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// Status fields reported identically by both sides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// lastSyncTime is when the last successful iteration finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// lastSyncStartTime is when the current (or last) iteration started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_start_time: Option<Time>,
    /// lastSyncDuration is how long the last successful iteration took, e.g. "28.8s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_duration: Option<String>,
    /// nextSyncTime is when the next scheduled iteration starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Time>,
    /// lastManualSync is the value of trigger.manual that the last iteration satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_sync: Option<String>,
    /// latestMoverStatus is what the last mover run reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_mover_status: Option<MoverStatus>,
    /// lastSyncStats are the last successful iteration's transfer figures, from the
    /// mover's summary (a ferrosync extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_stats: Option<SyncStats>,
    /// progress of the running iteration: bytes moved so far and the rate, from the mover's
    /// progress lines (a ferrosync extension). Cleared when the iteration ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<SyncProgress>,
    /// policy lists the latest decision of each policy point for this object: which plugin
    /// (or built-in default) decided what, and why (a ferrosync extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Vec<PolicyDecision>>,
    /// conditions describe the object's state. The Synchronizing condition is True while an
    /// iteration runs, and False with a reason (WaitingForSchedule, WaitingForManual,
    /// Paused, Waiting (for a PVC or a key that is expected to appear), CleaningUp, or
    /// Error, which needs a person) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// Transfer figures of one iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStats {
    /// bytesSent is what this side's mover put on the wire (rsync's sent bytes, all
    /// passes): the data, on a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<i64>,
    /// bytesReceived is what this side's mover took off the wire: the data, on a
    /// destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<i64>,
    /// filesTransferred is the number of regular files rsync transferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_transferred: Option<i64>,
    /// filesDeleted is the number of files deleted on the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_deleted: Option<i64>,
}

/// Progress of a running iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgress {
    /// bytesTransferred so far in this iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_transferred: Option<i64>,
    /// bytesPerSecond is the recent transfer rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<i64>,
    /// observedAt is when these figures were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
}

/// One policy decision, as `kubectl describe` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecision {
    /// decision is the decision point: copyMethod, serviceType or psk.
    pub decision: String,
    /// value is what was decided (never key material).
    pub value: String,
    /// decidedBy is the plugin's name, or "built-in".
    pub decided_by: String,
    /// reason is the plugin's (or default's) explanation.
    pub reason: String,
    /// fallback is true when the plugin failed and the built-in default was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<bool>,
}

/// The JSON schema of a resource quantity, such as `10Gi`: an integer or a string in
/// Kubernetes quantity syntax. kube-derive's default for Quantity accepts any string.
pub fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

/// Alias kept so the specs read as the API does.
pub type Capacity = Quantity;

/// Drops an enum type's own description from its schema. kube-derive inlines an optional
/// enum into the field and lets the type's description replace the field's, so without
/// this `kubectl explain` would show "How a point-in-time copy..." instead of the field's
/// documentation.
pub(crate) fn field_docs_only(schema: &mut schemars::Schema) {
    schema.remove("description");
}
