//! Taking over a VolSync rsync-TLS pair in place (docs/migrating-from-volsync.md): the
//! objects VolSync leaves behind (the destination's `volsync-<name>-dst` PVC holding the
//! data of its last sync, its key Secret, its Service, two images it took, its waiting
//! mover Job, both objects' status) are created as VolSync makes them, then ferrosync
//! starts. The next sync sends only the change, into the same PVC, with the same key and
//! address; VolSync's images are adopted and counted by retention.

use std::{path::Path, process::Command};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{PersistentVolumeClaim, Secret, Service},
};
use kube::{
    Resource, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    env::{SERIAL, env},
    fixtures::{STEP, bound_dir, event, pvc},
    lifecycle_support::{
        OWNER, Rng, SYNC, assert_image_equals, create_rd, create_rs, manual_synced, new_image,
        snapshots, trigger_manual,
    },
    support::{TestNamespace, sim::storage::snapshot::SNAPSHOT_CLASS, wait},
    tree,
    volsync::privileged_movers,
};

/// What VolSync's controller writes, as its field manager.
fn as_volsync() -> PatchParams {
    PatchParams {
        field_manager: Some("volsync".into()),
        ..PatchParams::default()
    }
}

fn post_as_volsync() -> PostParams {
    PostParams {
        field_manager: Some("volsync".into()),
        ..PostParams::default()
    }
}

/// Creates `obj` (JSON of kind `K`) in `ns` as VolSync would.
async fn create_as_volsync<K>(ns: &TestNamespace, obj: Value) -> K
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj).expect("an object");
    ns.api::<K>()
        .create(&post_as_volsync(), &typed)
        .await
        .expect("creating VolSync's object")
}

/// `n` bytes no compressor shrinks.
fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n / 8).flat_map(|_| rng.next().to_le_bytes()).collect()
}

/// Copies the tree of `from` into `to` with every attribute, as VolSync's last sync left
/// the destination: identical to the source at that time.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

const BULK: usize = 8 << 20;
const CHANGE: usize = 256 << 10;

