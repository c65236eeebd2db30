//! The decision points' inputs and decisions as the controller sees them: plain Rust
//! types with a JSON form (used by `policy eval`, golden tables and provenance), and their
//! conversion to the WIT records handed to plugins.
//!
//! Converting a plugin's output back is *not* done here: that is validation's job
//! (`validate.rs`), and nothing from a plugin may be used without it.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use super::bindings::wit;
use crate::api::{CopyMethod, ServiceType, psk::Psk};

/// Labels, annotations or parameters.
pub type Pairs = BTreeMap<String, String>;

/// The three decision points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionPoint {
    /// A source's point-in-time copy method.
    CopyMethod,
    /// A destination's Service type and annotations.
    ServiceType,
    /// The pre-shared key of a replication.
    Psk,
}

impl DecisionPoint {
    /// The WIT world's name, also used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPoint::CopyMethod => "copy-method",
            DecisionPoint::ServiceType => "service-type",
            DecisionPoint::Psk => "psk",
        }
    }
}

impl fmt::Display for DecisionPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The source PVC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcInfo {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: Pairs,
    #[serde(default)]
    pub capacity: Option<String>,
    #[serde(default)]
    pub access_modes: Vec<String>,
    #[serde(default)]
    pub volume_mode: Option<String>,
}

/// A StorageClass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageClassInfo {
    pub name: String,
    pub provisioner: String,
    #[serde(default)]
    pub parameters: Pairs,
}

impl PvcInfo {
    /// What a plugin sees of a source PVC: the controller and `policy diff` describe it alike.
    pub fn of(source: &k8s_openapi::api::core::v1::PersistentVolumeClaim) -> Self {
        use kube::ResourceExt;
        let spec = source.spec.clone().unwrap_or_default();
        PvcInfo {
            name: source.name_any(),
            namespace: source.namespace().unwrap_or_default(),
            labels: source.labels().clone(),
            capacity: crate::resources::pvc::requested_capacity(source).map(|q| q.0),
            access_modes: spec.access_modes.unwrap_or_default(),
            volume_mode: spec.volume_mode,
        }
    }
}

impl StorageClassInfo {
    /// What a plugin sees of a StorageClass.
    pub fn of(class: &k8s_openapi::api::storage::v1::StorageClass) -> Self {
        use kube::ResourceExt;
        StorageClassInfo {
            name: class.name_any(),
            provisioner: class.provisioner.clone(),
            parameters: class.parameters.clone().unwrap_or_default(),
        }
    }
}

/// Input of the copy-method decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyMethodInput {
    pub pvc: PvcInfo,
    #[serde(default)]
    pub storage_class: Option<StorageClassInfo>,
    /// The requested method; `None` (the API's deprecated spelling) means Direct.
    #[serde(default)]
    pub requested: Option<CopyMethod>,
    /// VolumeSnapshotClasses whose driver is the PVC's provisioner.
    #[serde(default)]
    pub snapshot_classes: Vec<String>,
    /// All StorageClasses that exist.
    #[serde(default)]
    pub storage_classes: Vec<String>,
    /// The message of a failed clone of this PVC, if one was seen.
    #[serde(default)]
    pub clone_failure: Option<String>,
}

/// The copy-method decision, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyMethodDecision {
    pub method: CopyMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    pub reason: String,
}

/// What the host saw of the cluster's topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub node_count: u32,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub provider_id_prefixes: Vec<String>,
    #[serde(default)]
    pub load_balancer_ingress_seen: bool,
    #[serde(default)]
    pub service_export_crd: bool,
}

/// Input of the service-type decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceTypeInput {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: Pairs,
    #[serde(default)]
    pub requested: Option<ServiceType>,
    #[serde(default)]
    pub topology: Topology,
}

/// The service-type decision, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTypeDecision {
    pub service_type: ServiceType,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Pairs,
    pub reason: String,
}

impl ServiceTypeDecision {
    /// The Service's annotations: the plugin's, overridden by the user's
    /// `serviceAnnotations`, which always win.
    pub fn merged_annotations(&self, user: &Pairs) -> Pairs {
        let mut merged = self.annotations.clone();
        merged.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }
}

/// Which end of a replication asks for its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    #[default]
    Source,
    Destination,
}

/// Input of the psk decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PskInput {
    pub side: Side,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: Pairs,
    #[serde(default)]
    pub annotations: Pairs,
    /// The generated key Secret: `volsync-rsync-tls-<name>` of a destination,
    /// `ferrosync-source-key-<name>` of a source.
    pub key_secret_name: String,
    #[serde(default)]
    pub key_secret_exists: bool,
    /// This side's membership of its authorised pair ([`super::release::member_id`]),
    /// set by the host only when the operator lets the credential reach member paths.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub member: String,
}

