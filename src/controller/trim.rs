//! What a watch cache keeps of an object: the object without what the controller never
//! reads, dropped as each object arrives and before it is stored, so the caches hold
//! less (issue 10's peak-memory target; BENCHMARKS.md, "Peak memory").
//!
//! - `metadata.managedFields` always: the apiserver's record of which manager set which
//!   field, as large as the fields themselves. The controller writes with server-side
//!   apply (the apiserver merges with what is stored) and merge patches, and never sends
//!   an object read from a cache back whole, so nothing it writes needs them.
//! - kubectl's `last-applied-configuration` annotation (a JSON copy of the whole object
//!   as last `kubectl apply`d), except on the ReplicationSources and
//!   ReplicationDestinations: their annotations go to the policy plugins as they are
//!   (`psk` input), and what a plugin is shown must not depend on how the caches keep
//!   objects.
//! - A mover Job's spec (its pod template, most of its size): every reader of the Job
//!   cache reads the Job's metadata (uid, resourceVersion, labels, annotations, owner,
//!   creation time) and status conditions only (`mover_run`, `iteration`, `mover_pod`,
//!   `context`, `takeover`), and a Job is rebuilt from its builder, never from the cache.
//! - A mover pod's spec but for what placement reads (`mover_pod::placement_among`): its
//!   node, its tolerations and its PVC volumes' claims. The other readers of the mover-pod
//!   cache (`mover_run`, `stalled`, `iteration`) read metadata and status only.
//!
//! Pure. It must never drop a field the controller reads: only those.

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, PodSpec, Volume},
};
use kube::Resource;

/// kubectl's record of the last `kubectl apply`: a JSON copy of the object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Which annotations a cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotations {
    /// All of them (objects whose annotations are handed on as they are).
    All,
    /// All but kubectl's [`LAST_APPLIED`] copy of the object.
    WithoutLastApplied,
}

