//! Issue 12, a ReplicationDestination as a volume populator: a PVC whose dataSourceRef
//! names the destination stays Pending until the destination has an image, then is
//! filled from its latest VolumeSnapshot, its volume annotated with where it came from.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    env::env,
    fixtures::{STEP, bound_dir, event},
    lifecycle_support::{
        create_rs, holds_for, manual_synced, new_image, sample_volume, snapshot_pair, snapshots,
        source_spec,
    },
    support::wait,
    tree,
};

#[tokio::test]
async fn a_pvc_naming_a_destination_is_filled_from_its_latest_image() {
    let (dst, src, address) = snapshot_pair("pop", "pop", 2, json!({})).await;
    // Created before any replication: it waits, as documented.
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "populated"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "dataSourceRef": {"apiGroup": "volsync.backube", "kind": "ReplicationDestination", "name": "pop"}},
    }))
    .expect("pvc");
    let pvcs: Api<PersistentVolumeClaim> = dst.api();
    pvcs.create(&PostParams::default(), &claim)
        .await
        .expect("creating the PVC");
    holds_for(
        "the PVC to wait for an image",
        Duration::from_secs(3),
        || async {
            let pvc = pvcs.get("populated").await.map_err(|e| e.to_string())?;
            let phase = pvc.status.and_then(|s| s.phase).unwrap_or_default();
            if phase == "Bound" {
                return Err("bound before the destination had any image".into());
            }
            Ok(())
        },
    )
    .await;

    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "pop",
        source_spec(
            "pop",
            "data",
            &address,
            json!({"manual": "first"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    manual_synced(&src, "pop", "first").await;
    let image = new_image(&dst, "pop", None).await;

    let dir = bound_dir(&dst, "populated").await;
    tree::assert_same(&data, &dir);
    let pvc = pvcs.get("populated").await.expect("pvc");
    let pv_name = pvc.spec.and_then(|s| s.volume_name).expect("bound");
    let pv: PersistentVolume = Api::all(dst.client.clone())
        .get(&pv_name)
        .await
        .expect("pv");
    assert_eq!(
        pv.metadata
            .annotations
            .unwrap_or_default()
            .get("volsync.backube/populated-from"),
        Some(&format!("{}/{image}", dst.name))
    );
    event(
        &dst.client,
        &dst.name,
        "populated",
        "VolSyncPopulatorPVCCreated",
    )
    .await;
    event(
        &dst.client,
        &dst.name,
        "populated",
        "VolSyncPopulatorFinished",
    )
    .await;
    let uid = pvc.metadata.uid.expect("uid");
    wait::until("the prime PVC to go", STEP, || async {
        let prime = pvcs
            .get_opt(&format!("vs-prime-{uid}"))
            .await
            .map_err(|e| e.to_string())?;
        Ok(prime.is_none().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", env().controller_tail(), dst.dump()));
    let snap = snapshots(&dst).get(&image).await.expect("the image stays");
    assert!(
        snap.metadata
            .labels
            .unwrap_or_default()
            .contains_key("volsync.backube/do-not-delete"),
        "the restored image is protected from retention"
    );
}