/// What to do about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PskAnswer {
    /// Store this key in the key Secret.
    UseKey(Psk),
    /// Generate a key from the OS CSPRNG.
    GenerateLocally,
    /// Transient: ask again later.
    NotAvailableYet,
}

/// The psk decision, validated. Its JSON form carries the key, for golden tables; its
/// Debug form never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskDecision {
    pub answer: PskAnswer,
    pub reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PskDecisionJson<'a> {
    answer: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<&'a str>,
    reason: &'a str,
}

impl Serialize for PskDecision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (answer, key) = match &self.answer {
            PskAnswer::UseKey(k) => ("UseKey", Some(k)),
            PskAnswer::GenerateLocally => ("GenerateLocally", None),
            PskAnswer::NotAvailableYet => ("NotAvailableYet", None),
        };
        PskDecisionJson {
            answer,
            identity: key.map(Psk::identity),
            key_hex: key.map(Psk::key_hex),
            reason: &self.reason,
        }
        .serialize(s)
    }
}

fn pairs(p: &Pairs) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl CopyMethodInput {
    pub(crate) fn to_wit(&self, settings: &str) -> wit::CopyMethodInput {
        wit::CopyMethodInput {
            settings: settings.to_owned(),
            pvc: wit::Pvc {
                name: self.pvc.name.clone(),
                namespace: self.pvc.namespace.clone(),
                labels: pairs(&self.pvc.labels),
                capacity: self.pvc.capacity.clone(),
                access_modes: self.pvc.access_modes.clone(),
                volume_mode: self.pvc.volume_mode.clone(),
            },
            storage_class: self.storage_class.as_ref().map(|sc| wit::StorageClass {
                name: sc.name.clone(),
                provisioner: sc.provisioner.clone(),
                parameters: pairs(&sc.parameters),
            }),
            requested: self.requested.map(|m| match m {
                CopyMethod::Direct | CopyMethod::None => wit::Method::Direct,
                CopyMethod::Clone => wit::Method::Clone,
                CopyMethod::Snapshot => wit::Method::Snapshot,
            }),
            snapshot_classes: self.snapshot_classes.clone(),
            storage_classes: self.storage_classes.clone(),
            clone_failure: self.clone_failure.clone(),
        }
    }
}

impl ServiceTypeInput {
    pub(crate) fn to_wit(&self, settings: &str) -> wit::ServiceTypeInput {
        let t = &self.topology;
        wit::ServiceTypeInput {
            settings: settings.to_owned(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: pairs(&self.labels),
            requested: self.requested.map(service_type_to_wit),
            topology: wit::Topology {
                node_count: t.node_count,
                regions: t.regions.clone(),
                zones: t.zones.clone(),
                provider_id_prefixes: t.provider_id_prefixes.clone(),
                load_balancer_ingress_seen: t.load_balancer_ingress_seen,
                service_export_crd: t.service_export_crd,
            },
        }
    }
}

fn service_type_to_wit(t: ServiceType) -> wit::ServiceType {
    match t {
        ServiceType::ClusterIP => wit::ServiceType::ClusterIp,
        ServiceType::LoadBalancer => wit::ServiceType::LoadBalancer,
        // The contract has no NodePort: a destination that asks for one is never put to
        // the policy (controller::destination), so this arm only keeps the match whole.
        ServiceType::NodePort => wit::ServiceType::ClusterIp,
    }
}

impl PskInput {
    pub(crate) fn to_wit(&self, settings: &str) -> wit::PskInput {
        wit::PskInput {
            settings: settings.to_owned(),
            side: match self.side {
                Side::Source => wit::Side::Source,
                Side::Destination => wit::Side::Destination,
            },
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: pairs(&self.labels),
            annotations: pairs(&self.annotations),
            key_secret_name: self.key_secret_name.clone(),
            key_secret_exists: self.key_secret_exists,
            member: self.member.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_service_annotations_win() {
        let d = ServiceTypeDecision {
            service_type: ServiceType::LoadBalancer,
            annotations: [("a".into(), "plugin".into()), ("b".into(), "plugin".into())].into(),
            reason: String::new(),
        };
        let user: Pairs = [("a".into(), "user".into())].into();
        let merged = d.merged_annotations(&user);
        assert_eq!(merged["a"], "user");
        assert_eq!(merged["b"], "plugin");
    }

    #[test]
    fn psk_decision_json_and_debug() {
        let key = Psk::new("ferrosync", &"ab".repeat(16)).unwrap();
        let d = PskDecision {
            answer: PskAnswer::UseKey(key),
            reason: "r".into(),
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["answer"], "UseKey");
        assert_eq!(json["keyHex"], "ab".repeat(16));
        assert!(!format!("{d:?}").contains(&"ab".repeat(16)));
    }
}
