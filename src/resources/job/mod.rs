//! The mover Job of either side, with the volumes and security settings of the reference
//! (REFERENCE.md §2): data at /data, the key at /keys (mode 0600), an in-memory /tmp, a
//! read-only root filesystem and no capabilities unless the namespace opted in to
//! privileged movers.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::{Job, JobSpec},
    core::v1::{
        Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector,
        PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
        SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    },
};
use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta};

use super::{
    meta::{APP_NAME, Component, Owner, labels, object_meta},
    names::{self, Side},
};
use crate::api::MoverOptions;

pub mod extras;
pub use extras::{MoverExtras, Placement};

/// The mover container's name.
pub const CONTAINER: &str = "rsync-tls";
/// The uid/gid unprivileged movers run as when the user gives no security context.
pub const DEFAULT_MOVER_UID: i64 = 65532;
/// Capabilities a privileged mover gets, as in the reference.
pub const PRIVILEGED_CAPABILITIES: &[&str] = &["DAC_OVERRIDE", "CHOWN", "FOWNER", "SETGID"];
/// Where the mover finds the volume, its key and its scratch space.
pub const DATA_DIR: &str = "/data";
/// See [`DATA_DIR`].
pub const KEY_DIR: &str = "/keys";
/// See [`DATA_DIR`].
pub const TEMP_DIR: &str = "/tmp";
/// Cap on the memory-backed scratch volume (/tmp): the destination's control module (at
/// most the mover's default `CONTROL_LIMIT`, 256 MiB, which the mover enforces itself) plus
/// generated configs and the rsync daemon's log. With memory-backed emptyDirs sized by the
/// kubelet, writes beyond it fail (ENOSPC); either way a key holder cannot fill the node.
pub const TEMP_DIR_SIZE_LIMIT: &str = "320Mi";
/// The mover binary inside the image.
pub const MOVER_BINARY: &str = "/usr/local/bin/ferrosync";

/// Everything a mover Job depends on.
#[derive(Clone, Debug)]
pub struct MoverJob<'a> {
    /// The ReplicationSource or ReplicationDestination.
    pub owner: &'a Owner,
    /// Which side.
    pub side: Side,
    /// The mover image.
    pub image: &'a str,
    /// Retries of a failed mover pod.
    pub backoff_limit: i32,
    /// The PVC mounted at /data.
    pub pvc: &'a str,
    /// The Secret mounted at /keys.
    pub key_secret: &'a str,
    /// The user's mover options.
    pub options: &'a MoverOptions,
    /// Whether the namespace opted in to privileged movers.
    pub privileged: bool,
    /// Source only: the destination's address and port.
    pub destination: Option<(&'a str, i32)>,
    /// How often the mover logs its progress.
    pub progress_interval: std::time::Duration,
    /// What this pass adds to the Pod: placement, read-only data, debug mode, pull secrets.
    pub extras: MoverExtras,
    /// More mover settings as environment variables (tunnel, rsync tuning), validated by
    /// the caller.
    pub extra_env: Vec<(String, String)>,
}

/// Builds the Job.
pub fn mover_job(job: &MoverJob<'_>) -> Job {
    let name = names::job(job.side, &job.owner.name);
    let mut pod_labels: BTreeMap<String, String> =
        job.options.mover_pod_labels.clone().unwrap_or_default();
    // Ours last: a user label must not break the Service selector or ownership.
    pod_labels.extend(labels(job.owner, Component::Mover, true));
    pod_labels.insert(
        APP_NAME.into(),
        names::mover_selector(job.side, &job.owner.name),
    );

    let mut built = Job {
        metadata: object_meta(job.owner, name, Component::Mover, true),
        spec: Some(JobSpec {
            backoff_limit: Some(job.backoff_limit),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(job)),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    extras::apply(&mut built, job.options, &job.extras);
    built
}

fn pod_spec(job: &MoverJob<'_>) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: job.options.mover_service_account.clone(),
        // The mover never talks to the API server.
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context(job)),
        affinity: job.options.mover_affinity.clone(),
        containers: vec![container(job)],
        volumes: Some(vec![
            Volume {
                name: extras::DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: job.pvc.into(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            },
            Volume {
                name: "keys".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(job.key_secret.into()),
                    default_mode: Some(0o600),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tempdir".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(Quantity(TEMP_DIR_SIZE_LIMIT.into())),
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// The user's pod security context; without one, an unprivileged mover runs as a fixed
/// non-root uid with fsGroup, so it can read its key (mode 0600, group-owned by fsGroup).
fn pod_security_context(job: &MoverJob<'_>) -> PodSecurityContext {
    match (&job.options.mover_security_context, job.privileged) {
        (Some(ctx), _) => ctx.clone(),
        (None, true) => PodSecurityContext::default(),
        (None, false) => PodSecurityContext {
            run_as_user: Some(DEFAULT_MOVER_UID),
            run_as_group: Some(DEFAULT_MOVER_UID),
            fs_group: Some(DEFAULT_MOVER_UID),
            run_as_non_root: Some(true),
            ..PodSecurityContext::default()
        },
    }
}

fn container(job: &MoverJob<'_>) -> Container {
    let mut env = vec![
        env_var("PRIVILEGED_MOVER", if job.privileged { "1" } else { "0" }),
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        },
    ];
    env.push(env_var(
        "PROGRESS_INTERVAL",
        &humantime::format_duration(job.progress_interval).to_string(),
    ));
    if let Some((address, port)) = job.destination {
        env.push(env_var("DESTINATION_ADDRESS", address));
        env.push(env_var("DESTINATION_PORT", &port.to_string()));
    }
    env.extend(job.extra_env.iter().map(|(k, v)| env_var(k, v)));
    let capabilities = Capabilities {
        drop: Some(vec!["ALL".into()]),
        add: job.privileged.then(|| {
            PRIVILEGED_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect()
        }),
    };
    Container {
        name: CONTAINER.into(),
        image: Some(job.image.into()),
        command: Some(vec![
            MOVER_BINARY.into(),
            "mover".into(),
            job.side.as_str().into(),
        ]),
        env: Some(env),
        resources: job.options.mover_resources.clone(),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(capabilities),
            run_as_user: job.privileged.then_some(0),
            run_as_non_root: (!job.privileged).then_some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(extras::DATA_VOLUME, DATA_DIR),
            mount("keys", KEY_DIR),
            mount("tempdir", TEMP_DIR),
        ]),
        ..Container::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests;
