//! ReplicationDestination/ReplicationSource fixtures, done the way a user does it, and the
//! waits on their status.

use std::{path::PathBuf, time::Duration};

use ferrosync::api::{MoverResult, ReplicationDestination, ReplicationSource, Spelling};
use k8s_openapi::{
    api::batch::v1::Job,
    api::core::v1::{
        Namespace, PersistentVolume, PersistentVolumeClaim, Secret, TypedLocalObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::{
    fixtures::{STEP, bound_dir, pvc},
    support::{TestNamespace, sim::Cluster, wait},
    tree,
};

/// Creates ReplicationDestination `name` in `ns` with `rsync_tls` (merged over a Direct,
/// 1Gi, ReadWriteOnce spec).
pub async fn destination(
    ns: &TestNamespace,
    name: &str,
    rsync_tls: Value,
) -> ReplicationDestination {
    let mut tls =
        json!({"copyMethod": "Direct", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]});
    merge(&mut tls, rsync_tls);
    let rd: ReplicationDestination = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
        "metadata": {"name": name}, "spec": {"rsyncTLS": tls},
    }))
    .expect("destination fixture");
    ns.api()
        .create(&PostParams::default(), &rd)
        .await
        .expect("creating destination")
}

/// Creates ReplicationSource `name` in `ns` for `pvc`, triggered once by hand, with
/// `rsync_tls` (merged over copyMethod Direct).
pub async fn source(
    ns: &TestNamespace,
    name: &str,
    pvc: &str,
    rsync_tls: Value,
) -> ReplicationSource {
    let mut tls = json!({"copyMethod": "Direct"});
    merge(&mut tls, rsync_tls);
    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": name},
        "spec": {"sourcePVC": pvc, "trigger": {"manual": "once"}, "rsyncTLS": tls},
    }))
    .expect("source fixture");
    ns.api()
        .create(&PostParams::default(), &rs)
        .await
        .expect("creating source")
}

/// Creates source `name` in `ns` of a new PVC `data` holding the sample tree owned by
/// `owner`, sending with `rsync_tls` (its key Secret and the destination's address);
/// returns the volume's directory, to compare with what arrives.
pub async fn sample_source(
    ns: &TestNamespace,
    name: &str,
    owner: (u32, u32),
    rsync_tls: Value,
) -> PathBuf {
    pvc("data").create(ns).await;
    let data = bound_dir(ns, "data").await;
    tree::write_sample(&data, owner);
    source(ns, name, "data", rsync_tls).await;
    data
}

/// Creates source `name` in `ns` of a new one-file PVC `data`, sending to `address` with
/// Secret `key_secret`, which it also creates holding a key that no destination has:
/// every handshake fails, as with a key copied from the wrong destination.
pub async fn source_with_a_wrong_key(
    ns: &TestNamespace,
    name: &str,
    key_secret: &str,
    address: &str,
) {
    let wrong: Secret = serde_json::from_value(json!({
        "metadata": {"name": key_secret},
        "stringData": {"psk.txt": format!("volsync:{}", "ab".repeat(64))},
    }))
    .expect("secret");
    ns.api::<Secret>()
        .create(&PostParams::default(), &wrong)
        .await
        .expect("secret");
    pvc("data").create(ns).await;
    std::fs::write(bound_dir(ns, "data").await.join("file"), "x").expect("write");
    source(
        ns,
        name,
        "data",
        json!({"keySecret": key_secret, "address": address}),
    )
    .await;
}

/// Asserts that no mover Job was started in `ns`.
pub async fn no_jobs(ns: &TestNamespace) {
    let jobs = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("jobs");
    assert!(
        jobs.items.is_empty(),
        "no mover may start: {:?}",
        jobs.items.iter().map(|j| j.name_any()).collect::<Vec<_>>()
    );
}

/// Asserts that the source's latest mover succeeded.
pub fn assert_mover_succeeded(rs: &ReplicationSource) {
    let mover = rs
        .status
        .as_ref()
        .and_then(|s| s.sync.latest_mover_status.as_ref());
    assert_eq!(
        mover.and_then(|m| m.result.clone()),
        Some(Spelling::Known(MoverResult::Successful)),
        "{mover:?}"
    );
}

