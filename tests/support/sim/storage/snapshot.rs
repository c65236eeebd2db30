//! VolumeSnapshots: the duties of the snapshot-controller (binding a VolumeSnapshot to a
//! VolumeSnapshotContent it creates) and of the CSI driver's external-snapshotter (cutting
//! the snapshot and reporting `readyToUse`, `restoreSize` and `creationTime`), for
//! VolumeSnapshotClasses whose driver is [`DRIVER`].
//!
//! A snapshot is a `cp -a` of the volume's directory, taken when the VolumeSnapshot is
//! first seen; it becomes ready after the class's `PARAM_SNAPSHOT_DELAY`. A snapshot whose
//! VolumeSnapshot is gone is deleted with its content when the policy is Delete.
//!
//! Not modelled: finalizers and their protection (a snapshot in use as a restore source
//! can be deleted), pre-provisioned contents, group snapshots, and error statuses (a
//! snapshot that cannot be taken just stays not ready).

use std::{path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{PersistentVolume, PersistentVolumeClaim},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
    },
    runtime::{reflector::Store, watcher},
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::{DRIVER, copy_tree, remove_dir, volume_dir};
use crate::support::sim::watch::{cache, cache_of, next_change};

/// The default VolumeSnapshotClass installed for [`DRIVER`].
pub const SNAPSHOT_CLASS: &str = "sim-csi-snapclass";
/// Class parameter: a snapshot becomes ready this long (humantime) after it is cut.
pub const PARAM_SNAPSHOT_DELAY: &str = "sim.ferrosync.test/snapshot-delay";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", kind),
        plural,
    )
}

/// The VolumeSnapshot kind.
pub fn snapshots() -> ApiResource {
    resource("VolumeSnapshot", "volumesnapshots")
}
/// The VolumeSnapshotContent kind.
pub fn contents() -> ApiResource {
    resource("VolumeSnapshotContent", "volumesnapshotcontents")
}
/// The VolumeSnapshotClass kind.
pub fn classes() -> ApiResource {
    resource("VolumeSnapshotClass", "volumesnapshotclasses")
}

/// Read access to snapshots, for restores.
#[derive(Clone)]
pub struct Snapshots {
    snapshots: Store<DynamicObject>,
    contents: Store<DynamicObject>,
}

impl Snapshots {
    /// The directory of VolumeSnapshot `ns/name`, once it is ready to use.
    pub fn ready_dir(&self, ns: &str, name: &str) -> Option<PathBuf> {
        let vs = self
            .snapshots
            .state()
            .into_iter()
            .find(|s| s.name_any() == name && s.namespace().as_deref() == Some(ns))?;
        let status = vs.data.get("status")?;
        if status.get("readyToUse")?.as_bool() != Some(true) {
            return None;
        }
        let content_name = status.get("boundVolumeSnapshotContentName")?.as_str()?;
        let content = self
            .contents
            .state()
            .into_iter()
            .find(|c| c.name_any() == content_name)?;
        Some(PathBuf::from(
            content.data.pointer("/status/snapshotHandle")?.as_str()?,
        ))
    }
}

