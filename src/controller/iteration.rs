//! One replication iteration's mover Job, the same on both sides: start it, watch it,
//! record its result through the trigger machine, remove it.

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::Api;

use super::{
    apply::apply,
    context::Context,
    error::Error,
    mover_run::{self, JobState, MoverReport},
    plan::{self, Pass},
    trigger::Decision,
};
use crate::{
    api::{SyncProgress, SyncStats, SyncStatus},
    resources::{
        job::{MoverJob, mover_job},
        names,
    },
    telemetry::ObjectLabels,
};

/// What happened to the iteration in this pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The mover Job was created now.
    Started,
    /// The mover is still running.
    Running,
    /// The mover completed: the data is in place. Publish it, then call [`complete`].
    Succeeded(MoverReport),
    /// The mover failed after its retries; the Job was removed and the trigger machine
    /// decided the retry.
    Failed(Decision),
}

/// Advances the iteration: creates the Job if there is none, reports a success (for the
/// caller to publish, then [`complete`]), or records a failure and deletes the Job so the
/// next pass retries.
pub async fn drive(
    ctx: &Context,
    object: &ObjectReference,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    pass: Pass<'_>,
) -> Result<Outcome, Error> {
    let built = mover_job(job);
    let name = built.metadata.name.clone().unwrap_or_default();
    let namespace = job.owner.namespace.clone();
    match mover_run::observe(&ctx.client, &namespace, &name).await? {
        JobState::Absent => {
            apply(
                &Api::<Job>::namespaced(ctx.client.clone(), &namespace),
                &built,
            )
            .await?;
            ctx.event(
                object,
                false,
                "TransferStarted",
                format!("mover Job {name} started"),
            )
            .await;
            Ok(Outcome::Started)
        }
        JobState::Running => {
            if let Some(p) = mover_run::progress(&ctx.client, &namespace, &name).await {
                let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
                sync.progress = Some(SyncProgress {
                    bytes_transferred: count(p.bytes),
                    bytes_per_second: count(p.rate),
                    observed_at: Some(Time(pass.now)),
                });
            }
            Ok(Outcome::Running)
        }
        JobState::Foreign => {
            mover_run::delete(&ctx.client, &namespace, &name).await?;
            ctx.event(
                object,
                false,
                "ForeignJobReplaced",
                format!(
                    "Job {name} was not made by ferrosync (VolSync's, from before the takeover); deleted it to start ferrosync's mover"
                ),
            )
            .await;
            Ok(Outcome::Running)
        }
        JobState::Succeeded(status) => Ok(Outcome::Succeeded(status)),
        JobState::Failed(report) => {
            let why = report
                .status
                .logs
                .clone()
                .unwrap_or_else(|| "no details from the mover".into());
            let note = if report.auth_failure() {
                format!(
                    "mover Job {name} failed: authentication failed (the keys of source and destination differ): {why}"
                )
            } else {
                format!("mover Job {name} failed after its retries: {why}")
            };
            ctx.event(object, true, "TransferFailed", note).await;
            sync.latest_mover_status = Some(report.status);
            mover_run::delete(&ctx.client, &namespace, &name).await?;
            Ok(Outcome::Failed(plan::failed(pass, sync)?))
        }
    }
}

/// Records a successful iteration in `sync` and deletes its Job. Called only after the
/// data was published, so a crash before this point repeats the publication instead of
/// losing it. Returns the trigger machine's decision about what follows.
pub async fn complete(
    ctx: &Context,
    job: &MoverJob<'_>,
    sync: &mut SyncStatus,
    mover: MoverReport,
    pass: Pass<'_>,
) -> Result<Decision, Error> {
    let started = sync.last_sync_start_time.as_ref().map_or(pass.now, |t| t.0);
    let seconds = pass.now.duration_since(started).as_secs_f64().max(0.0);
    let labels = ObjectLabels::new(&job.owner.namespace, &job.owner.name, job.side.as_str());
    ctx.metrics
        .observe_sync(&labels, seconds, mover.bytes(job.side));
    if let Some(summary) = &mover.summary {
        let count = |n: u64| Some(i64::try_from(n).unwrap_or(i64::MAX));
        sync.last_sync_stats = Some(SyncStats {
            bytes_sent: count(summary.bytes_sent),
            bytes_received: count(summary.bytes_received),
            files_transferred: count(summary.files_transferred),
            files_deleted: count(summary.files_deleted),
        });
    }
    sync.progress = None;
    sync.latest_mover_status = Some(mover.status);
    let decision = plan::succeeded(pass, sync)?;
    let name = names::job(job.side, &job.owner.name);
    mover_run::delete(&ctx.client, &job.owner.namespace, &name).await?;
    Ok(decision)
}
