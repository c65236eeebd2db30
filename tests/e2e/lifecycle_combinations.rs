//! The combinations of the spec: a Snapshot point-in-time copy on the source, a Direct
//! source, a user's `destinationPVC`, a LoadBalancer destination and a 70-character name.
//! Each restored image equals the source, and each side is left with nothing temporary.

use std::time::Instant;

use ferrosync::resources::{Side, names};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::json;

use crate::{
    env::env,
    fixtures::pvc,
    lifecycle_support::{destination_at_rest, expect, replicate_once, settles_to, snapshot_pair},
    support::sim::{loadbalancer, storage::snapshot},
};

#[tokio::test]
async fn snapshot_pit_source_to_snapshot_destination() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-snappit", "snap", 1, json!({})).await;
    let (_, image) = replicate_once(
        &dst,
        &src,
        "snap",
        &address,
        json!({"copyMethod": "Snapshot", "volumeSnapshotClassName": snapshot::SNAPSHOT_CLASS}),
    )
    .await;
    // The VolumeSnapshot and the PVC restored from it are gone.
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "snap", &[&image], &[]).await;
    eprintln!("snapshot pit: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn direct_source_to_snapshot_destination() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-direct", "direct", 1, json!({})).await;
    let (_, image) = replicate_once(
        &dst,
        &src,
        "direct",
        &address,
        json!({"copyMethod": "Direct"}),
    )
    .await;
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "direct", &[&image], &[]).await;
    eprintln!("direct: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_users_destination_pvc_is_used_and_kept() {
    let started = Instant::now();
    let env = env();
    let dst = env.cp.namespace("lc-dstpvc-dst").await;
    let src = env.cp.namespace("lc-dstpvc-src").await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    pvc("mine").create(&dst).await;
    crate::lifecycle_support::create_rd(
        &dst,
        "own",
        json!({}),
        json!({"rsyncTLS": {"copyMethod": "Snapshot", "destinationPVC": "mine",
            "volumeSnapshotClassName": snapshot::SNAPSHOT_CLASS}}),
    )
    .await;
    let (address, key) = crate::volsync::published(&dst, "own").await;
    crate::volsync::copy_secret(&dst, &key, &src, "own-key").await;
    let (data, image) =
        replicate_once(&dst, &src, "own", &address, json!({"copyMethod": "Clone"})).await;
    assert!(
        image.starts_with("mine-"),
        "the image is a snapshot of the user's PVC: {image}"
    );
    // The user's PVC holds the data itself, and no PVC was provisioned.
    crate::tree::assert_same(&data, &crate::volsync::claim_dir(&dst, "mine").await);
    let claims = dst.api::<PersistentVolumeClaim>();
    assert!(
        claims
            .get_opt(&names::destination_pvc("own"))
            .await
            .expect("get")
            .is_none()
    );
    let job = names::job(Side::Destination, "own");
    let with_pod = expect(&["mine"], &[&image], &[&job], &[&job]);
    let without = expect(&["mine"], &[&image], &[&job], &[]);
    crate::support::wait::until("the destination at rest", crate::fixtures::STEP, || async {
        let got = crate::lifecycle_support::inventory(&dst).await?;
        Ok((got == with_pod || got == without).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    eprintln!("destinationPVC: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_load_balancer_destination() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair(
        "lc-lb",
        "lb",
        1,
        json!({"serviceType": "LoadBalancer",
               "serviceAnnotations": {loadbalancer::ANNOTATION: "2s"}}),
    )
    .await;
    assert!(
        address.starts_with("127.66."),
        "a load-balancer address: {address}"
    );
    let (_, image) =
        replicate_once(&dst, &src, "lb", &address, json!({"copyMethod": "Clone"})).await;
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "lb", &[&image], &[]).await;
    eprintln!("load balancer: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_70_character_name() {
    let started = Instant::now();
    let name = format!("long-{}", "n".repeat(65));
    assert_eq!(name.len(), 70);
    let (dst, src, address) = snapshot_pair("lc-long", &name, 1, json!({})).await;
    let (_, image) =
        replicate_once(&dst, &src, &name, &address, json!({"copyMethod": "Clone"})).await;
    // Jobs and Services are shortened to 63 characters; PVCs and snapshots need not be.
    let job = names::job(Side::Destination, &name);
    assert!(job.len() <= 63, "{job}");
    let svc: k8s_openapi::api::core::v1::Service = dst
        .api()
        .get(&names::destination_service(&name))
        .await
        .expect("the shortened Service");
    assert!(svc.metadata.name.as_ref().is_some_and(|n| n.len() <= 63));
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, &name, &[&image], &[]).await;
    eprintln!("70 characters: {:.1}s", started.elapsed().as_secs_f64());
}
