//! Updates of a running pod's ConfigMap volumes, as the kubelet makes them: when the
//! ConfigMap's contents change, the volume's whole payload is swapped at once
//! (`volumes::write_files`: a new `..<timestamp>` directory, `..data` renamed over), so a
//! container reading through the key links sees the old files or the new, never a mix.
//!
//! The kubelet notices a change within its sync period plus its cache's TTL (up to a
//! minute or two); this polls every [`PERIOD`]. A ConfigMap that goes missing leaves the
//! volume as it was, as with the kubelet. Not modelled: updates of Secret and projected
//! volumes, and `subPath` mounts never seeing updates (they do here only if the file is
//! replaced in place, which never happens: every update writes new files).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{KeyToPath, Pod};
use kube::Client;
use tokio::task::JoinHandle;

use super::volumes;

/// How often the ConfigMaps behind a running pod's volumes are read.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Keeps the ConfigMap volumes of `pod` (prepared under `pod_dir`) up to date until the
/// returned task is aborted.
pub fn spawn(client: Client, pod: Pod, pod_dir: PathBuf) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|c| c.fs_group)
            .map(|g| g as u32);
        let volumes: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| Some((v.name.clone(), v.config_map.clone()?)))
            .collect();
        if volumes.is_empty() {
            return;
        }
        let mut ticker = tokio::time::interval(PERIOD);
        loop {
            ticker.tick().await;
            for (name, source) in &volumes {
                let Ok(data) = volumes::config_map_data(&client, &ns, &source.name).await else {
                    continue;
                };
                let dir = pod_dir.join("volumes").join(name);
                let items = source.items.as_deref();
                if expected(&data, items) == on_disk(&dir) {
                    continue;
                }
                let mode = source.default_mode.unwrap_or(0o644) as u32;
                if let Err(e) = volumes::write_files(&dir, &data, items, mode, fs_group) {
                    eprintln!("node simulator: updating configMap volume {name}: {e}");
                }
            }
        }
    })
}

/// The files a volume of `data` holds: each key (or item path) and its contents.
fn expected(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone())))
            .collect(),
        None => data.clone(),
    }
}

/// The files of the current payload (`..data`), by path relative to it.
fn on_disk(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let root = dir.join("..data");
    let mut out = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let (Ok(bytes), Ok(rel)) = (std::fs::read(&path), path.strip_prefix(&root)) {
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    out
}
