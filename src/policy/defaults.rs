//! The built-in decisions: used when no plugin serves a decision point, and as the
//! fallback when a plugin fails and its decision point is configured to fall back.
//!
//! Pure functions of the input; they must never fail or consult anything but the input.

use super::types::{
    CopyMethodDecision, CopyMethodInput, PskAnswer, PskDecision, PskInput, ServiceTypeDecision,
    ServiceTypeInput,
};
use crate::api::{CopyMethod, ServiceType};

/// Whether a clone failure says the driver cannot clone at all (the external-provisioner's
/// message), as opposed to a transient failure worth retrying.
pub fn clone_unsupported(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("does not support clone") || m.contains("clone_volume capability")
}

/// The requested method; a Clone the driver cannot do becomes a Snapshot when a snapshot
/// class exists.
pub fn copy_method(input: &CopyMethodInput) -> CopyMethodDecision {
    let requested = match input.requested {
        // Unset: Clone, the built-in default; `None` is the API's deprecated Direct.
        None => CopyMethod::Clone,
        Some(CopyMethod::None) => CopyMethod::Direct,
        Some(m) => m,
    };
    let unsupported = input
        .clone_failure
        .as_deref()
        .is_some_and(clone_unsupported);
    let first_class = input.snapshot_classes.first().cloned();
    match (requested, unsupported, first_class) {
        (CopyMethod::Clone, true, Some(class)) => CopyMethodDecision {
            method: CopyMethod::Snapshot,
            volume_snapshot_class: Some(class),
            storage_class: None,
            reason: "built-in: the driver cannot clone, so Snapshot".into(),
        },
        (method, ..) => CopyMethodDecision {
            method,
            volume_snapshot_class: None,
            storage_class: None,
            reason: match input.requested {
                Some(_) => "built-in: the requested method".into(),
                None => "built-in: no method requested, so Clone".into(),
            },
        },
    }
}

/// The requested type, else ClusterIP. No annotations.
pub fn service_type(input: &ServiceTypeInput) -> ServiceTypeDecision {
    ServiceTypeDecision {
        service_type: input.requested.unwrap_or(ServiceType::ClusterIP),
        annotations: Default::default(),
        reason: match input.requested {
            Some(_) => "built-in: the requested type".into(),
            None => "built-in: no type requested, so ClusterIP".into(),
        },
    }
}

/// Generate the key locally from the OS CSPRNG.
pub fn psk(_input: &PskInput) -> PskDecision {
    PskDecision {
        answer: PskAnswer::GenerateLocally,
        reason: "built-in: generate the key locally".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone_input(failure: Option<&str>, classes: &[&str]) -> CopyMethodInput {
        CopyMethodInput {
            requested: Some(CopyMethod::Clone),
            clone_failure: failure.map(str::to_owned),
            snapshot_classes: classes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn copy_method_defaults() {
        let failed = "failed to provision volume with StorageClass \"fsx-sc\": CSI driver does \
                      not support clone operations: controller CLONE_VOLUME capability is not \
                      reported";
        let d = copy_method(&clone_input(Some(failed), &["snap"]));
        assert_eq!(d.method, CopyMethod::Snapshot);
        assert_eq!(d.volume_snapshot_class.as_deref(), Some("snap"));
        assert_eq!(
            copy_method(&clone_input(Some(failed), &[])).method,
            CopyMethod::Clone
        );
        assert_eq!(
            copy_method(&clone_input(Some("timeout"), &["s"])).method,
            CopyMethod::Clone
        );
        assert_eq!(
            copy_method(&CopyMethodInput::default()).method,
            CopyMethod::Clone,
            "unset means Clone"
        );
        let deprecated = CopyMethodInput {
            requested: Some(CopyMethod::None),
            ..Default::default()
        };
        assert_eq!(copy_method(&deprecated).method, CopyMethod::Direct);
    }

    #[test]
    fn service_type_defaults() {
        let mut input = ServiceTypeInput::default();
        assert_eq!(service_type(&input).service_type, ServiceType::ClusterIP);
        input.requested = Some(ServiceType::LoadBalancer);
        assert_eq!(service_type(&input).service_type, ServiceType::LoadBalancer);
    }
}
