//! The spec's example, end to end: a Snapshot destination and a Clone source on a cron
//! schedule, address and key taken from the destination's status. Each restored
//! `latestImage` equals the source byte for byte, the second sync comes from the schedule,
//! and nothing temporary is left behind.

use std::time::Instant;

use ferrosync::api::ReplicationSource;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;

use crate::{
    lifecycle_support::{
        SYNC, assert_image_equals, create_rs, destination_at_rest, expect, new_image,
        sample_volume, settles_to, snapshot_pair, source_spec,
    },
    support::wait,
};

/// The source's last completed sync and its next scheduled time.
async fn sync_times(
    api: &Api<ReplicationSource>,
    name: &str,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let rs = api.get(name).await.expect("source");
    let sync = rs.status.map(|s| s.sync).unwrap_or_default();
    let done = sync.last_sync_start_time.is_none();
    (
        sync.last_sync_time.filter(|_| done).map(|t| t.0),
        sync.next_sync_time.map(|t| t.0),
    )
}

/// Waits for a completed sync later than `after`; returns its time.
async fn scheduled_sync(
    api: &Api<ReplicationSource>,
    name: &str,
    after: Option<Timestamp>,
) -> Timestamp {
    wait::until("a sync from the schedule", SYNC, || async {
        let (last, _) = sync_times(api, name).await;
        Ok(last.filter(|t| Some(*t) > after))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", crate::env::env().controller_tail()))
}

#[tokio::test]
async fn spec_example_snapshot_destination_and_scheduled_clone_source() {
    let started = Instant::now();
    let (dst, src, address) = snapshot_pair("lc-example", "database", 1, json!({})).await;
    let data = sample_volume(&src, "mysql-pv-claim").await;
    create_rs(
        &src,
        "database",
        source_spec(
            "database",
            "mysql-pv-claim",
            &address,
            json!({"schedule": "* * * * *"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    let rs_api: Api<ReplicationSource> = src.api();

    // The first sync runs at creation.
    let mut last = scheduled_sync(&rs_api, "database", None).await;
    let first = new_image(&dst, "database", None).await;
    assert_image_equals(&dst, &first, "restore-1", &data).await;
    let (_, next) = sync_times(&rs_api, "database").await;
    assert!(
        next.is_some_and(|n| n > last),
        "nextSyncTime after lastSyncTime: {next:?}"
    );

    // Change the source only while no scheduled sync is near, so the clone of the next
    // iteration is certain to hold the change.
    let mut image = first.clone();
    loop {
        let (_, next) = sync_times(&rs_api, "database").await;
        let next = next.expect("nextSyncTime");
        if next.duration_since(Timestamp::now()).as_secs_f64() > 15.0 {
            break;
        }
        last = scheduled_sync(&rs_api, "database", Some(last)).await;
        image = new_image(&dst, "database", Some(&image)).await;
    }
    std::fs::write(data.join("a/hello.txt"), "hello again\n").expect("write");
    std::fs::remove_file(data.join("empty")).expect("rm");
    std::fs::write(data.join("new-file"), "new\n").expect("write");
    // The schedule, not a manual trigger, starts the next sync.
    let second = scheduled_sync(&rs_api, "database", Some(last)).await;
    assert!(second > last);
    image = new_image(&dst, "database", Some(&image)).await;
    assert_ne!(image, first);
    assert_image_equals(&dst, &image, "restore-2", &data).await;

    // Nothing temporary is left: no clone, no Job, no pod on the source side; on the
    // destination only its volume, the one retained image and the next listener.
    settles_to(&src, &expect(&["mysql-pv-claim"], &[], &[], &[])).await;
    destination_at_rest(&dst, "database", &[&image], &[]).await;
    eprintln!("spec example: {:.1}s", started.elapsed().as_secs_f64());
}
