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
    let Some(pod) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    else {
        return;
    };
    mount_mover_volumes(pod, options);
    tolerate(pod, options.mover_tolerations.as_deref().unwrap_or_default());
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
            c.env.get_or_insert_with(Vec::new).push(
                k8s_openapi::api::core::v1::EnvVar {
                    name: DEBUG_ENV.into(),
                    value: Some("1".into()),
                    value_from: None,
                },
            );
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
            c.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
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
