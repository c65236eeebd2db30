//! Errors end or surface (issue 14): a permanent mover failure waits for its backoff and
//! retries at once when the key Secret changes; names the apiserver would refuse, objects
//! it refuses, over-long values and pods that cannot start each get an Error condition and
//! an Event instead of a silent loop; an image marked do-not-delete outlives its
//! destination.

use std::time::Duration;

use ferrosync::api::{MoverResult, ReplicationDestination, ReplicationSource};
use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{
    env::{FAILURE_BACKOFF_MAX, FAILURE_BACKOFF_MIN, env},
    fixtures::{STEP, events},
    lifecycle_support::{
        create_rd, create_rs, manual_synced, new_image, sample_volume, snapshot_pair, snapshots,
        source_spec,
    },
    support::{TestNamespace, wait},
    volsync::{destination, no_jobs, published, source_with_a_wrong_key, synced},
};

fn synchronizing(conditions: Option<Vec<Condition>>) -> Option<Condition> {
    conditions?.into_iter().find(|c| c.type_ == "Synchronizing")
}

/// Waits for `name`'s Synchronizing condition to be an Error containing `text`.
async fn error_condition<K>(ns: &TestNamespace, name: &str, text: &str) -> Condition
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Conditions,
{
    let api: Api<K> = ns.api();
    wait::until(
        &format!("{name}: an Error naming {text:?}"),
        STEP,
        || async {
            let obj = api.get(name).await.map_err(|e| e.to_string())?;
            Ok(synchronizing(obj.conditions())
                .filter(|c| c.reason == "Error" && c.message.contains(text)))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

trait Conditions {
    fn conditions(self) -> Option<Vec<Condition>>;
}

impl Conditions for ReplicationSource {
    fn conditions(self) -> Option<Vec<Condition>> {
        self.status?.sync.conditions
    }
}

impl Conditions for ReplicationDestination {
    fn conditions(self) -> Option<Vec<Condition>> {
        self.status?.sync.conditions
    }
}

/// A Warning Event with `reason` on `involved`; returns its message.
async fn warning(ns: &TestNamespace, involved: &str, reason: &str) -> String {
    wait::until(
        &format!("a {reason} Warning on {involved}"),
        STEP,
        || async {
            let all = events(&ns.client, &ns.name).await?;
            Ok(all
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some("Warning")
                        && e.involved_object.name.as_deref() == Some(involved)
                })
                .and_then(|e| e.message))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The source's mover Job once it has failed, unless it is one of `seen`: its uid, and
/// when it failed.
async fn failed_job(ns: &TestNamespace, name: &str, seen: &[String]) -> (String, Timestamp) {
    let jobs: Api<Job> = ns.api();
    wait::until(
        &format!("a new failed Job {name}"),
        Duration::from_secs(180),
        || async {
            let Some(job) = jobs.get_opt(name).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let uid = job.uid().unwrap_or_default();
            if seen.contains(&uid) {
                return Ok(None);
            }
            let failed = job
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time);
            Ok(failed.map(|t| (uid, t.0)))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

/// The next Job after the one with `uid`: its uid and creation time.
async fn next_job(
    ns: &TestNamespace,
    name: &str,
    after: &str,
    timeout: Duration,
) -> (String, Timestamp) {
    let jobs: Api<Job> = ns.api();
    wait::until(&format!("the Job after {after}"), timeout, || async {
        let job = jobs.get_opt(name).await.map_err(|e| e.to_string())?;
        Ok(job
            .filter(|j| j.uid().as_deref() != Some(after))
            .and_then(|j| Some((j.uid()?, j.metadata.creation_timestamp?.0))))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()))
}

#[tokio::test]
async fn a_wrong_key_waits_for_the_backoff_and_retries_at_once_when_the_key_changes() {
    let env = env();
    let dst = env.cp.namespace("backoff-dst").await;
    let src = env.cp.namespace("backoff-src").await;
    destination(&dst, "target", json!({})).await;
    let (address, key) = published(&dst, "target").await;
    source_with_a_wrong_key(&src, "target", "the-key", &address).await;
    let job = "volsync-rsync-tls-src-target";

    // The first Job fails for good; the condition says what to fix.
    let (first, failed_at) = failed_job(&src, job, &[]).await;
    let cond = error_condition::<ReplicationSource>(&src, "target", "keys differ").await;
    assert!(cond.message.contains("AuthFailed, exit 13"), "{cond:?}");
    assert!(
        cond.message.contains("the next attempt starts at"),
        "{cond:?}"
    );
    let note = warning(&src, "target", "TransferFailed").await;
    assert!(note.contains("keys differ"), "{note}");

    // The next Job comes only after the backoff.
    let (second, created) = next_job(&src, job, &first, STEP * 2).await;
    let waited = created.duration_since(failed_at);
    eprintln!("second Job {waited:?} after the first failed");
    assert!(
        waited >= k8s_openapi::jiff::SignedDuration::try_from(FAILURE_BACKOFF_MIN).expect("fits"),
        "the next Job came {waited:?} after the failure, before the {FAILURE_BACKOFF_MIN:?} backoff"
    );

    // It fails too, and now waits the doubled backoff (the cap); fixing the key Secret
    // starts the next Job at once instead.
    let (_, failed_again) = failed_job(&src, job, std::slice::from_ref(&first)).await;
    error_condition::<ReplicationSource>(&src, "target", "keys differ").await;
    let right: Secret = dst.api().get(&key).await.expect("destination key");
    let fix = json!({"data": right.data});
    src.api::<Secret>()
        .patch("the-key", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fixing the key");
    let fixed_at = Timestamp::now();
    let (_, third) = next_job(&src, job, &second, FAILURE_BACKOFF_MAX).await;
    // The second consecutive failure waits twice the first backoff.
    let doubled =
        k8s_openapi::jiff::SignedDuration::try_from(FAILURE_BACKOFF_MIN * 2).expect("fits");
    // creationTimestamp holds whole seconds, so this may read as up to 1 s early.
    eprintln!(
        "third Job created {:.1}s after the key was fixed",
        third.duration_since(fixed_at).as_secs_f64()
    );
    assert!(
        third < failed_again.saturating_add(doubled).expect("in range"),
        "the Job after the fix came at {third}, not before the backoff ended"
    );
    let rs = synced(&src, "target", STEP * 2).await;
    let status = rs.status.and_then(|s| s.sync.latest_mover_status);
    assert_eq!(
        status.and_then(|s| s.result),
        Some(MoverResult::Successful.into())
    );
}

#[tokio::test]
async fn names_the_apiserver_would_refuse_are_reported_before_any_job() {
    let env = env();
    let ns = env.cp.namespace("names").await;
    // Valid names for a ReplicationDestination; not for what ferrosync derives from them.
    destination(&ns, "db.v1", json!({})).await;
    let cond = error_condition::<ReplicationDestination>(&ns, "db.v1", "Service").await;
    assert!(
        cond.message.contains("\"volsync-rsync-tls-dst-db.v1\""),
        "{cond:?}"
    );
    warning(&ns, "db.v1", "InvalidSpec").await;

    let long = "a".repeat(230);
    destination(&ns, &long, json!({"copyMethod": "Snapshot"})).await;
    let cond = error_condition::<ReplicationDestination>(&ns, &long, "snapshot names").await;
    assert!(cond.message.contains("over Kubernetes' 253"), "{cond:?}");
    warning(&ns, &long, "InvalidSpec").await;
    no_jobs(&ns).await;
}

#[tokio::test]
async fn an_object_the_apiserver_refuses_gets_an_error_and_an_event() {
    let env = env();
    let ns = env.cp.namespace("refused").await;
    // The CRD takes any map; the apiserver refuses the Service with this annotation key.
    destination(
        &ns,
        "badannot",
        json!({"serviceAnnotations": {"not a valid key!": "x"}}),
    )
    .await;
    let cond = error_condition::<ReplicationDestination>(&ns, "badannot", "refused").await;
    assert!(cond.message.contains("metadata.annotations"), "{cond:?}");
    let note = warning(&ns, "badannot", "Refused").await;
    assert!(note.contains("not a valid key!"), "{note}");
    no_jobs(&ns).await;
}

#[tokio::test]
async fn overlong_triggers_and_annotations_are_accepted_and_reported() {
    let env = env();
    let ns = env.cp.namespace("lengths").await;
    // Admission takes them, as VolSync's CRDs do.
    let manual = "m".repeat(100_000);
    create_rs(
        &ns,
        "longtrigger",
        json!({"sourcePVC": "data", "trigger": {"manual": manual}, "rsyncTLS": {"address": "127.0.0.1", "keySecret": "k"}}),
    )
    .await;
    error_condition::<ReplicationSource>(&ns, "longtrigger", "spec.trigger.manual is 100000 bytes")
        .await;
    create_rd(
        &ns,
        "longannot",
        json!({"ferrosync.io/retain-snapshots": "9".repeat(5000)}),
        json!({"rsyncTLS": {"copyMethod": "Direct", "capacity": "1Gi", "accessModes": ["ReadWriteOnce"]}}),
    )
    .await;
    error_condition::<ReplicationDestination>(
        &ns,
        "longannot",
        "annotation ferrosync.io/retain-snapshots is 5000 bytes",
    )
    .await;
    warning(&ns, "longannot", "InvalidSpec").await;
    no_jobs(&ns).await;
}

#[tokio::test]
async fn a_mover_whose_pods_cannot_be_scheduled_gets_a_condition() {
    let env = env();
    let ns = env.cp.namespace("unschedulable").await;
    destination(
        &ns,
        "huge",
        json!({"moverResources": {"requests": {"cpu": "1000"}}}),
    )
    .await;
    let cond = error_condition::<ReplicationDestination>(&ns, "huge", "cannot be scheduled").await;
    assert!(cond.message.contains("has not started within"), "{cond:?}");
    let note = warning(&ns, "huge", "MoverNotStarted").await;
    assert!(note.contains("Insufficient cpu"), "{note}");
}

#[tokio::test]
async fn an_image_marked_do_not_delete_outlives_its_destination() {
    let (dst, src, address) = snapshot_pair("keep", "keep", 1, json!({})).await;
    sample_volume(&src, "data").await;
    create_rs(
        &src,
        "keep",
        source_spec(
            "keep",
            "data",
            &address,
            json!({"manual": "one"}),
            json!({}),
        ),
    )
    .await;
    manual_synced(&src, "keep", "one").await;
    let image = new_image(&dst, "keep", None).await;
    let rd: ReplicationDestination = dst.api().get("keep").await.expect("destination");
    let rd_uid = rd.uid().expect("uid");
    let owned_by_rd = |snap: &kube::api::DynamicObject| {
        snap.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == rd_uid)
    };
    assert!(owned_by_rd(
        &snapshots(&dst).get(&image).await.expect("image")
    ));

    let label = json!({"metadata": {"labels": {"volsync.backube/do-not-delete": "true"}}});
    snapshots(&dst)
        .patch(&image, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("labelling the image");
    wait::until("the image's owner reference to go", STEP, || async {
        let snap = snapshots(&dst)
            .get(&image)
            .await
            .map_err(|e| e.to_string())?;
        Ok((!owned_by_rd(&snap)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env().controller_tail()));

    dst.api::<ReplicationDestination>()
        .delete("keep", &DeleteParams::foreground())
        .await
        .expect("deleting the destination");
    // Foreground deletion: the destination is gone only after the garbage collector has
    // deleted everything it still owns.
    let rds: Api<ReplicationDestination> = dst.api();
    wait::until(
        "the destination and what it owns to go",
        STEP * 2,
        || async {
            Ok(rds
                .get_opt("keep")
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        snapshots(&dst)
            .get_opt(&image)
            .await
            .expect("get")
            .is_some(),
        "the image marked do-not-delete was deleted with its destination"
    );
}
