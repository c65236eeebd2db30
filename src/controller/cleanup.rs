//! The end-of-iteration sweep of temporary objects: every PVC and VolumeSnapshot of the
//! owner's namespace labelled for cleanup with the owner's uid, by ferrosync
//! (`ferrosync.io/cleanup`) or by VolSync (`volsync.backube/cleanup`, left behind when
//! ferrosync took a pair over). A snapshot labelled `volsync.backube/do-not-delete` is
//! spared, as VolSync spares it, and so is anything named in `keep`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::{Api, Resource, ResourceExt, api::DeleteParams};

use super::{context::Context, error::Error};
use crate::resources::{
    Owner,
    meta::{CLEANUP_LABELS, DO_NOT_DELETE},
    snapshot::VolumeSnapshot,
};

/// What a sweep requested deletion of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// PVC names.
    pub pvcs: BTreeSet<String>,
    /// VolumeSnapshot names.
    pub snapshots: BTreeSet<String>,
}

impl Swept {
    /// How many objects were still there.
    pub fn count(&self) -> usize {
        self.pvcs.len() + self.snapshots.len()
    }
}

/// Requests deletion of the owner's marked PVCs and snapshots, except `keep` and
/// do-not-delete snapshots.
pub async fn sweep(ctx: &Context, owner: &Owner, keep: &[&str]) -> Result<Swept, Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let snaps: Api<VolumeSnapshot> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut swept = Swept::default();
    // From the caches: what is marked was made (or left by VolSync) long before the
    // iteration ends; anything the caches have not shown yet goes at the next sweep.
    let ns = &owner.namespace;
    for label in CLEANUP_LABELS {
        for pvc in ctx.labelled_pvcs(ns, label, &owner.uid).await? {
            if doomed(&pvc, keep, false) && swept.pvcs.insert(pvc.name_any()) {
                delete(&pvcs, &pvc.name_any()).await?;
            }
        }
        for snap in ctx
            .labelled_snapshots(ns, &[(label, Some(owner.uid.as_str()))])
            .await?
        {
            if doomed(&snap, keep, true) && swept.snapshots.insert(snap.name_any()) {
                delete(&snaps, &snap.name_any()).await?;
            }
        }
    }
    Ok(swept)
}

/// Whether a marked object goes: not kept by name, and (for snapshots) not protected.
pub fn doomed<K: Resource>(obj: &K, keep: &[&str], snapshot: bool) -> bool {
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let protected = snapshot
        && obj
            .meta()
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(DO_NOT_DELETE));
    !keep.contains(&name) && !protected
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(name: &str, labels: &[(&str, &str)]) -> PersistentVolumeClaim {
        let mut p = PersistentVolumeClaim::default();
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    #[test]
    fn kept_names_and_protected_snapshots_are_spared() {
        let plain = pvc("tmp", &[]);
        let protected = pvc("snap", &[(DO_NOT_DELETE, "")]);
        assert!(doomed(&plain, &[], false));
        assert!(!doomed(&plain, &["tmp"], false));
        assert!(!doomed(&protected, &[], true), "a protected snapshot stays");
        assert!(
            doomed(&protected, &[], false),
            "the label only protects snapshots"
        );
    }
}
