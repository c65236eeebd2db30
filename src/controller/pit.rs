//! The source's point-in-time copy: a clone of the source PVC, or a VolumeSnapshot
//! restored to a PVC, made fresh for every iteration and removed after it.
//!
//! Each temporary object carries the iteration it belongs to in an annotation, so a copy
//! left over from an interrupted iteration is recognised as stale and replaced, never
//! sent as if it were current.

use k8s_openapi::{
    api::core::v1::PersistentVolumeClaim, apimachinery::pkg::api::resource::Quantity,
};
use kube::{Api, Resource, ResourceExt, api::DeleteParams};

use super::{
    apply::create_if_absent,
    context::Context,
    error::Error,
    lag::{Seen, Wrote},
};
use crate::{
    api::{AccessMode, CopyMethod, ReplicationSourceRsyncTLSSpec, Spelling},
    resources::{
        Owner, names,
        pvc::{self, PitSource, VolumeShape},
        snapshot::{self, VolumeSnapshot},
    },
};

/// The annotation that ties a temporary object to one iteration (its start time).
pub const ITERATION: &str = "ferrosync.io/iteration";

/// Where the copy stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PitState {
    /// This PVC holds the data to send.
    Ready(String),
    /// Still being made; the string says what it waits for.
    Waiting(String),
    /// This iteration's copy was made by another method and is being replaced: the mover
    /// Job that used it must go too.
    Replacing(String),
}

/// The method that made a copy, from its data source.
fn made_by(pvc: &PersistentVolumeClaim) -> CopyMethod {
    match pvc
        .spec
        .as_ref()
        .and_then(|s| s.data_source.as_ref())
        .map(|d| d.kind.as_str())
    {
        Some("VolumeSnapshot") => CopyMethod::Snapshot,
        _ => CopyMethod::Clone,
    }
}

/// How to make the copy: the decided method and classes (the user's explicit
/// `storageClassName` and `volumeSnapshotClassName` win over a policy's suggestion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PitPlan {
    /// Clone, Snapshot or Direct.
    pub method: CopyMethod,
    /// The VolumeSnapshotClass for Snapshot.
    pub snapshot_class: Option<String>,
    /// The StorageClass of the copy.
    pub storage_class: Option<String>,
}

