//! Namespaces deleted in the middle of a transfer: within 60 s nothing of either side is
//! left (namespaces, volumes, pods, the controller's metric series), and the controller
//! keeps running.

use std::time::{Duration, Instant};

use ferrosync::api::{ReplicationDestination, ReplicationSource};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Namespace, PersistentVolume, Pod, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

use crate::{
    env,
    fixtures::{STEP, bound_dir, pvc},
    support::wait,
};

/// How long everything may take to go.
const GONE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn namespaces_deleted_mid_transfer_leave_nothing_behind_within_60_s() {
    let (cp, controller) = env();
    let dst = cp.namespace("gone-dst").await;
    let src = cp.namespace("gone-src").await;
    let rd: ReplicationDestination = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationDestination",
        "metadata": {"name": "gone"},
        "spec": {"rsyncTLS": {"copyMethod": "Direct", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]}},
    }))
    .expect("fixture");
    dst.api()
        .create(&PostParams::default(), &rd)
        .await
        .expect("destination");
    let rds: Api<ReplicationDestination> = dst.api();
    let (address, key) = wait::until("the destination's address", STEP, || async {
        let rd = rds.get("gone").await.map_err(|e| e.to_string())?;
        let tls = rd.status.and_then(|s| s.rsync_tls);
        Ok(tls.and_then(|t| Some((t.address?, t.key_secret?))))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let secret: Secret = dst.api().get(&key).await.expect("key");
    let copy: Secret =
        serde_json::from_value(json!({"metadata": {"name": "key"}, "data": secret.data}))
            .expect("secret");
    src.api()
        .create(&PostParams::default(), &copy)
        .await
        .expect("key copy");
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    // Enough data that the transfer is still running when the namespaces go.
    let mut big = std::fs::File::create(data.join("big.bin")).expect("big file");
    std::io::copy(
        &mut std::io::Read::take(
            std::fs::File::open("/dev/urandom").expect("urandom"),
            256 << 20,
        ),
        &mut big,
    )
    .expect("writing");
    let rs: ReplicationSource = serde_json::from_value(json!({
        "apiVersion": "volsync.backube/v1alpha1", "kind": "ReplicationSource",
        "metadata": {"name": "gone"},
        "spec": {"sourcePVC": "data", "trigger": {"manual": "once"},
                 "rsyncTLS": {"keySecret": "key", "address": address, "copyMethod": "Clone"}},
    }))
    .expect("fixture");
    src.api()
        .create(&PostParams::default(), &rs)
        .await
        .expect("source");
    let pods: Api<Pod> = src.api();
    wait::until("the source mover to run", STEP * 2, || async {
        let list = pods
            .list(
                &ListParams::default()
                    .labels("batch.kubernetes.io/job-name=volsync-rsync-tls-src-gone"),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", src.dump()));
    let rs_now: ReplicationSource = src.api().get("gone").await.expect("source");
    assert!(
        rs_now.status.and_then(|s| s.sync.last_sync_time).is_none(),
        "the transfer finished before the namespaces could be deleted; the test needs it in flight"
    );
    let jobs: Api<Job> = dst.api();
    assert!(
        jobs.get_opt("volsync-rsync-tls-dst-gone")
            .await
            .expect("job")
            .is_some()
    );

    // Both sides have metric series now, so their absence below means they were removed.
    let metrics = controller
        .get("/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    for ns in [&dst.name, &src.name] {
        assert!(
            metrics.contains(&format!("obj_namespace=\"{ns}\"")),
            "no metric series of {ns} before the deletion"
        );
    }

    let namespaces: Api<Namespace> = Api::all(dst.client.clone());
    let deleted = Instant::now();
    for ns in [&dst.name, &src.name] {
        namespaces
            .delete(ns, &DeleteParams::background())
            .await
            .expect("deleting");
    }
    let pvs: Api<PersistentVolume> = Api::all(dst.client.clone());
    let ours = [dst.name.clone(), src.name.clone()];
    let leftovers = || async {
        let mut left = Vec::new();
        for ns in &ours {
            if namespaces
                .get_opt(ns)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push(format!("namespace {ns}"));
            }
        }
        for pv in pvs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
        {
            let claim = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            if claim
                .and_then(|c| c.namespace.as_ref())
                .is_some_and(|n| ours.contains(n))
            {
                left.push(format!("PersistentVolume {:?}", pv.metadata.name));
            }
        }
        let metrics = controller
            .get("/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        for ns in &ours {
            if metrics.contains(&format!("obj_namespace=\"{ns}\"")) {
                left.push(format!("metric series of {ns}"));
            }
        }
        Ok::<_, String>(left)
    };
    let result = wait::until("nothing to be left", GONE_WITHIN, || async {
        let left = leftovers().await?;
        Ok(left.is_empty().then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e}: still there: {:?}", leftovers().await);
    }
    eprintln!(
        "both namespaces and everything in them gone {:.1}s after their deletion",
        deleted.elapsed().as_secs_f64()
    );
    assert_eq!(
        controller.get("/healthz").map(|(code, _)| code),
        Some(200),
        "the controller keeps running"
    );
}
