//! A pod's volumes on this node: what the kubelet's volume manager and the volume plugins
//! do before a container starts.
//!
//! - PVC: the bound PV's directory (the storage simulator's CSI volume handle, or a
//!   hostPath). As with a CSI driver of the default `fsGroupPolicy`
//!   (ReadWriteOnceWithFSType) and no fsType, ownership is left alone: fsGroup is not
//!   applied, so a root-only file stays root-only.
//! - Secret and ConfigMap: files written the way the kubelet's atomic writer lays them out
//!   (`..<timestamp>/key`, `..data`, `key -> ..data/key`), with `defaultMode` or the item's
//!   mode, then fsGroup applied as `SetVolumeOwnership` does for a read-only volume:
//!   group-owned, `mode | 0440`, directories setgid.
//! - projected: service-account tokens from the TokenRequest API, ConfigMap, Secret and
//!   downward-API sources in one directory (`projected`), laid out like a ConfigMap.
//! - emptyDir (both media): a directory under the pod's directory, which is on tmpfs, mode
//!   0777, group-owned and setgid with fsGroup. sizeLimit is not enforced.
//!
//! Anything else is reported as unsupported, and the container does not start.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret},
};
use kube::{Api, Client};

use crate::support::sim::storage;

/// A volume ready to be mounted.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The directory on this machine.
    pub host: PathBuf,
    /// The volume itself is read-only (Secret, ConfigMap, a read-only PVC).
    pub read_only: bool,
}

/// Prepares every volume of `pod` under `pod_dir`. `Err` is a reason the kubelet would
/// report while the pod stays in ContainerCreating; the caller retries.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<HashMap<String, Prepared>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref().ok_or("pod without spec")?;
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|c| c.fs_group)
        .map(|g| g as u32);
    let mut prepared = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let ready = if let Some(claim) = &volume.persistent_volume_claim {
            Prepared {
                host: pvc_dir(client, ns, &claim.claim_name).await?,
                read_only: claim.read_only == Some(true),
            }
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            let found = Api::<Secret>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .map_err(|e| format!("secret {name:?}: {e}"))?;
            let data: BTreeMap<String, Vec<u8>> = found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, ByteString(v))| (k, v))
                .collect();
            let mode = secret.default_mode.unwrap_or(0o644) as u32;
            write_files(&dir, &data, secret.items.as_deref(), mode, fs_group)?;
            Prepared {
                host: dir,
                read_only: true,
            }
        } else if let Some(config_map) = &volume.config_map {
            let data = config_map_data(client, ns, &config_map.name).await?;
            let mode = config_map.default_mode.unwrap_or(0o644) as u32;
            write_files(&dir, &data, config_map.items.as_deref(), mode, fs_group)?;
            Prepared {
                host: dir,
                read_only: true,
            }
        } else if let Some(projected) = &volume.projected {
            super::projected::prepare(client, pod, projected, &dir, fs_group).await?;
            Prepared {
                host: dir,
                read_only: true,
            }
        } else if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir: {e}"))?;
            let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
            chown_chmod(&dir, fs_group, mode)?;
            Prepared {
                host: dir,
                read_only: false,
            }
        } else {
            return Err(format!(
                "volume {:?}: only PVC, Secret, ConfigMap, projected and emptyDir volumes are simulated",
                volume.name
            ));
        };
        prepared.insert(volume.name.clone(), ready);
    }
    Ok(prepared)
}

/// The directory behind a bound PVC.
async fn pvc_dir(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(claim)
        .await
        .map_err(|e| format!("persistentvolumeclaim {claim:?}: {e}"))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} is not bound"))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .map_err(|e| format!("persistentvolume {pv_name:?}: {e}"))?;
    storage::volume_dir(&pv)
        .ok_or_else(|| format!("persistentvolume {pv_name:?}: no local directory"))
}

/// A ConfigMap's `data` and `binaryData` (bundles carry their components as binaryData).
pub(super) async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let found = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("configmap {name:?}: {e}"))?;
    let text = found
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()));
    let binary = found
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, ByteString(v))| (k, v));
    Ok(text.chain(binary).collect())
}

/// Writes `data` (or the selected `items`) the way the atomic writer does. Called again on
/// a written directory it swaps the whole payload at once, as the kubelet updates a
/// ConfigMap volume: a new `..<timestamp>` directory, `..data` renamed over to point at it,
/// links for new keys added and for removed keys dropped, the old payload removed.
pub(super) fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    fs_group: Option<u32>,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing {}: {e}", dir.display());
    let files: Vec<(String, &[u8], u32)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|item| {
                let bytes = data.get(&item.key)?;
                let mode = item.mode.map_or(default_mode, |m| m as u32);
                Some((item.path.clone(), bytes.as_slice(), mode))
            })
            .collect(),
        None => data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice(), default_mode))
            .collect(),
    };
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let payload = dir.join(&stamp);
    std::fs::create_dir_all(&payload).map_err(io)?;
    let (dir_mode, file_mask) = match fs_group {
        Some(_) => (0o2755, 0o440),
        None => (0o755, 0),
    };
    for (path, bytes, mode) in &files {
        let file = payload.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&file, bytes).map_err(io)?;
        chown_chmod(&file, fs_group, mode | file_mask)?;
        let top = path.split('/').next().unwrap_or(path);
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{top}"), &link).map_err(io)?;
        }
    }
    chown_chmod(&payload, fs_group, dir_mode)?;
    chown_chmod(dir, fs_group, dir_mode)?;
    let previous = std::fs::read_link(dir.join("..data")).ok();
    // rename(2) over the old link: a reader sees the old payload or the new, never a mix.
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    symlink(&stamp, &staged).map_err(io)?;
    std::fs::rename(&staged, dir.join("..data")).map_err(io)?;
    if let Some(previous) = previous {
        remove_stale(dir, &previous, &files).map_err(io)?;
    }
    Ok(())
}

/// After a swap: drops the links of keys no longer present and the previous payload.
fn remove_stale(
    dir: &Path,
    previous: &Path,
    files: &[(String, &[u8], u32)],
) -> std::io::Result<()> {
    let current: Vec<&str> = files
        .iter()
        .map(|(path, _, _)| path.split('/').next().unwrap_or(path))
        .collect();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !current.contains(&name.as_str()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::remove_dir_all(dir.join(previous))
}

fn chown_chmod(path: &Path, group: Option<u32>, mode: u32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}
