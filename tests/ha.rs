//! High availability: two controllers campaign for one Lease; only the leader reconciles,
//! and when it is killed mid-sync the standby takes over within the lease duration plus
//! the renewal window and finishes the sync.
//!
//! Its own binary, because the end-to-end binary runs a controller without leader election
//! that would reconcile the same objects.

mod support;

#[path = "e2e/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
#[path = "e2e/tree.rs"]
#[allow(dead_code)]
mod tree;
#[path = "e2e/volsync.rs"]
#[allow(dead_code)]
mod volsync;

use std::time::{Duration, Instant};

use k8s_openapi::api::{batch::v1::Job, coordination::v1::Lease};
use kube::Api;
use serde_json::json;

use crate::{
    fixtures::{bound_dir, pvc},
    support::{
        Options, control_plane_with,
        controller::{RunningController, ferrosync_binary},
        deploy,
        sim::{
            Cluster,
            node::images::{self, Image},
        },
        wait,
    },
    volsync::{copy_secret, destination, privileged_movers, published, source, synced},
};

const MOVER_IMAGE: &str = "ferrosync.test/mover:ha";
const LEASE: &str = "ferrosync-controller";
const LEASE_DURATION: Duration = Duration::from_secs(4);
const RENEW_BEFORE: Duration = Duration::from_secs(1);

fn replica(cp: &'static support::ControlPlane, name: &str) -> RunningController {
    let duration = format!("{}s", LEASE_DURATION.as_secs());
    let renew = format!("{}s", RENEW_BEFORE.as_secs());
    // As the ServiceAccount of deploy/: its Role allows exactly the one Lease in its own
    // namespace.
    RunningController::start(
        cp,
        &deploy::controller_identity(cp),
        &[
            ("POD_NAME", name),
            ("POD_NAMESPACE", deploy::NAMESPACE),
            ("FERROSYNC_MOVER__IMAGE", MOVER_IMAGE),
            ("FERROSYNC_REQUEUE__POLL", "500ms"),
            ("FERROSYNC_LEADER_ELECTION__ENABLED", "true"),
            ("FERROSYNC_LEADER_ELECTION__LEASE_DURATION", &duration),
            ("FERROSYNC_LEADER_ELECTION__RENEW_BEFORE", &renew),
        ],
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test]
async fn the_standby_takes_over_from_a_killed_leader_and_finishes_the_sync() {
    let cp = control_plane_with(Options::end_to_end());
    images::register(
        MOVER_IMAGE,
        Image::binary(ferrosync_binary(), ferrosync::resources::job::MOVER_BINARY),
    );
    Cluster::start(cp);
    let leases: Api<Lease> = Api::namespaced(cp.client().await, deploy::NAMESPACE);
    let mut a = Some(replica(cp, "replica-a"));
    let b = replica(cp, "replica-b");

    let first = wait::until("a leader", Duration::from_secs(60), || async {
        Ok(holder(&leases).await)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Which process leads: identities are "<POD_NAME>-<pid>".
    let a_leads = first.starts_with("replica-a-");
    assert!(a_leads || first.starts_with("replica-b-"), "holder {first}");

    // A sync in flight: the source's mover Job exists but has not finished.
    let dst = cp.namespace("ha-dst").await;
    let src = cp.namespace("ha-src").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    destination(&dst, "ha", json!({})).await;
    let (address, key) = published(&dst, "ha").await;
    copy_secret(&dst, &key, &src, "ha-key").await;
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    tree::write_sample(&data, (0, 0));
    // Enough data that the transfer is still running when the leader dies.
    let mut big = std::fs::File::create(data.join("big.bin")).expect("big file");
    std::io::copy(
        &mut std::io::Read::take(
            std::fs::File::open("/dev/urandom").expect("urandom"),
            384 << 20,
        ),
        &mut big,
    )
    .expect("writing big file");
    source(
        &src,
        "ha",
        "data",
        json!({"keySecret": "ha-key", "address": address}),
    )
    .await;
    let jobs: Api<Job> = src.api();
    wait::until(
        "the source's mover Job",
        Duration::from_secs(60),
        || async {
            Ok(jobs
                .get_opt("volsync-rsync-tls-src-ha")
                .await
                .ok()
                .flatten()
                .map(|_| ()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Only the leader reconciles: the standby logged no reconcile at all.
    let (leader, standby) = if a_leads {
        (a.as_ref().unwrap(), &b)
    } else {
        (&b, a.as_ref().unwrap())
    };
    assert!(
        leader.log_text().contains("became the leader"),
        "{}",
        leader.log_text()
    );
    assert!(
        !standby.log_text().contains("became the leader"),
        "{}",
        standby.log_text()
    );

    let rss: Api<ferrosync::api::ReplicationSource> = src.api();
    let before = rss.get("ha").await.expect("source");
    assert!(
        before.status.and_then(|s| s.sync.last_sync_time).is_none(),
        "the sync finished before the leader could be killed; the test needs it in flight"
    );

    // Kill the leader (SIGKILL: no release), and time the takeover.
    let killed = Instant::now();
    let survivor_prefix = if a_leads {
        a.take();
        "replica-b-"
    } else {
        drop(b);
        "replica-a-"
    };
    let took = wait::until(
        "the standby to take the lease",
        LEASE_DURATION * 4,
        || async {
            Ok(holder(&leases)
                .await
                .filter(|h| h.starts_with(survivor_prefix))
                .map(|_| killed.elapsed()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "takeover after the leader was killed: {:.1}s",
        took.as_secs_f64()
    );
    assert!(
        took <= LEASE_DURATION + RENEW_BEFORE + Duration::from_secs(2),
        "takeover took {took:?}; lease {LEASE_DURATION:?} + renewal {RENEW_BEFORE:?}"
    );

    // The new leader finishes the in-flight sync, and the data arrived.
    let rs = synced(&src, "ha", Duration::from_secs(120)).await;
    assert!(rs.status.and_then(|s| s.sync.last_sync_time).is_some());
    let _ = a;
}
