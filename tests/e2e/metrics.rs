//! What a platform team alerts on: the controller's /metrics during a real replication
//! (the reference's names, types and labels, ferrosync's own counters), the status
//! figures `kubectl get` shows, series removed once their object is deleted, and who may
//! read /metrics (HTTPS; TokenReview and SubjectAccessReview against the real apiserver).

use std::time::Duration;

use ferrosync::api::{ReplicationDestination, ReplicationSource, SyncStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    env::env,
    fixtures::{STEP, bound_dir, event, pvc},
    support::TestNamespace,
    support::deploy,
    support::wait,
    tree,
    volsync::{copy_secret, destination, privileged_movers, published, source, synced},
};

/// The `# TYPE` of metric family `name`.
fn family_type<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("# TYPE {name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix))
}

/// The value of the series `name{labels}` in a Prometheus text exposition.
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Sets (or, with null, removes) the recovery point objective annotation of `metered`.
async fn annotate_rpo<K>(ns: &TestNamespace, value: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let patch =
        json!({"metadata": {"annotations": {"ferrosync.io/recovery-point-objective": value}}});
    ns.api::<K>()
        .patch("metered", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotating");
}

/// The destination `metered`'s condition of type `type_`.
async fn condition(ns: &TestNamespace, type_: &str) -> Option<Condition> {
    let rd: ReplicationDestination = ns.api().get("metered").await.expect("destination");
    rd.status?
        .sync
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_)
}

fn synchronizing(sync: &SyncStatus) -> Option<&Condition> {
    sync.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Synchronizing")
}

