//! Issue 12, the mover Pod as VolSync shapes it: `moverVolumes` (a Secret and a PVC under
//! /mnt), mover scheduling and identity options (tolerations, affinity, labels,
//! resources, security context, service account), a ReadOnlyMany source mounted
//! read-only, and the debug mover, each seen from inside the running mover.

use std::{fs, os::unix::fs::MetadataExt, time::Duration};

use ferrosync::{
    api::{MoverResult, ReplicationDestination, ReplicationSource},
    resources::{Side, job::CONTAINER},
};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    behaviours_support::{mounted_read_only, node_of, running_mover, secret},
    env::env,
    fixtures::{STEP, bound_dir, event, pvc},
    lifecycle_support::{OWNER, create_rs, holds_for, manual_synced},
    support::{
        TestNamespace,
        sim::{SECOND_NODE, SECOND_NODE_TAINT},
        wait,
    },
    tree,
    volsync::{claim_dir, copy_secret, destination, published},
};

/// A Secret and a PVC as moverVolumes, at /mnt/creds and /mnt/repo.
fn mover_volumes() -> serde_json::Value {
    json!([
        {"mountPath": "creds", "volumeSource": {"secret": {"secretName": "extra-creds"}}},
        {"mountPath": "repo", "volumeSource": {"persistentVolumeClaim": {"claimName": "repo"}}},
    ])
}

/// The Secret and the PVC the moverVolumes name, with known contents.
async fn extra_volumes(ns: &TestNamespace) {
    secret(ns, "extra-creds", json!({"token": "s3cr3t-token"})).await;
    pvc("repo").create(ns).await;
    fs::write(
        bound_dir(ns, "repo").await.join("marker.txt"),
        "from the repo PVC\n",
    )
    .expect("writing into the repo PVC");
}

#[tokio::test]
async fn a_destination_mover_sees_its_mover_volumes_under_mnt() {
    let env = env();
    let dst = env.cp.namespace("mv-dst").await;
    extra_volumes(&dst).await;
    destination(&dst, "mv", json!({"moverVolumes": mover_volumes()})).await;
    let (pod, root) = running_mover(&dst, Side::Destination, "mv").await;
    assert_eq!(
        fs::read_to_string(root.join("mnt/creds/token")).expect("the Secret's key as a file"),
        "s3cr3t-token"
    );
    assert_eq!(
        fs::read_to_string(root.join("mnt/repo/marker.txt")).expect("the PVC's file"),
        "from the repo PVC\n"
    );
    assert_eq!(
        mounted_read_only(&dst, &pod, "/mnt/creds"),
        Some(true),
        "Secrets are read-only"
    );
    assert_eq!(mounted_read_only(&dst, &pod, "/mnt/repo"), Some(false));
    assert_eq!(
        mounted_read_only(&dst, &pod, "/data"),
        Some(false),
        "a destination writes"
    );
}