#[tokio::test]
async fn a_volsync_pair_is_taken_over_in_place_and_syncs_a_delta() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let dst = env.cp.namespace("takeover-dst").await;
    let src = env.cp.namespace("takeover-src").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    let mut rng = Rng(0x5eed_7a6e_0ef1_u64 | 1);

    // --- The destination as VolSync leaves it. The user adds only the retention count.
    let rd = create_rd(
        &dst,
        "db",
        json!({"ferrosync.io/retain-snapshots": "3"}),
        json!({"rsyncTLS": {"copyMethod": "Snapshot", "capacity": "1Gi",
                            "accessModes": ["ReadWriteOnce"],
                            "volumeSnapshotClassName": SNAPSHOT_CLASS}}),
    )
    .await;
    let uid = rd.uid().expect("uid");
    let owned = json!({"volsync.backube/owned": uid});
    let controller_ref = json!([{"apiVersion": "volsync.backube/v1alpha1",
        "kind": "ReplicationDestination", "name": "db", "uid": uid,
        "controller": true, "blockOwnerDeletion": true}]);
    let meta =
        |name: &str| json!({"name": name, "labels": owned, "ownerReferences": controller_ref});

    let dst_pvc: PersistentVolumeClaim = create_as_volsync(&dst, json!({
        "metadata": meta("volsync-db-dst"),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "volumeMode": "Filesystem"},
    }))
    .await;
    let psk = format!("volsync:{}", "5a".repeat(64));
    let key: Secret = create_as_volsync(
        &dst,
        json!({
            "metadata": meta("volsync-rsync-tls-db"), "stringData": {"psk.txt": psk},
        }),
    )
    .await;
    let svc: Service = create_as_volsync(&dst, json!({
        "metadata": meta("volsync-rsync-tls-dst-db"),
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": "volsync-rsync-tls-dst-db"},
                 "ports": [{"name": "rsync-tls", "port": 8000, "protocol": "TCP", "targetPort": 8000}]},
    }))
    .await;
    let address = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("a ClusterIP");
    // Its waiting listener, running VolSync's mover image.
    create_as_volsync::<Job>(
        &dst,
        json!({
            "metadata": meta("volsync-rsync-tls-dst-db"),
            "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "rsync-tls", "image": "quay.io/backube/volsync:0.17.0",
                                "command": ["/bin/bash", "-c", "/mover-rsync-tls/server.sh"]}]}}},
        }),
    )
    .await;

    // --- The source as VolSync leaves it: data, the user's copy of the key, the object.
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, OWNER);
    std::fs::write(data.join("bulk.bin"), random_bytes(&mut rng, BULK)).expect("bulk");
    let volume = bound_dir(&dst, "volsync-db-dst").await;
    copy_tree(&data, &volume);
    create_as_volsync::<Secret>(
        &src,
        json!({"metadata": {"name": "db-key"}, "stringData": {"psk.txt": psk}}),
    )
    .await;
    create_rs(
        &src,
        "db",
        json!({"sourcePVC": "data", "trigger": {"manual": "volsync-3"},
        "rsyncTLS": {"copyMethod": "Direct", "keySecret": "db-key", "address": address}}),
    )
    .await;
    ns_status::<ReplicationSource>(&src, "db", json!({
        "lastManualSync": "volsync-3", "lastSyncTime": "2026-11-29T10:00:20Z",
        "lastSyncDuration": "20.5s", "latestMoverStatus": {"result": "Successful", "logs": "sent 1 bytes"},
        "rsyncTLS": {}, "conditions": [{"type": "Synchronizing", "status": "False",
            "reason": "WaitingForManual", "message": "Waiting for manual trigger",
            "lastTransitionTime": "2026-11-29T10:00:20Z"}]})).await;

    // Two images VolSync took of the destination PVC, the newer its latestImage.
    let images = [
        "volsync-db-dst-20261128100000",
        "volsync-db-dst-20261129100000",
    ];
    for name in images {
        let snap: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": meta(name),
            "spec": {"source": {"persistentVolumeClaimName": "volsync-db-dst"},
                     "volumeSnapshotClassName": SNAPSHOT_CLASS},
        }))
        .unwrap();
        snapshots(&dst)
            .create(&post_as_volsync(), &snap)
            .await
            .expect("snapshot");
        ready(&dst, name).await;
    }
    ns_status::<ReplicationDestination>(&dst, "db", json!({
        "lastSyncTime": "2026-11-29T10:00:20Z", "lastSyncStartTime": "2026-11-29T10:00:21Z",
        "lastSyncDuration": "21.1s",
        "latestImage": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": images[1]},
        "latestMoverStatus": {"result": "Successful", "logs": "sent 1 bytes"},
        "rsyncTLS": {"address": address, "keySecret": "volsync-rsync-tls-db"},
        "conditions": [{"type": "Synchronizing", "status": "True", "reason": "SyncInProgress",
            "message": "Synchronization in-progress", "lastTransitionTime": "2026-11-29T10:00:21Z"}]})).await;

    // --- The application writes a change; then ferrosync replaces VolSync.
    std::fs::write(data.join("change.bin"), random_bytes(&mut rng, CHANGE)).expect("change");
    let controller = env.controller(&[]);
    trigger_manual(&src, "db", "after-takeover").await;
    let rs = manual_synced(&src, "db", "after-takeover").await;

    // Only the change crossed the wire, not the 8 MiB VolSync had already sent.
    let stats = rs
        .status
        .as_ref()
        .and_then(|s| s.sync.last_sync_stats.clone())
        .expect("lastSyncStats");
    let sent = stats.bytes_sent.expect("bytesSent") as usize;
    eprintln!(
        "takeover: the first sync sent {sent} bytes for a {CHANGE}-byte change of a {}-byte volume",
        BULK + CHANGE
    );
    assert!(
        sent >= CHANGE,
        "the change ({CHANGE} bytes) was sent: {sent}"
    );
    assert!(
        sent < CHANGE + (1 << 20),
        "a delta, not a full copy: {sent} bytes sent"
    );

    // Same PVC, same key, same address: nothing for the user to reconfigure.
    let pvc_now: PersistentVolumeClaim = dst.api().get("volsync-db-dst").await.unwrap();
    assert_eq!(
        pvc_now.uid(),
        dst_pvc.uid(),
        "the destination keeps VolSync's PVC"
    );
    let key_now: Secret = dst.api().get("volsync-rsync-tls-db").await.unwrap();
    assert_eq!(
        key_now.uid(),
        key.uid(),
        "the destination keeps VolSync's key Secret"
    );
    assert_eq!(
        key_now
            .data
            .as_ref()
            .and_then(|d| d.get("psk.txt"))
            .map(|b| b.0.clone()),
        Some(psk.clone().into_bytes()),
        "the key is VolSync's"
    );
    let svc_now: Service = dst.api().get("volsync-rsync-tls-dst-db").await.unwrap();
    assert_eq!(
        svc_now.spec.and_then(|s| s.cluster_ip),
        Some(address.clone())
    );
    let rd_now: ReplicationDestination = dst.api().get("db").await.unwrap();
    assert_eq!(
        rd_now
            .status
            .as_ref()
            .and_then(|s| s.rsync_tls.as_ref())
            .and_then(|t| t.address.clone()),
        Some(address.clone())
    );
    // VolSync's waiting Job was replaced by ferrosync's, and the user is told.
    event(&dst.client, &dst.name, "db", "ForeignJobReplaced").await;

    // The new image is the source; VolSync's two are adopted and counted (3 kept).
    let first = new_image(&dst, "db", Some(images[1])).await;
    assert_image_equals(&dst, &first, "restored-1", &data).await;
    let adopted = event(&dst.client, &dst.name, "db", "VolumeSnapshotsAdopted").await;
    assert!(images.iter().all(|i| adopted.contains(i)), "{adopted}");
    assert_eq!(
        image_names(&dst).await,
        [images[0], images[1], first.as_str()]
            .map(String::from)
            .to_vec()
    );

    // The next image makes four: retention deletes the oldest, which is VolSync's.
    std::fs::write(data.join("change-2.bin"), random_bytes(&mut rng, 4096)).expect("change");
    trigger_manual(&src, "db", "after-takeover-2").await;
    manual_synced(&src, "db", "after-takeover-2").await;
    let second = new_image(&dst, "db", Some(&first)).await;
    let expected: Vec<String> = [images[1], first.as_str(), second.as_str()]
        .map(String::from)
        .to_vec();
    let kept = wait::until(
        "retention to keep VolSync's newer image and ferrosync's two",
        STEP,
        || async { Ok((image_names(&dst).await == expected).then_some(())) },
    )
    .await;
    if let Err(e) = kept {
        panic!("{e}: {:?}", image_names_now(&dst).await);
    }
    // The destination's Job of its next iteration: between iterations there is none.
    let jobs = dst.api::<Job>();
    let job: Job = wait::until("the destination's next mover Job", STEP, || async {
        jobs.get_opt("volsync-rsync-tls-dst-db")
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        job.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ferrosync")
    );
    drop(controller);
}

