//! Triggers end to end: a manual trigger runs exactly one sync per new value, and a paused
//! source starts no mover until it is unpaused.

use std::time::{Duration, Instant};

use ferrosync::{
    api::ReplicationSource,
    resources::{Side, names},
};
use k8s_openapi::api::{batch::v1::Job, core::v1::PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::lifecycle_support::{
    assert_image_equals, create_rs, holds_for, image_count, manual_synced, new_image, patch_source,
    sample_volume, snapshot_pair, source_reason, source_spec, trigger_manual,
};
use crate::support::TestNamespace;

/// Long enough for several reconcile passes (the poll is 500 ms).
const QUIET: Duration = Duration::from_secs(15);

/// Asserts for [`QUIET`] that source `name` starts no iteration, keeps `last` as its
/// lastSyncTime and has no mover Job; returns the destination's image count then.
async fn no_new_sync(
    src: &TestNamespace,
    name: &str,
    last: &Option<Time>,
    dst: &TestNamespace,
) -> usize {
    let rs_api: Api<ReplicationSource> = src.api();
    let jobs: Api<Job> = src.api();
    let job = names::job(Side::Source, name);
    holds_for("no new sync", QUIET, || async {
        let rs = rs_api.get(name).await.map_err(|e| e.to_string())?;
        let sync = rs.status.map(|s| s.sync).unwrap_or_default();
        if sync.last_sync_start_time.is_some() || &sync.last_sync_time != last {
            return Err(format!("another iteration: {sync:?}"));
        }
        if jobs
            .get_opt(&job)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("a mover Job exists".into());
        }
        Ok(())
    })
    .await;
    image_count(dst).await.expect("images")
}

#[tokio::test]
async fn a_manual_trigger_runs_exactly_one_sync_per_new_value() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-manual", "manual", 10, json!({})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "manual",
        source_spec(
            "manual",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    let rs_api: Api<ReplicationSource> = src.api();
    let first = manual_synced(&src, "manual", "one").await;
    let first_time = first.status.and_then(|s| s.sync.last_sync_time);
    let img1 = new_image(&dst, "manual", None).await;
    assert_image_equals(&dst, &img1, "restore-1", &data).await;

    // Nothing more while the value stays; an unrelated edit of the spec changes nothing.
    patch_source(&src, "manual", json!({"rsyncTLS": {"port": 8000}})).await;
    assert_eq!(
        no_new_sync(&src, "manual", &first_time, &dst).await,
        1,
        "no sync while trigger.manual stays \"one\""
    );
    let after_quiet: ReplicationSource = rs_api.get("manual").await.expect("rs");
    assert_eq!(
        after_quiet.status.and_then(|s| s.sync.last_sync_time),
        first_time,
        "lastSyncTime unchanged"
    );
    assert_eq!(
        source_reason(&src, "manual").await.as_deref(),
        Some("WaitingForManual")
    );

    // A new value: exactly one more sync.
    std::fs::write(data.join("second.txt"), "second\n").expect("write");
    trigger_manual(&src, "manual", "two").await;
    let second = manual_synced(&src, "manual", "two").await;
    let second_time = second.status.and_then(|s| s.sync.last_sync_time);
    assert!(second_time > first_time);
    let img2 = new_image(&dst, "manual", Some(&img1)).await;
    assert_image_equals(&dst, &img2, "restore-2", &data).await;
    let quiet_second = no_new_sync(&src, "manual", &second_time, &dst).await;
    assert_eq!(quiet_second, 2, "one image per manual value");
    eprintln!("manual trigger: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_paused_source_starts_no_mover_until_unpaused() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-paused", "paused", 1, json!({})).await;
    let data = sample_volume(&src, "data").await;
    let mut spec = source_spec(
        "paused",
        "data",
        &address,
        json!({"manual": "one"}),
        json!({"copyMethod": "Clone"}),
    );
    spec["paused"] = json!(true);
    create_rs(&src, "paused", spec).await;

    let jobs: Api<Job> = src.api();
    let claims: Api<PersistentVolumeClaim> = src.api();
    let job = names::job(Side::Source, "paused");
    crate::support::wait::until("the Paused condition", crate::fixtures::STEP, || async {
        Ok((source_reason(&src, "paused").await.as_deref() == Some("Paused")).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    holds_for("no mover while paused", QUIET, || async {
        if jobs
            .get_opt(&job)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("a mover Job was created while paused".into());
        }
        if claims
            .get_opt(&names::source_pit("paused"))
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("a clone was made while paused".into());
        }
        Ok(())
    })
    .await;
    let rs: ReplicationSource = src.api().get("paused").await.expect("rs");
    assert!(rs.status.and_then(|s| s.sync.last_sync_time).is_none());

    src.api::<ReplicationSource>()
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpausing");
    manual_synced(&src, "paused", "one").await;
    let image = new_image(&dst, "paused", None).await;
    assert_image_equals(&dst, &image, "restored", &data).await;
    eprintln!("paused: {:.1}s", started.elapsed().as_secs_f64());
}
