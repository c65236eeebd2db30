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

pub mod provisioner;
pub mod snapshot;

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim},
    storage::v1::StorageClass,
};
use kube::{
    Api, Client,
    api::PostParams,
    runtime::{
        events::{Recorder, Reporter},
        watcher,
    },
};
use serde_json::json;
use tokio::sync::Notify;

use super::watch::cache;

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
pub(crate) const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

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
    let provisioner = provisioner::Provisioner {
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