/// Writes `status` to `name` through the status subresource, as VolSync's controller.
async fn ns_status<K>(ns: &TestNamespace, name: &str, status: Value)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    ns.api::<K>()
        .patch_status(
            name,
            &as_volsync(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .expect("status as VolSync");
}

/// Waits until VolumeSnapshot `name` is ready to use.
async fn ready(ns: &TestNamespace, name: &str) {
    wait::until(&format!("snapshot {name} to be ready"), SYNC, || async {
        let snap = snapshots(ns).get(name).await.map_err(|e| e.to_string())?;
        Ok((snap.data.pointer("/status/readyToUse") == Some(&json!(true))).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The destination's images (ferrosync's label), not being deleted, oldest first.
async fn image_names(ns: &TestNamespace) -> Vec<String> {
    image_names_now(ns).await.unwrap_or_default()
}

async fn image_names_now(ns: &TestNamespace) -> Result<Vec<String>, String> {
    let list = snapshots(ns)
        .list(&ListParams::default().labels("ferrosync.io/image=true"))
        .await
        .map_err(|e| e.to_string())?;
    let mut items: Vec<_> = list
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    items.sort_by_key(|s| {
        (
            s.metadata.creation_timestamp.clone().map(|t| t.0),
            s.name_any(),
        )
    });
    Ok(items.into_iter().map(|s| s.name_any()).collect())
}