/// Drops from `obj` what no reader of a cache uses (see the module header).
pub fn trim<K: Resource>(obj: &mut K, annotations: Annotations) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if annotations == Annotations::WithoutLastApplied
        && let Some(own) = meta.annotations.as_mut()
    {
        own.remove(LAST_APPLIED);
        if own.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Drops a cached mover Job's spec (see the module header); [`trim`] drops the rest.
pub fn without_spec(job: &mut Job) {
    job.spec = None;
}

/// Keeps of a cached mover pod's spec only what placement reads (see the module header).
pub fn placement_spec_only(pod: &mut Pod) {
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        tolerations: spec.tolerations,
        volumes: spec.volumes.map(|volumes| {
            volumes
                .into_iter()
                .filter(|v| v.persistent_volume_claim.is_some())
                .map(|v| Volume {
                    name: v.name,
                    persistent_volume_claim: v.persistent_volume_claim,
                    ..Volume::default()
                })
                .collect()
        }),
        ..PodSpec::default()
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{
            PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        },
        apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference},
    };
    use kube::{api::ObjectMeta, core::PartialObjectMeta};

    use super::*;

    fn managed() -> Option<Vec<ManagedFieldsEntry>> {
        Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            operation: Some("Apply".into()),
            ..ManagedFieldsEntry::default()
        }])
    }

    /// A PVC as the apiserver sends it: managedFields, kubectl's copy, and everything the
    /// controller reads (labels, other annotations, owner, spec, status).
    fn applied_pvc() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("app".into()),
                uid: Some("u1".into()),
                resource_version: Some("42".into()),
                labels: Some(BTreeMap::from([("app".into(), "db".into())])),
                annotations: Some(BTreeMap::from([
                    (
                        LAST_APPLIED.into(),
                        r#"{"kind":"PersistentVolumeClaim"}"#.into(),
                    ),
                    ("volume.kubernetes.io/selected-node".into(), "n1".into()),
                ])),
                owner_references: Some(vec![OwnerReference {
                    name: "rd".into(),
                    uid: "u0".into(),
                    ..OwnerReference::default()
                }]),
                managed_fields: managed(),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some("fast".into()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".into()),
                ..PersistentVolumeClaimStatus::default()
            }),
        }
    }

    #[test]
    fn drops_managed_fields_and_kubectls_copy_and_keeps_the_rest() {
        let mut pvc = applied_pvc();
        trim(&mut pvc, Annotations::WithoutLastApplied);
        let mut expected = applied_pvc();
        expected.metadata.managed_fields = None;
        expected
            .metadata
            .annotations
            .as_mut()
            .map(|a| a.remove(LAST_APPLIED));
        assert_eq!(pvc, expected);
        assert_eq!(
            pvc.metadata.annotations,
            Some(BTreeMap::from([(
                "volume.kubernetes.io/selected-node".into(),
                "n1".into()
            )]))
        );
        assert!(pvc.metadata.labels.is_some() && pvc.metadata.owner_references.is_some());
        assert_eq!(pvc.spec, applied_pvc().spec);
        assert_eq!(pvc.status, applied_pvc().status);
    }

    #[test]
    fn objects_whose_annotations_are_handed_on_keep_all_of_them() {
        let mut pvc = applied_pvc();
        trim(&mut pvc, Annotations::All);
        assert_eq!(pvc.metadata.managed_fields, None);
        assert_eq!(pvc.metadata.annotations, applied_pvc().metadata.annotations);
    }

    #[test]
    fn a_cached_job_keeps_what_its_readers_read() {
        use k8s_openapi::{
            api::batch::v1::{JobCondition, JobSpec, JobStatus},
            apimachinery::pkg::apis::meta::v1::Time,
        };

        let at = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time"));
        let mut job = Job {
            metadata: ObjectMeta {
                name: Some("volsync-rsync-tls-src-a".into()),
                uid: Some("u2".into()),
                resource_version: Some("7".into()),
                creation_timestamp: Some(at.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "ferrosync".into(),
                )])),
                managed_fields: managed(),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec::default()),
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    last_transition_time: Some(at),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
        };
        let read = |j: &Job| {
            (
                super::super::mover_run::JobMeta::of(j),
                super::super::mover_run::is_running(j),
                super::super::takeover::is_ours(j),
                j.metadata.uid.clone(),
                j.metadata.resource_version.clone(),
            )
        };
        let before = read(&job);
        trim(&mut job, Annotations::WithoutLastApplied);
        without_spec(&mut job);
        assert_eq!(
            (job.spec.is_none(), job.metadata.managed_fields.is_none()),
            (true, true)
        );
        assert_eq!(read(&job), before);
    }

    #[test]
    fn a_cached_mover_pod_is_placed_as_before() {
        use k8s_openapi::api::core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, PodStatus,
            Toleration,
        };

        let claim = |name: &str, claim: &str| Volume {
            name: name.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: Some(true),
            }),
            ..Volume::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("mover".into()),
                namespace: Some("app".into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "ferrosync".into(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n2".into()),
                tolerations: Some(vec![Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Exists".into()),
                    ..Toleration::default()
                }]),
                containers: vec![Container {
                    name: "rsync-tls".into(),
                    env: Some(vec![EnvVar {
                        name: "DIRECTION".into(),
                        value: Some("source".into()),
                        ..EnvVar::default()
                    }]),
                    ..Container::default()
                }],
                volumes: Some(vec![
                    claim("data", "data"),
                    Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                    claim("other", "logs"),
                ]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        };
        let placed = |pod: &Pod, claim: &str| {
            super::super::mover_pod::placement_among(claim, [pod]).map(|p| (p.node, p.tolerations))
        };
        let before = (
            placed(&pod, "data"),
            placed(&pod, "logs"),
            placed(&pod, "tmp"),
        );
        let (status, meta) = (pod.status.clone(), pod.metadata.clone());
        placement_spec_only(&mut pod);
        assert!(before.0.is_some() && before.1.is_some() && before.2.is_none());
        assert_eq!(
            (
                placed(&pod, "data"),
                placed(&pod, "logs"),
                placed(&pod, "tmp")
            ),
            before
        );
        let spec = pod.spec.as_ref().expect("spec");
        assert!(spec.containers.is_empty());
        assert_eq!(spec.volumes.as_ref().map(Vec::len), Some(2));
        assert_eq!((pod.status, pod.metadata), (status, meta));
    }

    #[test]
    fn an_object_with_only_kubectls_copy_is_left_without_annotations() {
        let mut meta: PartialObjectMeta<PersistentVolumeClaim> = PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some("s".into()),
                annotations: Some(BTreeMap::from([(LAST_APPLIED.into(), "{}".into())])),
                managed_fields: managed(),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        };
        trim(&mut meta, Annotations::WithoutLastApplied);
        assert_eq!(meta.metadata.annotations, None);
        assert_eq!(meta.metadata.managed_fields, None);
        assert_eq!(meta.metadata.name.as_deref(), Some("s"));
    }
}
