//! The `aws-ebs` bundle end to end: for a StorageClass whose driver cannot clone, its
//! plugin chooses Snapshot up front (with the bundle's snapshot class and PiT storage
//! class), so no clone is ever attempted, and the sync still matches byte for byte.
//!
//! The storage simulator owns one driver name, so the bundle's driver table entry for
//! `ebs.csi.aws.com` is applied to the simulator's driver (the same plugin, settings and
//! digest otherwise); its class names (`gp3`, `ebs-snapclass`) exist as simulator classes.

use std::time::Instant;

use ferrosync::api::ReplicationSource;
use kube::Api;
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::{bound_dir, events, pvc},
    lifecycle_own_support::{aws_ebs_bundle, copy_method_entry, create_ebs_classes},
    lifecycle_support::{
        OWNER, assert_image_equals, create_rs, expect, manual_synced, new_image, settles_to,
        snapshot_pair, source_spec,
    },
    tree,
};

/// The source's StorageClass: like EBS, it cannot clone.
const EBS_LIKE: &str = "lc-ebs-gp2";

#[tokio::test]
async fn the_aws_ebs_plugin_chooses_snapshot_up_front() {
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let env = env();
    let config = env.cp.dir.join("lifecycle-aws-ebs.toml");
    let bundle = aws_ebs_bundle(
        &env.cp
            .dir
            .join(format!("aws-ebs-bundle-{}", std::process::id())),
        true,
    );
    // The operator pins the bundle's component; its limits are within the default ceiling.
    let pin = ferrosync::policy::plugin::sha256_hex(
        &std::fs::read(bundle.join("copy-method-by-driver.wasm")).expect("component"),
    );
    std::fs::write(
        &config,
        format!(
            "[policy.copy_method]\nbundle = {:?}\nsha256 = {pin:?}\non_failure = \"fail\"\n",
            bundle.to_string_lossy()
        ),
    )
    .expect("config");
    let controller = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    let (dst, src, address) = snapshot_pair("lc-ebs", "ebs", 1, json!({})).await;
    create_ebs_classes(&src.client, EBS_LIKE).await;
    pvc("data").class(EBS_LIKE).create(&src).await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, OWNER);
    // The user asks for a Clone, as on a driver that can.
    create_rs(
        &src,
        "ebs",
        source_spec(
            "ebs",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    let rs = manual_synced(&src, "ebs", "one").await;
    let image = new_image(&dst, "ebs", None).await;
    assert_image_equals(&dst, &image, "restored", &data).await;

    let decision = copy_method_entry(&rs);
    assert_eq!(decision.value, "Snapshot", "{decision:?}");
    assert!(
        decision.decided_by.contains("copy-method-by-driver"),
        "decided by the plugin: {decision:?}"
    );
    assert_ne!(decision.fallback, Some(true), "{decision:?}");
    // Up front: no clone was ever attempted, so the provisioner never refused one.
    let all = events(&src.client, &src.name).await.expect("events");
    assert!(
        !all.iter()
            .any(|e| e.reason.as_deref() == Some("ProvisioningFailed")),
        "no clone attempted: {:?}",
        all.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let rs_api: Api<ReplicationSource> = src.api();
    assert!(rs_api.get("ebs").await.is_ok());
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    drop(controller);
    eprintln!("aws-ebs plugin: {:.1}s", started.elapsed().as_secs_f64());
}
