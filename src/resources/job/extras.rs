//! What a mover Pod gets beyond the fixed layout of `job`: the user's `moverVolumes` and
//! `moverTolerations`, and what the controller decides per pass — a read-only data mount
//! (ReadOnlyMany volumes), placement next to the application (Direct on a single-node
//! volume), the debug mode, and image pull secrets. Kept apart from the Job's base
//! layout so each behaviour is one small function over the built Pod spec.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{LocalObjectReference, PodSpec, Toleration, Volume, VolumeMount},
};

use crate::api::{MOVER_VOLUMES_ROOT, MoverOptions};

/// The node label the mover is pinned with to follow the application's pod.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The environment variable that starts the mover in debug mode (as VolSync's movers).
pub const DEBUG_ENV: &str = "DEBUG_MOVER";
/// Annotation on a debug mover's Job, so a change of mode replaces the Job.
pub const DEBUG_JOB_ANNOTATION: &str = "ferrosync.io/debug-mover";
/// The name of the data volume in the mover Pod.
pub const DATA_VOLUME: &str = "data";

/// Per-pass decisions about the mover Pod, on top of the user's options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoverExtras {
    /// The Pod starts and waits for a person instead of moving data.
    pub debug: bool,
    /// The data volume is mounted read-only (a ReadOnlyMany source or copy).
    pub read_only_data: bool,
    /// Where the application mounts the data volume, when the mover must go there.
    pub placement: Option<Placement>,
    /// Secrets (in the mover's namespace) for pulling the mover image.
    pub image_pull_secrets: Vec<String>,
}

/// The node of the application's pod, and the tolerations that let it run there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// The node name.
    pub node: String,
    /// The application pod's tolerations.
    pub tolerations: Vec<Toleration>,
}

/// Applies the user's extra options and the pass's extras to a built mover Job.
pub fn apply(job: &mut Job, options: &MoverOptions, extras: &MoverExtras) {
    if extras.debug {
        job.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(DEBUG_JOB_ANNOTATION.into(), "true".into());
    }
    let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    mount_mover_volumes(pod, options);
    tolerate(
        pod,
        options.mover_tolerations.as_deref().unwrap_or_default(),
    );
    if let Some(placement) = &extras.placement {
        pod.node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(HOSTNAME_LABEL.into(), placement.node.clone());
        tolerate(pod, &placement.tolerations);
    }
    if extras.read_only_data {
        read_only_data(pod);
    }
    if extras.debug {
        for c in &mut pod.containers {
            c.env
                .get_or_insert_with(Vec::new)
                .push(k8s_openapi::api::core::v1::EnvVar {
                    name: DEBUG_ENV.into(),
                    value: Some("1".into()),
                    value_from: None,
                });
        }
    }
    if !extras.image_pull_secrets.is_empty() {
        pod.image_pull_secrets = Some(
            extras
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect(),
        );
    }
}

/// Whether a Job was built in debug mode.
pub fn is_debug_job(job: &Job) -> bool {
    job.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(DEBUG_JOB_ANNOTATION))
}

/// Each moverVolume as a Pod volume named `mover-volume-<n>`, mounted at
/// `/mnt/<mountPath>` in every container.
fn mount_mover_volumes(pod: &mut PodSpec, options: &MoverOptions) {
    for (i, mv) in options.mover_volumes.iter().flatten().enumerate() {
        let name = format!("mover-volume-{i}");
        let src = &mv.volume_source;
        let read_only = src
            .persistent_volume_claim
            .as_ref()
            .and_then(|p| p.read_only)
            .or_else(|| src.nfs.as_ref().and_then(|n| n.read_only))
            .filter(|ro| *ro);
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: name.clone(),
            persistent_volume_claim: src.persistent_volume_claim.clone(),
            secret: src.secret.clone(),
            nfs: src.nfs.clone(),
            ..Volume::default()
        });
        for c in &mut pod.containers {
            c.volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: name.clone(),
                    mount_path: format!("{MOVER_VOLUMES_ROOT}/{}", mv.mount_path),
                    read_only,
                    ..VolumeMount::default()
                });
        }
    }
}

/// Adds tolerations the Pod does not have yet.
fn tolerate(pod: &mut PodSpec, tolerations: &[Toleration]) {
    let list = pod.tolerations.get_or_insert_with(Vec::new);
    for t in tolerations {
        if !list.contains(t) {
            list.push(t.clone());
        }
    }
    if list.is_empty() {
        pod.tolerations = None;
    }
}

