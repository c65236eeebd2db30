//! Failures that a user causes: a wrong key fails the sync with a status that names
//! authentication and never touches `latestImage`; a StorageClass that cannot clone makes
//! the built-in copy-method fallback switch to Snapshot.

use std::time::{Duration, Instant};

use ferrosync::api::{MoverResult, ReplicationSource};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::json;

use crate::{
    env::env,
    fixtures::{STEP, bound_dir, events, pvc},
    lifecycle_support::{
        OWNER, SYNC, assert_image_equals, create_rs, expect, holds_for, latest_image,
        manual_synced, new_image, patch_source, sample_volume, settles_to, snapshot_pair,
        source_spec, trigger_manual,
    },
    support::{sim::storage, wait},
    tree,
};

#[tokio::test]
async fn a_wrong_key_fails_naming_authentication_and_keeps_latest_image() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-wrongkey", "keyed", 1, json!({})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "keyed",
        source_spec(
            "keyed",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    manual_synced(&src, "keyed", "one").await;
    let good = new_image(&dst, "keyed", None).await;
    assert_image_equals(&dst, &good, "restore-1", &data).await;

    // The user points the source at a key that is not the destination's.
    let wrong: Secret = serde_json::from_value(json!({
        "metadata": {"name": "wrong-key"},
        "stringData": {"psk.txt": format!("volsync:{}", "cd".repeat(64))},
    }))
    .expect("secret");
    src.api::<Secret>()
        .create(&PostParams::default(), &wrong)
        .await
        .expect("secret");
    std::fs::write(data.join("after-the-good-sync"), "x\n").expect("write");
    patch_source(
        &src,
        "keyed",
        json!({"rsyncTLS": {"keySecret": "wrong-key"}}),
    )
    .await;
    trigger_manual(&src, "keyed", "two").await;

    let rs_api: Api<ReplicationSource> = src.api();
    let failed = wait::until("the sync to fail", SYNC, || async {
        let rs = rs_api.get("keyed").await.map_err(|e| e.to_string())?;
        Ok(rs
            .status
            .and_then(|s| s.sync.latest_mover_status)
            .filter(|m| m.result == Some(ferrosync::api::Spelling::Known(MoverResult::Failed))))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));
    let logs = failed.logs.clone().unwrap_or_default();
    assert!(
        logs.contains("authentication"),
        "the failed status names authentication: {failed:?}"
    );
    let event = wait::until("a TransferFailed event", STEP, || async {
        let all = events(&src.client, &src.name).await?;
        Ok(all.into_iter().find(|e| {
            e.reason.as_deref() == Some("TransferFailed")
                && e.involved_object.name.as_deref() == Some("keyed")
        }))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("authentication failed")),
        "{event:?}"
    );
    let rs = rs_api.get("keyed").await.expect("rs");
    assert_eq!(
        rs.status.and_then(|s| s.sync.last_manual_sync).as_deref(),
        Some("one"),
        "the failed trigger is not recorded as done"
    );

    // The destination publishes nothing from a failed transfer, however long it retries.
    holds_for("latestImage unchanged", Duration::from_secs(15), || async {
        match latest_image(&dst, "keyed").await {
            Some(name) if name == good => Ok(()),
            other => Err(format!("latestImage is now {other:?}")),
        }
    })
    .await;
    // The good image still holds the data from before the change.
    let before = tempdir_with_sample();
    assert_image_equals(&dst, &good, "restore-still-good", &before).await;
    std::fs::remove_dir_all(&before).expect("rm");

    // With the right key back, the pending trigger completes.
    patch_source(
        &src,
        "keyed",
        json!({"rsyncTLS": {"keySecret": "keyed-key"}}),
    )
    .await;
    manual_synced(&src, "keyed", "two").await;
    let fixed = new_image(&dst, "keyed", Some(&good)).await;
    assert_image_equals(&dst, &fixed, "restore-2", &data).await;
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    eprintln!("wrong key: {:.1}s", started.elapsed().as_secs_f64());
}

/// A fresh copy of the sample tree (what the first image holds).
fn tempdir_with_sample() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lc-sample-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    tree::write_sample(&dir, OWNER);
    dir
}

#[tokio::test]
async fn without_a_plugin_a_failed_clone_falls_back_to_snapshot() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-noclone", "fallback", 1, json!({})).await;
    pvc("data")
        .class(storage::CLASS_NO_CLONE)
        .create(&src)
        .await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, OWNER);
    create_rs(
        &src,
        "fallback",
        source_spec(
            "fallback",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    // The clone fails with the provisioner's event...
    crate::fixtures::event(
        &src.client,
        &src.name,
        "volsync-fallback-src",
        "ProvisioningFailed",
    )
    .await;
    // ...and the built-in default switches to a snapshot.
    let rs = manual_synced(&src, "fallback", "one").await;
    let policy = rs.status.and_then(|s| s.sync.policy).unwrap_or_default();
    let decision = policy
        .iter()
        .find(|d| d.decision == "copy-method")
        .expect("a copy-method decision in status.policy");
    assert_eq!(decision.value, "Snapshot", "{decision:?}");
    assert_eq!(decision.decided_by, "built-in", "{decision:?}");
    let image = new_image(&dst, "fallback", None).await;
    assert_image_equals(&dst, &image, "restored", &data).await;
    // The failed clone and the snapshot's restore are both cleaned up.
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    eprintln!("clone fallback: {:.1}s", started.elapsed().as_secs_f64());
}
