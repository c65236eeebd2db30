//! The provisioner half of the storage simulator: the external-provisioner's loop over
//! claims (provision, clone, restore, or a `ProvisioningFailed` Warning) and its deleter
//! for Released volumes. See the parent module for what is and is not modelled.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{
        events::{Event, EventType, Recorder},
        reflector::Store,
    },
};
use serde_json::json;
use tokio::sync::Notify;

use super::{
    DRIVER, PARAM_CLONE, PARAM_FAIL, PARAM_PROVISION_DELAY, STORAGE_PROVISIONER, make_volume_dir,
    remove_dir, snapshot, volume_dir,
};
use crate::support::sim::watch::next_change;

pub struct Provisioner {
    pub client: Client,
    pub recorder: Recorder,
    pub dir: PathBuf,
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    pub snapshots: snapshot::Snapshots,
    pub first_seen: HashMap<String, Instant>,
    /// Claims already told why they cannot be provisioned (one Event each).
    pub reported: Vec<String>,
}

impl Provisioner {
    pub async fn run(mut self, changed: Arc<Notify>) {
        loop {
            for claim in self.claims.state() {
                if let Err(err) = self.provision(&claim).await {
                    eprintln!("storage simulator: {}: {err}", claim.name_any());
                }
            }
            for pv in self.volumes.state() {
                if let Err(err) = self.reclaim(&pv).await {
                    eprintln!("storage simulator: deleting {}: {err}", pv.name_any());
                }
            }
            next_change(&changed).await;
        }
    }

    async fn provision(&mut self, claim: &PersistentVolumeClaim) -> Result<(), String> {
        let spec = claim.spec.clone().unwrap_or_default();
        let ours = claim
            .annotations()
            .get(STORAGE_PROVISIONER)
            .map(String::as_str)
            == Some(DRIVER);
        let pending = spec.volume_name.as_deref().unwrap_or("").is_empty();
        if !ours || !pending || claim.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        let uid = claim.uid().ok_or("claim without uid")?;
        let pv_name = format!("pvc-{uid}");
        if self
            .volumes
            .state()
            .iter()
            .any(|pv| pv.name_any() == pv_name)
        {
            return Ok(());
        }
        let class_name = spec.storage_class_name.clone().unwrap_or_default();
        let Some(class) = self
            .classes
            .state()
            .into_iter()
            .find(|c| c.name_any() == class_name)
        else {
            return Ok(());
        };
        let params = class.parameters.clone().unwrap_or_default();
        let delay = params
            .get(PARAM_PROVISION_DELAY)
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(Duration::ZERO);
        let seen = *self
            .first_seen
            .entry(uid.clone())
            .or_insert_with(Instant::now);
        if seen.elapsed() < delay {
            return Ok(());
        }
        let source = match self.source_dir(claim, &class_name, &params).await {
            Ok(source) => source,
            Err(Failure::NotYet) => return Ok(()),
            Err(Failure::Fatal(message)) => return self.fail(claim, &uid, message).await,
        };
        if let Some(message) = params.get(PARAM_FAIL) {
            let message =
                format!("failed to provision volume with StorageClass {class_name:?}: {message}");
            return self.fail(claim, &uid, message).await;
        }
        let dir = self.dir.join(&pv_name);
        make_volume_dir(&dir, source.as_deref()).await?;
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class_name,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "mountOptions": class.mount_options.clone(),
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": claim.namespace(), "name": claim.name_any(), "uid": uid,
                },
                "csi": {"driver": DRIVER, "volumeHandle": dir.to_string_lossy()},
            },
        }))
        .map_err(|e| e.to_string())?;
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(format!("creating {pv_name}: {e}")),
        }
    }

    /// The directory to copy a new volume's content from, if it has a data source.
    async fn source_dir(
        &self,
        claim: &PersistentVolumeClaim,
        class_name: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Option<PathBuf>, Failure> {
        let spec = claim.spec.as_ref();
        let Some(source) = spec.and_then(|s| s.data_source.as_ref()) else {
            return Ok(None);
        };
        let ns = claim.namespace().unwrap_or_default();
        match (
            source.api_group.as_deref().unwrap_or(""),
            source.kind.as_str(),
        ) {
            ("", "PersistentVolumeClaim") => {
                if params.get(PARAM_CLONE).map(String::as_str) == Some("unsupported") {
                    return Err(Failure::Fatal(format!(
                        "failed to provision volume with StorageClass {class_name:?}: CSI driver does not support clone operations: controller CLONE_VOLUME capability is not reported"
                    )));
                }
                let source_claim = self
                    .claims
                    .state()
                    .into_iter()
                    .find(|c| c.name_any() == source.name && c.namespace().as_deref() == Some(&ns))
                    .ok_or(Failure::NotYet)?;
                let pv_name = source_claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .ok_or(Failure::NotYet)?;
                let pv = self
                    .volumes
                    .state()
                    .into_iter()
                    .find(|pv| pv.name_any() == pv_name)
                    .ok_or(Failure::NotYet)?;
                volume_dir(&pv).map(Some).ok_or_else(|| {
                    Failure::Fatal(format!(
                        "source volume {pv_name} does not belong to {DRIVER}"
                    ))
                })
            }
            ("snapshot.storage.k8s.io", "VolumeSnapshot") => self
                .snapshots
                .ready_dir(&ns, &source.name)
                .map(Some)
                .ok_or(Failure::NotYet),
            // A custom kind is a volume populator's to fill (through a PVC of its own, whose
            // volume it rebinds to this claim): the external-provisioner leaves it alone.
            (group, _) if !group.is_empty() => Err(Failure::NotYet),
            (group, kind) => Err(Failure::Fatal(format!(
                "unsupported data source {group}/{kind}"
            ))),
        }
    }

    /// Leaves the claim Pending and says why, once, as a Warning Event on it.
    async fn fail(
        &mut self,
        claim: &PersistentVolumeClaim,
        uid: &str,
        message: String,
    ) -> Result<(), String> {
        if self.reported.iter().any(|u| u == uid) {
            return Ok(());
        }
        let reference: ObjectReference = claim.object_ref(&());
        let event = Event {
            type_: EventType::Warning,
            reason: "ProvisioningFailed".into(),
            note: Some(message),
            action: "Provisioning".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &reference)
            .await
            .map_err(|e| format!("recording ProvisioningFailed: {e}"))?;
        self.reported.push(uid.to_string());
        Ok(())
    }

    /// A Released PV with reclaim policy Delete: remove the directory, then the PV.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), String> {
        let ours = pv
            .annotations()
            .get("pv.kubernetes.io/provisioned-by")
            .map(String::as_str)
            == Some(DRIVER);
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete");
        if !(ours && released && delete) || pv.meta().deletion_timestamp.is_some() {
            return Ok(());
        }
        if let Some(dir) = volume_dir(pv) {
            remove_dir(&dir)?;
        }
        match Api::<PersistentVolume>::all(self.client.clone())
            .delete(&pv.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

enum Failure {
    /// The source is not ready yet; try again later.
    NotYet,
    /// Provisioning cannot succeed; the claim stays Pending.
    Fatal(String),
}