/// Waits up to `timeout` for destination `name` to publish its `latestImage`; the error
/// says what it waited for, for the caller to add what explains it.
pub async fn published_image(
    ns: &TestNamespace,
    name: &str,
    timeout: Duration,
) -> Result<TypedLocalObjectReference, String> {
    let api: Api<ReplicationDestination> = ns.api();
    wait::until(
        "the destination to publish latestImage",
        timeout,
        || async {
            let rd = api.get(name).await.map_err(|e| e.to_string())?;
            Ok(rd.status.and_then(|s| s.latest_image))
        },
    )
    .await
    .map_err(|e| e.to_string())
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// Waits for the destination's address and key Secret in its status.
pub async fn published(ns: &TestNamespace, name: &str) -> (String, String) {
    let api: Api<ReplicationDestination> = ns.api();
    wait::until(
        &format!("destination {name} to publish its address"),
        STEP,
        || async {
            let rd = api.get(name).await.map_err(|e| e.to_string())?;
            let tls = rd.status.and_then(|s| s.rsync_tls);
            Ok(tls.and_then(|t| Some((t.address?, t.key_secret?))))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Copies Secret `from` of `src_ns` to `to` in `dst_ns`, as a user does with kubectl.
pub async fn copy_secret(src_ns: &TestNamespace, from: &str, dst_ns: &TestNamespace, to: &str) {
    let secret: Secret = src_ns.api().get(from).await.expect("key secret");
    let copy: Secret = serde_json::from_value(json!({
        "metadata": {"name": to}, "data": secret.data, "type": secret.type_,
    }))
    .expect("secret copy");
    dst_ns
        .api::<Secret>()
        .create(&PostParams::default(), &copy)
        .await
        .expect("copying secret");
}

/// Waits for the source's manual sync to finish (successfully or not); returns it.
pub async fn synced(
    ns: &TestNamespace,
    name: &str,
    timeout: std::time::Duration,
) -> ReplicationSource {
    let api: Api<ReplicationSource> = ns.api();
    wait::until(
        &format!("source {name} to finish its sync"),
        timeout,
        || async {
            let rs = api.get(name).await.map_err(|e| e.to_string())?;
            let done = rs.status.as_ref().is_some_and(|s| {
                s.sync.last_manual_sync.as_deref() == Some("once")
                    && s.sync.last_sync_time.is_some()
            });
            Ok(done.then_some(rs))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The Synchronizing condition.
pub fn synchronizing(conditions: Option<&Vec<Condition>>) -> Condition {
    conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Synchronizing")
        .cloned()
        .expect("a Synchronizing condition")
}

/// The directory of PVC `claim` in `ns`.
pub async fn claim_dir(ns: &TestNamespace, claim: &str) -> std::path::PathBuf {
    let pvc: PersistentVolumeClaim = ns.api().get(claim).await.expect("claim");
    let pv_name = pvc.spec.and_then(|s| s.volume_name).expect("bound claim");
    let pv: PersistentVolume = Api::all(ns.client.clone()).get(&pv_name).await.expect("pv");
    Cluster::volume_dir(&pv).expect("a simulated volume")
}

/// Opts `ns` in to privileged movers, as a cluster admin does.
pub async fn privileged_movers(ns: &TestNamespace) {
    let body = json!({"metadata": {"annotations": {"volsync.backube/privileged-movers": "true"}}});
    Api::<Namespace>::all(ns.client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .expect("annotating the namespace");
}

/// Waits until the source has a mover result from this sync, success or failure.
pub async fn synced_or_failed(
    ns: &TestNamespace,
    name: &str,
    timeout: std::time::Duration,
) -> ferrosync::api::MoverStatus {
    let api: Api<ReplicationSource> = ns.api();
    wait::until(
        &format!("source {name} to report a mover result"),
        timeout,
        || async {
            let rs = api.get(name).await.map_err(|e| e.to_string())?;
            Ok(rs
                .status
                .and_then(|s| s.sync.latest_mover_status)
                .filter(|m| m.result.is_some()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}
