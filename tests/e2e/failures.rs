//! Failure and waiting paths, with the real Job controller and no waits skipped: a mover
//! that fails is retried up to backoffLimit by the Job controller before ferrosync reports
//! it; a destination without a Service address starts no mover.

use std::time::Duration;

use ferrosync::api::{MoverResult, ReplicationDestination};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde_json::json;

use crate::{
    env::{BACKOFF_LIMIT, env},
    fixtures::{STEP, events},
    support::{sim::loadbalancer, wait},
    volsync::{destination, published, source_with_a_wrong_key, synced_or_failed},
};

#[tokio::test]
async fn a_failing_mover_is_retried_up_to_the_backoff_limit_then_reported() {
    let env = env();
    let dst = env.cp.namespace("fail-dst").await;
    let src = env.cp.namespace("fail-src").await;
    destination(&dst, "target", json!({})).await;
    let (address, _) = published(&dst, "target").await;
    // A key that is not the destination's: every attempt fails the TLS-PSK handshake.
    source_with_a_wrong_key(&src, "target", "wrong-key", &address).await;

    // The Job controller gives up after backoffLimit retries (its backoff is 10 s, doubling).
    let job = "volsync-rsync-tls-src-target";
    let gave_up = wait::until(
        "the Job controller to give up",
        Duration::from_secs(120),
        || async {
            let all = events(&src.client, &src.name).await?;
            Ok(all.into_iter().find(|e| {
                e.reason.as_deref() == Some("BackoffLimitExceeded")
                    && e.involved_object.name.as_deref() == Some(job)
            }))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let job_uid = gave_up.involved_object.uid.clone();
    let created = events(&src.client, &src.name)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("SuccessfulCreate") && e.involved_object.uid == job_uid
        })
        .count();
    assert_eq!(
        created,
        BACKOFF_LIMIT as usize + 1,
        "pods of the failed Job"
    );

    let status = synced_or_failed(&src, "target", STEP).await;
    assert_eq!(
        status.result,
        Some(ferrosync::api::Spelling::Known(MoverResult::Failed)),
        "{status:?}"
    );
    wait::until("a TransferFailed event", STEP, || async {
        let all = events(&src.client, &src.name).await?;
        Ok(all.into_iter().find(|e| {
            e.reason.as_deref() == Some("TransferFailed")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some("target")
        }))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_destination_without_a_service_address_starts_no_mover() {
    let env = env();
    let ns = env.cp.namespace("lb").await;
    let lb = |when: &str| json!({"serviceType": "LoadBalancer", "serviceAnnotations": {loadbalancer::ANNOTATION: when}});
    destination(&ns, "never", lb("never")).await;
    destination(&ns, "later", lb("3s")).await;

    let warned = |name: &'static str| {
        let ns = &ns;
        async move {
            wait::until(
                &format!("NoServiceAddressAssigned on {name}"),
                STEP,
                || async {
                    let all = events(&ns.client, &ns.name).await?;
                    Ok(all.into_iter().find(|e| {
                        e.reason.as_deref() == Some("NoServiceAddressAssigned")
                            && e.type_.as_deref() == Some("Warning")
                            && e.involved_object.name.as_deref() == Some(name)
                    }))
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    warned("never").await;
    warned("later").await;

    // The delayed load balancer gets its address, and only then does a mover start.
    let (address, _) = published(&ns, "later").await;
    assert!(
        address.starts_with("127.66."),
        "a load-balancer address: {address}"
    );
    let jobs: Api<Job> = ns.api();
    wait::eventually("the mover Job of `later`", STEP, || {
        jobs.get("volsync-rsync-tls-dst-later")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // By now `never` has been reconciled many times; it still has no address and no mover.
    let rd: ReplicationDestination = ns.api().get("never").await.expect("destination");
    let address = rd.status.and_then(|s| s.rsync_tls).and_then(|t| t.address);
    assert_eq!(address, None);
    let job = jobs
        .get_opt("volsync-rsync-tls-dst-never")
        .await
        .expect("jobs");
    assert!(job.is_none(), "no mover Job without an address");
}