/// Mounts the data volume read-only, at the volume and in every container.
fn read_only_data(pod: &mut PodSpec) {
    for v in pod.volumes.iter_mut().flatten() {
        if v.name == DATA_VOLUME
            && let Some(claim) = v.persistent_volume_claim.as_mut()
        {
            claim.read_only = Some(true);
        }
    }
    for c in &mut pod.containers {
        for m in c.volume_mounts.iter_mut().flatten() {
            if m.name == DATA_VOLUME {
                m.read_only = Some(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, SecretVolumeSource};

    use super::*;
    use crate::{
        api::{MoverVolume, MoverVolumeSource},
        resources::{
            Side,
            job::{MoverJob, mover_job},
            meta::fixtures::owner,
        },
    };

    fn build(options: &MoverOptions, extras: MoverExtras) -> Job {
        let owner = owner("ReplicationSource", "db");
        mover_job(&MoverJob {
            owner: &owner,
            side: Side::Source,
            image: "mover:1",
            backoff_limit: 2,
            pvc: "data",
            key_secret: "keys",
            options,
            privileged: false,
            destination: Some(("10.0.0.1", 8000)),
            progress_interval: std::time::Duration::from_secs(3),
            extras,
            extra_env: Vec::new(),
        })
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn toleration(key: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            ..Toleration::default()
        }
    }

    #[test]
    fn without_extras_the_pod_is_unchanged() {
        let job = build(&MoverOptions::default(), MoverExtras::default());
        let pod = pod(&job);
        assert_eq!(pod.tolerations, None);
        assert_eq!(pod.node_selector, None);
        assert_eq!(pod.image_pull_secrets, None);
        assert_eq!(pod.volumes.as_ref().map(Vec::len), Some(3));
        assert!(!is_debug_job(&job));
    }

    #[test]
    fn mover_volumes_are_mounted_under_mnt() {
        let options = MoverOptions {
            mover_volumes: Some(vec![
                MoverVolume {
                    mount_path: "repo".into(),
                    volume_source: MoverVolumeSource {
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "repo-pvc".into(),
                            read_only: Some(true),
                        }),
                        ..Default::default()
                    },
                },
                MoverVolume {
                    mount_path: "creds".into(),
                    volume_source: MoverVolumeSource {
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("creds".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                },
            ]),
            ..MoverOptions::default()
        };
        let job = build(&options, MoverExtras::default());
        let pod = pod(&job);
        let volumes = pod.volumes.clone().unwrap_or_default();
        let repo = volumes
            .iter()
            .find(|v| v.name == "mover-volume-0")
            .expect("repo");
        assert_eq!(
            repo.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("repo-pvc")
        );
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        let at = |name: &str| mounts.iter().find(|m| m.name == name).cloned().expect(name);
        assert_eq!(at("mover-volume-0").mount_path, "/mnt/repo");
        assert_eq!(at("mover-volume-0").read_only, Some(true));
        assert_eq!(at("mover-volume-1").mount_path, "/mnt/creds");
        assert_eq!(at("mover-volume-1").read_only, None);
    }

    #[test]
    fn placement_pins_the_node_and_merges_tolerations_once() {
        let options = MoverOptions {
            mover_tolerations: Some(vec![toleration("user"), toleration("app")]),
            ..MoverOptions::default()
        };
        let extras = MoverExtras {
            placement: Some(Placement {
                node: "node-7".into(),
                tolerations: vec![toleration("app"), toleration("node-only")],
            }),
            ..MoverExtras::default()
        };
        let job = build(&options, extras);
        let pod = pod(&job);
        assert_eq!(
            pod.node_selector
                .as_ref()
                .map(|s| s[HOSTNAME_LABEL].as_str()),
            Some("node-7")
        );
        let keys: Vec<_> = pod
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        assert_eq!(keys, ["user", "app", "node-only"]);
    }

    #[test]
    fn read_only_data_debug_and_pull_secrets() {
        let extras = MoverExtras {
            debug: true,
            read_only_data: true,
            image_pull_secrets: vec!["volsync-pull-abc".into()],
            ..MoverExtras::default()
        };
        let job = build(&MoverOptions::default(), extras);
        assert!(is_debug_job(&job));
        let pod = pod(&job);
        let data = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == DATA_VOLUME)
            .and_then(|v| v.persistent_volume_claim.clone())
            .expect("data");
        assert_eq!(data.read_only, Some(true));
        let c = &pod.containers[0];
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == DATA_VOLUME)
            .expect("mount");
        assert_eq!(mount.read_only, Some(true));
        assert!(
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == DEBUG_ENV && e.value.as_deref() == Some("1"))
        );
        assert_eq!(
            pod.image_pull_secrets.clone().unwrap_or_default()[0].name,
            "volsync-pull-abc"
        );
    }
}
