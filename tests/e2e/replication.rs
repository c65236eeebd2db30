//! The first real replication: Direct to Direct across two namespaces, through the real
//! controller, the real Job controller and scheduler, the simulated node, storage and
//! routing, and the real movers.

use std::time::{Duration, Instant};

use ferrosync::api::{MoverResult, ReplicationDestination};
use kube::Api;
use serde_json::json;

use crate::{
    env::env,
    fixtures::STEP,
    support::{sim::loadbalancer, wait},
    tree,
    volsync::{
        assert_mover_succeeded, claim_dir, copy_secret, destination, privileged_movers, published,
        published_image, sample_source, synced, synchronizing,
    },
};

/// Owner of the sample data: neither root nor a mover's uid, so that owners arriving
/// intact means they were restored.
const OWNER: (u32, u32) = (4321, 8765);

#[tokio::test]
async fn direct_to_direct_replicates_the_volume_byte_for_byte() {
    let env = env();
    let started = Instant::now();
    let dst = env.cp.namespace("e2e-dst").await;
    let src = env.cp.namespace("e2e-src").await;
    // Privileged movers, so that owners are part of the byte-for-byte comparison.
    privileged_movers(&dst).await;
    privileged_movers(&src).await;

    destination(&dst, "backup", json!({})).await;
    let (address, key_secret) = published(&dst, "backup").await;
    assert!(address.starts_with("127.64."), "a ClusterIP: {address}");
    copy_secret(&dst, &key_secret, &src, "backup-key").await;
    let data = sample_source(
        &src,
        "backup",
        OWNER,
        json!({"keySecret": "backup-key", "address": address}),
    )
    .await;
    let rs = synced(&src, "backup", Duration::from_secs(120)).await;
    let status = rs.status.expect("source status");
    let mover = status
        .sync
        .latest_mover_status
        .clone()
        .expect("latestMoverStatus");
    assert_eq!(
        mover.result,
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful)),
        "source mover: {mover:?}"
    );
    assert!(status.sync.last_sync_duration.is_some(), "lastSyncDuration");
    let cond = synchronizing(status.sync.conditions.as_ref());
    assert_eq!(cond.reason, "WaitingForManual", "{cond:?}");

    // The destination publishes the volume only after its own mover succeeded.
    let rds: Api<ReplicationDestination> = dst.api();
    let rd = wait::until("the destination to publish latestImage", STEP, || async {
        let rd = rds.get("backup").await.map_err(|e| e.to_string())?;
        let done = rd
            .status
            .as_ref()
            .is_some_and(|s| s.latest_image.is_some() && s.sync.last_sync_time.is_some());
        Ok(done.then_some(rd))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller log:\n{}", env.controller_tail()));
    let rd_status = rd.status.expect("destination status");
    let image = rd_status.latest_image.expect("latestImage");
    assert_eq!(
        (image.kind.as_str(), image.name.as_str()),
        ("PersistentVolumeClaim", "volsync-backup-dst")
    );
    let dst_mover = rd_status
        .sync
        .latest_mover_status
        .expect("destination latestMoverStatus");
    assert_eq!(
        dst_mover.result,
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful)),
        "{dst_mover:?}"
    );
    assert!(rd_status.sync.last_sync_duration.is_some());
    synchronizing(rd_status.sync.conditions.as_ref());

    tree::assert_same(&data, &claim_dir(&dst, &image.name).await);
    eprintln!("direct to direct: {:.1}s", started.elapsed().as_secs_f64());
}

/// The source reaches the destination through the load balancer's address (routing on
/// the ingress IP), once the load balancer has given one.
#[tokio::test]
async fn direct_to_direct_through_a_load_balancer() {
    let env = env();
    let dst = env.cp.namespace("lb-dst").await;
    let src = env.cp.namespace("lb-src").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    let lb = json!({"serviceType": "LoadBalancer",
                    "serviceAnnotations": {loadbalancer::ANNOTATION: "1s"}});
    destination(&dst, "edge", lb).await;
    let (address, key_secret) = published(&dst, "edge").await;
    assert!(
        address.starts_with("127.66."),
        "a load-balancer address: {address}"
    );
    copy_secret(&dst, &key_secret, &src, "edge-key").await;
    let data = sample_source(
        &src,
        "edge",
        OWNER,
        json!({"keySecret": "edge-key", "address": address}),
    )
    .await;
    let rs = synced(&src, "edge", Duration::from_secs(120)).await;
    assert_mover_succeeded(&rs);
    published_image(&dst, "edge", STEP)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontroller log:\n{}", env.controller_tail()));
    tree::assert_same(&data, &claim_dir(&dst, "volsync-edge-dst").await);
}

/// What users get without the privileged-movers annotation: both movers run as 65532, so
/// the data must be that uid's to arrive with its owner.
#[tokio::test]
async fn direct_to_direct_with_unprivileged_movers() {
    let env = env();
    let dst = env.cp.namespace("unpriv-dst").await;
    let src = env.cp.namespace("unpriv-src").await;
    destination(&dst, "backup", json!({})).await;
    let (address, key_secret) = published(&dst, "backup").await;
    copy_secret(&dst, &key_secret, &src, "backup-key").await;
    let data = sample_source(
        &src,
        "backup",
        (65532, 65532),
        json!({"keySecret": "backup-key", "address": address}),
    )
    .await;
    let rs = synced(&src, "backup", Duration::from_secs(120)).await;
    assert_mover_succeeded(&rs);
    let rds: Api<ReplicationDestination> = dst.api();
    wait::until("the destination to publish latestImage", STEP, || async {
        let rd = rds.get("backup").await.map_err(|e| e.to_string())?;
        let status = rd.status.unwrap_or_default();
        if let Some(m) = status
            .sync
            .latest_mover_status
            .filter(|m| m.result == Some(ferrosync::api::Spelling::Known(MoverResult::Failed)))
        {
            return Err(format!("the destination mover failed: {m:?}"));
        }
        Ok(status.latest_image)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tree::assert_same(&data, &claim_dir(&dst, "volsync-backup-dst").await);
}