/// Installs the default VolumeSnapshotClass.
pub async fn install_class(client: &Client) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &classes());
    let mut class = DynamicObject::new(SNAPSHOT_CLASS, &classes()).data(json!({
        "driver": DRIVER,
        "deletionPolicy": "Delete",
    }));
    class.metadata.annotations = Some(
        [(
            "snapshot.storage.kubernetes.io/is-default-class".to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(format!(
            "creating VolumeSnapshotClass {SNAPSHOT_CLASS}: {e}"
        )),
    }
}

/// Starts the snapshotter, with snapshots under `dir`.
pub async fn start(
    client: Client,
    dir: PathBuf,
    volumes: Store<PersistentVolume>,
) -> Result<Snapshots, String> {
    let changed = Arc::new(Notify::new());
    let cfg = watcher::Config::default;
    let (vs, vsc, vclass) = (snapshots(), contents(), classes());
    let handle = Snapshots {
        snapshots: cache_of(
            Api::all_with(client.clone(), &vs),
            cfg(),
            changed.clone(),
            vs,
        ),
        contents: cache_of(
            Api::all_with(client.clone(), &vsc),
            cfg(),
            changed.clone(),
            vsc,
        ),
    };
    let snapshotter = Snapshotter {
        classes: cache_of(
            Api::all_with(client.clone(), &vclass),
            cfg(),
            changed.clone(),
            vclass,
        ),
        claims: cache(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            cfg(),
            changed.clone(),
        ),
        client,
        dir,
        volumes,
        store: handle.clone(),
    };
    tokio::spawn(async move {
        loop {
            for vs in snapshotter.store.snapshots.state() {
                if let Err(err) = snapshotter.snapshot(&vs).await {
                    eprintln!("storage simulator: snapshot {}: {err}", vs.name_any());
                }
            }
            for content in snapshotter.store.contents.state() {
                if let Err(err) = snapshotter.reclaim(&content).await {
                    eprintln!("storage simulator: content {}: {err}", content.name_any());
                }
            }
            next_change(&changed).await;
        }
    });
    Ok(handle)
}

struct Snapshotter {
    client: Client,
    dir: PathBuf,
    classes: Store<DynamicObject>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    store: Snapshots,
}

impl Snapshotter {
    async fn snapshot(&self, vs: &DynamicObject) -> Result<(), String> {
        if vs
            .data
            .pointer("/status/readyToUse")
            .and_then(Value::as_bool)
            == Some(true)
            || vs.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let ns = vs.namespace().unwrap_or_default();
        let Some(claim_name) = vs
            .data
            .pointer("/spec/source/persistentVolumeClaimName")
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        let class = match vs
            .data
            .pointer("/spec/volumeSnapshotClassName")
            .and_then(Value::as_str)
        {
            Some(name) => self
                .classes
                .state()
                .into_iter()
                .find(|c| c.name_any() == name),
            None => self.classes.state().into_iter().find(|c| {
                c.annotations()
                    .get("snapshot.storage.kubernetes.io/is-default-class")
                    .map(String::as_str)
                    == Some("true")
            }),
        };
        let Some(class) =
            class.filter(|c| c.data.get("driver").and_then(Value::as_str) == Some(DRIVER))
        else {
            return Ok(());
        };
        let Some(pv) = self.bound_volume(&ns, claim_name) else {
            return Ok(());
        };
        let Some(source) = volume_dir(&pv) else {
            return Ok(());
        };
        let uid = vs.uid().ok_or("snapshot without uid")?;
        let content_name = format!("snapcontent-{uid}");
        let snapshot_dir = self.dir.join(format!("snapshot-{uid}"));
        let content_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &contents());
        let existing = self
            .store
            .contents
            .state()
            .into_iter()
            .find(|c| c.name_any() == content_name);
        let content = match existing {
            Some(c) => (*c).clone(),
            None => {
                // Cut the snapshot first: a content exists only for a snapshot that was taken.
                std::fs::create_dir_all(&snapshot_dir).map_err(|e| e.to_string())?;
                copy_tree(&source, &snapshot_dir).await?;
                let content = DynamicObject::new(&content_name, &contents()).data(json!({
                    "spec": {
                        "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                              "namespace": ns, "name": vs.name_any(), "uid": uid},
                        "deletionPolicy": class.data.get("deletionPolicy").cloned().unwrap_or(json!("Delete")),
                        "driver": DRIVER,
                        "volumeSnapshotClassName": class.name_any(),
                        "source": {"volumeHandle": source.to_string_lossy()},
                    },
                }));
                match content_api.create(&PostParams::default(), &content).await {
                    Ok(c) => c,
                    Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
                    Err(e) => return Err(format!("creating {content_name}: {e}")),
                }
            }
        };
        let delay = class
            .data
            .pointer(&format!(
                "/parameters/{}",
                PARAM_SNAPSHOT_DELAY.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(Duration::ZERO);
        let created = content.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if created.map_or(Duration::MAX, age) < delay {
            return Ok(());
        }
        let size = pv
            .spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "0".into());
        let created = created.unwrap_or_else(Timestamp::now);
        let pp = PatchParams::default();
        let content_status = json!({"status": {
            "snapshotHandle": snapshot_dir.to_string_lossy(),
            "readyToUse": true,
            "restoreSize": bytes(&size),
            "creationTime": created.as_nanosecond() as i64,
        }});
        content_api
            .patch_status(&content_name, &pp, &Patch::Merge(&content_status))
            .await
            .map_err(|e| format!("{content_name} status: {e}"))?;
        let vs_status = json!({"status": {
            "boundVolumeSnapshotContentName": content_name,
            "readyToUse": true,
            "restoreSize": size,
            "creationTime": created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }});
        Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &snapshots())
            .patch_status(&vs.name_any(), &pp, &Patch::Merge(&vs_status))
            .await
            .map_err(|e| format!("status: {e}"))?;
        Ok(())
    }

    fn bound_volume(&self, ns: &str, claim: &str) -> Option<PersistentVolume> {
        let claim = self
            .claims
            .state()
            .into_iter()
            .find(|c| c.name_any() == claim && c.namespace().as_deref() == Some(ns))?;
        let pv_name = claim.spec.as_ref()?.volume_name.clone()?;
        self.volumes
            .state()
            .into_iter()
            .find(|pv| pv.name_any() == pv_name)
            .map(|pv| (*pv).clone())
    }

    /// A content of ours whose VolumeSnapshot is gone: delete the snapshot and the content.
    async fn reclaim(&self, content: &DynamicObject) -> Result<(), String> {
        let spec = content.data.get("spec").cloned().unwrap_or_default();
        if spec.get("driver").and_then(Value::as_str) != Some(DRIVER)
            || spec.get("deletionPolicy").and_then(Value::as_str) != Some("Delete")
        {
            return Ok(());
        }
        let Some(uid) = spec
            .pointer("/volumeSnapshotRef/uid")
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        // Only once the snapshot store has seen it: a fresh content's snapshot may lag.
        let age = content
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Duration::ZERO, |t| age(t.0));
        let exists = self
            .store
            .snapshots
            .state()
            .iter()
            .any(|s| s.uid().as_deref() == Some(uid));
        if exists || age < Duration::from_secs(2) {
            return Ok(());
        }
        if let Some(handle) = content
            .data
            .pointer("/status/snapshotHandle")
            .and_then(Value::as_str)
        {
            remove_dir(std::path::Path::new(handle))?;
        }
        match Api::<DynamicObject>::all_with(self.client.clone(), &contents())
            .delete(&content.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How long ago `t` was.
fn age(t: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(t)).unwrap_or(Duration::ZERO)
}

/// Bytes of a quantity such as `1Gi`, `500Mi`, `2G` or `1024`.
fn bytes(quantity: &str) -> i64 {
    let units: [(&str, i64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<i64>().unwrap_or(0) * factor;
        }
    }
    quantity.parse().unwrap_or(0)
}
