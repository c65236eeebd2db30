//! High availability: two controllers campaign for one Lease; only the leader reconciles,
//! and when it is killed mid-sync the standby takes over within the lease duration plus
//! the renewal window and finishes the sync. A leader cut off from the apiserver (its
//! traffic black-holed by Toxiproxy) stops reconciling before the standby takes over.
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

use k8s_openapi::{
    api::{batch::v1::Job, coordination::v1::Lease},
    jiff::Timestamp,
};
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
        toxiproxy::ApiserverProxy,
        wait,
    },
    volsync::{copy_secret, destination, privileged_movers, published, source, synced},
};

const MOVER_IMAGE: &str = "ferrosync.test/mover:ha";
const LEASE: &str = "ferrosync-controller";
const LEASE_DURATION: Duration = Duration::from_secs(4);
const RENEW_BEFORE: Duration = Duration::from_secs(1);

/// Both tests campaign for the one Lease the RBAC allows: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn replica(cp: &'static support::ControlPlane, name: &str) -> RunningController {
    replica_with(cp, name, &deploy::controller_identity(cp))
}

fn replica_with(
    cp: &'static support::ControlPlane,
    name: &str,
    kubeconfig: &std::path::Path,
) -> RunningController {
    let duration = format!("{}s", LEASE_DURATION.as_secs());
    let renew = format!("{}s", RENEW_BEFORE.as_secs());
    // As the ServiceAccount of deploy/: its Role allows exactly the one Lease in its own
    // namespace.
    RunningController::start(
        cp,
        kubeconfig,
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
    let _serial = SERIAL.lock().await;
    let cp = control_plane_with(Options::end_to_end());
    images::register(
        MOVER_IMAGE,
        Image::binary(ferrosync_binary(), ferrosync::resources::job::MOVER_BINARY),
    );
    Cluster::start(cp);
    let leases: Api<Lease> = Api::namespaced(cp.client().await, deploy::NAMESPACE);
    let mut a = Some(replica(cp, "replica-a"));
    let b = replica(cp, "replica-b");

    // A Lease left by the other test is taken over once it expires.
    let first = wait::until("a leader", Duration::from_secs(60), || async {
        Ok(holder(&leases).await.filter(|h| h.starts_with("replica-")))
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

/// The `timestamp` of the first JSON log line whose message contains `text`.
fn logged_at(log: &str, text: &str) -> Option<Timestamp> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text))
        })
        .and_then(|v| v["timestamp"].as_str()?.parse().ok())
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_before_the_standby_takes_over() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane_with(Options::end_to_end());
    let leases: Api<Lease> = Api::namespaced(cp.client().await, deploy::NAMESPACE);
    let proxy = ApiserverProxy::start(cp);
    let identity = deploy::controller_identity(cp);
    let mut a = replica_with(cp, "cut-a", &proxy.kubeconfig(cp, &identity));
    // A leads first (a Lease left by an earlier test expires within its duration).
    wait::until("cut-a to lead", Duration::from_secs(60), || async {
        Ok(holder(&leases).await.filter(|h| h.starts_with("cut-a-")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; cut-a log:\n{}", a.log_text()));
    let b = replica_with(cp, "cut-b", &identity);
    wait::until("cut-b to campaign", Duration::from_secs(30), || async {
        Ok(b.log_text()
            .contains("campaigning for leadership")
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let cut = Timestamp::now();
    proxy.black_hole();
    let new_holder = wait::until("cut-b to take the Lease", LEASE_DURATION * 6, || async {
        Ok(leases.get_opt(LEASE).await.ok().flatten().filter(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .is_some_and(|h| h.starts_with("cut-b-"))
        }))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; cut-a log:\n{}", a.log_text()));
    let taken = new_holder
        .spec
        .and_then(|s| s.acquire_time)
        .map(|t| t.0)
        .expect("acquireTime");

    let log = a.log_text();
    let stepped_down = logged_at(&log, "stepped down")
        .unwrap_or_else(|| panic!("the cut-off leader never stepped down:\n{log}"));
    eprintln!(
        "cut at {cut}; cut-a stepped down at {stepped_down}; cut-b took the Lease at {taken}"
    );
    assert!(
        stepped_down < taken,
        "the cut-off leader stopped at {stepped_down}, after cut-b took over at {taken}"
    );
    assert!(stepped_down > cut, "it stepped down only once cut off");
    assert!(
        logged_at(&log, "renewing the Lease").is_some(),
        "failed renewals are logged:\n{log}"
    );
    // Stopping means exiting: nothing of it is left to act once the network heals.
    wait::until("cut-a to exit", Duration::from_secs(10), || {
        let exited = a.exited();
        async move { Ok(exited.then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(b.log_text().contains("became the leader"));
}