#[tokio::test]
async fn a_mover_volume_outside_mnt_is_refused_with_a_clear_condition() {
    let env = env();
    let dst = env.cp.namespace("mv-bad").await;
    let volumes = json!([{"mountPath": "../etc", "volumeSource": {"secret": {"secretName": "x"}}}]);
    destination(&dst, "bad", json!({"moverVolumes": volumes})).await;
    let api: Api<ReplicationDestination> = dst.api();
    let message = wait::until("the Error condition", STEP, || async {
        let rd = api.get("bad").await.map_err(|e| e.to_string())?;
        let cond = rd
            .status
            .and_then(|s| s.sync.conditions)
            .unwrap_or_default();
        Ok(cond
            .into_iter()
            .find(|c| c.type_ == "Synchronizing" && c.reason == "Error")
            .map(|c| c.message))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert!(
        message.contains("moverVolumes[0].mountPath") && message.contains("../etc"),
        "{message}"
    );
    let jobs = dst.api::<k8s_openapi::api::batch::v1::Job>();
    assert!(
        jobs.list(&Default::default())
            .await
            .expect("jobs")
            .items
            .is_empty(),
        "no mover starts"
    );
}

/// A ReadOnlyMany source in debug mode: the mover starts, sees its data read-only and its
/// mover volume, moves nothing; ending the debug session moves nothing either; without
/// the annotation the same source replicates.
#[tokio::test]
async fn a_debug_mover_of_a_read_only_source_moves_nothing_until_the_annotation_goes() {
    let env = env();
    let dst = env.cp.namespace("dbg-dst").await;
    let src = env.cp.namespace("dbg-src").await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    destination(&dst, "dbg", json!({})).await;
    let (address, key) = published(&dst, "dbg").await;
    copy_secret(&dst, &key, &src, "dbg-key").await;
    extra_volumes(&src).await;
    pvc("data")
        .access_modes(&["ReadOnlyMany"])
        .create(&src)
        .await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, OWNER);

    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": "dbg", "annotations": {"volsync.backube/enable-debug-mover": "true"}},
        "spec": {"sourcePVC": "data", "trigger": {"manual": "first"},
                 "rsyncTLS": {"copyMethod": "Direct", "keySecret": "dbg-key", "address": address,
                              "moverVolumes": mover_volumes()}},
    }))
    .expect("source fixture");
    let rss: Api<ReplicationSource> = src.api();
    rss.create(&PostParams::default(), &rs)
        .await
        .expect("creating source");

    let (pod, root) = running_mover(&src, Side::Source, "dbg").await;
    assert_eq!(
        mounted_read_only(&src, &pod, "/data"),
        Some(true),
        "ReadOnlyMany is read-only"
    );
    assert!(root.join("data").read_dir().expect("data visible").count() > 0);
    assert_eq!(
        fs::read_to_string(root.join("mnt/creds/token")).expect("mover volume"),
        "s3cr3t-token"
    );
    let marker = root.join("tmp/exit-debug-if-removed");
    // The Pod reports Running as its process is spawned: the mover writes the marker as it
    // starts, a moment later.
    wait::until("the debug mover waits on its marker", STEP, || async {
        Ok(marker.exists().then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let dst_dir = claim_dir(&dst, "volsync-dbg-dst").await;
    holds_for(
        "the debug mover moves nothing",
        Duration::from_secs(5),
        || async {
            let rs = rss.get("dbg").await.map_err(|e| e.to_string())?;
            let sync = rs.status.map(|s| s.sync).unwrap_or_default();
            if sync.last_sync_time.is_some() {
                return Err(format!("a sync was recorded: {sync:?}"));
            }
            let arrived = fs::read_dir(&dst_dir).map_err(|e| e.to_string())?.count();
            if arrived > 0 {
                return Err(format!("{arrived} entries arrived"));
            }
            Ok(())
        },
    )
    .await;
    let cond = crate::volsync::synchronizing(
        rss.get("dbg")
            .await
            .expect("source")
            .status
            .expect("status")
            .sync
            .conditions
            .as_ref(),
    );
    assert!(cond.message.contains("debug mover"), "{cond:?}");

    // Ending the session, as a person does from inside: the Pod exits, nothing is synced.
    fs::remove_file(&marker).expect("removing the marker");
    let note = event(&src.client, &src.name, "dbg", "DebugMoverExited").await;
    assert!(note.contains("without moving data"), "{note}");
    let rs = rss.get("dbg").await.expect("source");
    assert_eq!(rs.status.and_then(|s| s.sync.last_sync_time), None);

    // Without the annotation, the same source replicates (with /data still read-only).
    rss.patch(
        "dbg",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"metadata": {"annotations": {"volsync.backube/enable-debug-mover": null}}}),
        ),
    )
    .await
    .expect("removing the annotation");
    let rs = manual_synced(&src, "dbg", "first").await;
    let mover = rs.status.and_then(|s| s.sync.latest_mover_status);
    assert_eq!(
        mover.as_ref().and_then(|m| m.result.clone()),
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful)),
        "{mover:?}"
    );
    let rds: Api<ReplicationDestination> = dst.api();
    wait::until("the destination to publish", STEP * 2, || async {
        let rd = rds.get("dbg").await.map_err(|e| e.to_string())?;
        Ok(rd.status.and_then(|s| s.latest_image))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tree::assert_same(&data, &dst_dir);
}

/// VolSync's mover options reach the Pod: tolerations and affinity put it on the tainted
/// second node, with its labels, resources, user and ServiceAccount; without the
/// toleration the same affinity leaves it unschedulable.
#[tokio::test]
async fn mover_tolerations_affinity_labels_resources_identity_and_account_apply() {
    let env = env();
    let dst = env.cp.namespace("opts-dst").await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "mover-sa"}})).expect("sa");
    dst.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .expect("creating the ServiceAccount");
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [SECOND_NODE]}]}]}}});
    let toleration =
        json!([{"key": SECOND_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]);
    destination(
        &dst,
        "opts",
        json!({
            "moverTolerations": toleration,
            "moverAffinity": affinity,
            "moverPodLabels": {"team": "storage"},
            "moverResources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
            "moverSecurityContext": {"runAsUser": 2000, "runAsGroup": 2000, "fsGroup": 2000},
            "moverServiceAccount": "mover-sa",
        }),
    )
    .await;
    let (pod, root) = running_mover(&dst, Side::Destination, "opts").await;
    assert_eq!(node_of(&pod).as_deref(), Some(SECOND_NODE));
    assert_eq!(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("storage")
    );
    let spec = pod.spec.clone().expect("spec");
    assert_eq!(spec.service_account_name.as_deref(), Some("mover-sa"));
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .expect("mover container");
    let requests = container
        .resources
        .clone()
        .and_then(|r| r.requests)
        .unwrap_or_default();
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("100m"));
    // The process runs as the given user: the files it writes in /tmp are that user's.
    let tmp = root.join("tmp");
    assert_eq!(
        fs::metadata(&tmp).expect("tmp").gid(),
        2000,
        "fsGroup owns the emptyDir"
    );
    let owners = wait::until("the mover to write its configuration", STEP, || async {
        let owners: Vec<u32> = fs::read_dir(&tmp)
            .map_err(|e| e.to_string())?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.uid())
            .collect();
        Ok((!owners.is_empty()).then_some(owners))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(owners.iter().all(|uid| *uid == 2000), "{owners:?}");

    // The same affinity without the toleration: unschedulable, and said so.
    destination(&dst, "stuck", json!({"moverAffinity": affinity})).await;
    wait::until(
        "the untolerated mover to be unschedulable",
        STEP,
        || async {
            let pods =
                crate::behaviours_support::mover_pods(&dst, Side::Destination, "stuck").await?;
            Ok(pods.into_iter().find_map(|p| {
                p.status?.conditions?.into_iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            }))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", dst.dump()));
}

/// Direct with a ReadWriteOnce volume: the mover runs on the node where the application's
/// pod mounts it (the tainted second node, through the application's toleration).
#[tokio::test]
async fn a_direct_mover_of_a_single_node_volume_runs_beside_the_application() {
    let env = env();
    let dst = env.cp.namespace("aff-dst").await;
    let src = env.cp.namespace("aff-src").await;
    crate::volsync::privileged_movers(&dst).await;
    crate::volsync::privileged_movers(&src).await;
    destination(&dst, "aff", json!({})).await;
    let (address, key) = published(&dst, "aff").await;
    copy_secret(&dst, &key, &src, "aff-key").await;
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, OWNER);
    // The application, pinned to the second node and tolerating its taint.
    let app: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": SECOND_NODE},
            "tolerations": [{"key": SECOND_NODE_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": crate::env::SHELL_IMAGE,
                            "command": ["/bin/sh", "-c", "while :; do sleep 1; done"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        },
    }))
    .expect("app pod");
    let pods: Api<Pod> = src.api();
    pods.create(&PostParams::default(), &app)
        .await
        .expect("creating the application");
    wait::until("the application to run", STEP, || async {
        let pod = pods.get("app").await.map_err(|e| e.to_string())?;
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok((phase == "Running").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", src.dump()));

    create_rs(
        &src,
        "aff",
        json!({"sourcePVC": "data", "trigger": {"manual": "first"},
               "rsyncTLS": {"copyMethod": "Direct", "keySecret": "aff-key", "address": address}}),
    )
    .await;
    let (mover, _) = running_mover(&src, Side::Source, "aff").await;
    assert_eq!(
        node_of(&mover).as_deref(),
        Some(SECOND_NODE),
        "beside the application"
    );
    let spec = mover.spec.clone().expect("spec");
    assert_eq!(
        spec.node_selector
            .and_then(|s| s.get("kubernetes.io/hostname").cloned())
            .as_deref(),
        Some(SECOND_NODE)
    );
    assert!(
        spec.tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.as_deref() == Some(SECOND_NODE_TAINT)),
        "the application's toleration is carried over"
    );
    let rs = manual_synced(&src, "aff", "first").await;
    let result = rs
        .status
        .and_then(|s| s.sync.latest_mover_status)
        .and_then(|m| m.result);
    assert_eq!(
        result,
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful))
    );
    let rds: Api<ReplicationDestination> = dst.api();
    wait::until("the destination to publish", STEP * 2, || async {
        let rd = rds.get("aff").await.map_err(|e| e.to_string())?;
        Ok(rd.status.and_then(|s| s.latest_image))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tree::assert_same(&data, &claim_dir(&dst, "volsync-aff-dst").await);
}
