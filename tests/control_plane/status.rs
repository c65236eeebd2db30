//! Status goes through the status subresource only, and round-trips exactly.

use ferrosync::api::{
    ReplicationDestination, ReplicationDestinationStatus, ReplicationSource,
    ReplicationSourceStatus,
};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::{
    fixtures::{destination, source},
    support::control_plane,
};

const MANAGER: &str = "ferrosync-test";

fn destination_status() -> ReplicationDestinationStatus {
    serde_json::from_value(json!({
        "conditions": [{
            "type": "Synchronizing", "status": "True", "reason": "SyncInProgress",
            "message": "Synchronization in-progress", "lastTransitionTime": "2022-11-29T13:27:54Z",
            "observedGeneration": 1,
        }],
        "lastSyncStartTime": "2022-11-29T13:27:54Z",
        "lastSyncTime": "2022-11-29T13:20:00Z",
        "lastSyncDuration": "28.818695981s",
        "nextSyncTime": "2022-11-29T13:30:00Z",
        "lastManualSync": "first",
        "latestMoverStatus": {"result": "Successful", "logs": "sent 1,024 bytes  received 35 bytes"},
        "latestImage": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "volsync-my-dest-dst-20221129132000"},
        "rsyncTLS": {"address": "127.64.231.114", "keySecret": "volsync-rsync-tls-my-dest"},
    }))
    .expect("a destination status")
}

#[tokio::test]
async fn destination_status_round_trips_through_the_subresource() {
    let ns = control_plane().namespace("status-rd").await;
    let api = ns.api::<ReplicationDestination>();
    // A status sent with the object on create is dropped: only the subresource writes it.
    let with_status = destination("rd").set(
        "status",
        serde_json::to_value(destination_status()).unwrap(),
    );
    let rd: ReplicationDestination = serde_json::from_value(with_status.0).expect("typed");
    let created = api
        .create(&PostParams::default(), &rd)
        .await
        .expect("create");
    assert_eq!(
        created.status, None,
        "status must not be writable through the main resource"
    );

    let body = json!({"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination", "status": destination_status()});
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status("rd", &params, &Patch::Apply(&body))
        .await
        .expect("status apply");
    let stored = api.get("rd").await.expect("get");
    assert_eq!(stored.status, Some(destination_status()));
    assert_eq!(
        stored.spec, created.spec,
        "a status write leaves the spec alone"
    );

    // And the main resource ignores status changes.
    let spec_patch = json!({"status": {"lastManualSync": "changed"}});
    api.patch("rd", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .expect("merge patch");
    assert_eq!(
        api.get("rd").await.expect("get").status,
        Some(destination_status())
    );
}

#[tokio::test]
async fn source_status_round_trips_through_the_subresource() {
    let ns = control_plane().namespace("status-rs").await;
    let api = ns.api::<ReplicationSource>();
    let rs: ReplicationSource = serde_json::from_value(source("rs").0).expect("typed");
    api.create(&PostParams::default(), &rs)
        .await
        .expect("create");
    // The spec's source status example, with the fields our API adds.
    let status: ReplicationSourceStatus = serde_json::from_value(json!({
        "conditions": [{
            "type": "Synchronizing", "status": "False", "reason": "WaitingForSchedule",
            "message": "Waiting for next scheduled synchronization", "lastTransitionTime": "2022-11-29T17:25:13Z",
        }],
        "lastSyncDuration": "28.818695981s",
        "lastSyncTime": "2022-11-29T17:25:28Z",
        "nextSyncTime": "2022-11-29T17:30:00Z",
        "latestMoverStatus": {"result": "Failed", "logs": "rsync error: some files could not be transferred"},
        "rsyncTLS": {"keySecret": "volsync-rsync-tls-rs"},
    }))
    .expect("a source status");
    let body = json!({"apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource", "status": status});
    api.patch_status(
        "rs",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("status apply");
    assert_eq!(api.get("rs").await.expect("get").status, Some(status));
}

#[tokio::test]
async fn status_is_as_open_as_volsyncs_and_as_strict() {
    let ns = control_plane().namespace("status-types").await;
    let api = ns.api::<ReplicationDestination>();
    let rd: ReplicationDestination = serde_json::from_value(destination("rd").0).expect("typed");
    api.create(&PostParams::default(), &rd)
        .await
        .expect("create");
    // VolSync's result is any string; ferrosync's typed client keeps what it does not know.
    let open = json!({"status": {"latestMoverStatus": {"result": "Maybe"}}});
    api.patch_status("rd", &PatchParams::default(), &Patch::Merge(&open))
        .await
        .expect("any result string is admitted");
    let stored = api.get("rd").await.expect("get").status.expect("status");
    let result = stored.sync.latest_mover_status.and_then(|m| m.result);
    assert_eq!(result.as_ref().map(|r| r.as_str()), Some("Maybe"));
    assert_eq!(result.and_then(|r| r.known()), None);
    // A time that is not a time is rejected, as by VolSync's schema.
    let bad = json!({"status": {"lastSyncTime": "yesterday"}});
    let err = api
        .patch_status("rd", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .expect_err("rejected");
    assert!(err.to_string().contains("status.lastSyncTime"), "{err}");
}
