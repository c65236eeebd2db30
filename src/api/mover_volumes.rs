//! `moverVolumes`: extra PVCs, Secrets or NFS exports mounted into the mover Pod under
//! `/mnt/<mountPath>`, as VolSync's mover options have them (advanced users only).

use k8s_openapi::api::core::v1::{
    NFSVolumeSource, PersistentVolumeClaimVolumeSource, SecretVolumeSource,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where every mover volume is mounted: `/mnt/<mountPath>`.
pub const MOVER_VOLUMES_ROOT: &str = "/mnt";

/// One additional volume of the mover Pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverVolume {
    /// mountPath is the directory under /mnt where the volume appears in the mover Pod:
    /// "repo" mounts it at /mnt/repo.
    pub mount_path: String,
    /// volumeSource is the Secret, PersistentVolumeClaim (in this namespace) or NFS export
    /// to mount.
    pub volume_source: MoverVolumeSource,
}

/// What a mover volume mounts: exactly one of its fields is expected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoverVolumeSource {
    /// persistentVolumeClaim mounts a PVC of this namespace (readOnly forces a read-only
    /// mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// secret mounts a Secret of this namespace, each key as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// nfs mounts an NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<NFSVolumeSource>,
}

/// Why a mover volume cannot be mounted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoverVolumeError {
    /// The mount path is not one plain directory name.
    #[error(
        "spec.rsyncTLS.moverVolumes[{index}].mountPath {path:?} must be one directory name under /mnt (no '/', '.' or '..')"
    )]
    BadMountPath {
        /// Position in the list.
        index: usize,
        /// The path given.
        path: String,
    },
    /// Two volumes would be mounted at the same place.
    #[error("spec.rsyncTLS.moverVolumes: mountPath {0:?} is used more than once")]
    DuplicateMountPath(String),
    /// The volume source names no source, or several.
    #[error(
        "spec.rsyncTLS.moverVolumes[{0}].volumeSource must set exactly one of persistentVolumeClaim, secret or nfs"
    )]
    NotOneSource(usize),
}

/// Checks a moverVolumes list: each mount path is one directory name (so nothing can be
/// mounted over /mnt itself or outside it), unique, and each source names one volume.
pub fn validate_mover_volumes(volumes: &[MoverVolume]) -> Result<(), MoverVolumeError> {
    let mut seen = std::collections::BTreeSet::new();
    for (index, v) in volumes.iter().enumerate() {
        let path = v.mount_path.as_str();
        if path.is_empty() || path == "." || path == ".." || path.contains('/') {
            return Err(MoverVolumeError::BadMountPath {
                index,
                path: path.into(),
            });
        }
        if !seen.insert(path) {
            return Err(MoverVolumeError::DuplicateMountPath(path.into()));
        }
        let s = &v.volume_source;
        let sources = [
            s.persistent_volume_claim.is_some(),
            s.secret.is_some(),
            s.nfs.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err(MoverVolumeError::NotOneSource(index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(path: &str) -> MoverVolume {
        MoverVolume {
            mount_path: path.into(),
            volume_source: MoverVolumeSource {
                secret: Some(SecretVolumeSource {
                    secret_name: Some("s".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn plain_names_pass_and_escapes_fail() {
        assert_eq!(
            validate_mover_volumes(&[secret("repo"), secret("creds")]),
            Ok(())
        );
        for bad in ["", ".", "..", "a/b", "/etc", "../x"] {
            assert!(
                matches!(
                    validate_mover_volumes(&[secret(bad)]),
                    Err(MoverVolumeError::BadMountPath { index: 0, .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn duplicates_and_ambiguous_sources_fail() {
        assert_eq!(
            validate_mover_volumes(&[secret("a"), secret("a")]),
            Err(MoverVolumeError::DuplicateMountPath("a".into()))
        );
        let mut two = secret("b");
        two.volume_source.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
            claim_name: "p".into(),
            read_only: None,
        });
        let none = MoverVolume {
            mount_path: "c".into(),
            volume_source: MoverVolumeSource::default(),
        };
        assert_eq!(
            validate_mover_volumes(&[two]),
            Err(MoverVolumeError::NotOneSource(0))
        );
        assert_eq!(
            validate_mover_volumes(&[secret("a"), none]),
            Err(MoverVolumeError::NotOneSource(1))
        );
    }
}