#[tokio::test]
async fn metrics_and_status_report_a_real_sync_and_forget_deleted_objects() {
    let env = env();
    let dst = env.cp.namespace("e2e-mdst").await;
    let src = env.cp.namespace("e2e-msrc").await;
    // Privileged, so every sample file (some only their owner may read) is sent.
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    destination(&dst, "metered", json!({})).await;
    let (address, key) = published(&dst, "metered").await;
    copy_secret(&dst, &key, &src, "metered-key").await;
    pvc("data").create(&src).await;
    tree::write_sample(&bound_dir(&src, "data").await, (0, 0));
    source(
        &src,
        "metered",
        "data",
        json!({"keySecret": "metered-key", "address": address}),
    )
    .await;
    let rs = synced(&src, "metered", Duration::from_secs(120)).await;

    // Status: the last sync's figures, for `kubectl describe`.
    let stats = rs
        .status
        .as_ref()
        .and_then(|s| s.sync.last_sync_stats.clone())
        .expect("lastSyncStats");
    assert!(stats.bytes_sent.unwrap_or(0) > 0, "{stats:?}");
    assert!(stats.files_transferred.unwrap_or(0) > 0, "{stats:?}");

    let labels = format!(
        r#"obj_name="metered",obj_namespace="{}",role="source",method="rsync-tls""#,
        src.name
    );
    let metrics = || {
        env.controller
            .get("/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let text = metrics();
    assert_eq!(
        series(&text, "volsync_volume_out_of_sync", &labels),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "volsync_missed_intervals_total", &labels),
        Some(0.0)
    );
    // VolSync's types, so `quantile=` queries and `rate(..._total)` work unchanged.
    assert_eq!(
        family_type(&text, "volsync_sync_duration_seconds"),
        Some("summary"),
        "{text}"
    );
    assert_eq!(
        family_type(&text, "volsync_missed_intervals"),
        Some("counter")
    );
    assert_eq!(
        family_type(&text, "volsync_volume_out_of_sync"),
        Some("gauge")
    );
    assert_eq!(
        family_type(&text, "ferrosync_sync_duration_seconds"),
        Some("histogram")
    );
    let count = series(&text, "volsync_sync_duration_seconds_count", &labels).unwrap_or(0.0);
    let sum = series(&text, "volsync_sync_duration_seconds_sum", &labels).unwrap_or(0.0);
    assert!(count >= 1.0 && sum > 0.0, "{text}");
    let quantiles: Vec<f64> = ["0.5", "0.9", "0.99"]
        .iter()
        .map(|q| {
            series(
                &text,
                "volsync_sync_duration_seconds",
                &format!(r#"{labels},quantile="{q}""#),
            )
            .unwrap_or_else(|| panic!("quantile {q} of the 24-hour window: {text}"))
        })
        .collect();
    // Ordered, positive, and consistent with the sum: the largest quantile is at least the
    // mean and at most the sum (within the sketch's 1 %).
    assert!(quantiles[0] > 0.0, "{quantiles:?}");
    assert!(quantiles.windows(2).all(|w| w[0] <= w[1]), "{quantiles:?}");
    assert!(
        quantiles[2] >= sum / count * 0.99,
        "{quantiles:?} sum {sum} count {count}"
    );
    assert!(quantiles[2] <= sum * 1.01, "{quantiles:?} sum {sum}");
    assert_eq!(
        series(&text, "ferrosync_sync_duration_seconds_count", &labels),
        Some(count),
        "the histogram counts the same iterations"
    );
    let bytes = series(&text, "ferrosync_bytes_transferred_total", &labels).unwrap_or(0.0);
    assert_eq!(
        bytes,
        stats.bytes_sent.unwrap_or(0) as f64,
        "the counter matches the mover's summary"
    );
    assert!(
        text.contains("ferrosync_reconciles_total{kind=\"ReplicationSource\""),
        "{text}"
    );
    assert!(
        text.contains("ferrosync_policy_decisions_total{"),
        "policy decisions are counted"
    );

    // The recovery point: each side's lastSyncTime as a timestamp, and the objective of
    // a valid annotation. An invalid one is flagged and exports nothing.
    let dst_labels = format!(
        r#"obj_name="metered",obj_namespace="{}",role="destination",method="rsync-tls""#,
        dst.name
    );
    annotate_rpo::<ReplicationSource>(&src, json!("15m")).await;
    annotate_rpo::<ReplicationDestination>(&dst, json!("soon")).await;
    let synced_at = |sync: Option<&SyncStatus>| {
        sync.and_then(|s| s.last_sync_time.as_ref())
            .map(|t| t.0.as_second() as f64)
            .expect("lastSyncTime")
    };
    let source_synced = synced_at(rs.status.as_ref().map(|s| &s.sync));
    let rd: ReplicationDestination = dst.api().get("metered").await.expect("destination");
    let dest_synced = synced_at(rd.status.as_ref().map(|s| &s.sync));
    let last = "ferrosync_last_sync_timestamp_seconds";
    let objective = "ferrosync_recovery_point_objective_seconds";
    let text = wait::until("the source's objective to be exported", STEP, || async {
        let text = metrics();
        Ok((series(&text, objective, &labels) == Some(900.0)).then_some(text))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(series(&text, last, &labels), Some(source_synced), "{text}");
    assert_eq!(
        series(&text, last, &dst_labels),
        Some(dest_synced),
        "{text}"
    );
    assert_eq!(family_type(&text, last), Some("gauge"));
    assert_eq!(family_type(&text, objective), Some("gauge"));
    let warning = event(
        &dst.client,
        &dst.name,
        "metered",
        "RecoveryPointObjectiveInvalid",
    )
    .await;
    assert!(
        warning.contains("recovery-point-objective") && warning.contains("\"soon\""),
        "{warning}"
    );
    let invalid = condition(&dst, "RecoveryPointObjectiveInvalid").await;
    assert!(invalid.is_some_and(|c| c.message == warning));
    assert_eq!(series(&metrics(), objective, &dst_labels), None);

    // Fixed on the destination, removed from the source: the series follow.
    annotate_rpo::<ReplicationDestination>(&dst, json!("1h")).await;
    annotate_rpo::<ReplicationSource>(&src, Value::Null).await;
    wait::until("the objectives to follow the annotations", STEP, || async {
        let text = metrics();
        let followed = series(&text, objective, &dst_labels) == Some(3600.0)
            && series(&text, objective, &labels).is_none()
            && condition(&dst, "RecoveryPointObjectiveInvalid")
                .await
                .is_none();
        Ok(followed.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let rs: ReplicationSource = src.api().get("metered").await.expect("source");
    assert!(
        rs.status
            .as_ref()
            .and_then(|s| synchronizing(&s.sync))
            .is_some_and(|c| c.reason != "Error"),
        "an objective never stops syncs"
    );

    // A deleted object's series go, so its alerts resolve.
    let rss: Api<ReplicationSource> = src.api();
    rss.delete("metered", &DeleteParams::default())
        .await
        .expect("delete");
    wait::until("the deleted source's series to disappear", STEP, || async {
        let text = metrics();
        let gone = series(&text, "volsync_volume_out_of_sync", &labels).is_none()
            && series(&text, "volsync_sync_duration_seconds_count", &labels).is_none()
            && series(&text, "ferrosync_last_sync_timestamp_seconds", &labels).is_none();
        Ok(gone.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn progress_is_reported_while_a_sync_runs_and_cleared_after() {
    let env = env();
    let dst = env.cp.namespace("e2e-pdst").await;
    let src = env.cp.namespace("e2e-psrc").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    destination(&dst, "progress", json!({})).await;
    let (address, key) = published(&dst, "progress").await;
    copy_secret(&dst, &key, &src, "progress-key").await;
    pvc("data").create(&src).await;
    let data = bound_dir(&src, "data").await;
    // Big enough that the copy pass outlives a few progress lines.
    let mut big = std::fs::File::create(data.join("big.bin")).expect("big file");
    std::io::copy(
        &mut std::io::Read::take(
            std::fs::File::open("/dev/urandom").expect("urandom"),
            512 << 20,
        ),
        &mut big,
    )
    .expect("writing");
    source(
        &src,
        "progress",
        "data",
        json!({"keySecret": "progress-key", "address": address}),
    )
    .await;

    // Read through pods/log from the running mover into status.progress.
    let rss: Api<ReplicationSource> = src.api();
    let seen = wait::until(
        "status.progress while the mover runs",
        Duration::from_secs(120),
        || async {
            let rs = rss.get("progress").await.map_err(|e| e.to_string())?;
            let progress = rs.status.and_then(|s| s.sync.progress);
            Ok(progress.filter(|p| p.bytes_transferred.unwrap_or(0) > 0))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert!(seen.bytes_per_second.unwrap_or(0) > 0, "{seen:?}");
    assert!(seen.observed_at.is_some());

    let rs = synced(&src, "progress", Duration::from_secs(180)).await;
    let status = rs.status.expect("status");
    assert!(
        status.sync.progress.is_none(),
        "progress is cleared when the iteration ends"
    );
    assert!(
        status
            .sync
            .last_sync_stats
            .and_then(|s| s.bytes_sent)
            .unwrap_or(0)
            >= 512 << 20
    );
}

#[tokio::test]
async fn metrics_need_a_token_allowed_to_get_the_metrics_url() {
    let env = env();
    // Without a token: 401, and nothing of the metrics leaks. (The endpoint starts with
    // the controller, which may still be starting.)
    let (code, body) = wait::until("the metrics endpoint to answer", STEP, || async {
        Ok(env.controller.get_metrics(None))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("volsync_"), "{body}");
    // A token the apiserver does not know: 401.
    let (code, _) = env
        .controller
        .get_metrics(Some("not-a-token"))
        .expect("answers");
    assert_eq!(code, 401);
    // A real ServiceAccount without `get` on the non-resource URL /metrics: 403.
    let nobody = deploy::service_account_token(env.cp, deploy::NAMESPACE, "metrics-nobody", false);
    let (code, body) = env.controller.get_metrics(Some(&nobody)).expect("answers");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("metrics-nobody"),
        "the refusal names the user: {body}"
    );
    // Bound to the shipped ferrosync-metrics-reader ClusterRole: 200 and the metrics.
    let reader =
        deploy::service_account_token(env.cp, deploy::NAMESPACE, "metrics-reader-sa", true);
    let (code, body) = env.controller.get_metrics(Some(&reader)).expect("answers");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition: {body}"
    );
    // The probes stay plain HTTP for the kubelet.
    assert_eq!(env.controller.get("/healthz").map(|(c, _)| c), Some(200));
}
