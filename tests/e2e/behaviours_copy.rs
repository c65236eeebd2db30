//! Issue 12, what happens around the source's point-in-time copy as VolSync does it: the
//! copy-trigger handshake on the source PVC (wait, trigger, progress, completion, the next
//! iteration's wait, the 10-minute timeout and its Events), and the sweep of temporary
//! objects that carry VolSync's cleanup label.

use std::{collections::BTreeMap, time::Duration};

use ferrosync::api::{MoverResult, ReplicationSource};
use k8s_openapi::{api::core::v1::PersistentVolumeClaim, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::{STEP, event},
    lifecycle_support::{
        create_rs, holds_for, manual_synced, sample_volume, snapshot_pair, snapshots, source_spec,
        trigger_manual,
    },
    support::{TestNamespace, sim::storage::snapshot::SNAPSHOT_CLASS, wait},
};

const USE: &str = "volsync.backube/use-copy-trigger";
const TRIGGER: &str = "volsync.backube/copy-trigger";
const LATEST: &str = "volsync.backube/latest-copy-trigger";
const STATUS: &str = "volsync.backube/latest-copy-status";
const SINCE: &str = "volsync.backube/latest-copy-trigger-waiting-since";

async fn annotations(ns: &TestNamespace, claim: &str) -> Result<BTreeMap<String, String>, String> {
    let pvc: PersistentVolumeClaim = ns.api().get(claim).await.map_err(|e| e.to_string())?;
    Ok(pvc.metadata.annotations.unwrap_or_default())
}

async fn annotate(ns: &TestNamespace, claim: &str, values: Value) {
    ns.api::<PersistentVolumeClaim>()
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": values}})),
        )
        .await
        .expect("annotating the PVC");
}