/// Makes (or finds) the point-in-time copy of `source` for the iteration `iteration`. A
/// copy of this iteration made by another method (the policy switched, for example after
/// a failed clone) is replaced.
pub async fn ensure(
    ctx: &Context,
    owner: &Owner,
    tls: &ReplicationSourceRsyncTLSSpec,
    plan: &PitPlan,
    source: &PersistentVolumeClaim,
    iteration: &str,
) -> Result<PitState, Error> {
    let source_name = source.name_any();
    let method = plan.method;
    if method == CopyMethod::Direct {
        return Ok(PitState::Ready(source_name));
    }
    let name = names::source_pit(&owner.name);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let snaps: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);

    // From the cache (this is asked on every pass while the mover runs), unless it has not
    // shown this controller's own last create or delete of the copy yet. A stale view is
    // safe anyway: a copy is used only when it is marked with this iteration.
    let key = format!("{}/{name}", owner.namespace);
    let cached = ctx.caches.pvc(&owner.namespace, &name);
    let existing = match ctx.caches.pvcs_ready()
        && ctx.pvc_writes.caught_up(&key, Seen::of(cached.as_deref()))
    {
        true => cached.map(|p| (*p).clone()),
        false => pvcs.get_opt(&name).await?,
    };
    if let Some(pvc) = existing {
        if is_current(&pvc, iteration) && made_by(&pvc) == method {
            return Ok(PitState::Ready(name));
        }
        let replacing = is_current(&pvc, iteration);
        delete_stale(&pvcs, &name).await?;
        ctx.pvc_writes
            .wrote(key, Wrote::Gone(pvc.metadata.uid.clone()));
        return Ok(if replacing {
            PitState::Replacing(format!(
                "replacing {name} with a copy made by {}",
                method.as_str()
            ))
        } else {
            PitState::Waiting(format!("removing the stale copy {name}"))
        });
    }

    let data_source = match method {
        CopyMethod::Snapshot => {
            let snap = match snaps.get_opt(&name).await? {
                Some(s) if is_current(&s, iteration) => s,
                Some(_) => {
                    delete_stale(&snaps, &name).await?;
                    return Ok(PitState::Waiting(format!(
                        "removing the stale snapshot {name}"
                    )));
                }
                None => {
                    let mut snap = snapshot::snapshot(
                        owner,
                        name.clone(),
                        &source_name,
                        plan.snapshot_class.clone(),
                        true,
                    );
                    mark(&mut snap, iteration);
                    create_if_absent(&snaps, &snap).await?.0
                }
            };
            if !snapshot::is_ready(&snap) {
                let why = snap
                    .status
                    .as_ref()
                    .and_then(|s| s.error.as_ref())
                    .and_then(|e| e.message.clone());
                return Ok(PitState::Waiting(match why {
                    Some(err) => format!("VolumeSnapshot {name} failed: {err}"),
                    None => format!("VolumeSnapshot {name} is not ready yet"),
                }));
            }
            let restore = snap.status.as_ref().and_then(|s| s.restore_size.clone());
            (PitSource::Snapshot(&name), restore)
        }
        _ => (PitSource::Clone(&source_name), None),
    };
    let mut shape = shape(tls, source, data_source.1)?;
    if tls.storage_class_name.is_none()
        && let Some(class) = &plan.storage_class
    {
        shape.storage_class = Some(class.clone());
    }
    let mut copy = pvc::source_pit_pvc(owner, &shape, data_source.0);
    mark(&mut copy, iteration);
    let (stored, _) = create_if_absent(&pvcs, &copy).await?;
    ctx.pvc_writes.created(key, &stored);
    Ok(PitState::Ready(name))
}

/// The clone-failure message the provisioner left on the copy, if any: the signal that
/// the copy-method policy uses to switch to Snapshot.
pub fn clone_failure(ctx: &Context, owner: &Owner) -> Option<String> {
    let name = names::source_pit(&owner.name);
    ctx.caches
        .provisioning_failures(&owner.namespace, &name)
        .into_iter()
        .find(|m| m.contains("clone"))
}

/// Requests deletion of this owner's temporary PVCs and snapshots (marked by ferrosync
/// or, before a takeover, by VolSync); returns how many were still there.
pub async fn cleanup(ctx: &Context, owner: &Owner) -> Result<usize, Error> {
    Ok(super::cleanup::sweep(ctx, owner, &[]).await?.count())
}

fn shape(
    tls: &ReplicationSourceRsyncTLSSpec,
    source: &PersistentVolumeClaim,
    restore_size: Option<Quantity>,
) -> Result<VolumeShape, Error> {
    let spec = source.spec.clone().unwrap_or_default();
    let capacity = tls
        .capacity
        .clone()
        .or(restore_size)
        .or_else(|| pvc::requested_capacity(source))
        .ok_or_else(|| {
            Error::Invalid(
                "the source PVC has no requested storage; set spec.rsyncTLS.capacity".into(),
            )
        })?;
    let modes: Vec<String> = match &tls.access_modes {
        Some(modes) => modes
            .iter()
            .map(|m: &Spelling<AccessMode>| m.as_str().to_string())
            .collect(),
        None => spec
            .access_modes
            .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
    };
    Ok(VolumeShape {
        capacity,
        access_modes: modes,
        storage_class: tls.storage_class_name.clone().or(spec.storage_class_name),
        volume_mode: spec.volume_mode,
    })
}

fn mark<K: Resource>(obj: &mut K, iteration: &str) {
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ITERATION.into(), iteration.into());
}

fn is_current<K: Resource>(obj: &K, iteration: &str) -> bool {
    obj.meta().deletion_timestamp.is_none()
        && obj
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(ITERATION))
            .map(String::as_str)
            == Some(iteration)
}

async fn delete_stale<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}
