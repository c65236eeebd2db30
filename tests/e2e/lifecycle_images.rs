//! The destination's images over several iterations: retention (`ferrosync.io/retain-
//! snapshots`), images labelled `volsync.backube/do-not-delete` spared, and
//! `cleanupTempPVC` replacing the provisioned volume for every iteration.

use std::{collections::BTreeSet, time::Instant};

use ferrosync::resources::names;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use crate::{
    lifecycle_support::{
        assert_image_equals, create_rs, manual_synced, new_image, sample_volume, snapshot_pair,
        snapshots, source_spec, trigger_manual,
    },
    support::{TestNamespace, wait},
};

async fn image_names(dst: &TestNamespace) -> Result<BTreeSet<String>, String> {
    Ok(snapshots(dst)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect())
}

async fn pvc_uid(dst: &TestNamespace, name: &str) -> Option<String> {
    dst.api::<PersistentVolumeClaim>()
        .get_opt(name)
        .await
        .expect("get")
        .and_then(|p| p.metadata.uid)
}

#[tokio::test]
async fn retention_do_not_delete_and_cleanup_temp_pvc() {
    let started = Instant::now();
    let (dst, src, address) =
        snapshot_pair("lc-images", "img", 2, json!({"cleanupTempPVC": true})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "img",
        source_spec(
            "img",
            "data",
            &address,
            json!({"manual": "1"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    let dst_pvc = names::destination_pvc("img");
    let mut images = Vec::new();
    let mut uids = BTreeSet::new();
    for round in 1..=4 {
        let value = round.to_string();
        if round > 1 {
            std::fs::write(data.join(format!("round-{round}")), &value).expect("write");
            trigger_manual(&src, "img", &value).await;
        }
        manual_synced(&src, "img", &value).await;
        let image = new_image(&dst, "img", images.last().map(String::as_str)).await;
        assert_image_equals(&dst, &image, &format!("restore-{round}"), &data).await;
        images.push(image);
        // The volume is deleted after the image is ready, and a new one made for the next
        // iteration.
        let uid = wait::until(
            "the next iteration's volume",
            crate::fixtures::STEP,
            || async { Ok(pvc_uid(&dst, &dst_pvc).await) },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        uids.insert(uid);
        if round == 1 {
            let body = json!({"metadata": {"labels": {"volsync.backube/do-not-delete": "true"}}});
            snapshots(&dst)
                .patch(&images[0], &PatchParams::default(), &Patch::Merge(&body))
                .await
                .expect("labelling the first image");
        }
    }
    assert_eq!(
        uids.len(),
        4,
        "a new destination volume for every iteration"
    );
    // The newest two, and the one the user protected.
    let expected: BTreeSet<String> = [&images[0], &images[2], &images[3]]
        .into_iter()
        .cloned()
        .collect();
    wait::until("retention to prune", crate::fixtures::STEP, || async {
        let got = image_names(&dst).await?;
        Ok((got == expected).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; expected {expected:?}"));
    eprintln!("images: {:.1}s", started.elapsed().as_secs_f64());
}