/// Waits until the PVC's latest-copy-status is `status`; returns its annotations.
async fn copy_status(ns: &TestNamespace, claim: &str, status: &str) -> BTreeMap<String, String> {
    wait::until(
        &format!("latest-copy-status {status}"),
        STEP * 2,
        || async {
            let a = annotations(ns, claim).await?;
            Ok((a.get(STATUS).map(String::as_str) == Some(status)).then_some(a))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", env().controller_tail(), ns.dump()))
}

/// Asserts for a while that the source makes no copy of `claim` and records no new sync.
async fn holds_back(src: &TestNamespace, name: &str, last_manual: Option<&str>) {
    let copy = format!("volsync-{name}-src");
    let rss: Api<ReplicationSource> = src.api();
    holds_for(
        "no copy before the trigger",
        Duration::from_secs(4),
        || async {
            if src
                .api::<PersistentVolumeClaim>()
                .get_opt(&copy)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err(format!("{copy} was made"));
            }
            let rs = rss.get(name).await.map_err(|e| e.to_string())?;
            let manual = rs.status.and_then(|s| s.sync.last_manual_sync);
            if manual.as_deref() != last_manual {
                return Err(format!("a sync was recorded: {manual:?}"));
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_copy_trigger_handshake_waits_proceeds_completes_and_times_out() {
    let (dst, src, address) = snapshot_pair("ct", "ct", 2, json!({})).await;
    let data = sample_volume(&src, "data").await;
    annotate(&src, "data", json!({USE: ""})).await;
    create_rs(
        &src,
        "ct",
        source_spec(
            "ct",
            "data",
            &address,
            json!({"manual": "first"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;

    // Iteration 1 waits before copying, and says since when.
    let a = copy_status(&src, "data", "WaitingForTrigger").await;
    let since: Timestamp = a[SINCE].parse().expect("an RFC 3339 waiting-since");
    assert!(
        Timestamp::now().duration_since(since).as_secs() < 120,
        "{since}"
    );
    let note = event(&src.client, &src.name, "ct", "WaitingForCopyTrigger").await;
    assert!(note.contains(TRIGGER), "{note}");
    holds_back(&src, "ct", None).await;

    // The user quiesces, then triggers: the copy is made and reported Completed.
    annotate(&src, "data", json!({TRIGGER: "trigger-1"})).await;
    let a = copy_status(&src, "data", "Completed").await;
    assert_eq!(a.get(LATEST).map(String::as_str), Some("trigger-1"));
    assert!(
        !a.contains_key(SINCE),
        "waiting-since goes once the wait is over"
    );
    event(&src.client, &src.name, "ct", "CopyTriggered").await;
    event(&src.client, &src.name, "ct", "CopyCompleted").await;
    manual_synced(&src, "ct", "first").await;
    let image = crate::lifecycle_support::new_image(&dst, "ct", None).await;
    crate::lifecycle_support::assert_image_equals(&dst, &image, "restored", &data).await;

    // Iteration 2 waits again: the old trigger value does not release it.
    trigger_manual(&src, "ct", "second").await;
    copy_status(&src, "data", "WaitingForTrigger").await;
    holds_back(&src, "ct", Some("first")).await;

    // Ten minutes of waiting (as a restarted wait would have it) are reported, and the
    // wait goes on.
    let long_ago = Timestamp::from_second(Timestamp::now().as_second() - 11 * 60).expect("time");
    annotate(&src, "data", json!({SINCE: long_ago.to_string()})).await;
    let rss: Api<ReplicationSource> = src.api();
    let logs = wait::until("the timeout in latestMoverStatus", STEP, || async {
        let rs = rss.get("ct").await.map_err(|e| e.to_string())?;
        Ok(rs
            .status
            .and_then(|s| s.sync.latest_mover_status)
            .filter(|m| m.result == Some(ferrosync::api::Spelling::Known(MoverResult::Failed)))
            .and_then(|m| m.logs))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));
    assert!(
        logs.contains("timed out") && logs.contains(TRIGGER),
        "{logs}"
    );
    let warning = event(&src.client, &src.name, "ct", "CopyTriggerTimeout").await;
    assert!(warning.contains("still waiting"), "{warning}");
    holds_back(&src, "ct", Some("first")).await;

    annotate(&src, "data", json!({TRIGGER: "trigger-2"})).await;
    let rs = manual_synced(&src, "ct", "second").await;
    let mover = rs.status.and_then(|s| s.sync.latest_mover_status);
    assert_eq!(
        mover.and_then(|m| m.result),
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful))
    );
    let a = annotations(&src, "data").await.expect("annotations");
    assert_eq!(
        (
            a.get(STATUS).map(String::as_str),
            a.get(LATEST).map(String::as_str)
        ),
        (Some("Completed"), Some("trigger-2"))
    );
}

/// Objects VolSync marked for cleanup for this source (`volsync.backube/cleanup: <uid>`)
/// are deleted at the end of the iteration, like ferrosync's own; a do-not-delete snapshot
/// and objects of another owner stay.
#[tokio::test]
async fn objects_with_volsyncs_cleanup_label_are_swept_with_ferrosyncs() {
    let (_dst, src, address) = snapshot_pair("vsc", "vsc", 1, json!({})).await;
    sample_volume(&src, "data").await;
    let mut spec = source_spec(
        "vsc",
        "data",
        &address,
        json!({"manual": "first"}),
        json!({"copyMethod": "Snapshot", "volumeSnapshotClassName": SNAPSHOT_CLASS}),
    );
    spec["paused"] = json!(true);
    let rs = create_rs(&src, "vsc", spec).await;
    let uid = rs.uid().expect("uid");
    let mark = |extra: Value| {
        let mut labels = json!({"volsync.backube/cleanup": uid});
        crate::lifecycle_support::merge(&mut labels, extra);
        labels
    };
    let pvcs: Api<PersistentVolumeClaim> = src.api();
    for (name, labels) in [
        ("volsync-leftover", mark(json!({}))),
        (
            "someone-elses",
            json!({"volsync.backube/cleanup": "another-uid"}),
        ),
    ] {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .expect("pvc");
        pvcs.create(&PostParams::default(), &claim)
            .await
            .expect("creating pvc");
    }
    let snaps = snapshots(&src);
    for (name, labels) in [
        ("volsync-leftover-snap", mark(json!({}))),
        (
            "volsync-kept-snap",
            mark(json!({"volsync.backube/do-not-delete": "true"})),
        ),
    ] {
        let snap: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name, "labels": labels},
            "spec": {"volumeSnapshotClassName": SNAPSHOT_CLASS,
                     "source": {"persistentVolumeClaimName": "data"}},
        }))
        .expect("snapshot");
        snaps
            .create(&PostParams::default(), &snap)
            .await
            .expect("creating snapshot");
    }
    crate::lifecycle_support::patch_source(&src, "vsc", json!({"paused": false})).await;
    manual_synced(&src, "vsc", "first").await;
    wait::until("the marked objects to be gone", STEP, || async {
        let pvc_left = pvcs
            .get_opt("volsync-leftover")
            .await
            .map_err(|e| e.to_string())?;
        let snap_left = snaps
            .get_opt("volsync-leftover-snap")
            .await
            .map_err(|e| e.to_string())?;
        Ok((pvc_left.is_none() && snap_left.is_none()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", src.dump()));
    assert!(
        pvcs.get_opt("someone-elses").await.expect("get").is_some(),
        "another owner's object stays"
    );
    let kept = snaps.get_opt("volsync-kept-snap").await.expect("get");
    assert!(
        kept.is_some_and(|s| s.metadata.deletion_timestamp.is_none()),
        "a do-not-delete snapshot stays"
    );
    // ferrosync's own copy carried both marks and went the same way.
    assert!(
        pvcs.get_opt("volsync-vsc-src")
            .await
            .expect("get")
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    );
}
