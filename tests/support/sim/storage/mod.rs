//! The storage simulator: the duties of a CSI driver's controller plugin with its
//! external-provisioner and external-snapshotter sidecars, for StorageClasses and
//! VolumeSnapshotClasses whose provisioner/driver is [`DRIVER`].
//!
//! - provisions a PV (a directory, its CSI volume handle) for each claim the real PV binder
//!   has handed to this provisioner (`volume.kubernetes.io/storage-provisioner`), after the
//!   class's delay, with a `claimRef` so the real binder binds it;
//! - clones a claim whose dataSource is a PVC, and restores one whose dataSource is a
//!   VolumeSnapshot (`cp -a` of the directory);
//! - with `clone: unsupported`, leaves a clone Pending with the external-provisioner's
//!   `ProvisioningFailed` Warning, as a driver without CLONE_VOLUME does;
//! - deletes the directory and the PV when a Delete-policy PV is Released;
//! - takes VolumeSnapshots (`snapshot`).
//!
//! Class parameters (opaque to Kubernetes, as a real driver's are) inject behaviour, so one
//! test's faults never touch another's: see the `PARAM_*` constants.
//!
//! Not modelled: capacity limits, topology, WaitForFirstConsumer, volume expansion,
//! attach/detach, block volume mode, and the external-provisioner's retry backoff (it
//! retries on every change or resync instead).

pub mod snapshot;

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
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
        events::{Event, EventType, Recorder, Reporter},
        reflector::Store,
        watcher,
    },
};
use serde_json::json;
use tokio::sync::Notify;

use super::watch::{cache, next_change};

/// The CSI driver (provisioner) name this simulator owns.
pub const DRIVER: &str = "sim.csi.ferrosync.test";
/// The default StorageClass it installs.
pub const CLASS: &str = "sim-csi";
/// A StorageClass of the same driver that cannot clone.
pub const CLASS_NO_CLONE: &str = "sim-csi-noclone";
/// Class parameter: wait this long (humantime, e.g. `2s`) before provisioning.
pub const PARAM_PROVISION_DELAY: &str = "sim.ferrosync.test/provision-delay";
/// Class parameter: `unsupported` makes clones fail as without CLONE_VOLUME.
pub const PARAM_CLONE: &str = "sim.ferrosync.test/clone";
/// Class parameter: fail every provisioning with this message.
pub const PARAM_FAIL: &str = "sim.ferrosync.test/fail-provisioning";
/// The annotation the PV binder sets on claims for an external provisioner.
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

/// The directory behind a PV: the CSI volume handle of this driver, or a hostPath.
pub fn volume_dir(pv: &PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    if let Some(csi) = spec.csi.as_ref().filter(|c| c.driver == DRIVER) {
        return Some(PathBuf::from(&csi.volume_handle));
    }
    spec.host_path.as_ref().map(|h| PathBuf::from(&h.path))
}

/// Installs the classes (as a cluster installer would) and starts the provisioner and the
/// snapshotter, keeping volumes under `dir`.
pub async fn start(client: Client, dir: PathBuf) -> Result<(), String> {
    install_classes(&client).await?;
    let changed = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let claims = cache(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        cfg(),
        changed.clone(),
    );
    let volumes = cache(
        Api::<PersistentVolume>::all(client.clone()),
        cfg(),
        changed.clone(),
    );
    let classes = cache(
        Api::<StorageClass>::all(client.clone()),
        cfg(),
        changed.clone(),
    );
    let snapshots = snapshot::start(client.clone(), dir.join("snapshots"), volumes.clone()).await?;
    let provisioner = Provisioner {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: format!("{DRIVER}_sim-storage"),
                instance: None,
            },
        ),
        client,
        dir: dir.join("volumes"),
        claims,
        volumes,
        classes,
        snapshots,
        first_seen: HashMap::new(),
        reported: Vec::new(),
    };
    tokio::spawn(provisioner.run(changed));
    Ok(())
}

async fn install_classes(client: &Client) -> Result<(), String> {
    let api: Api<StorageClass> = Api::all(client.clone());
    for (name, default, params) in [
        (CLASS, "true", json!({})),
        (
            CLASS_NO_CLONE,
            "false",
            json!({ PARAM_CLONE: "unsupported" }),
        ),
    ] {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default}},
            "provisioner": DRIVER,
            "parameters": params,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": false,
        }))
        .map_err(|e| e.to_string())?;
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("creating StorageClass {name}: {e}")),
        }
    }
    snapshot::install_class(client).await
}

struct Provisioner {
    client: Client,
    recorder: Recorder,
    dir: PathBuf,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    snapshots: snapshot::Snapshots,
    first_seen: HashMap<String, Instant>,
    /// Claims already told why they cannot be provisioned (one Event each).
    reported: Vec<String>,
}

impl Provisioner {
    async fn run(mut self, changed: Arc<Notify>) {
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

/// Creates a volume directory (mode 0777, as the CSI hostpath driver does), with a copy of
/// `source` when given.
pub async fn make_volume_dir(dir: &Path, source: Option<&Path>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(source) = source {
        copy_tree(source, dir).await?;
    }
    Ok(())
}

/// Copies a tree with all metadata (owners, modes, times, links, xattrs).
pub async fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .await
        .map_err(|e| format!("running cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cp -a {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Removes a directory; already gone is fine.
pub fn remove_dir(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("{}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}
